"""Importers and exporters: every format, malformed input, and fuzzing for clean errors."""

import datetime
import io
import json
import math
import pickle
import re
import time
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy_format

from motionstream_core.motion.formats import (
    WIDGET_FORMAT,
    load_cotracker_tracks,
    load_wan_move_tracks,
    save_wan_move_tracks,
    tracks_from_ati_json,
    tracks_from_comfy,
    tracks_from_cotracker,
    tracks_from_spline_editor,
    tracks_from_wan_move,
    tracks_from_widget_json,
    tracks_to_wan_move,
    tracks_to_widget_dict,
    tracks_to_widget_json,
)
from motionstream_core.motion.tracks import MAX_TRACKS, TrackSet

from hostile_files import npy_header, zip_bytes

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EXAMPLE = {
    "format": "motionstream-tracks",
    "version": 1,
    "width": 832,
    "height": 480,
    "fps": 4,
    "duration": 2.0,
    "tracks": [
        {"id": 3, "keyframes": [
            {"t": 0.25, "x": 0.25, "y": 0.5},
            {"t": 0.75, "x": 0.75, "y": 0.5, "visible": False},
            {"t": 1.25, "x": 0.5, "y": 1.0},
        ]},
        {"id": 7, "static": True, "keyframes": [{"t": 0.5, "x": 0.8, "y": 0.2}]},
    ],
}


def _document(**changes):
    return json.loads(json.dumps(EXAMPLE)) | changes


