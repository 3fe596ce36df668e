"""Fuzzing every way tracks come in: each registered format, the Track Editor node's JSON, core TRACKS
dicts, and .npy/.npz/.pt files with hostile contents (wrong dtypes, NaN, huge declared shapes,
truncation, corrupted bytes, zip bombs).

Every case must end, within a time limit, in either a valid TrackSet (finite coordinates, boolean
visibility, shapes and ids as documented) or a ValueError naming the problem; inputs that are
invalid by construction (a NaN coordinate, a visibility of 0.3, a 5,000-digit number, ...) must
be refused, never accepted with a guess. Under HYPOTHESIS_PROFILE=ci (derandomized) the file runs
a fixed set of 5,000 cases (about 30 s on two cores); MOTIONSTREAM_FUZZ_SCALE multiplies them.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy_format

from motionstream_core import ReadOptions, TrackSet, list_track_formats, load_tracks_file
from motionstream_core.motion.formats import load_cotracker_tracks, load_wan_move_tracks
from motionstream_core.motion.tracks import MAX_FPS, MAX_FRAME_SIZE, MAX_TRACK_ID, OUT_OF_FRAME_MARGIN

from case_time_limit import time_limit
from hostile_files import npy_header, zip_bytes

CASE_SECONDS = 10.0  # per case; the slowest legitimate case takes well under a second

# Local runs may explore further: MOTIONSTREAM_FUZZ_SCALE=10 runs ten times the cases.
FUZZ_SCALE = max(1, int(os.environ.get("MOTIONSTREAM_FUZZ_SCALE", "1")))


def fuzz(examples: int):
    """The settings every fuzz test shares; the example counts are the tests' own."""
    return settings(max_examples=examples * FUZZ_SCALE, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example, HealthCheck.filter_too_much])


# ---------------------------------------------------------------------------
# Outcome checks
# ---------------------------------------------------------------------------


# Messages that mean an exception escaped from Python or numpy internals instead of being explained.
_INTERNAL = re.compile(
    r"Exceeds the limit|has no attribute|not subscriptable|unhashable|object is not iterable|"
    r"unsupported operand|Traceback|can't convert|could not broadcast|invalid literal"
)


def assert_clear_error(error: ValueError) -> str:
    message = str(error)
    # stdlib subclasses (json.JSONDecodeError, UnicodeDecodeError) mean a parser error was not explained
    assert type(error) is ValueError or type(error).__module__.startswith("motionstream_core"), (type(error), message)
    assert 10 <= len(message) <= 1000 and "\n" not in message, repr(message)
    # a third-party message may follow our own explanation of what could not be read ("cannot read x.pt: ...")
    explained = re.match(r"cannot read \S", message) is not None
    assert explained or not _INTERNAL.search(message), message
    return message


def assert_valid(tracks: TrackSet) -> None:
    assert isinstance(tracks, TrackSet)
    frames, count = tracks.num_frames, tracks.num_tracks
    assert frames >= 1 and count >= 1
    assert tracks.points.dtype == torch.float32 and tuple(tracks.points.shape) == (frames, count, 2)
    assert bool(torch.isfinite(tracks.points).all())
    assert tracks.visibility.dtype == torch.bool and tuple(tracks.visibility.shape) == (frames, count)
    assert isinstance(tracks.width, int) and 1 <= tracks.width <= MAX_FRAME_SIZE
    assert isinstance(tracks.height, int) and 1 <= tracks.height <= MAX_FRAME_SIZE
    assert isinstance(tracks.fps, float) and 0 < tracks.fps <= MAX_FPS
    size = torch.tensor([tracks.width, tracks.height], dtype=torch.float32)
    margin = OUT_OF_FRAME_MARGIN * size + 1e-3 * size
    assert bool(((tracks.points >= -margin) & (tracks.points <= size + margin)).all())
    ids = tracks.track_ids
    assert ids.dtype == torch.int64 and len(set(ids.tolist())) == count
    assert bool(((ids >= 0) & (ids <= MAX_TRACK_ID)).all())
    assert tracks.static.dtype == torch.bool and tuple(tracks.static.shape) == (count,)


