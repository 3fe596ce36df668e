"""The track format registry: every entry reads a sample, lookups fail clearly, and a new format is one module plus one entry."""

import contextlib
import json

import numpy as np
import pytest
import torch

from motionstream_core import ReadOptions, TrackFormat, TrackSet, format_for_path, list_track_formats, load_tracks_file
from motionstream_core import read_tracks, register_track_format, track_format, track_format_labeled
from motionstream_core import unregister_track_format

import track_format_csv_example

CSV_FORMAT = TrackFormat(name="csv_rows", label="CSV rows", reads="file", suffixes=(".csv",),
                         parse=track_format_csv_example.read)


@contextlib.contextmanager
def registered(entry):
    register_track_format(entry)
    try:
        yield entry
    finally:
        unregister_track_format(entry.name)


def _tracks():
    points = torch.tensor([[[10.0, 20.0], [50.0, 60.0]], [[30.0, 40.0], [50.0, 60.0]], [[35.0, 45.0], [50.0, 60.0]]])
    visibility = torch.tensor([[True, True], [True, False], [True, True]])
    return TrackSet(points, visibility, 64, 64, 16.0, track_ids=[4, 9], static=[False, True])


def _samples(tmp_path):
    """For each format without an exporter: a tiny source and the options it needs."""
    np.savez(tmp_path / "tracked.npz", pred_tracks=np.ones((1, 3, 2, 2)), pred_visibility=np.ones((1, 3, 2), dtype=bool))
    np.save(tmp_path / "clip_tracks.npy", np.ones((1, 3, 2, 2)))
    np.save(tmp_path / "clip_visibility.npy", np.ones((1, 3, 2), dtype=bool))
    points = json.dumps([[{"x": 1, "y": 2}, {"x": 3, "y": 4}], [{"x": 5, "y": 6}]])
    size = ReadOptions(width=64, height=64)
    return {
        "kjnodes_spline_editor": (points, size),
        "ati_json": (points, size),
        "cotracker": (tmp_path / "tracked.npz", size),
        "wan_move": (tmp_path / "clip_tracks.npy", ReadOptions(width=64, height=64,
                                                               visibility_path=tmp_path / "clip_visibility.npy")),
    }


def test_names_labels_and_suffixes_are_unique():
    formats = list_track_formats()
    for field in ("name", "label"):
        values = [getattr(entry, field) for entry in formats]
        assert len(values) == len(set(values)), field
    suffixes = [suffix for entry in formats for suffix in entry.suffixes]
    assert len(suffixes) == len(set(suffixes))
    assert {entry.reads for entry in formats} <= {"text", "file", "object"}
    assert list_track_formats("file") == tuple(entry for entry in formats if entry.reads == "file")


def test_every_format_round_trips_or_reads_a_sample(tmp_path):
    samples = _samples(tmp_path)
    original = _tracks()
    for entry in list_track_formats():
        if entry.export is not None:
            tracks = read_tracks(entry.export(original), entry.name)
            torch.testing.assert_close(tracks.points, original.points, atol=1e-4, rtol=0)
            assert torch.equal(tracks.visibility, original.visibility), entry.name
            assert torch.equal(tracks.track_ids, original.track_ids), entry.name
        else:
            assert entry.name in samples, f"{entry.name} has no exporter: give it a sample here"
            source, options = samples[entry.name]
            tracks = read_tracks(source, entry, options)
            assert (tracks.width, tracks.height) == (64, 64) and tracks.num_tracks == 2, entry.name


def test_lookups_by_name_label_and_suffix():
    assert track_format("cotracker").label == "CoTracker"
    assert track_format_labeled("Wan-Move").name == "wan_move"
    assert format_for_path("out/Tracked.NPZ").name == "cotracker"
    assert format_for_path("demo_tracks.json").name == "widget_json"
    with pytest.raises(ValueError, match="unknown track format 'nope'"):
        track_format("nope")
    with pytest.raises(ValueError, match="'CoTracker'"):
        track_format_labeled("nope")


@pytest.mark.parametrize("path, suffix", [("tracks.csv", "'.csv' files"), ("tracks", "without a suffix")])
def test_format_for_path_names_the_suffix_and_the_accepted_ones(path, suffix):
    with pytest.raises(ValueError, match=suffix) as error:
        format_for_path(path)
    assert ".json" in str(error.value) and ".npz" in str(error.value)


def test_registering_refuses_clashes_and_file_loading_refuses_objects(tmp_path):
    for clash in (dict(name="cotracker"), dict(label="CoTracker"), dict(suffixes=(".npy",))):
        entry = TrackFormat(**{"name": "x", "label": "X", "reads": "file", "parse": lambda path, options: None} | clash)
        with pytest.raises(ValueError, match="already"):
            register_track_format(entry)
    with pytest.raises(ValueError, match="reads"):
        TrackFormat(name="x", label="X", reads="socket", parse=lambda source, options: None)
    (tmp_path / "tracks.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="not read from files"):
        load_tracks_file(tmp_path / "tracks.bin", "comfy_tracks")


def test_a_text_format_loads_from_its_file(tmp_path):
    (tmp_path / "drawn.json").write_text(track_format("widget_json").export(_tracks()))
    tracks = load_tracks_file(tmp_path / "drawn.json", options=ReadOptions(width=128, height=32))
    torch.testing.assert_close(tracks.points[0, 0], torch.tensor([20.0, 10.0]))


def test_a_new_format_is_one_module_and_one_entry(pack, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "motion.csv").write_text("track,frame,x,y\n7,0,10,20\n7,2,30,40\n8,1,5,5\n")
    load_file = pack.NODE_CLASS_MAPPINGS["MotionStreamLoadTracksFile"]
    with registered(CSV_FORMAT):
        assert "CSV rows" in load_file.INPUT_TYPES()["required"]["format"][0]
        by_label = load_file().load("motion.csv", "CSV rows", 64, 48, 0.0)[0]
        by_suffix = load_file().load("motion.csv", "by file suffix", 64, 48, 0.0)[0]
        for tracks in (by_label, by_suffix):
            assert tracks["track_path"].shape == (3, 2, 2)
            assert tracks["track_visibility"][:, 0].tolist() == [True, False, True]
            torch.testing.assert_close(tracks["track_path"][2, 0], torch.tensor([30.0, 40.0]))
    assert "CSV rows" not in load_file.INPUT_TYPES()["required"]["format"][0]
    with pytest.raises(ValueError, match="'.csv'"):
        load_file().load("motion.csv", "by file suffix", 64, 48, 0.0)


def test_node_menus_keep_the_choices_workflows_store(pack):
    nodes = pack.NODE_CLASS_MAPPINGS
    coordinates = nodes["MotionStreamTracksFromCoordinates"].INPUT_TYPES()["required"]["format"][0]
    files = nodes["MotionStreamLoadTracksFile"].INPUT_TYPES()["required"]["format"][0]
    assert coordinates[:2] == ["KJNodes SplineEditor", "ATI / WanTrackToVideo"]
    assert files[:2] == ["CoTracker", "Wan-Move"]
