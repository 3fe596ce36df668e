"""Self-attention key/value caches of a causal student; a `CachePolicy` (cache_policies.py) picks one.

`RollingKVCache`: attention sink + rolling window, allocated once.

Frame bookkeeping (which latent frame lives in which slot) is pure index arithmetic on the
frame range of the chunk being generated, so the cache holds no state besides its tensors:

- The first `sink_frames` latent frames ever generated keep slots 0..sink-1 forever.
- Every later frame f goes to slot `sink + (f - sink) % rolling_frames` (a ring buffer), where
  `rolling_frames = window_frames - sink_frames`. Writing a new chunk therefore overwrites the
  oldest non-sink frames, which is the eviction; nothing is copied or reallocated.
- A chunk ending at frame e sees the sink frames and the newest `rolling_frames` frames up to e
  (its own frames included). Those always fill the physical prefix [0, min(e, window_frames)) of
  the buffer, so attention reads a plain view: no gather and no mask.

Because a chunk only ever writes into slots of frames it does not see, an interrupted chunk can
be generated again from scratch with the same visible context.

`GrowingKVCache`: every frame, grown by reallocation; the unbounded baseline.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Sequence

import torch


@dataclasses.dataclass(frozen=True)
class ChunkSlots:
    """Where the frames [start_frame, start_frame + num_frames) go, and what they attend to."""

    start_frame: int
    num_frames: int
    # Physical slot of each frame of the chunk, in frame order.
    write_slots: tuple[int, ...]
    # Attention reads the slots [0, visible_slots) once the chunk is written.
    visible_slots: int
    # The latent frame held by each of those slots, in slot order.
    slot_frames: tuple[int, ...]

    @property
    def end_frame(self) -> int:
        return self.start_frame + self.num_frames

    def relative_key_positions(self) -> list[int]:
        """Per visible slot, the rank of its frame among the visible frames (sink, rolling, chunk order)."""
        rank = {frame: position for position, frame in enumerate(sorted(self.slot_frames))}
        return [rank[frame] for frame in self.slot_frames]

    def relative_query_positions(self) -> list[int]:
        """Positions of the chunk's own frames under the same ranking: the last `num_frames` ones."""
        return list(range(self.visible_slots - self.num_frames, self.visible_slots))


def _contiguous_runs(slots: Sequence[int]):
    """(first source index, first slot, length) of each run of consecutive slots."""
    start = 0
    for index in range(1, len(slots) + 1):
        if index == len(slots) or slots[index] != slots[index - 1] + 1:
            yield start, slots[start], index - start
            start = index


def copy_into_slots(buffer: torch.Tensor, slots: Sequence[int], tokens: torch.Tensor) -> None:
    """Copies tokens [B, len(slots) * T, H, D] into the frame slots of a buffer [B, frames, T, H, D]."""
    tokens = tokens.unflatten(1, (len(slots), buffer.shape[2]))
    for source, slot, length in _contiguous_runs(slots):
        buffer[:, slot : slot + length].copy_(tokens[:, source : source + length])


class KVCache(abc.ABC):
    """Per-layer key and value tensors [B, frames, tokens_per_frame, H, D]: what the causal model calls.

    `plan` places a chunk's frames in slots, `write` stores their keys/values, `visible` reads what
    the chunk attends to, and `restart` prepares the cache for a new stream at frame 0. Every write
    is counted per layer (`write_count`), so that whoever keeps something derived from the cached
    keys can tell whether they changed since.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    tokens_per_frame: int
    sink_frames: int
    # Frame slots currently allocated per layer.
    window_frames: int
    _write_counts: list[int]

    @abc.abstractmethod
    def slot_of(self, frame: int) -> int:
        """The slot that holds latent frame `frame`."""

    @abc.abstractmethod
    def held_frames(self, end_frame: int) -> list[int]:
        """The frames the cache holds once every frame before `end_frame` is committed, in frame order."""

    @abc.abstractmethod
    def plan(self, start_frame: int, num_frames: int) -> ChunkSlots:
        """Where the chunk's frames go and which slots it attends to; raises if the chunk cannot fit."""

    @abc.abstractmethod
    def write(self, layer: int, slots: Sequence[int], key: torch.Tensor, value: torch.Tensor) -> None:
        """Stores key/value [B, len(slots) * tokens_per_frame, H, D] into the given slots; calls `count_write`."""

    @abc.abstractmethod
    def restart(self) -> None:
        """Prepares the cache for a new stream that starts again at frame 0."""

    @property
    def num_layers(self) -> int:
        return len(self.keys)

    def write_count(self, layer: int) -> int:
        """How many writes `layer` has had."""
        return self._write_counts[layer]

    def count_write(self, layer: int) -> None:
        """Records a write of `layer`."""
        self._write_counts[layer] += 1

    def tensors(self) -> list[torch.Tensor]:
        return [*self.keys, *self.values]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def visible(self, layer: int, slots: ChunkSlots) -> tuple[torch.Tensor, torch.Tensor]:
        """Views [B, visible_slots * tokens_per_frame, H, D] of the keys and values a chunk attends to."""
        n = slots.visible_slots
        return self.keys[layer][:, :n].flatten(1, 2), self.values[layer][:, :n].flatten(1, 2)


