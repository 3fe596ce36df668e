"""The track data model validates its input and round-trips with ComfyUI's core TRACKS dict."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from motionstream_core.motion.tracks import (
    COMFY_TRACKS_META_KEY,
    MAX_TRACK_ID,
    MAX_TRACKS,
    TrackSet,
)


def _tracks(frames=5, num_tracks=3, width=64, height=48, **kwargs):
    generator = torch.Generator().manual_seed(frames * 100 + num_tracks)
    points = torch.rand(frames, num_tracks, 2, generator=generator) * torch.tensor([width, height])
    visibility = torch.rand(frames, num_tracks, generator=generator) > 0.3
    return TrackSet(points, visibility, width, height, **kwargs)


def _assert_same(a: TrackSet, b: TrackSet):
    assert (a.width, a.height, a.fps) == (b.width, b.height, b.fps)
    torch.testing.assert_close(a.points, b.points)
    assert torch.equal(a.visibility, b.visibility)
    assert torch.equal(a.track_ids, b.track_ids)
    assert torch.equal(a.static, b.static)


def test_defaults_and_normalised_types():
    tracks = TrackSet([[[1, 2], [3, 4]]], [[1, 0]], 10, 20)
    assert tracks.points.dtype == torch.float32 and tracks.points.shape == (1, 2, 2)
    assert tracks.visibility.dtype == torch.bool and tracks.visibility.tolist() == [[True, False]]
    assert tracks.track_ids.tolist() == [0, 1]
    assert tracks.static.tolist() == [False, False]
    assert tracks.fps == 16.0
    assert (tracks.num_frames, tracks.num_tracks, tracks.duration) == (1, 2, 0.0)


def test_normalized_points_and_from_normalized_are_inverse():
    tracks = _tracks(width=832, height=480, fps=24.0, track_ids=[5, 9, 2])
    normalized = tracks.normalized_points()
    assert float(normalized[..., 0].max()) <= 1.0 and float(normalized[..., 1].max()) <= 1.0
    rebuilt = TrackSet.from_normalized(normalized, tracks.visibility, 832, 480, 24.0, tracks.track_ids)
    _assert_same(rebuilt, tracks)


def test_frame_times():
    tracks = _tracks(frames=4, fps=8.0)
    assert tracks.frame_times().tolist() == [0.0, 0.125, 0.25, 0.375]
    assert tracks.duration == 0.375


@pytest.mark.parametrize(
    "points, visibility, message",
    [
        ([[[float("nan"), 1.0]]], [[True]], "NaN"),
        ([[[float("inf"), 1.0]]], [[False]], "NaN or infinite"),
        ([[1.0, 2.0]], [[True]], "shape"),
        ([[[1.0, 2.0, 3.0]]], [[True]], "shape"),
        (torch.zeros(0, 2, 2), torch.zeros(0, 2, dtype=torch.bool), "no frames"),
        (torch.zeros(3, 0, 2), torch.zeros(3, 0, dtype=torch.bool), "no tracks"),
        ([[[1.0, 2.0]]], [[True, False]], "visibility must have shape"),
        ([[[1.0, 2.0]]], [[0.5]], "0/1"),
        ([["a", "b"]], [[True]], "numeric"),
    ],
)
def test_invalid_arrays_raise_value_error(points, visibility, message):
    with pytest.raises(ValueError, match=message):
        TrackSet(points, visibility, 10, 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"width": 0}, "width"),
        ({"height": 10.5}, "height"),
        ({"width": True}, "width"),
        ({"fps": 0.0}, "fps"),
        ({"fps": float("nan")}, "fps"),
        ({"track_ids": [1, 1]}, "unique"),
        ({"track_ids": [-1, 2]}, r"\[0, "),
        ({"track_ids": [0, MAX_TRACK_ID + 1]}, r"\[0, "),
        ({"track_ids": [0.5, 1.0]}, "integers"),
        ({"track_ids": [True, False]}, "integers"),
        ({"track_ids": [1]}, "shape"),
        ({"static": [True]}, "shape"),
    ],
)
def test_invalid_metadata_raises_value_error(kwargs, message):
    arguments = {"points": torch.ones(2, 2, 2), "visibility": torch.ones(2, 2, dtype=torch.bool),
                 "width": 10, "height": 10} | kwargs
    with pytest.raises(ValueError, match=message):
        TrackSet(**arguments)


def test_too_many_tracks_is_rejected():
    points = torch.zeros(1, MAX_TRACKS + 1, 2)
    with pytest.raises(ValueError, match="too many tracks"):
        TrackSet(points, torch.ones(1, MAX_TRACKS + 1, dtype=torch.bool), 10, 10)


def test_visible_point_far_outside_the_frame_is_an_error():
    with pytest.raises(ValueError, match="far outside"):
        TrackSet([[[250.0, 5.0]]], [[True]], 100, 100)
    with pytest.raises(ValueError, match="far outside"):
        TrackSet([[[5.0, -101.0]]], [[True]], 100, 100)


def test_visible_point_just_outside_the_frame_is_kept():
    tracks = TrackSet([[[-20.0, 150.0]]], [[True]], 100, 100)
    assert tracks.points.tolist() == [[[-20.0, 150.0]]]
    assert tracks.visibility.tolist() == [[True]]


def test_invisible_point_far_outside_is_clamped_into_the_band():
    tracks = TrackSet([[[1e6, -1e6], [5.0, 5.0]]], [[False, True]], 100, 50)
    assert tracks.points[0, 0].tolist() == [200.0, -50.0]
    assert tracks.visibility.tolist() == [[False, True]]


def test_static_tracks_must_not_move():
    points = torch.tensor([[[1.0, 1.0], [2.0, 2.0]], [[1.0, 1.0], [3.0, 2.0]]])
    visibility = torch.ones(2, 2, dtype=torch.bool)
    TrackSet(points, visibility, 10, 10, static=[True, False])
    with pytest.raises(ValueError, match="static"):
        TrackSet(points, visibility, 10, 10, static=[False, True])


def test_comfy_tracks_follow_core_conventions():
    tracks = _tracks(frames=6, num_tracks=4, fps=24.0, track_ids=[10, 11, 12, 99])
    comfy = tracks.to_comfy_tracks()
    assert comfy["track_path"].dtype == torch.float32 and comfy["track_path"].shape == (6, 4, 2)
    assert comfy["track_visibility"].dtype == torch.bool and comfy["track_visibility"].shape == (6, 4)
    meta = comfy[COMFY_TRACKS_META_KEY]
    assert (meta["width"], meta["height"], meta["fps"]) == (64, 48, 24.0)
    # Core nodes index the dict directly; the copy must not alias the model.
    comfy["track_path"] += 1
    assert not torch.equal(comfy["track_path"], tracks.points)


def test_comfy_round_trip_keeps_everything():
    points = torch.tensor([[[1.0, 2.0], [5.0, 5.0]], [[3.0, 4.0], [5.0, 5.0]]])
    tracks = TrackSet(points, [[True, True], [False, True]], 32, 16, fps=12.5,
                      track_ids=[7, 3], static=[False, True])
    _assert_same(TrackSet.from_comfy_tracks(tracks.to_comfy_tracks()), tracks)


def test_plain_core_dict_needs_a_frame_size():
    core = {"track_path": torch.rand(3, 2, 2), "track_visibility": torch.ones(3, 2, dtype=torch.bool)}
    with pytest.raises(ValueError, match="width and height"):
        TrackSet.from_comfy_tracks(core)
    tracks = TrackSet.from_comfy_tracks(core, width=8, height=8)
    assert tracks.fps == 16.0 and tracks.track_ids.tolist() == [0, 1]


def test_metadata_wins_over_fallback_arguments():
    tracks = _tracks(fps=30.0)
    read = TrackSet.from_comfy_tracks(tracks.to_comfy_tracks(), width=999, height=999, fps=1.0)
    _assert_same(read, tracks)


def test_core_dict_visibility_variants():
    path = torch.rand(4, 3, 2)
    all_visible = TrackSet.from_comfy_tracks({"track_path": path}, width=4, height=4)
    assert bool(all_visible.visibility.all())
    # WanMoveTracksFromCoords builds a [T, 1] visibility from a mask; it applies to every track.
    masked = TrackSet.from_comfy_tracks(
        {"track_path": path, "track_visibility": torch.tensor([[True], [False], [True], [False]])},
        width=4, height=4,
    )
    assert masked.visibility.tolist() == [[True] * 3, [False] * 3, [True] * 3, [False] * 3]


@pytest.mark.parametrize(
    "core, message",
    [
        ([], "dict"),
        ({}, "track_path"),
        ({"track_path": torch.rand(2, 2)}, "shape"),
        ({"track_path": torch.rand(1, 2, 2, 2)}, "shape"),
        ({"track_path": torch.rand(2, 2, 2), "track_visibility": torch.ones(3, 2)}, "track_visibility"),
        ({"track_path": torch.rand(2, 2, 2), COMFY_TRACKS_META_KEY: "nope"}, "metadata"),
        ({"track_path": torch.rand(2, 2, 2),
          COMFY_TRACKS_META_KEY: {"width": 4, "height": 4, "track_ids": torch.arange(3)}}, "3 track_ids"),
        ({"track_path": torch.full((2, 2, 2), float("nan"))}, "NaN"),
    ],
)
def test_malformed_core_dicts_raise_value_error(core, message):
    with pytest.raises(ValueError, match=message):
        TrackSet.from_comfy_tracks(core, width=4, height=4)


def test_select_and_concat_carry_ids_and_flags():
    tracks = _tracks(num_tracks=4, track_ids=[4, 5, 6, 7])
    picked = tracks.select([2, 0])
    assert picked.track_ids.tolist() == [6, 4]
    torch.testing.assert_close(picked.points, tracks.points[:, [2, 0]])
    joined = picked.concat(tracks.select([1]))
    assert joined.track_ids.tolist() == [6, 4, 5]
    with pytest.raises(ValueError, match="unique"):
        joined.concat(tracks.select([1]))
    with pytest.raises(ValueError, match="frame sizes"):
        tracks.concat(TrackSet(torch.ones(5, 1, 2), torch.ones(5, 1), 100, 48, track_ids=[50]))
    with pytest.raises(ValueError, match="fps"):
        tracks.concat(dataclasses.replace(tracks.select([0]), fps=8.0, track_ids=[50]))


# ---------------------------------------------------------------------------
# Hardening (issue #19): one visibility rule, and inputs that used to convert silently or crash
# ---------------------------------------------------------------------------

BAD_FLAGS = [float("nan"), 0.3, -1.0, 2.0, float("inf")]


@pytest.mark.parametrize("flag", BAD_FLAGS)
def test_core_dict_visibility_is_boolean_or_exactly_0_or_1(flag):
    # from_comfy_tracks used to convert with `!= 0`: NaN, 0.3 and -1 became visible.
    path = torch.rand(3, 2, 2)
    for visibility in (torch.full((3, 2), flag), torch.full((3, 1), flag),
                       torch.tensor([[1.0, 0.0], [1.0, flag], [0.0, 1.0]])):
        with pytest.raises(ValueError, match=r"track_visibility must be boolean or exactly 0/1, got"):
            TrackSet.from_comfy_tracks({"track_path": path, "track_visibility": visibility}, width=4, height=4)
    with pytest.raises(ValueError, match=r"^visibility must be boolean or exactly 0/1, got .* at frame 1, track 1"):
        TrackSet(path, [[1, 0], [1, flag], [0, 1]], 4, 4)
    with pytest.raises(ValueError, match="static must be boolean or exactly 0/1"):
        TrackSet(path[:, :1].expand(3, 2, 2).clone() * 0, torch.ones(3, 2), 4, 4, static=[0.0, flag])


def test_core_dict_float_and_integer_0_1_visibility_is_read_exactly():
    path = torch.rand(2, 2, 2)
    for visibility in (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), np.array([[1, 0], [0, 1]], dtype=np.uint64),
                       torch.tensor([[1, 0], [0, 1]], dtype=torch.uint8), [[True, False], [False, True]]):
        tracks = TrackSet.from_comfy_tracks({"track_path": path, "track_visibility": visibility}, width=4, height=4)
        assert tracks.visibility.tolist() == [[True, False], [False, True]]


def _sparse():
    return torch.ones(2, 1, 2).to_sparse()


def _quantized():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated, not yet gone
        return torch.quantize_per_tensor(torch.ones(2, 1, 2), 1.0, 0, torch.quint8)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: torch.ones(2, 1, 2, dtype=torch.complex64), "complex values"),  # used to drop the imaginary part
        (lambda: np.ones((2, 1, 2), dtype=np.complex128), "complex values"),
        (lambda: torch.ones(2, 1, 2, dtype=torch.bool), "booleans are not coordinates"),  # used to become pixels 0/1
        (lambda: np.ones((2, 1, 2), dtype=bool), "booleans are not coordinates"),
        (lambda: torch.ones(2, 1, 2, device="meta"), "meta tensor"),  # used to raise NotImplementedError
        (_sparse, "sparse tensor"),  # used to raise NotImplementedError
        (_quantized, "quantized"),
        (lambda: np.ma.masked_array(np.ones((2, 1, 2)), mask=True), "masked array"),
        (lambda: "12", "array of numbers"),
        (lambda: [[["a", "b"]]], "numeric"),
        (lambda: np.uint64(3), "shape"),  # a uint64 scalar used to raise TypeError on some paths
        (lambda: torch.tensor(3, dtype=torch.uint64), "shape"),
    ],
)
def test_coordinates_that_would_lose_data_are_refused(make, message):
    for build in (lambda p: TrackSet(p, torch.ones(2, 1), 4, 4),
                  lambda p: TrackSet.from_normalized(p, torch.ones(2, 1), 4, 4),
                  lambda p: TrackSet.from_comfy_tracks({"track_path": p}, width=4, height=4)):
        with pytest.raises(ValueError, match=message):
            build(make())


@pytest.mark.parametrize("value", [np.uint64(2**64 - 1), np.uint64(3), torch.tensor(3, dtype=torch.uint64)])
def test_uint64_scalars_anywhere_are_a_value_error(value):
    points, visibility = torch.ones(2, 1, 2), torch.ones(2, 1)
    attempts = [
        lambda: TrackSet(points, value, 4, 4),
        lambda: TrackSet(points, visibility, 4, 4, track_ids=value),
        lambda: TrackSet(points, visibility, 4, 4, static=value),
        lambda: TrackSet.from_comfy_tracks({"track_path": points, "track_visibility": value}, width=4, height=4),
        lambda: TrackSet.from_comfy_tracks({"track_path": points, COMFY_TRACKS_META_KEY: {"track_ids": value}},
                                           width=4, height=4),
    ]
    if not isinstance(value, torch.Tensor) and int(value) > 2**20:
        attempts += [lambda: TrackSet(points, visibility, value, 4), lambda: TrackSet(points, visibility, 4, 4, fps=value)]
    for attempt in attempts:
        with pytest.raises(ValueError):
            attempt()


def test_unusual_real_dtypes_are_read_exactly():
    values = [[[1.0, 2.0]], [[3.0, 4.0]]]
    for points in (np.array(values, dtype=np.uint64), np.array(values, dtype=">f8"), np.array(values, dtype=np.longdouble),
                   torch.tensor(values, dtype=torch.bfloat16), torch.tensor(values).to(torch.uint32),
                   np.asfortranarray(np.array(values, dtype=np.float32))):
        tracks = TrackSet(points, [[1], [0]], 8, 8, track_ids=np.array([7], dtype=np.uint64))
        assert tracks.points.tolist() == values and tracks.track_ids.tolist() == [7]
