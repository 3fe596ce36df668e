"""The synthetic benchmark's cases beyond plain track following: tracks given over part of a clip, the
persistence score, occlusion clips and the reappearance score (with the sprite colour error it uses)."""

import math

import pytest
import torch

from motionstream_core.synthetic import (
    SyntheticMotionConfig, generate_clip, occlusion_clip, partial_track_spans, render_frames, score_persistence,
    score_reappearance, sprite_colour_error,
)
from motionstream_core.synthetic.persistence import unguided_spans

# Few frames; a faster speed limit lets a short occlusion clip hide and show its mover.
SHORT_OCCLUSION = SyntheticMotionConfig(num_frames=11, max_speed=6.0)


def held_in_place(clip, unguided: torch.Tensor) -> torch.Tensor:
    """Centres ``[T, S, 2]``: the clip's paths where guided, each unguided span held where its sprite last was."""
    centres = clip.metadata.centre_paths.clone()
    for sprite, first, last in unguided_spans(unguided):
        centres[first:last + 1, sprite] = centres[max(first - 1, 0), sprite]
    return centres


def test_partial_spans_start_a_third_in_or_stop_two_thirds_in_and_follow_the_seed():
    clip = generate_clip(SyntheticMotionConfig(num_frames=10, min_sprites=3, max_sprites=3), 11)
    spans = partial_track_spans(clip)
    again = partial_track_spans(clip.metadata)
    assert spans.kinds == again.kinds and torch.equal(spans.given, again.given)
    assert len(spans.kinds) == clip.metadata.num_sprites and set(spans.kinds) <= {"starts", "stops"}
    assert spans.given.shape == (10, clip.metadata.num_sprites)
    for sprite, kind in enumerate(spans.kinds):
        expected = torch.arange(10) >= 3 if kind == "starts" else torch.arange(10) <= 6
        assert torch.equal(spans.given[:, sprite], expected)
    assert spans.track_mask(clip.metadata.track_sprite).shape == clip.tracks.visibility.shape
    # Both kinds turn up over a few clips.
    kinds = {kind for seed in range(6) for kind in partial_track_spans(generate_clip(
        SyntheticMotionConfig(num_frames=4, min_sprites=2, max_sprites=2), seed)).kinds}
    assert kinds == {"starts", "stops"}


def test_persistence_is_one_for_sprites_left_in_place_and_zero_for_a_video_without_them():
    clip = generate_clip(SyntheticMotionConfig(num_frames=6, min_sprites=2, max_sprites=2, allow_occlusion=False), 3)
    metadata = clip.metadata
    unguided = torch.ones(6, metadata.num_sprites, dtype=torch.bool)
    kept_in_place = render_frames(metadata.background, metadata.sprites, held_in_place(clip, unguided)).frames
    score = score_persistence(kept_in_place, clip)
    assert score.kept_fraction == 1.0
    assert score.displacement < 0.1
    assert score.confidence.shape == (metadata.num_sprites,) and bool((score.confidence >= 0.5).all())
    assert [span[1:] for span in score.spans] == [(0, 5)] * metadata.num_sprites

    empty = metadata.background.expand(6, -1, -1, -1).clone()
    score = score_persistence(empty, clip)
    assert score.kept_fraction == 0.0
    assert math.isnan(score.displacement)
    assert not bool(score.kept.any()) and bool(score.displacements.isnan().all())


def test_persistence_of_partial_tracks_judges_each_span_from_where_its_sprite_last_was():
    clip = generate_clip(SyntheticMotionConfig(num_frames=7, min_sprites=3, max_sprites=3, allow_occlusion=False), 8)
    metadata = clip.metadata
    unguided = ~partial_track_spans(clip).given
    video = render_frames(metadata.background, metadata.sprites, held_in_place(clip, unguided)).frames
    score = score_persistence(video, clip, unguided)
    assert len(score.spans) == metadata.num_sprites  # one unguided span per sprite: before its start or after its stop
    for sprite, first, last in score.spans:
        assert bool(unguided[first:last + 1, sprite].all())
        assert first == 0 or last == metadata.num_frames - 1
    assert score.kept_fraction == 1.0 and score.displacement < 0.1
    # The same frames along the clip's own paths: sprites that moved on where nobody asked them to.
    moved = score_persistence(clip.frames, clip, unguided)
    assert moved.kept_fraction == 1.0
    assert moved.displacement >= score.displacement
    assert math.isnan(score_persistence(clip.frames, clip, torch.zeros_like(unguided)).kept_fraction)


