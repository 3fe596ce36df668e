"""Relative-RoPE keys a chunk attends to, rotated once per chunk instead of at every forward.

Under the relative policy the cache holds raw keys, and the frames a chunk sees are numbered by
slot for that chunk. Between the denoising steps and the commit pass of one chunk those numbers
stay the same and only the chunk's own keys change, so the first forward of a chunk rotates every
visible key into a per-layer buffer and each later forward rotates only the chunk's keys into their
slots. The rotation is elementwise with the same tables either way, so the buffer holds exactly
what rotating every visible key at every forward would give.

The buffer is current for one (chunk plan, cache write count) per layer. Writes that do not come
from the chunk's own forwards (the next chunk's, a re-cache after a prompt change) change the
count, and the next forward rotates everything again.
"""

from __future__ import annotations

import torch

from ..model.rope import RotaryEmbedding
from .kv_cache import ChunkSlots, KVCache, copy_into_slots


class RotatedKeys:
    """Rotated visible keys of one cache: per layer, a buffer shaped like the cache's keys."""

    def __init__(self, num_layers: int):
        self._buffers: list[torch.Tensor | None] = [None] * num_layers
        # Per layer, the (chunk plan, cache write count) the buffer was last brought up to date for.
        self._current_for: list[tuple[ChunkSlots, int] | None] = [None] * num_layers

    def write_and_read(
        self,
        cache: KVCache,
        layer: int,
        slots: ChunkSlots,
        key: torch.Tensor,
        value: torch.Tensor,
        chunk_rope: RotaryEmbedding,
        visible_rope: RotaryEmbedding,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes the chunk's raw key/value into the cache; returns the rotated visible keys and the values,
        [B, visible_slots * tokens_per_frame, H, D] each.

        chunk_rope: the tables of the chunk's own frames; visible_rope: those of every visible slot.
        """
        current = self._current_for[layer] == (slots, cache.write_count(layer))
        cache.write(layer, slots.write_slots, key, value)
        buffer = self._buffer(cache, layer)
        if current and buffer is self._buffers[layer]:
            copy_into_slots(buffer, slots.write_slots, chunk_rope.apply(key.to(buffer.dtype)))
        else:
            self._rotate_visible(cache, layer, slots, visible_rope, buffer)
        self._current_for[layer] = (slots, cache.write_count(layer))
        _, values = cache.visible(layer, slots)
        return buffer[:, : slots.visible_slots].flatten(1, 2), values

    def prepare(self, cache: KVCache, layer: int, slots: ChunkSlots, visible_rope: RotaryEmbedding) -> None:
        """Rotates the visible keys for this chunk unless the buffer is up to date for it already."""
        buffer = self._buffer(cache, layer)
        if buffer is not self._buffers[layer] or self._current_for[layer] != (slots, cache.write_count(layer)):
            self._rotate_visible(cache, layer, slots, visible_rope, buffer)
            self._current_for[layer] = (slots, cache.write_count(layer))

    def _buffer(self, cache: KVCache, layer: int) -> torch.Tensor:
        """The layer's buffer, or a new one where the cache's keys changed shape, dtype or device (a growing cache)."""
        keys, buffer = cache.keys[layer], self._buffers[layer]
        if buffer is not None and (buffer.shape, buffer.dtype, buffer.device) == (keys.shape, keys.dtype, keys.device):
            return buffer
        return torch.empty_like(keys)

    def _rotate_visible(
        self, cache: KVCache, layer: int, slots: ChunkSlots, visible_rope: RotaryEmbedding, buffer: torch.Tensor
    ) -> None:
        visible = slots.visible_slots
        raw, _ = cache.visible(layer, slots)
        buffer[:, :visible].copy_(visible_rope.apply(raw).unflatten(1, (visible, cache.tokens_per_frame)))
        self._buffers[layer] = buffer
