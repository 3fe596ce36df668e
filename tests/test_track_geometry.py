"""Resampling in time and mapping through the image's resize / crop."""

import pytest
import torch

from motionstream_core.motion.geometry import (
    ResizeCrop,
    hide_points_outside_frame,
    rescale_tracks,
    resample_tracks,
    resize_crop_tracks,
    stretch_tracks,
)
from motionstream_core.motion.tracks import TrackSet


def _linear_tracks(frames=25, fps=24.0, width=100, height=100):
    """Track 0 moves 2 px per frame in x; track 1 moves 1 px per frame in y."""
    index = torch.arange(frames, dtype=torch.float32)
    points = torch.stack(
        [torch.stack([10 + 2 * index, torch.full_like(index, 20)], -1),
         torch.stack([torch.full_like(index, 50), 5 + index], -1)], dim=1
    )
    return TrackSet(points, torch.ones(frames, 2, dtype=torch.bool), width, height, fps, track_ids=[4, 9])


def test_resampling_at_the_same_rate_is_the_identity():
    tracks = _linear_tracks()
    same = resample_tracks(tracks, fps=24.0, num_frames=25)
    torch.testing.assert_close(same.points, tracks.points)
    assert torch.equal(same.visibility, tracks.visibility)
    assert same.track_ids.tolist() == [4, 9]


def test_resampling_to_16_fps_interpolates_linearly():
    tracks = _linear_tracks()  # 1 s at 24 fps
    resampled = resample_tracks(tracks, fps=16.0, num_frames=17)
    assert resampled.fps == 16.0 and resampled.num_frames == 17
    times = torch.arange(17, dtype=torch.float64) / 16
    expected_x = 10 + 2 * (times * 24)
    torch.testing.assert_close(resampled.points[:, 0, 0], expected_x.float())
    torch.testing.assert_close(resampled.points[:, 1, 1], (5 + times * 24).float())
    assert bool(resampled.visibility.all())


def test_times_past_the_source_are_invisible_and_not_held():
    tracks = _linear_tracks(frames=9, fps=8.0)  # 1 s
    resampled = resample_tracks(tracks, fps=8.0, num_frames=13)
    assert resampled.visibility[:9].all() and not resampled.visibility[9:].any()
    early = resample_tracks(tracks, fps=8.0, num_frames=3, start_time=-0.25)
    assert early.visibility.tolist() == [[False, False], [False, False], [True, True]]


def test_static_anchors_hold_for_the_whole_clip():
    points = torch.tensor([[[10.0, 10.0], [30.0, 30.0]]]).repeat(5, 1, 1)
    points[:, 0, 0] += torch.arange(5.0)
    tracks = TrackSet(points, torch.ones(5, 2, dtype=torch.bool), 64, 64, 4.0, static=[False, True])
    resampled = resample_tracks(tracks, fps=4.0, num_frames=10)
    assert resampled.visibility[:, 1].all() and not resampled.visibility[5:, 0].any()
    assert bool((resampled.points[:, 1] == torch.tensor([30.0, 30.0])).all())
    assert resampled.static.tolist() == [False, True]


def test_occlusion_spreads_to_interpolated_neighbours_only():
    tracks = _linear_tracks(frames=5, fps=4.0)
    visibility = tracks.visibility.clone()
    visibility[2, 0] = False
    tracks = TrackSet(tracks.points, visibility, 100, 100, 4.0)
    resampled = resample_tracks(tracks, fps=8.0, num_frames=9)  # samples at 0, .5, 1, ... source frames
    assert resampled.visibility[:, 0].tolist() == [True, True, True, False, False, False, True, True, True]
    assert bool(resampled.visibility[:, 1].all())


def test_stretch_spreads_a_clip_over_a_new_frame_count():
    tracks = _linear_tracks(frames=121, fps=24.0, width=400)
    stretched = stretch_tracks(tracks, 81)
    assert stretched.num_frames == 81 and stretched.fps == pytest.approx(16.0)
    torch.testing.assert_close(stretched.points[0], tracks.points[0])
    torch.testing.assert_close(stretched.points[-1], tracks.points[-1])
    torch.testing.assert_close(stretched.points[40, 0, 0], torch.tensor(10 + 2 * 60.0))
    assert bool(stretched.visibility.all())


