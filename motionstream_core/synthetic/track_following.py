"""Do the sprites of a generated video follow the requested tracks? End-point error against them.

A requested track point is predicted at its sprite's located centre (see
:mod:`.sprite_location`) plus the point's fixed offset (sprites translate
only). EPE is the Euclidean distance in pixels between that and the requested
position, averaged over the *scored* points: the requested points that are
visible and whose sprite shows at least 20% of its area in the requested
layout (a sliver does not pin down a centre). ``lost_fraction`` is the share
of scored (frame, sprite) pairs whose confidence is below 0.5.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..motion.tracks import TrackSet
from .clips import ClipMetadata, SyntheticClip
from .rendering import render_frames
from .scoring_inputs import checked_frames, clip_metadata
from .sprite_location import SpriteLocations, locate_sprites


@dataclasses.dataclass(frozen=True, eq=False)
class TrackFollowingScore:
    epe: float  # mean end-point error over scored requested points, pixels (nan if none)
    per_frame_epe: torch.Tensor  # float64 [T]; nan on frames without scored points
    per_track_epe: torch.Tensor  # float64 [N]; nan for tracks never scored
    lost_fraction: float  # share of scored (frame, sprite) pairs with confidence < min_confidence
    locations: SpriteLocations


def score_track_following(
    frames: torch.Tensor,
    clip: SyntheticClip | ClipMetadata,
    tracks: TrackSet | None = None,
    *,
    min_visible_fraction: float = 0.2,
    min_confidence: float = 0.5,
) -> TrackFollowingScore:
    """End-point error between the sprites in ``frames`` and the requested ``tracks``.

    ``tracks`` default to the clip's own; other requested tracks must use the
    clip's track ids (any subset) and have one frame per video frame (resample
    them with :func:`..motion.resample_tracks` first).

    A visible requested point is scored unless less than ``min_visible_fraction``
    of its sprite would show in the requested layout (the clip's sprites at the
    centres the requested points imply): a sliver of a sprite does not pin down
    its centre.
    """
    metadata = clip_metadata(clip)
    if tracks is None:
        if not isinstance(clip, SyntheticClip):
            raise ValueError("pass the requested tracks, or the SyntheticClip that carries them")
        tracks = clip.tracks
    frames = checked_frames(frames, metadata.width, metadata.height)
    if tracks.num_frames != frames.shape[0]:
        raise ValueError(f"{tracks.num_frames} track frames for {frames.shape[0]} video frames; resample the tracks")
    if (tracks.width, tracks.height) != (metadata.width, metadata.height):
        raise ValueError(f"tracks are for {tracks.width}x{tracks.height}, the clip is {metadata.width}x{metadata.height}")
    clip_track = _clip_track_indices(tracks.track_ids, metadata.track_ids)
    sprite_of_track = metadata.track_sprite[clip_track]
    offsets = metadata.track_offsets[clip_track]

    shown = _requested_visible_fraction(metadata, tracks, sprite_of_track, offsets)
    scored = tracks.visibility & (shown[:, sprite_of_track] >= min_visible_fraction)  # [T, N]
    locations = locate_sprites(frames, metadata)
    predicted = locations.positions[:, sprite_of_track] + offsets
    error = (predicted - tracks.points.to(torch.float64)).norm(dim=-1)
    masked = torch.where(scored, error, 0.0)
    count = scored.sum()
    epe = float(masked.sum() / count) if int(count) else math.nan
    per_frame = masked.sum(dim=1) / scored.sum(dim=1)  # nan where nothing is scored
    per_track = masked.sum(dim=0) / scored.sum(dim=0)

    scored_sprites = torch.zeros(frames.shape[0], metadata.num_sprites, dtype=torch.bool)
    frame_of_point = torch.arange(frames.shape[0])[:, None].expand_as(scored)
    scored_sprites[frame_of_point[scored], sprite_of_track.expand_as(scored)[scored]] = True
    lost = (locations.confidence < min_confidence) & scored_sprites
    lost_fraction = float(lost.sum() / scored_sprites.sum()) if bool(scored_sprites.any()) else 0.0
    return TrackFollowingScore(epe, per_frame, per_track, lost_fraction, locations)


def track_following_epe(
    frames: torch.Tensor, clip: SyntheticClip | ClipMetadata, tracks: TrackSet | None = None
) -> float:
    """Mean end-point error in pixels over the scored requested points; see :func:`score_track_following`."""
    return score_track_following(frames, clip, tracks).epe


def _requested_visible_fraction(
    metadata: ClipMetadata, tracks: TrackSet, sprite_of_track: torch.Tensor, offsets: torch.Tensor
) -> torch.Tensor:
    """``[T, S]`` share of each sprite showing with the sprites where the requested points put them.

    A sprite's requested centre is the mean of its visible points' centres
    (all its points' where none is visible); sprites without requested tracks
    stay on the clip's paths.
    """
    centres = metadata.centre_paths.clone()
    implied = tracks.points.to(torch.float64) - offsets  # [T, N, 2]
    for sprite in sprite_of_track.unique().tolist():
        own = sprite_of_track == sprite
        weights = tracks.visibility[:, own].to(torch.float64)  # [T, n]
        weights = torch.where(weights.sum(dim=1, keepdim=True) > 0, weights, torch.ones_like(weights))
        centres[:, sprite] = (implied[:, own] * weights[..., None]).sum(dim=1) / weights.sum(dim=1)[:, None]
    return render_frames(metadata.background, metadata.sprites, centres).visible_fraction


def _clip_track_indices(requested_ids: torch.Tensor, clip_ids: torch.Tensor) -> torch.Tensor:
    matches = requested_ids[:, None] == clip_ids[None, :]
    unknown = ~matches.any(dim=1)
    if bool(unknown.any()):
        missing = requested_ids[unknown][:5].tolist()
        raise ValueError(f"requested track ids {missing} are not tracks of this clip")
    return matches.to(torch.int64).argmax(dim=1)
