"""Tracks given over part of a clip only, as a user draws a drag that starts late or ends early.

Each sprite of a clip gets one span of frames on which its track is given:

- ``"starts"``: from frame ``round((T - 1) / 3)`` to the last frame (the drag
  begins a third of the way in);
- ``"stops"``: from the first frame to frame ``round(2 (T - 1) / 3)`` (the drag
  ends two thirds of the way in).

Which one is drawn per sprite from the clip's seed alone (a numpy generator
seeded with the seed and a fixed tag), so a clip always gets the same spans
and the choice does not disturb any other draw of the clip.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .clips import ClipMetadata, SyntheticClip
from .scoring_inputs import clip_metadata

SPAN_KINDS = ("starts", "stops")
_SPAN_STREAM = 0x5BA2  # mixed into the clip's seed; any fixed value keeps the spans reproducible


@dataclasses.dataclass(frozen=True, eq=False)
class TrackSpans:
    kinds: tuple[str, ...]  # per sprite, one of SPAN_KINDS
    given: torch.Tensor  # bool [T, S]: the sprite's track is given on that frame

    def track_mask(self, track_sprite: torch.Tensor) -> torch.Tensor:
        """Bool ``[T, N]``: whether each track (of sprite ``track_sprite[n]``) is given on each frame."""
        return self.given[:, track_sprite]


def partial_track_spans(clip: SyntheticClip | ClipMetadata) -> TrackSpans:
    """The frames on which each sprite's track is given; see the module docstring."""
    metadata = clip_metadata(clip)
    num_frames = metadata.num_frames
    rng = np.random.default_rng([metadata.seed, _SPAN_STREAM])
    kinds = tuple(SPAN_KINDS[int(choice)] for choice in rng.integers(0, len(SPAN_KINDS), size=metadata.num_sprites))
    first = round((num_frames - 1) / 3)
    last = round(2 * (num_frames - 1) / 3)
    frame = torch.arange(num_frames)[:, None]
    starts = torch.tensor([kind == "starts" for kind in kinds], dtype=torch.bool)[None, :]
    given = torch.where(starts, frame >= first, frame <= last)
    return TrackSpans(kinds, given)