def outcome(call, *, invalid: bool = False, valid: bool = False, names: str | None = None):
    """Run ``call``: a ValueError naming the problem, or a valid TrackSet.

    ``invalid``: the input is invalid by construction and must be refused; ``valid``: it is valid by
    construction and must be read. ``names`` is a regular expression the error message must match.
    Returns the TrackSet, or None.
    """
    with time_limit(CASE_SECONDS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = call()
        except ValueError as error:
            message = assert_clear_error(error)
            assert not valid, f"valid input was refused: {message}"
            if names is not None:
                assert re.search(names, message), f"{message!r} does not name {names!r}"
            return None
        except FileNotFoundError as error:  # only for paths that do not exist, never raised here
            raise AssertionError(f"unexpected FileNotFoundError: {error}") from error
    assert not invalid, "invalid input was accepted"
    assert_valid(result)
    return result


# ---------------------------------------------------------------------------
# Strategies: text, JSON documents with one poisoned field, TRACKS dicts, array files
# ---------------------------------------------------------------------------

HUGE_DIGITS = "9" * 5000
BAD_NUMBER_TOKENS = [HUGE_DIGITS, "-" + HUGE_DIGITS, "1e999", "-1e999", "NaN", "Infinity", "-Infinity",
                     "true", '"7"', "[]", "{}", "[1e400]", "null"]
BAD_FLAG_TOKENS = ["0.3", "1", "0", "-1", "NaN", '"true"', "null", HUGE_DIGITS, "[]"]

HOSTILE_TEXT = [
    "", " ", "null", "9", "[1]", '"x"', "{", "}", "[", "[]", "{}", "[[]]", "[{}]", "'", "\ud800", "\x00",
    "[" * 60_000, "[" * 60_000 + "]" * 60_000, "{" * 30_000, '{"a":' * 30_000, HUGE_DIGITS, "-" + HUGE_DIGITS,
    "1e999999", "NaN", "[NaN]", "[Infinity]", '{"format": "motionstream-tracks", "version": 1}',
    "[{'x': 1, 'y': 2}]", "[{'x': NaN, 'y': 2}]", '[{"x": 1e400, "y": 2}]', '[{"x": ' + HUGE_DIGITS + ', "y": 1}]',
    '[{"x": true, "y": 1}]', '[[{"x": 1, "y": 2}], [{"x": 3, "y": 4}]]', '[[[{"x": 1, "y": 2}]]]',
    '[[[{"x": 1, "y": 2}]], [[{"x": 1, "y": 2}]]]', "\ufeff[]", '{"tracks": [' + "1," * 20_000 + "1]}",
]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["x", "y", "t", "id", "tracks", "keyframes", "format", "version", "width", "height",
                         "fps", "duration", "static", "visible"]) | st.text(max_size=4), children, max_size=5),
    max_leaves=25,
)

text_sources = (
    st.sampled_from(HOSTILE_TEXT)
    | st.text(max_size=300)
    | st.binary(max_size=200)
    | json_values.map(lambda value: json.dumps(value))
)


@st.composite
def widget_documents(draw):
    """A valid widget document (every check passes) as a dict."""
    num_tracks = draw(st.integers(1, 4))
    tracks, ids = [], draw(st.lists(st.integers(0, MAX_TRACK_ID), min_size=num_tracks, max_size=num_tracks, unique=True))
    for track_id in ids:
        static = draw(st.booleans())
        times = sorted(draw(st.lists(st.integers(0, 40), min_size=1, max_size=4, unique=True)))
        position = (draw(st.floats(-0.9, 1.9)), draw(st.floats(-0.9, 1.9)))
        keyframes = []
        for step in times:
            x, y = position if static else (draw(st.floats(-0.9, 1.9)), draw(st.floats(-0.9, 1.9)))
            keyframe = {"t": step / 8, "x": x, "y": y}
            if draw(st.booleans()):
                keyframe["visible"] = draw(st.booleans())
            keyframes.append(keyframe)
        track = {"id": track_id, "keyframes": keyframes}
        if static or draw(st.booleans()):
            track["static"] = static
        tracks.append(track)
    document = {"format": "motionstream-tracks", "version": 1, "width": draw(st.integers(1, 4096)),
                "height": draw(st.integers(1, 4096)), "tracks": tracks}
    if draw(st.booleans()):
        document["fps"] = draw(st.sampled_from([8, 12.5, 16, 24, 30]))
    if draw(st.booleans()):
        document["duration"] = draw(st.floats(0, 8))
    return document