def _random_tracks(frames=7, num_tracks=4, static=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(frames, num_tracks, 2, generator=generator) * torch.tensor([640.0, 360.0])
    visibility = torch.rand(frames, num_tracks, generator=generator) > 0.25
    static = static or [False] * num_tracks
    for column, is_static in enumerate(static):
        if is_static:
            points[:, column] = points[0, column]
    # Every point known, as a tracker gives them: the hidden ones are occluded.
    return TrackSet(points, visibility, 640, 360, 12.0, track_ids=list(range(100, 100 + num_tracks)), static=static,
                    specified=torch.ones_like(visibility))


def _assert_same(a, b, atol=1e-4):
    assert (a.width, a.height, a.fps) == (b.width, b.height, b.fps)
    # Positions of unspecified points carry no meaning (the widget document does not keep them).
    assert torch.equal(a.specified, b.specified)
    torch.testing.assert_close(a.points[a.specified], b.points[b.specified], atol=atol, rtol=0)
    assert torch.equal(a.visibility, b.visibility)
    assert torch.equal(a.track_ids, b.track_ids)
    assert torch.equal(a.static, b.static)


# ---------------------------------------------------------------------------
# Widget JSON
# ---------------------------------------------------------------------------


def test_widget_document_is_sampled_per_frame():
    tracks = tracks_from_widget_json(json.dumps(EXAMPLE))
    assert (tracks.width, tracks.height, tracks.fps, tracks.num_frames) == (832, 480, 4.0, 9)
    assert tracks.track_ids.tolist() == [3, 7] and tracks.static.tolist() == [False, True]
    moving = tracks.visibility[:, 0].tolist()
    # Invisible before the first keyframe (t=0.25), hidden from the t=0.75 keyframe to the next,
    # visible again at t=1.25, and gone after the last keyframe.
    assert moving == [False, True, True, False, False, True, False, False, False]
    torch.testing.assert_close(tracks.points[2, 0], torch.tensor([0.5 * 832, 0.5 * 480]))
    torch.testing.assert_close(tracks.points[4, 0], torch.tensor([0.625 * 832, 0.75 * 480]))
    # The static anchor appears at its keyframe and holds until the end.
    assert tracks.visibility[:, 1].tolist() == [False, False] + [True] * 7
    assert bool((tracks.points[2:, 1] == torch.tensor([0.8 * 832, 0.2 * 480])).all())


def test_widget_duration_defaults_to_the_last_keyframe_and_fps_to_16():
    document = _document()
    del document["duration"], document["fps"]
    tracks = tracks_from_widget_json(document)
    assert tracks.fps == 16.0 and tracks.num_frames == 21  # last keyframe at 1.25 s


def test_widget_keyframes_may_come_in_any_order():
    document = _document()
    document["tracks"][0]["keyframes"].reverse()
    _assert_same(tracks_from_widget_json(document), tracks_from_widget_json(EXAMPLE))


def test_widget_round_trip_model_widget_model():
    tracks = _random_tracks(static=[False, True, False, True])
    document = tracks_to_widget_json(tracks)
    assert json.loads(document)["format"] == WIDGET_FORMAT
    _assert_same(tracks_from_widget_json(document), tracks)


def test_widget_round_trip_through_core_tracks():
    original = tracks_from_widget_json(EXAMPLE)
    comfy = original.to_comfy_tracks()
    through_core = tracks_from_comfy(comfy)
    _assert_same(through_core, original)
    again = tracks_from_widget_json(tracks_to_widget_json(through_core))
    _assert_same(again, original)
    # The exported document describes the same clip as the hand-written one.
    assert tracks_to_widget_dict(again)["duration"] == EXAMPLE["duration"]


def test_static_tracks_export_only_visibility_changes():
    tracks = _random_tracks(frames=30, num_tracks=2, static=[True, False])
    document = tracks_to_widget_dict(tracks)
    static_keyframes = document["tracks"][0]["keyframes"]
    changes = int((tracks.visibility[1:, 0] != tracks.visibility[:-1, 0]).sum())
    assert len(static_keyframes) == changes + 1
    assert len(document["tracks"][1]["keyframes"]) == 30


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"format": "something-else"}, "not a"),
        ({"version": 3}, "unsupported widget JSON version 3"),
        ({"version": "1"}, "version must be an integer"),
        ({"width": None}, "width"),
        ({"height": 0}, "height"),
        ({"width": 832.5}, "width"),
        ({"fps": -1}, "fps"),
        ({"fps": True}, "fps"),
        ({"duration": -2}, "duration"),
        ({"duration": 1e9}, "too many frames"),
        ({"tracks": []}, "no tracks"),
        ({"tracks": {}}, "must be a list"),
        ({"tracks": [5]}, "track 0 must be an object"),
        ({"tracks": [{"keyframes": [{"t": 0, "x": 0, "y": 0}]}]}, "id of track 0"),
        ({"tracks": [{"id": -4, "keyframes": [{"t": 0, "x": 0, "y": 0}]}]}, "id of track 0"),
        ({"tracks": [{"id": 1, "keyframes": []}]}, "keyframes"),
        ({"tracks": [{"id": 1, "static": "yes", "keyframes": [{"t": 0, "x": 0, "y": 0}]}]}, "static"),
        ({"tracks": [{"id": 1, "keyframes": [{"t": 0, "x": "0", "y": 0}]}]}, "'x' of keyframe 0"),
        ({"tracks": [{"id": 1, "keyframes": [{"t": -1, "x": 0, "y": 0}]}]}, "negative"),
        ({"tracks": [{"id": 1, "keyframes": [{"t": 0, "x": 0, "y": 0, "visible": 1}]}]}, "visible"),
        ({"tracks": [{"id": 1, "keyframes": [{"t": 0, "x": 2.5, "y": 0}]}]}, "far outside"),
        ({"tracks": [{"id": 1, "keyframes": [{"t": 0, "x": 0, "y": 0}, {"t": 0, "x": 1, "y": 0}]}]},
         "same time"),
        ({"tracks": [{"id": 1, "keyframes": [{"t": 0, "x": 0, "y": 0}]},
                     {"id": 1, "keyframes": [{"t": 0, "x": 0, "y": 0}]}]}, "unique"),
        ({"tracks": [{"id": 1, "static": True,
                      "keyframes": [{"t": 0, "x": 0, "y": 0}, {"t": 1, "x": 1, "y": 0}]}]}, "must not move"),
    ],
)
def test_malformed_widget_documents(changes, message):
    with pytest.raises(ValueError, match=message):
        tracks_from_widget_json(_document(**changes))


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("{", "not valid JSON"),
        ("[1, 2]", "must be an object"),
        ('{"format": "motionstream-tracks", "version": 1, "width": NaN}', "width"),
        (b"\xff\xfe", "UTF-8"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_malformed_widget_text(text, message):
    with pytest.raises(ValueError, match=message):
        tracks_from_widget_json(text)


def test_widget_nan_coordinates_are_rejected():
    text = json.dumps(_document()).replace('"x": 0.25', '"x": NaN')
    with pytest.raises(ValueError, match="finite"):
        tracks_from_widget_json(text)


def test_widget_too_many_tracks():
    track = {"id": 0, "keyframes": [{"t": 0, "x": 0.5, "y": 0.5}]}
    with pytest.raises(ValueError, match="too many tracks"):
        tracks_from_widget_json(_document(tracks=[track] * (MAX_TRACKS + 1)))


# ---------------------------------------------------------------------------
# KJNodes SplineEditor and ATI point lists
# ---------------------------------------------------------------------------


def test_spline_editor_single_spline_with_python_quotes():
    coord_str = str([{"x": 10, "y": 20}, {"x": 12, "y": 22}, {"x": 14, "y": 24}])  # single quotes
    tracks = tracks_from_spline_editor(coord_str, width=512, height=512)
    assert (tracks.num_frames, tracks.num_tracks, tracks.fps) == (3, 1, 16.0)
    assert tracks.points[:, 0].tolist() == [[10, 20], [12, 22], [14, 24]]
    assert bool(tracks.visibility.all())


def test_spline_editor_several_splines_of_different_length():
    coord_str = json.dumps([[{"x": 1, "y": 1}, {"x": 2, "y": 2}, {"x": 3, "y": 3}], [{"x": 9.5, "y": 8}]])
    tracks = tracks_from_spline_editor(coord_str, width=64, height=64, fps=8.0)
    assert tracks.track_ids.tolist() == [0, 1]
    # The short spline ends: its later frames are occluded, not frozen in place.
    assert tracks.visibility.tolist() == [[True, True], [True, False], [True, False]]


@pytest.mark.parametrize(
    "coord_str, message",
    [
        ("[]", "no tracks"),
        ("[[]]", "no points"),
        ('{"x": 1, "y": 2}', "must be a list"),
        ('[{"x": 1}]', "y of point 0"),
        ('[{"x": "1", "y": 2}]', "x of point 0"),
        ('[{"x": NaN, "y": 2}]', "finite"),
        ('[{"x": 1e400, "y": 2}]', "finite"),
        ('[{"x": 5000, "y": 2}]', "far outside"),
        ('[[[{"x": 1, "y": 2}]]]', "must be an object"),
        ("not json", "not valid JSON"),
    ],
)
def test_malformed_spline_editor_coordinates(coord_str, message):
    with pytest.raises(ValueError, match=message):
        tracks_from_spline_editor(coord_str, width=512, height=512)


def test_ati_json_uses_24_fps_and_accepts_a_batch_of_one():
    track = [{"x": 100 + i, "y": 200} for i in range(121)]
    tracks = tracks_from_ati_json(json.dumps([[track, track[:60]]]), width=832, height=480)
    assert (tracks.fps, tracks.num_frames, tracks.num_tracks) == (24.0, 121, 2)
    assert tracks.visibility[:60, 1].all() and not tracks.visibility[60:, 1].any()
    with pytest.raises(ValueError, match="batch of 2"):
        tracks_from_ati_json(json.dumps([[track], [track]]), width=832, height=480)


def test_ati_json_as_a_list_of_strings():
    strings = [json.dumps([{"x": 1, "y": 2}, {"x": 3, "y": 4}]), json.dumps([{"x": 5, "y": 6}])]
    tracks = tracks_from_ati_json(strings, width=16, height=16)
    assert tracks.num_tracks == 2 and tracks.points[1, 0].tolist() == [3, 4]


# ---------------------------------------------------------------------------
# CoTracker and Wan-Move files
# ---------------------------------------------------------------------------


def _cotracker_arrays(frames=6, num_tracks=5, seed=0):
    generator = np.random.default_rng(seed)
    tracks = (generator.random((1, frames, num_tracks, 2)) * [320, 240]).astype(np.float32)
    visibility = generator.random((1, frames, num_tracks)) > 0.3
    return tracks, visibility


def test_cotracker_npz_keeps_occluded_points_occluded(tmp_path):
    tracks, visibility = _cotracker_arrays()
    path = tmp_path / "result.npz"
    np.savez(path, pred_tracks=tracks, pred_visibility=visibility)
    loaded = load_cotracker_tracks(path, width=320, height=240, fps=30.0)
    np.testing.assert_array_equal(loaded.points.numpy(), tracks[0])
    np.testing.assert_array_equal(loaded.visibility.numpy(), visibility[0])
    assert (loaded.width, loaded.height, loaded.fps) == (320, 240, 30.0)


def test_cotracker_npz_may_record_the_video_size(tmp_path):
    tracks, visibility = _cotracker_arrays()
    path = tmp_path / "result.npz"
    np.savez(path, tracks=tracks[0], visibility=visibility[0].astype(np.float32), width=320, height=240)
    loaded = load_cotracker_tracks(path)
    assert (loaded.width, loaded.height) == (320, 240)
    np.testing.assert_array_equal(loaded.visibility.numpy(), visibility[0])
    np.savez(path, pred_tracks=tracks)
    with pytest.raises(ValueError, match="width and height"):
        load_cotracker_tracks(path)


def test_cotracker_pt_files(tmp_path):
    tracks, visibility = _cotracker_arrays()
    as_tuple, as_dict = tmp_path / "tuple.pt", tmp_path / "dict.pt"
    torch.save((torch.from_numpy(tracks), torch.from_numpy(visibility)), as_tuple)
    torch.save({"pred_tracks": torch.from_numpy(tracks), "pred_visibility": torch.from_numpy(visibility)}, as_dict)
    for path in (as_tuple, as_dict):
        loaded = load_cotracker_tracks(path, width=320, height=240)
        np.testing.assert_array_equal(loaded.visibility.numpy(), visibility[0])


def test_cotracker_pt_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        # Arbitrary pickled objects are exactly what weights_only loading must refuse.
        pickle.dump({"pred_tracks": datetime.date(2020, 1, 1)}, handle, protocol=2)
    with pytest.raises(ValueError, match="cannot read"):
        load_cotracker_tracks(path, width=8, height=8)


def test_cotracker_npy_with_visibility_channel_or_file(tmp_path):
    tracks, visibility = _cotracker_arrays()
    packed = tmp_path / "packed.npy"
    np.save(packed, np.concatenate([tracks, visibility[..., None].astype(np.float32)], axis=-1))
    loaded = load_cotracker_tracks(packed, width=320, height=240)
    np.testing.assert_array_equal(loaded.visibility.numpy(), visibility[0])
    tracks_only, visibility_only = tmp_path / "t.npy", tmp_path / "v.npy"
    np.save(tracks_only, tracks)
    np.save(visibility_only, visibility)
    loaded = load_cotracker_tracks(tracks_only, width=320, height=240, visibility_path=visibility_only)
    np.testing.assert_array_equal(loaded.visibility.numpy(), visibility[0])
    assert bool(load_cotracker_tracks(tracks_only, width=320, height=240).visibility.all())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.with_suffix(".txt").write_text("1 2"), "unsupported track file type"),
        (lambda p: p.write_bytes(b"not an archive"), "cannot read"),
        (lambda p: np.savez(p, other=np.zeros(3)), "none of the keys"),
        (lambda p: np.savez(p, pred_tracks=np.full((1, 2, 3, 2), np.nan)), "NaN"),
        (lambda p: np.savez(p, pred_tracks=np.zeros((2, 3))), "dimensions"),
        (lambda p: np.savez(p, pred_tracks=np.zeros((1, 2, 3, 2)), pred_visibility=np.ones((1, 3, 3))),
         "visibility has shape"),
        (lambda p: np.savez(p, pred_tracks=np.zeros((1, 2, 0, 2))), "no tracks"),
        (lambda p: np.savez(p, pred_tracks=np.zeros((1, 2, 3, 2), dtype=np.complex64)), "complex values"),
        (lambda p: np.savez(p, pred_tracks=np.full((3, 2, 3, 2), 5.0)), None),
    ],
)
def test_malformed_cotracker_files(tmp_path, make, message):
    path = tmp_path / "bad.npz"
    make(path)
    if not path.exists():
        path = path.with_suffix(".txt")
    if message is None:  # a batch of three: index 3 is out of range
        with pytest.raises(ValueError, match="batch index 3"):
            load_cotracker_tracks(path, width=8, height=8, batch_index=3)
        return
    with pytest.raises(ValueError, match=message):
        load_cotracker_tracks(path, width=8, height=8)


