"""Does a sprite that was hidden come back at the right place and in the right colour? The reappearance score.

Of an :class:`.OcclusionClip` (the mover's centre track invisible on frames
``hidden_from`` to ``hidden_to - 1``), in a video made from it:

- the *after* frames are ``hidden_to`` to the last: the mover is out again
  (its centre uncovered); the *before* frames are ``1`` to ``hidden_from - 1``
  (frame 0 is the given image);
- ``position_error``: the mean over the after frames of the distance in
  pixels between the mover's located centre (:mod:`.sprite_location`) and its
  true centre;
- ``lost_fraction``: the share of after frames on which the mover's location
  confidence is below ``min_confidence`` (0.5, as for track following);
- ``colour_error``: the mean over the after frames of the mover's colour error
  (:mod:`.sprite_colour`) at its located centre, the occluder at its located
  centre in front; ``colour_error_before`` is the same over the before frames,
  the video's colour error where no hiding was involved, to compare with.

A rendered clip scores about 0 on all four; a video in which the mover does
not come back scores a lost fraction near 1, and large position and colour errors.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .occlusion_clips import OcclusionClip
from .scoring_inputs import checked_frames
from .sprite_colour import sprite_colour_error
from .sprite_location import SpriteLocations, locate_sprites


@dataclasses.dataclass(frozen=True, eq=False)
class ReappearanceScore:
    position_error: float  # mean pixels from the true centre over the after frames
    colour_error: float  # mean RGB distance over the after frames (nan if no interior pixel shows)
    colour_error_before: float  # the same over the before frames (nan if there are none)
    lost_fraction: float  # share of the after frames with confidence < min_confidence
    after_frames: int


def score_reappearance(
    frames: torch.Tensor,
    occlusion: OcclusionClip,
    *,
    locations: SpriteLocations | None = None,
    min_confidence: float = 0.5,
) -> ReappearanceScore:
    """The reappearance score of the mover of ``occlusion`` in ``frames``; see the module docstring.

    ``locations`` of ``frames`` may be passed to save locating the sprites again.
    """
    metadata = occlusion.clip.metadata
    frames = checked_frames(frames, metadata.width, metadata.height)
    if int(frames.shape[0]) != metadata.num_frames:
        raise ValueError(f"{frames.shape[0]} video frames for a {metadata.num_frames}-frame clip")
    if locations is None:
        locations = locate_sprites(frames, metadata)
    mover, occluder = occlusion.mover, occlusion.occluder
    positions = locations.positions.to(torch.float32)
    colour = sprite_colour_error(
        frames, metadata.sprites[mover], positions[:, mover], [(metadata.sprites[occluder], positions[:, occluder])]
    )
    after = slice(occlusion.hidden_to, metadata.num_frames)
    before = slice(1, occlusion.hidden_from)
    error = (locations.positions[after, mover] - metadata.centre_paths[after, mover]).norm(dim=-1)
    return ReappearanceScore(
        position_error=float(error.mean()),
        colour_error=_nanmean(colour[after]),
        colour_error_before=_nanmean(colour[before]),
        lost_fraction=float((locations.confidence[after, mover] < min_confidence).to(torch.float64).mean()),
        after_frames=metadata.num_frames - occlusion.hidden_to,
    )


def _nanmean(values: torch.Tensor) -> float:
    values = values[~values.isnan()]
    return float(values.mean()) if values.numel() else math.nan