def _number_fields(document):
    """(path, field name, kind) of every value a poisoned token may replace."""
    fields = [(("width",), "width", "number"), (("height",), "height", "number"), (("version",), "version", "number")]
    for key in ("fps", "duration"):
        if key in document:
            fields.append(((key,), key, "number"))
    for index, track in enumerate(document["tracks"]):
        fields.append((("tracks", index, "id"), "id", "number"))
        if "static" in track:
            fields.append((("tracks", index, "static"), "static", "flag"))
        for number, keyframe in enumerate(track["keyframes"]):
            for key in ("t", "x", "y"):
                fields.append((("tracks", index, "keyframes", number, key), key, "number"))
            if "visible" in keyframe:
                fields.append((("tracks", index, "keyframes", number, "visible"), "visible", "flag"))
    return fields


def _poison(document, path, token):
    """The document as JSON text with the value at ``path`` replaced by the raw text ``token``."""
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "\x00POISON\x00"
    return json.dumps(document).replace(json.dumps("\x00POISON\x00"), token)


# What a poisoned field's error names, per field (the widget parser's own wording).
_FIELD_NAMES = {"width": "width", "height": "height", "version": "version", "fps": "fps", "duration": "duration",
                "id": "id of track", "static": "'static' of track", "t": "'t' of keyframe", "x": "'x' of keyframe",
                "y": "'y' of keyframe", "visible": "'visible' of keyframe"}


@st.composite
def poisoned_widget_text(draw):
    """(JSON text with exactly one invalid value, the field it is in)."""
    document = draw(widget_documents())
    path, field, kind = draw(st.sampled_from(_number_fields(document)))
    tokens = BAD_FLAG_TOKENS if kind == "flag" else BAD_NUMBER_TOKENS
    if field == "duration":
        tokens = [token for token in tokens if token != "null"]  # null duration means "the last keyframe"
    if field == "version":
        tokens = [token for token in tokens if token not in ("1e999", "-1e999", "[1e400]")] + ["3", "1.5"]
    return _poison(document, path, draw(st.sampled_from(tokens))), field


@st.composite
def poisoned_point_lists(draw):
    """(point-list JSON text with one invalid x or y, its error's name for the point)."""
    tracks = draw(st.lists(st.lists(st.fixed_dictionaries({"x": st.floats(0, 60), "y": st.floats(0, 60)}),
                                    min_size=1, max_size=5), min_size=1, max_size=3))
    track = draw(st.integers(0, len(tracks) - 1))
    point = draw(st.integers(0, len(tracks[track]) - 1))
    key = draw(st.sampled_from(["x", "y"]))
    token = draw(st.sampled_from([t for t in BAD_NUMBER_TOKENS if t != "[1e400]"]))
    tracks[track][point][key] = "\x00POISON\x00"
    source = tracks if len(tracks) > 1 or draw(st.booleans()) else tracks[0]
    return json.dumps(source).replace(json.dumps("\x00POISON\x00"), token), f"{key} of point {point} of track {track}"


# Arrays: assorted containers and dtypes, with flags marking what makes them invalid.

NUMPY_DTYPES = ["float32", "float64", "float16", "int64", "int32", "uint8", "uint16", "uint64", ">f8", "bool",
                "complex64", "longdouble"]
TORCH_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.uint64,
                torch.bool, torch.complex64]
VISIBILITY_VALUES = [0.0, 1.0, 0.3, -1.0, 2.0, float("nan"), float("inf")]


