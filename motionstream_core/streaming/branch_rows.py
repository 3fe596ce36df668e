"""One guidance branch's rows of a KV cache that several branches share along the batch dimension."""

from __future__ import annotations

from typing import Sequence

import torch

from .kv_cache import ChunkSlots, KVCache


class BranchRows(KVCache):
    """Batch rows `rows` of a shared cache, to read one branch's keys/values; only the shared cache is written."""

    def __init__(self, shared: KVCache, rows: slice):
        self.shared = shared
        self.rows = rows

    @property
    def keys(self) -> list[torch.Tensor]:
        return [k[self.rows] for k in self.shared.keys]

    @property
    def values(self) -> list[torch.Tensor]:
        return [v[self.rows] for v in self.shared.values]

    @property
    def tokens_per_frame(self) -> int:
        return self.shared.tokens_per_frame

    @property
    def sink_frames(self) -> int:
        return self.shared.sink_frames

    @property
    def window_frames(self) -> int:
        return self.shared.window_frames

    def slot_of(self, frame: int) -> int:
        return self.shared.slot_of(frame)

    def held_frames(self, end_frame: int) -> list[int]:
        return self.shared.held_frames(end_frame)

    def plan(self, start_frame: int, num_frames: int) -> ChunkSlots:
        return self.shared.plan(start_frame, num_frames)

    def write_count(self, layer: int) -> int:
        return self.shared.write_count(layer)

    def write(self, layer: int, slots: Sequence[int], key: torch.Tensor, value: torch.Tensor) -> None:
        raise TypeError("a branch's rows of a shared cache are read-only; write the shared cache")

    def restart(self) -> None:
        raise TypeError("a branch's rows of a shared cache are read-only; restart the shared cache")