def test_missing_track_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_cotracker_tracks(tmp_path / "nothing.npz", width=8, height=8)


def test_cotracker_arrays_in_memory():
    tracks, visibility = _cotracker_arrays(frames=3, num_tracks=2)
    loaded = tracks_from_cotracker(torch.from_numpy(tracks).half(), torch.from_numpy(visibility).float(),
                                   width=320, height=240)
    np.testing.assert_array_equal(loaded.visibility.numpy(), visibility[0])
    with pytest.raises(ValueError, match="too many tracks"):
        tracks_from_cotracker(np.zeros((1, MAX_TRACKS + 1, 2)), width=8, height=8)


def test_wan_move_round_trip(tmp_path):
    original = _random_tracks(frames=9, num_tracks=3)
    save_wan_move_tracks(original, tmp_path / "a_tracks.npy", tmp_path / "a_visibility.npy")
    track, visibility = np.load(tmp_path / "a_tracks.npy"), np.load(tmp_path / "a_visibility.npy")
    assert track.shape == (1, 9, 3, 2) and visibility.shape == (1, 9, 3) and visibility.dtype == bool
    loaded = load_wan_move_tracks(tmp_path / "a_tracks.npy", tmp_path / "a_visibility.npy",
                                  width=640, height=360, fps=12.0)
    torch.testing.assert_close(loaded.points, original.points)
    assert torch.equal(loaded.visibility, original.visibility)


