"""Where training clips come from, and how each process gets its share of every global batch.

A dataset is any sequence of clip dicts (field names of `ClipBatch`, no batch dimension).
`ClipFileDataset` reads a directory of per-clip safetensors files (latents and text embeddings
computed offline); `RandomClipDataset` makes seeded random clips for smoke tests.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, Sequence

import torch

from ..model.weights import read_state_dict
from .data import ClipBatch


class ClipFileDataset:
    """`<directory>/*.safetensors`, one clip per file, tensors named like the `ClipBatch` fields."""

    def __init__(self, directory: str | Path, null_text: torch.Tensor | None = None):
        self.files = sorted(Path(directory).glob("*.safetensors"))
        if not self.files:
            raise ValueError(f"no .safetensors clips in {directory}")
        self.null_text = null_text

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip = read_state_dict(self.files[index])
        if self.null_text is not None and "null_text" not in clip:
            clip["null_text"] = self.null_text
        return clip


@dataclasses.dataclass(frozen=True)
class RandomClipDataset:
    """Seeded random latents, prompts and tracks of a fixed shape; clip i is always the same."""

    num_clips: int = 64
    channels: int = 16
    num_frames: int = 21
    latent_height: int = 8
    latent_width: int = 8
    text_len: int = 8
    text_dim: int = 4096
    num_tracks: int = 16
    image_to_video: bool = False
    image_tokens: int = 0
    image_dim: int = 1280
    seed: int = 0

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        pixel_frames = (self.num_frames - 1) * 4 + 1
        shape = (self.channels, self.num_frames, self.latent_height, self.latent_width)
        clip = {
            "latents": torch.randn(shape, generator=g),
            "text": torch.randn(self.text_len, self.text_dim, generator=g),
            "null_text": torch.zeros(self.text_len, self.text_dim),
            "track_coords": torch.rand(pixel_frames, self.num_tracks, 2, generator=g),
            "track_visibility": (torch.rand(pixel_frames, self.num_tracks, generator=g) < 0.9).float(),
            "track_ids": torch.randint(0, 100_000, (self.num_tracks,), generator=g),
        }
        if self.image_to_video:
            clip["first_frame_latents"] = torch.randn((self.channels, 2, self.latent_height, self.latent_width), generator=g)
        if self.image_tokens:
            clip["image_tokens"] = torch.randn(self.image_tokens, self.image_dim, generator=g)
        return clip


class ShardedClipLoader:
    """Global batches of `batch_size * world_size` clips in a seeded order, reshuffled every epoch;
    each process collates only its own contiguous share. Sample ids are positions in that order
    (step * global batch + place), so per-clip randomness does not depend on the process count."""

    def __init__(self, dataset: Sequence, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed

    def _dataset_index(self, position: int) -> int:
        size = len(self.dataset)
        epoch, offset = divmod(position, size)
        order = torch.randperm(size, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
        return int(order[offset])

    def batch(self, step: int) -> ClipBatch:
        global_batch = self.batch_size * self.world_size
        first = step * global_batch + self.rank * self.batch_size
        positions = range(first, first + self.batch_size)
        return ClipBatch.collate([self.dataset[self._dataset_index(p)] for p in positions], sample_ids=positions)

    def __iter__(self) -> Iterator[ClipBatch]:
        step = 0
        while True:
            yield self.batch(step)
            step += 1