@st.composite
def coordinate_arrays(draw, frames, count):
    """(array-like [frames, count, 2], invalid?) in a random container and dtype; values lie in any
    frame of at least 84 x 84 pixels, so only the dtype or a non-finite value makes them invalid."""
    values = np.array(draw(st.lists(st.floats(-20, 84, allow_nan=False), min_size=frames * count * 2,
                                    max_size=frames * count * 2)), dtype=np.float64).reshape(frames, count, 2)
    if draw(st.integers(0, 5)) == 0:  # a non-finite coordinate
        values[draw(st.integers(0, frames - 1)), draw(st.integers(0, count - 1)), draw(st.integers(0, 1))] = \
            draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    container = draw(st.sampled_from(["numpy", "torch", "list"]))
    if container == "torch":
        dtype = draw(st.sampled_from(TORCH_DTYPES))
        if not (dtype.is_floating_point or dtype.is_complex):
            values = np.nan_to_num(np.abs(values), nan=0.0, posinf=0.0, neginf=0.0).round()
        array = torch.from_numpy(values).to(dtype)
        invalid = dtype in (torch.bool, torch.complex64) or not bool(torch.isfinite(array.to(torch.complex128)).all())
        return array, invalid
    dtype = np.dtype(draw(st.sampled_from(NUMPY_DTYPES)))
    if dtype.kind in "biu":
        values = np.nan_to_num(np.abs(values), nan=0.0, posinf=0.0, neginf=0.0).round()
    array = values.astype(dtype)
    return (array.tolist() if container == "list" else array), _array_invalid(array)


def _array_invalid(array: np.ndarray) -> bool:
    return array.dtype.kind in "bc" or not np.isfinite(array.astype(np.complex128)).all()


@st.composite
def visibility_arrays(draw, frames, count):
    """(visibility [frames, count] or None, invalid?) in a random container and dtype."""
    if draw(st.integers(0, 4)) == 0:
        return None, False
    choices = VISIBILITY_VALUES if draw(st.booleans()) else [0.0, 1.0]
    values = np.array(draw(st.lists(st.sampled_from(choices), min_size=frames * count, max_size=frames * count)),
                      dtype=np.float64).reshape(frames, count)
    kind = draw(st.sampled_from(["bool", "float32", "float64", "uint8", "int64", "torch-float", "torch-bool", "list"]))
    if kind in ("bool", "torch-bool"):
        values = values == 1
    elif kind in ("uint8", "int64"):
        values = np.nan_to_num(np.abs(values), nan=3, posinf=3).round()
    array = np.asarray(values).astype({"bool": bool, "torch-bool": bool, "float32": np.float32, "uint8": np.uint8,
                                       "int64": np.int64}.get(kind, np.float64))
    invalid = bool(((array != 0) & (array != 1)).any())
    if kind.startswith("torch"):
        return torch.from_numpy(array), invalid
    return (array.tolist() if kind == "list" else array), invalid


def _core_points_invalid(points, visibility) -> bool:
    """Core TRACKS coordinates that no reader may accept: a wrong dtype, an infinity, or NaN on a visible point
    (NaN on a point that is not visible means absent: unspecified there)."""
    if isinstance(points, torch.Tensor):
        if points.dtype in (torch.bool, torch.complex64):
            return True
        values = points.to(torch.float64).numpy()
    else:
        array = np.asarray(points)
        if array.dtype.kind in "bc":
            return True
        values = array.astype(np.float64)
    if np.isinf(values).any():
        return True
    missing = np.isnan(values).any(axis=-1)
    if not missing.any():
        return False
    if visibility is None:
        return True
    hidden = np.broadcast_to(np.asarray(visibility, dtype=np.float64) == 0, missing.shape)
    return bool((missing & ~hidden).any())


