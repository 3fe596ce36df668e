"""Importers and exporters: every format, malformed input, and fuzzing for clean errors."""

import datetime
import json
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    return TrackSet(points, visibility, 640, 360, 12.0, track_ids=list(range(100, 100 + num_tracks)), static=static)


def _assert_same(a, b, atol=1e-4):
    assert (a.width, a.height, a.fps) == (b.width, b.height, b.fps)
    torch.testing.assert_close(a.points, b.points, atol=atol, rtol=0)
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
        ({"version": 2}, "unsupported widget JSON version 2"),
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
        (lambda p: np.savez(p, pred_tracks=np.zeros((1, 2, 3, 2), dtype=np.complex64)), "numeric"),
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
    tracks = TrackSet(points, visibility, 300, 200, fps, track_ids=[5 * c for c in range(len(rows))])
    _assert_same(tracks_from_widget_json(tracks_to_widget_json(tracks)), tracks)
