"""Do the sprites nobody drags stay in a video, and roughly where they were? A persistence score.

A sprite is *unguided* on a frame where no track of it is given: with no
tracks at all, every sprite on every frame; with a track that starts late or
stops early, the frames outside its span. Each maximal run of unguided frames
of one sprite is a *span*, judged on its last frame ``e``:

- its *reference* is where the sprite last was by request: its true centre on
  the frame before the span (the tracks follow the clip's paths), or on the
  first frame (the given image) for a span that starts there;
- the span is *kept* when the sprite is found on frame ``e``: its location
  confidence (:mod:`.sprite_location`) is at least ``min_confidence`` (0.5, the
  threshold of the track-following score's ``lost_fraction``);
- its *displacement* is the distance in pixels from the sprite's located
  centre on frame ``e`` to its reference; only kept spans have one (where a
  lost sprite is located means nothing).

A span counts only if at least ``min_visible_fraction`` (20%, as for the
end-point error) of its sprite would show on frame ``e`` with every unguided
sprite at its reference and every guided one on its true path: a sprite that
is rightly covered is not lost. ``kept_fraction`` is kept spans over counted
spans and ``displacement`` the mean over kept spans (both nan when there are
none). Objects kept and left in place score 1 and about 0 px; a video without
the sprites scores 0 (and nan). ``confidence`` keeps each counted span's
location confidence on its judged frame, a finer view of how far from found
a lost sprite is.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .clips import ClipMetadata, SyntheticClip
from .rendering import render_frames
from .scoring_inputs import checked_frames, clip_metadata
from .sprite_location import SpriteLocations, locate_sprites


@dataclasses.dataclass(frozen=True, eq=False)
class PersistenceScore:
    kept_fraction: float  # kept spans / counted spans; nan if no span counts
    displacement: float  # mean pixels from the reference over kept spans; nan if none is kept
    spans: tuple[tuple[int, int, int], ...]  # counted spans: (sprite, first frame, last frame)
    kept: torch.Tensor  # bool [len(spans)]
    displacements: torch.Tensor  # float64 [len(spans)]; nan where not kept
    confidence: torch.Tensor  # float32 [len(spans)]: the sprite's location confidence on the span's last frame


def unguided_spans(unguided: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(sprite, first frame, last frame)`` of every maximal run of ``True`` in each column of ``[T, S]``."""
    spans = []
    for sprite, column in enumerate(unguided.t().tolist()):
        frame = 0
        while frame < len(column):
            if not column[frame]:
                frame += 1
                continue
            first = frame
            while frame < len(column) and column[frame]:
                frame += 1
            spans.append((sprite, first, frame - 1))
    return spans


def score_persistence(
    frames: torch.Tensor,
    clip: SyntheticClip | ClipMetadata,
    unguided: torch.Tensor | None = None,
    *,
    locations: SpriteLocations | None = None,
    min_visible_fraction: float = 0.2,
    min_confidence: float = 0.5,
) -> PersistenceScore:
    """Persistence of the unguided sprites in ``frames``; see the module docstring.

    ``unguided`` is bool ``[T, S]`` (default: every sprite on every frame, a
    video made without tracks). ``locations`` of ``frames`` may be passed to
    save locating the sprites again.
    """
    metadata = clip_metadata(clip)
    frames = checked_frames(frames, metadata.width, metadata.height)
    shape = (metadata.num_frames, metadata.num_sprites)
    if int(frames.shape[0]) != metadata.num_frames:
        raise ValueError(f"{frames.shape[0]} video frames for a {metadata.num_frames}-frame clip")
    unguided = torch.ones(shape, dtype=torch.bool) if unguided is None else torch.as_tensor(unguided, dtype=torch.bool)
    if tuple(unguided.shape) != shape:
        raise ValueError(f"unguided must have shape {list(shape)} (frames, sprites), got {list(unguided.shape)}")
    spans = unguided_spans(unguided)
    if not spans:
        return _no_spans()

    # Where every sprite should be: on its path where guided, at its span's reference where not.
    expected = metadata.centre_paths.clone()
    references = []
    for sprite, first, last in spans:
        reference = metadata.centre_paths[max(first - 1, 0), sprite]
        expected[first:last + 1, sprite] = reference
        references.append(reference)
    judged = torch.tensor([last for _, _, last in spans])
    shown = render_frames(metadata.background, metadata.sprites, expected[judged]).visible_fraction  # [spans, S]
    sprite_of_span = torch.tensor([sprite for sprite, _, _ in spans])
    counts = shown[torch.arange(len(spans)), sprite_of_span] >= min_visible_fraction
    if not bool(counts.any()):
        return _no_spans()

    if locations is None:
        locations = locate_sprites(frames, metadata)
    elif tuple(locations.confidence.shape) != shape:
        raise ValueError(f"locations are for {list(locations.confidence.shape)} (frames, sprites), expected {list(shape)}")
    index = counts.nonzero()[:, 0]
    judged, sprite_of_span = judged[index], sprite_of_span[index]
    reference = torch.stack(references)[index]
    confidence = locations.confidence[judged, sprite_of_span]
    kept = confidence >= min_confidence
    distance = (locations.positions[judged, sprite_of_span].to(torch.float64) - reference).norm(dim=-1)
    displacements = torch.where(kept, distance, math.nan)
    kept_count = int(kept.sum())
    return PersistenceScore(
        kept_fraction=kept_count / len(index),
        displacement=float(distance[kept].mean()) if kept_count else math.nan,
        spans=tuple(spans[i] for i in index.tolist()),
        kept=kept,
        displacements=displacements,
        confidence=confidence,
    )


def _no_spans() -> PersistenceScore:
    return PersistenceScore(math.nan, math.nan, (), torch.zeros(0, dtype=torch.bool),
                            torch.zeros(0, dtype=torch.float64), torch.zeros(0))