@st.composite
def core_track_dicts(draw):
    """(TRACKS dict, invalid by construction?, valid by construction?, the input visibility as bool or None)."""
    frames, count = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    points, _ = draw(coordinate_arrays(frames, count))
    visibility, bad_visibility = draw(visibility_arrays(frames, count))
    invalid = bad_visibility or _core_points_invalid(points, visibility)
    core = {"track_path": points}
    if visibility is not None:
        core["track_visibility"] = visibility
    meta_kind = draw(st.integers(0, 3))
    if meta_kind == 1:
        core["motionstream"] = {"width": draw(st.integers(-2, 200) | json_scalars),
                                "height": draw(st.integers(-2, 200) | json_scalars),
                                "fps": draw(st.floats(-1, 2000) | json_scalars)}
    elif meta_kind == 2:
        core["motionstream"] = draw(json_values)
    if draw(st.integers(0, 6)) == 0:  # a shape mistake
        core["track_path"] = np.zeros(draw(st.sampled_from([(frames, count), (frames, count, 3), (0, count, 2),
                                                             (frames, 0, 2), (1, frames, count, 2)])))
        invalid = True
    expected = None
    if visibility is not None and not invalid:
        expected = np.asarray(visibility, dtype=np.float64) != 0
    return core, invalid, not invalid and meta_kind in (0, 3), expected


# Files: valid or hostile .npy/.npz/.pt bytes.


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    npy_format.write_array(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


_BOMB: list[bytes] = []


def zip_bomb() -> bytes:
    """~1 MB that inflates to 1 GB: pred_tracks declared [1, 8000, 8000, 2] float64 with every byte present."""
    if not _BOMB:
        _BOMB.append(zip_bytes({"pred_tracks.npy": (npy_header("<f8", (1, 8000, 8000, 2)), 8000 * 8000 * 2 * 8)}))
    return _BOMB[0]


BAD_FPS = [0, -3, np.nan, 1e30, [1.0, 2.0], True]


@st.composite
def array_payloads(draw):
    """(suffix, file bytes, invalid by construction?) for a CoTracker-style file read at 64 x 48 pixels."""
    frames, count = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    tracks, _ = draw(coordinate_arrays(frames, count))
    visibility, _ = draw(visibility_arrays(frames, count))
    if isinstance(tracks, torch.Tensor):
        tracks = tracks.float() if tracks.dtype == torch.bfloat16 else tracks
    tracks = np.asarray(tracks)
    visibility = None if visibility is None else np.asarray(visibility)
    if draw(st.booleans()):  # the optional batch axis
        tracks = tracks[None]
        visibility = None if visibility is None else visibility[None]
    suffix = draw(st.sampled_from([".npy", ".npz", ".pt"]))
    if suffix == ".npy":
        if visibility is not None and tracks.dtype.kind == "f" and draw(st.booleans()):
            tracks = np.concatenate([tracks, visibility[..., None].astype(tracks.dtype)], axis=-1)  # packed channel
            packed = tracks[..., 2]
            return suffix, npy_bytes(tracks), _array_invalid(tracks) or bool(((packed != 0) & (packed != 1)).any())
        return suffix, npy_bytes(tracks), _array_invalid(tracks)
    invalid = _array_invalid(tracks) or _visibility_invalid(visibility)
    if suffix == ".npz":
        arrays = {"pred_tracks": tracks}
        if visibility is not None:
            arrays["pred_visibility"] = visibility
        for key in draw(st.sets(st.sampled_from(["width", "height", "fps", "extra"]), max_size=3)):
            value = draw(st.sampled_from([64, 48.0, 24.0] + BAD_FPS))
            arrays[key] = np.asarray(value)
            invalid |= key == "fps" and any(value is bad for bad in BAD_FPS)
        buffer = io.BytesIO()
        (np.savez_compressed if draw(st.booleans()) else np.savez)(buffer, **arrays)
        return suffix, buffer.getvalue(), invalid
    native = tracks.astype(np.float64) if tracks.dtype == np.longdouble else tracks
    content = {"pred_tracks": torch.from_numpy(np.ascontiguousarray(native.astype(native.dtype.newbyteorder("="))))}
    if visibility is not None:
        content["pred_visibility"] = torch.from_numpy(np.ascontiguousarray(visibility))
    layout = draw(st.sampled_from(["dict", "tuple", "tensor", "sparse", "meta"]))
    if layout == "tuple":
        content = tuple(content.values())
    elif layout == "tensor":
        content, invalid = content["pred_tracks"], _array_invalid(tracks)
    elif layout == "sparse":
        content["pred_tracks"], invalid = torch.ones(content["pred_tracks"].shape).to_sparse(), True
    elif layout == "meta":
        content["pred_tracks"], invalid = torch.empty_like(content["pred_tracks"], device="meta"), True
    buffer = io.BytesIO()
    torch.save(content, buffer)
    return suffix, buffer.getvalue(), invalid


def _visibility_invalid(visibility) -> bool:
    return visibility is not None and bool(((visibility != 0) & (visibility != 1)).any())


@st.composite
def hostile_payloads(draw):
    """(suffix, bytes): a valid payload damaged, a hostile header, or a zip bomb."""
    kind = draw(st.sampled_from(["truncate", "flip", "append", "header", "zip-member", "bomb", "random"]))
    suffix, data, _ = draw(array_payloads())
    if kind == "truncate":
        return suffix, data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "flip":
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] = draw(st.integers(0, 255))
        return suffix, bytes(data)
    if kind == "append":
        return suffix, data + draw(st.binary(min_size=1, max_size=64))
    shape = tuple(draw(st.lists(st.integers(0, 2**40) | st.integers(0, 12), min_size=0, max_size=5)))
    descr = draw(st.sampled_from(["<f8", "<f4", ">f8", "|b1", "<i8", "|u1", "<u8", "<c8", "|O", "<U3", "|V8", "<m8",
                                  [("x", "<f4"), ("y", "<f4")]]))
    fortran_order = draw(st.booleans())
    if kind == "header":
        return ".npy", npy_header(descr, shape, fortran_order) + bytes(draw(st.integers(0, 256)))
    if kind == "zip-member":
        members = {draw(st.sampled_from(["pred_tracks.npy", "tracks.npy", "pred_visibility.npy", "width.npy"])):
                   (npy_header(descr, shape, fortran_order), draw(st.integers(0, 4096)))}
        if draw(st.booleans()):
            members["pred_tracks.npy"] = (npy_bytes(np.ones((1, 2, 2, 2))), 0)
        return draw(st.sampled_from([".npz", ".pt", ".npy"])), zip_bytes(members)
    if kind == "bomb":
        return draw(st.sampled_from([".npz", ".npy", ".pt"])), zip_bomb()
    return draw(st.sampled_from([".npy", ".npz", ".pt", ".pth"])), draw(st.binary(max_size=300))