def test_wan_move_arrays_without_batch_axis_and_errors(tmp_path):
    track, visibility = tracks_to_wan_move(_random_tracks(frames=4, num_tracks=2))
    loaded = tracks_from_wan_move(track[0], visibility[0].astype(np.float32), width=640, height=360)
    assert loaded.fps == 16.0 and torch.equal(loaded.visibility, torch.from_numpy(visibility[0]))
    with pytest.raises(ValueError, match="visibility has shape"):
        tracks_from_wan_move(track, visibility[:, :3], width=640, height=360)
    with pytest.raises(ValueError, match="visibility array"):
        tracks_from_wan_move(track, None, width=640, height=360)
    with pytest.raises(ValueError, match=".npy"):
        load_wan_move_tracks(tmp_path / "x.npz", tmp_path / "y.npy", width=8, height=8)


# ---------------------------------------------------------------------------
# Fuzzing: anything malformed must end in a ValueError, never another exception
# ---------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
point = st.fixed_dictionaries({"x": json_scalars | st.floats(-600, 1200), "y": json_scalars | st.floats(-600, 1200)})
point_lists = st.lists(point, max_size=4) | st.lists(st.lists(point, max_size=4), max_size=3) | json_values
keyframe = st.fixed_dictionaries(
    {"t": st.floats(-1, 3) | json_scalars, "x": st.floats(-1.5, 2.5) | json_scalars,
     "y": st.floats(-1.5, 2.5) | json_scalars},
    optional={"visible": st.booleans() | json_scalars},
)
widget_track = st.fixed_dictionaries(
    {"id": st.integers(-2, 20) | json_scalars, "keyframes": st.lists(keyframe, max_size=4) | json_values},
    optional={"static": st.booleans() | json_scalars},
)
widget_document = st.fixed_dictionaries(
    {"format": st.just(WIDGET_FORMAT) | json_scalars, "version": st.just(1) | json_scalars,
     "width": st.integers(-5, 2000) | json_scalars, "height": st.integers(-5, 2000) | json_scalars,
     "tracks": st.lists(widget_track, max_size=4) | json_values},
    optional={"fps": st.floats(-1, 2000) | json_scalars, "duration": st.floats(-1, 1e6) | json_scalars},
)


def _only_value_errors(function, argument):
    try:
        result = function(argument)
    except ValueError:
        return
    assert isinstance(result, TrackSet)


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=60))
def test_garbage_text_only_raises_value_error(text):
    _only_value_errors(tracks_from_widget_json, text)
    _only_value_errors(lambda t: tracks_from_spline_editor(t, width=64, height=64), text)
    _only_value_errors(lambda t: tracks_from_ati_json(t, width=64, height=64), text)