def test_an_occlusion_clip_shows_its_mover_whole_hides_it_then_shows_it_again():
    occlusion = occlusion_clip(SHORT_OCCLUSION, 1234)
    clip, metadata = occlusion.clip, occlusion.clip.metadata
    mover, occluder = occlusion.mover, occlusion.occluder
    assert metadata.num_sprites == 2 and occluder > mover  # the occluder is painted in front
    assert metadata.trajectory_kinds == ("linear", "static")
    shown = metadata.visible_fraction[:, mover]
    assert float(shown[0]) == pytest.approx(1.0) and float(shown[-1]) == pytest.approx(1.0)
    assert float(shown[(metadata.num_frames - 1) // 2]) == 0.0
    centre = (metadata.track_sprite == mover).nonzero()[0, 0]
    visible = clip.tracks.visibility[:, centre]
    hidden = torch.zeros_like(visible)
    hidden[occlusion.hidden_from:occlusion.hidden_to] = True
    assert 0 < occlusion.hidden_from < occlusion.hidden_to < metadata.num_frames
    assert torch.equal(visible, ~hidden)
    assert bool(clip.tracks.static[metadata.track_sprite == occluder].all())
    steps = metadata.centre_paths[1:, mover] - metadata.centre_paths[:-1, mover]
    assert float(steps.norm(dim=-1).max()) <= SHORT_OCCLUSION.max_speed + 1e-6
    again = occlusion_clip(SHORT_OCCLUSION, 1234)
    assert torch.equal(again.clip.frames, clip.frames) and again.hidden_to == occlusion.hidden_to
    # The benchmark's clips (31 frames at the default speed limit) can be built; a too short clip cannot.
    assert occlusion_clip(SyntheticMotionConfig(num_frames=31), 5).hidden_to < 31
    with pytest.raises(ValueError, match="more frames"):
        occlusion_clip(SyntheticMotionConfig(num_frames=9), 5)


def test_the_colour_error_is_zero_on_rendered_frames_and_nan_where_the_sprite_is_covered():
    occlusion = occlusion_clip(SHORT_OCCLUSION, 77)
    metadata = occlusion.clip.metadata
    paths = metadata.centre_paths.to(torch.float32)
    in_front = [(metadata.sprites[occlusion.occluder], paths[:, occlusion.occluder])]
    errors = sprite_colour_error(occlusion.clip.frames, metadata.sprites[occlusion.mover], paths[:, occlusion.mover], in_front)
    middle = (metadata.num_frames - 1) // 2
    assert math.isnan(float(errors[middle]))
    assert float(errors[0]) < 1e-4 and float(errors[-1]) < 1e-4
    grey = torch.full_like(occlusion.clip.frames, 0.5)
    assert float(sprite_colour_error(grey, metadata.sprites[occlusion.mover], paths[:, occlusion.mover])[0]) > 0.1


def test_reappearance_is_about_zero_on_the_clip_and_poor_when_the_mover_never_comes_back():
    occlusion = occlusion_clip(SHORT_OCCLUSION, 2024)
    metadata = occlusion.clip.metadata
    score = score_reappearance(occlusion.clip.frames, occlusion)
    assert score.after_frames == metadata.num_frames - occlusion.hidden_to > 0
    assert score.position_error < 0.2 and score.lost_fraction == 0.0
    assert score.colour_error < 0.01 and score.colour_error_before < 0.01

    gone = metadata.centre_paths.clone()
    gone[occlusion.hidden_from:, occlusion.mover] = -1000.0  # never comes out
    video = render_frames(metadata.background, metadata.sprites, gone).frames
    lost = score_reappearance(video, occlusion)
    assert lost.lost_fraction == 1.0
    assert lost.position_error > 10 * max(score.position_error, 0.1)
    assert lost.colour_error > 0.1