@pytest.mark.parametrize("kwargs", [{"fps": 0, "num_frames": 3}, {"fps": 16, "num_frames": 0},
                                    {"fps": 16, "num_frames": 2.5}, {"fps": float("inf"), "num_frames": 3}])
def test_bad_resampling_arguments(kwargs):
    with pytest.raises(ValueError):
        resample_tracks(_linear_tracks(), **kwargs)


def test_comfy_center_crop_matches_common_upscale():
    wide = ResizeCrop.comfy_upscale(1920, 1080, 832, 480, crop="center")
    # 1920 * (832/480) / (1920/1080) = 1872 kept: 24 px trimmed each side.
    assert (wide.crop_left, wide.crop_top, wide.crop_width, wide.crop_height) == (24.0, 0.0, 1872.0, 1080.0)
    tall = ResizeCrop.comfy_upscale(480, 640, 512, 512, crop="center")
    assert (tall.crop_left, tall.crop_top, tall.crop_width, tall.crop_height) == (0.0, 80.0, 480.0, 480.0)
    stretched = ResizeCrop.comfy_upscale(1920, 1080, 832, 480, crop="disabled")
    assert (stretched.crop_left, stretched.crop_width) == (0.0, 1920.0)
    with pytest.raises(ValueError, match="crop"):
        ResizeCrop.comfy_upscale(10, 10, 5, 5, crop="top")


def test_map_points_sends_the_crop_box_onto_the_target_frame():
    transform = ResizeCrop.comfy_upscale(1920, 1080, 832, 480)
    corners = torch.tensor([[24.0, 0.0], [1896.0, 1080.0], [960.0, 540.0]])
    expected = torch.tensor([[0.0, 0.0], [832.0, 480.0], [416.0, 240.0]])
    torch.testing.assert_close(transform.map_points(corners), expected)


def test_crop_mapping_agrees_with_cropping_pixels():
    # A marked source pixel must land on the marked pixel of the cropped + resized image.
    source = torch.zeros(90, 160)
    source[30, 100] = 1.0
    transform = ResizeCrop.comfy_upscale(160, 90, 64, 64)
    left, top = int(transform.crop_left), int(transform.crop_top)
    cropped = source[top:top + int(transform.crop_height), left:left + int(transform.crop_width)]
    resized = torch.nn.functional.interpolate(cropped[None, None], size=(64, 64), mode="area")[0, 0]
    row, column = divmod(int(resized.argmax()), 64)
    mapped = transform.map_points(torch.tensor([100.5, 30.5]))  # the pixel's centre
    assert int(mapped[0]) == column and int(mapped[1]) == row


def test_points_cropped_away_become_invisible():
    points = torch.tensor([[[10.0, 540.0], [960.0, 540.0], [1900.0, 100.0]]])
    tracks = TrackSet(points, torch.ones(1, 3, dtype=torch.bool), 1920, 1080, track_ids=[1, 2, 3])
    mapped = resize_crop_tracks(tracks, ResizeCrop.comfy_upscale(1920, 1080, 832, 480))
    assert (mapped.width, mapped.height) == (832, 480)
    assert mapped.visibility.tolist() == [[False, True, False]]
    torch.testing.assert_close(mapped.points[0, 1], torch.tensor([416.0, 240.0]))
    assert mapped.track_ids.tolist() == [1, 2, 3]


def test_tracks_drawn_on_a_preview_are_rescaled_to_the_source_first():
    preview = TrackSet([[[480.0, 270.0]]], [[True]], 960, 540)  # the centre of a half-size preview
    mapped = resize_crop_tracks(preview, ResizeCrop.comfy_upscale(1920, 1080, 832, 480))
    torch.testing.assert_close(mapped.points[0, 0], torch.tensor([416.0, 240.0]))


def test_rescale_and_hide_points_outside_frame():
    tracks = TrackSet([[[-5.0, 10.0], [50.0, 25.0], [101.0, 0.0]]], [[True, True, True]], 100, 50)
    doubled = rescale_tracks(tracks, 200, 100)
    torch.testing.assert_close(doubled.points[0, 1], torch.tensor([100.0, 50.0]))
    assert hide_points_outside_frame(tracks).visibility.tolist() == [[False, True, False]]


def test_bad_transforms_raise_value_error():
    with pytest.raises(ValueError):
        ResizeCrop(0, 10, 10, 10)
    with pytest.raises(ValueError):
        ResizeCrop(10, 10, 10, 10, crop_width=0.0)