@FUZZ
@given(json_values)
def test_random_json_only_raises_value_error(value):
    text = json.dumps(value)
    _only_value_errors(tracks_from_widget_json, text)
    _only_value_errors(lambda t: tracks_from_spline_editor(t, width=64, height=64), text)
    _only_value_errors(lambda t: tracks_from_ati_json(t, width=64, height=64), value)
    if isinstance(value, dict):
        _only_value_errors(tracks_from_widget_json, value)
        _only_value_errors(lambda v: tracks_from_comfy(v, width=64, height=64), value)


@FUZZ
@given(widget_document)
def test_fuzzed_widget_documents_only_raise_value_error(document):
    _only_value_errors(tracks_from_widget_json, json.dumps(document))


@FUZZ
@given(point_lists)
def test_fuzzed_point_lists_only_raise_value_error(value):
    _only_value_errors(lambda v: tracks_from_spline_editor(json.dumps(v), width=640, height=480), value)
    _only_value_errors(lambda v: tracks_from_ati_json(v, width=640, height=480), value)


@FUZZ
@given(st.dictionaries(
    st.sampled_from(["track_path", "track_visibility", "motionstream"]),
    json_values | st.builds(torch.randn, st.integers(0, 3), st.integers(0, 3), st.integers(1, 3)),
    max_size=3,
))
def test_fuzzed_core_dicts_only_raise_value_error(core):
    _only_value_errors(lambda v: tracks_from_comfy(v, width=64, height=64), core)


@FUZZ
@given(st.lists(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.booleans()), min_size=1, max_size=5),
                min_size=1, max_size=4),
       st.sampled_from([8.0, 12.5, 16.0, 24.0]))
def test_valid_widget_tracks_round_trip(rows, fps):
    frames = max(len(row) for row in rows)
    points = torch.zeros(frames, len(rows), 2)
    visibility = torch.zeros(frames, len(rows), dtype=torch.bool)
    for column, row in enumerate(rows):
        for index in range(frames):
            x, y, visible = row[min(index, len(row) - 1)]
            points[index, column] = torch.tensor([x * 300, y * 200])
            visibility[index, column] = visible
    tracks = TrackSet(points, visibility, 300, 200, fps, track_ids=[5 * c for c in range(len(rows))],
                      specified=torch.ones_like(visibility))
    _assert_same(tracks_from_widget_json(tracks_to_widget_json(tracks)), tracks)


def test_widget_documents_keep_unspecified_ends_and_write_gaps_as_occluded():
    visibility = torch.tensor([[False], [True], [False], [True], [False], [False]])
    specified = torch.tensor([[False], [True], [False], [True], [True], [False]])  # a gap at frame 2, hidden at 4
    points = torch.arange(12, dtype=torch.float32).reshape(6, 1, 2) * 10
    tracks = TrackSet(points, visibility, 300, 200, 8.0, specified=specified)
    document = tracks_to_widget_dict(tracks)
    assert [keyframe["t"] * 8.0 for keyframe in document["tracks"][0]["keyframes"]] == [1, 2, 3, 4]
    again = tracks_from_widget_json(json.dumps(document))
    assert again.visibility[:, 0].tolist() == visibility[:, 0].tolist()
    # Before the first and after the last keyframe: unspecified; a hidden stretch between them: occluded.
    assert again.specified[:, 0].tolist() == [False, True, True, True, True, False]
    assert again.occluded[:, 0].tolist() == [False, False, True, False, True, False]


# ---------------------------------------------------------------------------
# Hardening (issue #19): regression tests for each reproducer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("flag", [float("nan"), 0.3, -1.0, 0.7, 2.0])
def test_array_visibility_follows_the_same_rule_as_core_dicts(tmp_path, flag):
    # CoTracker used to threshold at 0.5 (0.3 and -1 invisible) while core dicts made them visible.
    tracks = np.ones((1, 3, 2, 2), dtype=np.float32)
    visibility = np.ones((1, 3, 2), dtype=np.float32)
    visibility[0, 1, 1] = flag
    message = r"visibility must be boolean or exactly 0/1, got .* at frame 1, track 1"
    with pytest.raises(ValueError, match=message):
        tracks_from_cotracker(tracks, visibility, width=8, height=8)
    with pytest.raises(ValueError, match=message):
        tracks_from_wan_move(tracks, visibility, width=8, height=8)
    with pytest.raises(ValueError, match=message):
        tracks_from_comfy({"track_path": tracks[0], "track_visibility": visibility[0]}, width=8, height=8)
    np.savez(tmp_path / "r.npz", pred_tracks=tracks, pred_visibility=visibility)
    np.save(tmp_path / "packed.npy", np.concatenate([tracks, visibility[..., None]], axis=-1))
    np.save(tmp_path / "t.npy", tracks)
    np.save(tmp_path / "v.npy", visibility)
    torch.save({"pred_tracks": torch.from_numpy(tracks), "pred_visibility": torch.from_numpy(visibility)}, tmp_path / "r.pt")
    for load in (lambda: load_cotracker_tracks(tmp_path / "r.npz", width=8, height=8),
                 lambda: load_cotracker_tracks(tmp_path / "packed.npy", width=8, height=8),
                 lambda: load_cotracker_tracks(tmp_path / "t.npy", width=8, height=8, visibility_path=tmp_path / "v.npy"),
                 lambda: load_cotracker_tracks(tmp_path / "r.pt", width=8, height=8),
                 lambda: load_wan_move_tracks(tmp_path / "t.npy", tmp_path / "v.npy", width=8, height=8)):
        with pytest.raises(ValueError, match=message):
            load()