# ---------------------------------------------------------------------------
# The fuzz tests
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="track-fuzz-") as folder:
        yield Path(folder)


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


options_strategy = st.builds(
    ReadOptions,
    width=st.none() | st.integers(-4, 20_000) | st.sampled_from([64, 640]),
    height=st.none() | st.integers(-4, 20_000) | st.sampled_from([48, 480]),
    fps=st.none() | st.floats(-1, 2000) | st.sampled_from([16.0, 24.0]),
)

FORMATS = list_track_formats()


@pytest.mark.parametrize("entry", FORMATS, ids=[entry.name for entry in FORMATS])
@fuzz(250)
@given(data=st.data())
def test_every_registered_format_explains_or_reads(entry, data, scratch):
    """Each registered format, fed what its kind reads: text, objects, or hostile files."""
    options = data.draw(options_strategy)
    if entry.reads == "text":
        source = data.draw(text_sources | poisoned_widget_text().map(lambda pair: pair[0])
                           | poisoned_point_lists().map(lambda pair: pair[0]))
        outcome(lambda: entry.read(source, options))
    elif entry.reads == "object":
        core = data.draw(core_track_dicts())[0]
        source = data.draw(st.just(core) | json_values)
        outcome(lambda: entry.read(source, options))
    else:
        suffix, payload = data.draw(array_payloads().map(lambda triple: triple[:2]) | hostile_payloads())
        path = _write(scratch, f"{entry.name}{suffix}", payload)
        visibility_path = _write(scratch, f"{entry.name}_visibility.npy",
                                 npy_bytes(np.ones(data.draw(st.sampled_from([(1, 3, 2), (3, 2), (2,)])), dtype=bool)))
        options = ReadOptions(options.width, options.height, options.fps,
                              visibility_path=data.draw(st.sampled_from([None, visibility_path])))
        outcome(lambda: entry.read(path, options))
        if suffix in {s for e in FORMATS for s in e.suffixes}:
            outcome(lambda: load_tracks_file(path, options=options))


