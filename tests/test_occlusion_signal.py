"""Occluded vs unspecified points, end to end: the track data model, the importers, the track head's
optional occlusion branch and the training augmentations (issue #21, item 3)."""

import dataclasses
import json

import pytest
import torch

from motionstream_core.motion.formats import tracks_from_widget_json, tracks_to_widget_json
from motionstream_core.motion.track_head import TrackChannelProvider, TrackEncoder, track_head_inputs
from motionstream_core.motion.tracks import TrackSet
from motionstream_core.synthetic import SyntheticMotionConfig, occlusion_clip
from motionstream_core.training.data import ClipAugmentation, ClipBatch, track_fields


def _tracks(visibility, specified=None, frames=6):
    visibility = torch.tensor(visibility, dtype=torch.bool).reshape(frames, -1)
    points = torch.rand(frames, visibility.shape[1], 2, generator=torch.Generator().manual_seed(0)) * 60
    if specified is not None:
        specified = torch.tensor(specified, dtype=torch.bool).reshape(frames, -1)
    return TrackSet(points, visibility, 64, 64, 8.0, specified=specified)


def _encoder(occlusion_branch: bool, seed: int = 0) -> TrackEncoder:
    torch.manual_seed(seed)
    encoder = TrackEncoder(id_dim=16, channels=4, occlusion_branch=occlusion_branch).eval()
    for parameter in encoder.parameters():
        torch.nn.init.normal_(parameter)
    return encoder


# --- the data model ---------------------------------------------------------------------------------


def test_by_default_only_visible_points_are_specified():
    tracks = _tracks([1, 0, 0, 1, 1, 0])
    assert tracks.specified.tolist() == tracks.visibility.tolist()
    assert not tracks.occluded.any()


def test_occluded_means_specified_but_not_visible():
    tracks = _tracks([1, 0, 0, 1, 1, 0], specified=[1, 1, 0, 1, 1, 1])
    assert tracks.occluded[:, 0].tolist() == [False, True, False, False, False, True]


def test_a_visible_point_must_be_specified():
    with pytest.raises(ValueError, match="visible but not specified"):
        _tracks([1, 1, 0, 0, 0, 0], specified=[1, 0, 0, 0, 0, 0])


def test_selection_and_concatenation_carry_the_specification():
    tracks = _tracks([1, 0, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1], specified=[1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1])
    assert tracks.select([1]).specified[:, 0].tolist() == tracks.specified[:, 1].tolist()
    both = tracks.select([0]).concat(dataclasses.replace(tracks.select([1]), track_ids=[9]))
    assert both.specified.tolist() == tracks.specified.tolist()


def test_core_tracks_hidden_points_are_occluded_and_nan_ones_absent():
    path = torch.rand(4, 2, 2) * 60
    path[2, 1] = float("nan")
    visibility = torch.tensor([[1, 1], [0, 1], [1, 0], [1, 1]], dtype=torch.bool)
    tracks = TrackSet.from_comfy_tracks({"track_path": path, "track_visibility": visibility}, width=64, height=64)
    assert tracks.occluded.tolist() == [[False, False], [True, False], [False, False], [False, False]]
    assert tracks.specified[2, 1].item() is False  # absent: NaN where the point is not visible
    with pytest.raises(ValueError, match="NaN"):
        TrackSet.from_comfy_tracks({"track_path": path, "track_visibility": torch.ones(4, 2)}, width=64, height=64)


def test_the_specification_survives_core_tracks_through_the_metadata():
    tracks = _tracks([1, 0, 0, 1, 1, 0], specified=[1, 1, 0, 1, 1, 0])
    again = TrackSet.from_comfy_tracks(tracks.to_comfy_tracks())
    assert again.specified.tolist() == tracks.specified.tolist()


def test_widget_drags_are_unspecified_outside_their_keyframes_and_occluded_when_hidden_between():
    document = {
        "format": "motionstream-tracks", "version": 1, "width": 64, "height": 64, "fps": 4.0, "duration": 2.0,
        "tracks": [{"id": 1, "keyframes": [
            {"t": 0.5, "x": 0.2, "y": 0.2}, {"t": 1.0, "x": 0.4, "y": 0.4, "visible": False},
            {"t": 1.5, "x": 0.6, "y": 0.6},
        ]}],
    }
    tracks = tracks_from_widget_json(json.dumps(document))
    assert tracks.visibility[:, 0].tolist() == [False, False, True, True, False, False, True, False, False]
    assert tracks.occluded[:, 0].tolist() == [False, False, False, False, True, True, False, False, False]


def test_synthetic_clips_know_every_point():
    config = SyntheticMotionConfig(width=64, height=64, num_frames=25, fps=8.0, max_speed=3.0)
    occlusion = occlusion_clip(config, 3)
    tracks = occlusion.clip.tracks
    assert bool(tracks.specified.all())
    assert bool(tracks.occluded.any())  # the mover while it is behind the occluder
    # One drag per sprite through the editor's document keeps the hidden stretch as occluded.
    through_widget = tracks_from_widget_json(tracks_to_widget_json(tracks))
    assert through_widget.occluded.tolist() == tracks.occluded.tolist()


# --- the track head ---------------------------------------------------------------------------------


@torch.no_grad()
def test_a_head_without_the_branch_ignores_occluded_points():
    tracks = _tracks([1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 0, 1], specified=[1] * 12)
    inputs = track_head_inputs(tracks)
    encoder = _encoder(occlusion_branch=False)
    told = encoder(inputs.coords, inputs.visibility, inputs.track_ids, latent_height=4, latent_width=4,
                   occluded=inputs.occluded)
    untold = encoder(inputs.coords, inputs.visibility, inputs.track_ids, latent_height=4, latent_width=4)
    assert torch.equal(told, untold)