def test_array_importers_refuse_complex_boolean_meta_and_sparse_tracks():
    for tracks, message in ((torch.ones(2, 1, 2, dtype=torch.complex64), "complex values"),
                            (torch.ones(2, 1, 2, dtype=torch.bool), "booleans are not coordinates"),
                            (torch.ones(2, 1, 2, device="meta"), "meta tensor"),
                            (torch.ones(2, 1, 2).to_sparse(), "sparse tensor"),
                            (np.uint64(3), "dimensions")):
        for read in (tracks_from_cotracker, lambda t, **kw: tracks_from_wan_move(t, np.ones((2, 1)), **kw)):
            with pytest.raises(ValueError, match=message):
                read(tracks, width=8, height=8)
    with pytest.raises(ValueError, match="batch_index must be an integer"):
        tracks_from_cotracker(np.ones((1, 2, 1, 2)), width=8, height=8, batch_index="0")


HUGE = "9" * 5000


@pytest.mark.parametrize(
    "parse, text, field",
    [
        (tracks_from_widget_json, json.dumps(EXAMPLE).replace('"width": 832', f'"width": {HUGE}'), "width"),
        (tracks_from_widget_json, json.dumps(EXAMPLE).replace('"version": 1', f'"version": -{HUGE}'), "version"),
        (tracks_from_widget_json, json.dumps(EXAMPLE).replace('"id": 3', f'"id": {HUGE}'), "id of track 0"),
        (tracks_from_widget_json, json.dumps(EXAMPLE).replace('"t": 0.25', f'"t": {HUGE}'), "'t' of keyframe 0 of track 3"),
        (tracks_from_widget_json, json.dumps(EXAMPLE).replace('"fps": 4', f'"fps": {HUGE}'), "fps"),
        (lambda text: tracks_from_spline_editor(text, width=64, height=64), f'[{{"x": 1, "y": {HUGE}}}]',
         "y of point 0 of track 0"),
        (lambda text: tracks_from_ati_json(text, width=64, height=64), f'[[{{"x": -{HUGE}, "y": 1}}]]',
         "x of point 0 of track 0"),
    ],
)
def test_a_number_of_5000_digits_names_its_field(parse, text, field):
    # Every JSON parser used to raise Python's "Exceeds the limit (4300 digits)" ValueError.
    with pytest.raises(ValueError, match=field) as error:
        parse(text)
    assert "5000 digits" in str(error.value) and "4300" not in str(error.value)


def test_a_huge_integer_under_an_unknown_key_is_ignored():
    tracks = tracks_from_widget_json(json.dumps(EXAMPLE | {"comment": 1}).replace('"comment": 1', f'"comment": {HUGE}'))
    assert tracks.num_tracks == 2


def _npy_bytes(array):
    buffer = io.BytesIO()
    npy_format.write_array(buffer, array)
    return buffer.getvalue()


def _write_zip(path, members, block=2**24):
    path.write_bytes(zip_bytes(members, block))


def _zip_bomb(path, shape, dtype="<f8", data_bytes=None):
    """An .npz whose pred_tracks declares ``shape``, followed by ``data_bytes`` zeros (default: all of them)."""
    total = math.prod(shape) * np.dtype(dtype).itemsize if data_bytes is None else data_bytes
    _write_zip(path, {"pred_tracks.npy": (npy_header(dtype, shape), total)})


def _peak_memory(function):
    tracemalloc.start()
    began = time.perf_counter()
    try:
        try:
            function()
        except ValueError as error:
            outcome = error
        else:
            outcome = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return outcome, peak, time.perf_counter() - began


def test_npz_bomb_is_refused_from_its_header(tmp_path):
    # A 1.5 MB upload declaring 1.6 GB used to be decompressed whole (2.3 GB, 84 s) before any limit.
    path = tmp_path / "bomb.npz"
    _zip_bomb(path, (1, 10_000, 10_000, 2))
    assert path.stat().st_size < 2_000_000
    error, peak, seconds = _peak_memory(lambda: load_cotracker_tracks(path, width=8, height=8))
    assert error is not None and "pred_tracks' in bomb.npz declares shape [1, 10000, 10000, 2]" in str(error)
    assert peak < 4 * 2**20 and seconds < 2


def test_npz_shapes_beyond_the_track_limits_are_refused_before_reading(tmp_path):
    path = tmp_path / "wide.npz"
    _zip_bomb(path, (1, 5_000, 5_000, 2), dtype="<f4")  # 200 MB of zeros, within the byte cap: too many points
    error, peak, seconds = _peak_memory(lambda: load_cotracker_tracks(path, width=8, height=8))
    assert error is not None and "5000 frames x 5000 tracks exceed the limit" in str(error)
    assert peak < 4 * 2**20 and seconds < 2