@fuzz(500)
@given(case=poisoned_widget_text())
def test_a_poisoned_widget_field_is_refused_and_named(case, pack):
    """One invalid value in an otherwise valid document: refused, naming the field (library and node)."""
    text, field = case
    names = re.escape(_FIELD_NAMES[field]) + ("|unsupported widget JSON version" if field == "version" else "")
    outcome(lambda: read_widget(text), invalid=True, names=names)
    outcome(lambda: build_editor(pack, text), invalid=True, names=names)


def read_widget(text):
    from motionstream_core import tracks_from_widget_json

    return tracks_from_widget_json(text)


def build_editor(pack, text):
    (core,) = pack.NODE_CLASS_MAPPINGS["MotionStreamTrackEditor"]().build(text)
    return TrackSet.from_comfy_tracks(core)


@fuzz(300)
@given(document=widget_documents())
def test_valid_widget_documents_are_read_by_library_and_node(document, pack):
    text = json.dumps(document)
    tracks = outcome(lambda: read_widget(text))
    assert tracks is not None, "a valid document was refused"
    assert sorted(tracks.track_ids.tolist()) == sorted(track["id"] for track in document["tracks"])
    from_node = outcome(lambda: build_editor(pack, text))
    assert torch.equal(from_node.points, tracks.points) and torch.equal(from_node.visibility, tracks.visibility)


@fuzz(500)
@given(text=text_sources)
def test_the_track_editor_node_explains_any_text(text, pack):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    outcome(lambda: build_editor(pack, text))


@fuzz(300)
@given(poisoned_point_lists(), st.sampled_from(["kjnodes_spline_editor", "ati_json"]))
def test_a_poisoned_point_is_refused_and_named(case, name):
    text, where = case
    entry = next(entry for entry in FORMATS if entry.name == name)
    outcome(lambda: entry.read(text, ReadOptions(width=64, height=64)), invalid=True, names=re.escape(where))


@fuzz(600)
@given(core_track_dicts(), st.integers(84, 400), st.integers(84, 400))
def test_core_tracks_dicts_follow_the_one_rule(case, width, height):
    core, invalid, valid, expected_visibility = case
    tracks = outcome(lambda: TrackSet.from_comfy_tracks(core, width=width, height=height), invalid=invalid, valid=valid)
    if tracks is not None and expected_visibility is not None:
        assert tracks.visibility.tolist() == expected_visibility.tolist()


@fuzz(600)
@given(case=array_payloads())
def test_array_files_follow_the_one_rule(case, scratch):
    suffix, payload, invalid = case
    path = _write(scratch, f"tracks{suffix}", payload)
    outcome(lambda: load_cotracker_tracks(path, width=64, height=48), invalid=invalid, valid=not invalid)


@fuzz(700)
@given(case=hostile_payloads())
def test_hostile_array_files_are_explained_in_bounded_time(case, scratch):
    suffix, payload = case
    path = _write(scratch, f"hostile{suffix}", payload)
    outcome(lambda: load_cotracker_tracks(path, width=64, height=48))
    outcome(lambda: load_tracks_file(path, options=ReadOptions(width=64, height=48)))
    if suffix == ".npy":
        visibility = _write(scratch, "visibility.npy", npy_bytes(np.ones((1, 2, 2), dtype=bool)))
        outcome(lambda: load_wan_move_tracks(path, visibility, width=64, height=48))
        outcome(lambda: load_wan_move_tracks(_write(scratch, "ok_tracks.npy", npy_bytes(np.ones((1, 2, 2, 2)))), path,
                                             width=64, height=48))
