"""Synthetic clips as a map-style dataset, and their collation into padded training batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .clip_config import SyntheticMotionConfig
from .clips import SyntheticClip, generate_clip


class SyntheticMotionDataset(torch.utils.data.Dataset):
    """``length`` clips; clip ``i`` is ``generate_clip(config, clip_seed(seed, i))``.

    Map-style, so it works with ``torch.utils.data.DataLoader`` (use
    ``collate_fn=collate_clips``) and with any number of workers; iterating it
    yields the clips in order.
    """

    def __init__(self, config: SyntheticMotionConfig, length: int, seed: int = 0):
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"length must be a non-negative integer, got {length!r}")
        self.config = config
        self.length = length
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> SyntheticClip:
        if not -self.length <= index < self.length:
            raise IndexError(f"clip {index} out of range for {self.length} clips")
        return generate_clip(self.config, clip_seed(self.seed, index % self.length))

    def __iter__(self) -> Iterator[SyntheticClip]:
        for index in range(self.length):
            yield self[index]


def clip_seed(dataset_seed: int, index: int) -> int:
    """A well-mixed per-clip seed, so neighbouring datasets do not share clips."""
    return int(np.random.SeedSequence([int(dataset_seed), int(index)]).generate_state(1, np.uint32)[0])


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticBatch:
    """Clips stacked for training; tracks are padded to the largest track count.

    ``track_mask[b, n]`` is ``False`` for padding; padded tracks are invisible,
    at ``(0, 0)``, with id 0.
    """

    frames: torch.Tensor  # float32 [B, T, 3, H, W]
    points: torch.Tensor  # float32 [B, T, N, 2] pixels
    visibility: torch.Tensor  # bool [B, T, N]
    track_ids: torch.Tensor  # int64 [B, N]
    track_mask: torch.Tensor  # bool [B, N]
    clips: tuple[SyntheticClip, ...]


def collate_clips(clips: Sequence[SyntheticClip]) -> SyntheticBatch:
    if not clips:
        raise ValueError("cannot collate an empty list of clips")
    shapes = {tuple(clip.frames.shape) for clip in clips}
    if len(shapes) != 1:
        raise ValueError(f"clips must share frame count and size, got shapes {sorted(shapes)}")
    batch, num_frames = len(clips), clips[0].tracks.num_frames
    most = max(clip.tracks.num_tracks for clip in clips)
    points = torch.zeros(batch, num_frames, most, 2)
    visibility = torch.zeros(batch, num_frames, most, dtype=torch.bool)
    track_ids = torch.zeros(batch, most, dtype=torch.int64)
    track_mask = torch.zeros(batch, most, dtype=torch.bool)
    for index, clip in enumerate(clips):
        count = clip.tracks.num_tracks
        points[index, :, :count] = clip.tracks.points
        visibility[index, :, :count] = clip.tracks.visibility
        track_ids[index, :count] = clip.tracks.track_ids
        track_mask[index, :count] = True
    frames = torch.stack([clip.frames for clip in clips])
    return SyntheticBatch(frames, points, visibility, track_ids, track_mask, tuple(clips))