def test_only_the_arrays_needed_are_read_from_an_npz(tmp_path):
    path = tmp_path / "extra.npz"
    big = (npy_header("<f8", (1, 4000, 4000, 2)), 256_000_000)
    _write_zip(path, {"pred_tracks.npy": (_npy_bytes(np.ones((1, 3, 2, 2))), 0),
                      "pred_visibility.npy": (_npy_bytes(np.ones((1, 3, 2), dtype=bool)), 0),
                      "unrelated.npy": big,  # 256 MB that nothing asks for
                      "tracks.npy": big})  # a second tracks key: pred_tracks wins
    error, peak, seconds = _peak_memory(lambda: load_cotracker_tracks(path, width=8, height=8))
    assert error is None and peak < 4 * 2**20 and seconds < 2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _zip_bomb(p, (1, 3, 2, 2), data_bytes=40), "truncated"),
        (lambda p: _zip_bomb(p, (1, 3, 2, 2), data_bytes=200), "extra bytes"),
        (lambda p: _zip_bomb(p, (2**62, 2), data_bytes=64), "declares shape"),
        (lambda p: _zip_bomb(p, (1, 3, 2, 2), dtype="|O"), "Python objects"),
        (lambda p: _zip_bomb(p, (1, 3, 2, 2), dtype="<U4"), "numeric"),
        (lambda p: _zip_bomb(p, (1, 3, 2, 2), dtype="<c16"), "complex values"),
        (lambda p: np.save(p.with_suffix(".npy"), np.ones((1, 3, 2, 2))) or p.with_suffix(".npy").rename(p),
         "single .npy array, not an .npz"),
        (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(60)), "cannot read bad.npz"),
    ],
)
def test_malformed_npz_members_are_named(tmp_path, make, message):
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(ValueError, match=message):
        load_cotracker_tracks(path, width=8, height=8)


def _open_files():
    import os

    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None


def test_npz_saved_under_an_npy_name_is_refused_and_closed(tmp_path):
    # np.load used to return a lazy NpzFile: BadZipFile/NotImplementedError escaped later, and it was never closed.
    np.savez(tmp_path / "tracks.npz", pred_tracks=np.ones((1, 3, 2, 2)))
    (tmp_path / "tracks.npz").rename(tmp_path / "tracks.npy")
    before = _open_files()
    for load in (lambda: load_cotracker_tracks(tmp_path / "tracks.npy", width=8, height=8),
                 lambda: load_wan_move_tracks(tmp_path / "tracks.npy", tmp_path / "tracks.npy", width=8, height=8)):
        with pytest.raises(ValueError, match="tracks.npy is a zip archive .*rename it to .npz"):
            load()
    # a damaged archive, read under either name, is a ValueError too
    (tmp_path / "broken.npy").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ValueError, match="broken.npy is a zip archive"):
        load_cotracker_tracks(tmp_path / "broken.npy", width=8, height=8)
    assert _open_files() == before


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda: np.lib.format.magic(1, 0) + b"\xff\xff" + b"{" * 100, "bad .npy header"),
        (lambda: b"\x93NUMPY\x01\x00" + b"\x20\x00" + b"{'descr': '<f8', 'fortran_order': False, 'shape': (-3, 2), }\n",
         "bad .npy header|invalid shape"),
        (lambda: npy_header("<f8", (10**30, 2)), "declares shape"),
        (lambda: npy_header("<f8", (1, 4000, 4000, 2)), "truncated"),  # legit-sized header, no data
        (lambda: b"\x93NUMPY\x03\x00" + bytes(10), "unsupported .npy format version 3.0"),
        (lambda: b"not numpy at all", "not a .npy file"),
    ],
)
def test_hostile_npy_headers_are_refused_before_reading(tmp_path, content, message):
    path = tmp_path / "hostile.npy"
    path.write_bytes(content())
    error, peak, _ = _peak_memory(lambda: load_cotracker_tracks(path, width=8, height=8))
    assert error is not None and re.search(message, str(error)), str(error)
    assert "hostile.npy" in str(error) and peak < 4 * 2**20


