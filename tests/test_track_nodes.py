"""Track nodes called directly, as ComfyUI would call them."""

import json

import numpy as np
import pytest
import torch

WIDGET = {
    "format": "motionstream-tracks", "version": 1, "width": 200, "height": 100, "fps": 4, "duration": 1.0,
    "tracks": [
        {"id": 5, "keyframes": [{"t": 0.0, "x": 0.1, "y": 0.5}, {"t": 1.0, "x": 0.9, "y": 0.5}]},
        {"id": 9, "static": True, "keyframes": [{"t": 0.0, "x": 0.5, "y": 0.2}]},
    ],
}


@pytest.fixture
def nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


def test_editor_outputs_core_tracks(nodes):
    (tracks,) = nodes["MotionStreamTrackEditor"]().build(json.dumps(WIDGET))
    assert tracks["track_path"].shape == (5, 2, 2)
    assert tracks["track_visibility"].dtype == torch.bool
    torch.testing.assert_close(tracks["track_path"][0, 0], torch.tensor([20.0, 50.0]))
    torch.testing.assert_close(tracks["track_path"][-1, 0], torch.tensor([180.0, 50.0]))


def test_editor_scales_to_the_connected_image(nodes):
    image = torch.zeros(1, 200, 400, 3)
    (tracks,) = nodes["MotionStreamTrackEditor"]().build(json.dumps(WIDGET), image=image)
    torch.testing.assert_close(tracks["track_path"][-1, 0], torch.tensor([360.0, 100.0]))


def test_empty_editor_says_what_to_do(nodes):
    for empty in ("", json.dumps({**WIDGET, "tracks": []})):
        with pytest.raises(ValueError, match="no tracks"):
            nodes["MotionStreamTrackEditor"]().build(empty)


def test_editor_rejects_garbage_with_a_clear_error(nodes):
    with pytest.raises(ValueError):
        nodes["MotionStreamTrackEditor"]().build('{"format": "motionstream-tracks", "version": 99}')


def test_spline_editor_coordinates(nodes):
    coords = json.dumps([{"x": 10, "y": 20}, {"x": 30, "y": 40}])
    (tracks,) = nodes["MotionStreamTracksFromCoordinates"]().convert(coords, "KJNodes SplineEditor", 64, 64, 16.0)
    torch.testing.assert_close(tracks["track_path"][:, 0], torch.tensor([[10.0, 20.0], [30.0, 40.0]]))


def test_cotracker_file_relative_to_the_input_folder(nodes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "tracked.npz", pred_tracks=np.random.rand(1, 6, 3, 2) * 50,
             pred_visibility=np.ones((1, 6, 3), dtype=bool))
    (tracks,) = nodes["MotionStreamLoadTracksFile"]().load("tracked.npz", "CoTracker", 64, 64, 16.0)
    assert tracks["track_path"].shape == (6, 3, 2)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        nodes["MotionStreamLoadTracksFile"]().load("missing.npz", "CoTracker", 64, 64, 16.0)


def test_draw_tracks_marks_the_points(nodes):
    (tracks,) = nodes["MotionStreamTrackEditor"]().build(json.dumps(WIDGET))
    (frames,) = nodes["MotionStreamDrawTracks"]().draw(torch.zeros(1, 100, 200, 3), tracks, 3, 2)
    assert frames.shape == (5, 100, 200, 3)
    assert frames[0, 50, 20].sum() > 0 and frames[-1, 50, 180].sum() > 0
    assert frames[0, 50, 180].sum() == 0, "the end of the path is not drawn on the first frame"


@pytest.mark.parametrize(
    "text, message",
    [
        # json.loads(...).get(...) ran before the validating parser: AttributeError, RecursionError, a bare JSONDecodeError.
        ("[1]", "widget JSON must be an object, got \\[1\\]"),
        ("9", "widget JSON must be an object, got 9"),
        ("null", "widget JSON must be an object, got None"),
        ('"tracks"', "widget JSON must be an object"),
        ("[" * 100_000 + "]" * 100_000, "widget JSON is nested too deeply"),
        ('{"tracks": ' + "[" * 100_000, "widget JSON"),
        ("{", "widget JSON is not valid JSON"),
        ("\ud800", "widget JSON"),
        (json.dumps(WIDGET).replace('"width": 200', '"width": ' + "9" * 5000), "width .*5000 digits"),
        (json.dumps({**WIDGET, "tracks": None}), "'tracks' of the widget JSON must be a list"),
        (json.dumps({**WIDGET, "tracks": [{"id": 1, "keyframes": [{"t": 0, "x": float("nan"), "y": 0}]}]}),
         "'x' of keyframe 0 of track 1 must be finite"),
    ],
)
def test_editor_routes_every_input_through_the_library_parser(nodes, text, message):
    with pytest.raises(ValueError, match=message) as error:
        nodes["MotionStreamTrackEditor"]().build(text)
    assert type(error.value) is ValueError  # not a bare json.JSONDecodeError


def test_editor_without_tracks_says_what_to_do(nodes):
    with pytest.raises(ValueError, match="no tracks: drag on the image"):
        nodes["MotionStreamTrackEditor"]().build("  \n")
    with pytest.raises(ValueError, match="has no tracks: draw one in the track editor"):
        nodes["MotionStreamTrackEditor"]().build(json.dumps({**WIDGET, "tracks": []}))