class RollingKVCache(KVCache):
    """One key and one value tensor [B, window_frames, tokens_per_frame, H, D] per layer."""

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        tokens_per_frame: int,
        num_heads: int,
        head_dim: int,
        sink_frames: int,
        window_frames: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        if sink_frames < 0:
            raise ValueError(f"sink_frames must be non-negative, got {sink_frames}")
        if window_frames <= sink_frames:
            raise ValueError(
                f"window_frames ({window_frames}) counts the sink, the rolling frames and the current chunk, "
                f"so it must be larger than sink_frames ({sink_frames})"
            )
        for name, value in (("num_layers", num_layers), ("batch_size", batch_size),
                            ("tokens_per_frame", tokens_per_frame), ("num_heads", num_heads), ("head_dim", head_dim)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        self.sink_frames = sink_frames
        self.window_frames = window_frames
        self.rolling_frames = window_frames - sink_frames
        self.tokens_per_frame = tokens_per_frame
        shape = (batch_size, window_frames, tokens_per_frame, num_heads, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self._write_counts = [0] * num_layers

    def slot_of(self, frame: int) -> int:
        if frame < self.sink_frames:
            return frame
        return self.sink_frames + (frame - self.sink_frames) % self.rolling_frames

    def held_frames(self, end_frame: int) -> list[int]:
        """The frames the cache holds once every frame before `end_frame` is committed, in frame order."""
        frames = list(range(min(self.sink_frames, end_frame)))
        return frames + list(range(max(self.sink_frames, end_frame - self.rolling_frames), end_frame))

    def plan(self, start_frame: int, num_frames: int) -> ChunkSlots:
        if start_frame < 0 or num_frames < 1:
            raise ValueError(f"invalid chunk: start frame {start_frame}, {num_frames} frames")
        end = start_frame + num_frames
        rolling_in_chunk = end - max(start_frame, self.sink_frames)
        if rolling_in_chunk > self.rolling_frames:
            raise ValueError(
                f"a chunk of {num_frames} latent frames starting at frame {start_frame} does not fit the "
                f"{self.rolling_frames} rolling frames of the cache (window {self.window_frames}, sink "
                f"{self.sink_frames}); use a larger window or smaller blocks"
            )
        visible = self.held_frames(end)
        slot_frames = [0] * len(visible)
        for frame in visible:
            slot_frames[self.slot_of(frame)] = frame
        return ChunkSlots(
            start_frame=start_frame,
            num_frames=num_frames,
            write_slots=tuple(self.slot_of(f) for f in range(start_frame, end)),
            visible_slots=len(visible),
            slot_frames=tuple(slot_frames),
        )

    def write(self, layer: int, slots: Sequence[int], key: torch.Tensor, value: torch.Tensor) -> None:
        """Stores key/value [B, len(slots) * tokens_per_frame, H, D] into the given slots, in place."""
        copy_into_slots(self.keys[layer], slots, key)
        copy_into_slots(self.values[layer], slots, value)
        self.count_write(layer)

    def restart(self) -> None:
        # Nothing to clear: a chunk sees only slots of frames of its own stream, and every one of
        # them is written before it becomes visible.
        pass


class GrowingKVCache(KVCache):
    """A cache that keeps every frame and grows by reallocation: the unbounded baseline.

    Only for tests and benchmarks: memory and per-chunk time grow with video length, which is
    what the rolling cache exists to avoid.
    """

    sink_frames = 0

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        tokens_per_frame: int,
        num_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        self.tokens_per_frame = tokens_per_frame
        shape = (batch_size, 0, tokens_per_frame, num_heads, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self._write_counts = [0] * num_layers

    @property
    def window_frames(self) -> int:
        return self.keys[0].shape[1]

    def slot_of(self, frame: int) -> int:
        return frame

    def held_frames(self, end_frame: int) -> list[int]:
        return list(range(end_frame))

    def plan(self, start_frame: int, num_frames: int) -> ChunkSlots:
        end = start_frame + num_frames
        return ChunkSlots(start_frame, num_frames, tuple(range(start_frame, end)), end, tuple(range(end)))

    def write(self, layer: int, slots: Sequence[int], key: torch.Tensor, value: torch.Tensor) -> None:
        missing = max(slots) + 1 - self.keys[layer].shape[1]
        if missing > 0:
            pad_shape = list(self.keys[layer].shape)
            pad_shape[1] = missing
            pad = self.keys[layer].new_zeros(pad_shape)
            self.keys[layer] = torch.cat((self.keys[layer], pad), dim=1)
            self.values[layer] = torch.cat((self.values[layer], pad), dim=1)
        copy_into_slots(self.keys[layer], slots, key)
        copy_into_slots(self.values[layer], slots, value)
        self.count_write(layer)

    def restart(self) -> None:
        # Free what the previous stream grew to; the new stream grows again from nothing.
        self.keys = [k.new_zeros((k.shape[0], 0, *k.shape[2:])) for k in self.keys]
        self.values = [v.new_zeros((v.shape[0], 0, *v.shape[2:])) for v in self.values]