def test_pt_files_are_bounded_and_legacy_pickles_refused(tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save({"pred_tracks": torch.ones(1, 3, 2, 2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="cannot read legacy.pt: not a zip-format torch file"):
        load_cotracker_tracks(legacy, width=8, height=8)
    bomb = tmp_path / "bomb.pt"
    _write_zip(bomb, {"bomb/data.pkl": (b"\x80\x02}q\x00.", 0), "bomb/data/0": (b"", 2**29)})
    error, peak, seconds = _peak_memory(lambda: load_cotracker_tracks(bomb, width=8, height=8))
    assert error is not None and "bomb.pt unpacks to" in str(error) and peak < 4 * 2**20 and seconds < 2


# Writes: the Wan-Move pair is written atomically, file by file, with stale temporaries cleaned up.


def _partials(folder):
    return sorted(path.name for path in folder.iterdir() if ".partial-" in path.name)


def test_wan_move_save_failure_leaves_the_old_pair_and_no_temporaries(tmp_path, monkeypatch):
    import errno

    from motionstream_core.motion.formats import wan_move

    tracks_path, visibility_path = tmp_path / "a_tracks.npy", tmp_path / "a_visibility.npy"
    old = _random_tracks(frames=4, num_tracks=2)
    save_wan_move_tracks(old, tracks_path, visibility_path)
    before = tracks_path.read_bytes(), visibility_path.read_bytes()
    real_write, calls = wan_move.npy_format.write_array, []

    def full_disk(handle, array, **kwargs):
        calls.append(array.shape)
        if len(calls) == 2:  # the second file of the pair: the disk is full
            handle.write(b"\x93NUMPY partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(handle, array, **kwargs)

    monkeypatch.setattr(wan_move.npy_format, "write_array", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_wan_move_tracks(_random_tracks(frames=9, num_tracks=3, seed=1), tracks_path, visibility_path)
    assert (tracks_path.read_bytes(), visibility_path.read_bytes()) == before
    assert _partials(tmp_path) == []
    monkeypatch.setattr(wan_move.npy_format, "write_array", real_write)
    with pytest.raises(ValueError, match=".npy"):
        save_wan_move_tracks(old, tmp_path / "a_tracks.npz", visibility_path)
    with pytest.raises(ValueError, match="both be written"):
        save_wan_move_tracks(old, tracks_path, tracks_path)


def test_wan_move_pair_carries_a_shared_stamp_that_exposes_a_mixed_pair(tmp_path, monkeypatch):
    import os

    from motionstream_core.motion.formats import wan_move, wan_move_pair_matches

    tracks_path, visibility_path = tmp_path / "a_tracks.npy", tmp_path / "a_visibility.npy"
    save_wan_move_tracks(_random_tracks(frames=4, num_tracks=2), tracks_path, visibility_path)
    assert wan_move_pair_matches(tracks_path, visibility_path)
    real_replace = os.replace

    def crash_between_renames(source, target):
        if str(target) == str(tracks_path):
            raise KeyboardInterrupt  # killed after the visibility rename, before the tracks rename
        real_replace(source, target)

    monkeypatch.setattr(wan_move.os, "replace", crash_between_renames)
    with pytest.raises(KeyboardInterrupt):
        save_wan_move_tracks(_random_tracks(frames=4, num_tracks=2, seed=5), tracks_path, visibility_path)
    monkeypatch.setattr(wan_move.os, "replace", real_replace)
    assert not wan_move_pair_matches(tracks_path, visibility_path)
    assert _partials(tmp_path) == []
    save_wan_move_tracks(_random_tracks(frames=4, num_tracks=2, seed=5), tracks_path, visibility_path)
    assert wan_move_pair_matches(tracks_path, visibility_path)


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = [tmp_path / f".a_tracks.npy.partial-{dead_pid}-0badc0de", tmp_path / f".a_visibility.npy.partial-{dead_pid}-1"]
    alive = [tmp_path / f".a_tracks.npy.partial-{os.getppid()}-abc",  # a live writer's: kept
             tmp_path / f".b_tracks.npy.partial-{dead_pid}-abc"]  # another file's: not ours to judge here
    for path in stale + alive:
        path.write_bytes(b"\x93NUMPY half")
    save_wan_move_tracks(_random_tracks(), tmp_path / "a_tracks.npy", tmp_path / "a_visibility.npy")
    assert _partials(tmp_path) == sorted(path.name for path in alive)


_KILL_SCRIPT = r"""
import json, os, random, signal, sys, time
import numpy as np
import torch
from motionstream_core.motion.tracks import TrackSet
from motionstream_core.motion.formats import save_wan_move_tracks

folder, kills = sys.argv[1], int(sys.argv[2])
tracks_path, visibility_path = os.path.join(folder, "k_tracks.npy"), os.path.join(folder, "k_visibility.npy")
sets = [TrackSet(torch.rand(frames, 500, 2) * 64, torch.rand(frames, 500) > 0.5, 64, 64) for frames in (400, 401)]
torch.set_num_threads(1)
rng, results = random.Random(7), []
for kill in range(kills):
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        index = 0
        while True:
            save_wan_move_tracks(sets[index % 2], tracks_path, visibility_path)
            index += 1
    time.sleep(rng.uniform(0.0, 0.08))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    state = {}
    for name, path in (("tracks", tracks_path), ("visibility", visibility_path)):
        if os.path.exists(path):
            try:
                state[name] = list(np.load(path).shape)
            except Exception as error:
                state[name] = "unreadable: %s" % error
    results.append(state)
print(json.dumps(results))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork and SIGKILL")
def test_sigkill_never_leaves_a_half_written_file(tmp_path):
    # 3 of 20 SIGKILLs used to leave a half-written file.
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path), "20"], capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout.splitlines()[-1])
    complete = {"tracks": ([1, 400, 500, 2], [1, 401, 500, 2]), "visibility": ([1, 400, 500], [1, 401, 500])}
    for state in results:
        for name, shape in state.items():
            assert shape in complete[name], f"{name} after a SIGKILL: {shape}"
    save_wan_move_tracks(_random_tracks(), tmp_path / "k_tracks.npy", tmp_path / "k_visibility.npy")
    assert _partials(tmp_path) == []  # the killed writers' temporaries are gone


def test_pt_files_with_a_huge_pickle_are_refused_before_unpickling(tmp_path):
    path = tmp_path / "lists.pt"
    _write_zip(path, {"lists/data.pkl": (b"\x80\x02" + b"]" * 100 + b".", 4 * 2**20)})  # 4 MB of structure
    with pytest.raises(ValueError, match="lists.pt holds .* bytes of pickled structure"):
        load_cotracker_tracks(path, width=8, height=8)