@torch.no_grad()
def test_a_new_branch_starts_at_zero_and_a_trained_one_reads_only_occluded_points():
    tracks = _tracks([1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 0, 1], specified=[1] * 12)
    inputs = track_head_inputs(tracks)
    plain = _encoder(occlusion_branch=False)
    fresh = _encoder(occlusion_branch=False)
    fresh.add_occlusion_branch()
    kwargs = dict(latent_height=4, latent_width=4, occluded=inputs.occluded)
    assert torch.equal(plain(inputs.coords, inputs.visibility, inputs.track_ids, **kwargs),
                       fresh(inputs.coords, inputs.visibility, inputs.track_ids, **kwargs))
    trained = _encoder(occlusion_branch=True)
    nothing_hidden = trained(inputs.coords, inputs.visibility, inputs.track_ids, latent_height=4, latent_width=4,
                             occluded=torch.zeros_like(inputs.occluded))
    without_branch = _encoder(occlusion_branch=False)  # same seed: same weights but the branch's
    without_branch.load_state_dict({k: v for k, v in trained.state_dict().items() if "occlusion" not in k})
    # Exact: the branch adds a convolution of an all-zero map, which is exactly zero.
    assert torch.equal(nothing_hidden, without_branch(inputs.coords, inputs.visibility, inputs.track_ids,
                                                      latent_height=4, latent_width=4))
    hidden = trained(inputs.coords, inputs.visibility, inputs.track_ids, **kwargs)
    assert not torch.allclose(hidden, nothing_hidden)


@torch.no_grad()
def test_windows_with_occlusion_equal_the_slice_of_the_full_encoding():
    generator = torch.Generator().manual_seed(1)
    frames, count = 17, 5
    coords = torch.rand(1, frames, count, 2, generator=generator)
    visibility = (torch.rand(1, frames, count, generator=generator) > 0.4).float()
    occluded = (1 - visibility) * (torch.rand(1, frames, count, generator=generator) > 0.5).float()
    ids = torch.arange(count)[None] * 7
    encoder = _encoder(occlusion_branch=True)
    full = encoder(coords, visibility, ids, latent_height=3, latent_width=5, occluded=occluded)
    for start in range(full.shape[2]):
        first, stop = encoder.pixel_frame_range(start, 1)
        window = encoder.encode_window(
            coords[:, first:stop], visibility[:, first:stop], ids, latent_start=start, latent_frames=1,
            latent_height=3, latent_width=5, pixel_start=first, occluded=occluded[:, first:stop])
        # Same operations on the same values per latent frame; only the convolutions' summation order may differ.
        torch.testing.assert_close(window, full[:, :, start:start + 1], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_the_branch_round_trips_through_a_state_dict_and_the_streaming_provider_reads_it():
    trained = _encoder(occlusion_branch=True)
    state = {f"track_encoder.{key}": value for key, value in trained.state_dict().items()}
    loaded = TrackEncoder.from_state_dict(state)
    assert loaded.has_occlusion_branch
    tracks = _tracks([1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 0, 1], specified=[1] * 12)
    inputs = track_head_inputs(tracks)
    provider = TrackChannelProvider(loaded, lambda start, stop: inputs.frames(slice(start, stop)), 4, 4)
    expected = trained(inputs.coords, inputs.visibility, inputs.track_ids, latent_height=4, latent_width=4,
                       occluded=inputs.occluded)
    torch.testing.assert_close(provider(0, expected.shape[2]), expected, rtol=0, atol=0)
    bad = dict(state, **{"track_encoder.occlusion_conv.weight": torch.zeros(1, 2, 3, 1, 1)})
    with pytest.raises(ValueError, match="occlusion_conv"):
        TrackEncoder.from_state_dict(bad)


# --- training -----------------------------------------------------------------------------------


def test_dropped_tracks_and_masked_spans_become_unspecified_not_occluded():
    config = SyntheticMotionConfig(width=64, height=64, num_frames=25, fps=8.0, max_speed=3.0)
    clip = occlusion_clip(config, 5).clip
    fields = track_fields(clip.tracks)
    fields["track_groups"] = clip.metadata.track_sprite
    batch = ClipBatch.collate([dict(fields, latents=torch.zeros(4, 25, 2, 2), text=torch.zeros(1, 4))] * 4)
    augment = ClipAugmentation(tracks_per_group=(1, 2), temporal_mask_probability=0.5, temporal_mask_max_fraction=0.4,
                               randomize_track_ids=False, text_dropout=0, motion_dropout=0)
    augmented = augment(batch, seed=3)
    visible, occluded = augmented.track_visibility, augmented.track_occluded
    assert occluded is not None and visible.shape == occluded.shape
    assert not bool((visible * occluded).any())  # never both
    # Every kept point is visible or occluded except where a span was masked; what was dropped is neither.
    kept = augmented.track_coords.shape[2]
    original = {tuple(row.tolist()): n for n, row in enumerate(clip.tracks.normalized_points()[0])}
    for b in range(4):
        for n in range(kept):
            source = original.get(tuple(augmented.track_coords[b, 0, n].tolist()))
            if source is None or augmented.track_coords[b, :, n].abs().sum() == 0:
                continue
            known = visible[b, :, n] + occluded[b, :, n]
            masked = known == 0
            hidden_in_clip = ~clip.tracks.visibility[:, source]
            assert torch.equal(occluded[b, :, n].bool(), hidden_in_clip & ~masked)
