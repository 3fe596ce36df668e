"""Causal, chunk-by-chunk forward of a Wan 2.1 transformer through a KV cache.

This is a thin layer over `WanDiT`: it owns no weights and reuses the model's patchify, time
embedding, blocks and head, replacing only self-attention (through the model's hook) so that a
chunk attends to itself and to the cached keys/values of earlier frames.

Two RoPE policies are supported:

- "absolute" (Self-Forcing, CausVid, LongLive): keys are rotated with their absolute latent-frame
  index before they are cached, queries with the absolute positions of the chunk. Generation
  stops with `RopeRangeError` at `config.rope_max_len` frames; positions never wrap.
- "relative" (MotionStream, Track-v0): raw keys are cached; for every chunk the visible frames
  [sink | rolling | current chunk] get positions 0..n-1 in that order, and the queries the
  positions of the chunk among them. Video length is unbounded. The visible keys are rotated
  once per chunk, not at every forward (rotated_keys.py).

RoPE tables are built once per latent grid on the model's device (`RotaryTables`); a chunk only
cuts its tables out of them, with Python integers, so a chunk never waits on the device.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Sequence

import torch

from ..model.attention import attention
from .cache_policies import CacheGeometry, CachePolicy, cache_policy_named
from .compiled_blocks import CompiledBlocks
from .kv_cache import ChunkSlots, KVCache
from ..model.rope import RotaryEmbedding, RotaryTables, rotation_dtype
from ..model.wan_dit import CrossAttentionContext, PatchGrid, WanDiT
from .rotated_keys import RotatedKeys

ROPE_POLICIES = ("absolute", "relative")


class RopeRangeError(ValueError):
    """An absolute-RoPE stream reached the last position the model knows."""


@dataclasses.dataclass(frozen=True)
class _ChunkRotary:
    # The chunk's own frames: its queries, and its keys (before caching under the absolute policy).
    chunk: RotaryEmbedding
    # Every visible slot, for the raw keys read back from the cache (relative policy).
    visible_keys: RotaryEmbedding | None


def _visible_with_chunk(
    cache: KVCache, layer: int, slots: ChunkSlots, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """What `cache.visible` returns after writing the chunk, built out of place (the cache is untouched)."""
    index = torch.tensor(slots.write_slots, device=key.device)
    spliced = []
    for buffer, chunk in ((cache.keys[layer], key), (cache.values[layer], value)):
        held = buffer[:, : slots.visible_slots]
        missing = slots.visible_slots - held.shape[1]
        if missing > 0:  # a growing cache that has not been extended to this chunk yet
            held = torch.cat((held, held.new_zeros(held.shape[0], missing, *held.shape[2:])), dim=1)
        chunk = chunk.unflatten(1, (len(slots.write_slots), buffer.shape[2])).to(held.dtype)
        spliced.append(held.index_copy(1, index, chunk).flatten(1, 2))
    return spliced[0], spliced[1]


class CausalWanModel:
    def __init__(self, transformer: WanDiT, rope_policy: str = "relative"):
        if rope_policy not in ROPE_POLICIES:
            raise ValueError(f"unknown RoPE policy {rope_policy!r}; use one of {ROPE_POLICIES}")
        if transformer.config.patch_size[0] != 1:
            raise ValueError(
                f"causal streaming needs a temporal patch size of 1, the model has {transformer.config.patch_size[0]}"
            )
        self.transformer = transformer
        self.rope_policy = rope_policy
        self._rotary_memo: tuple[tuple, _ChunkRotary] | None = None
        self._tables: dict[tuple, RotaryTables] = {}
        self._rotated_keys: weakref.WeakKeyDictionary[KVCache, RotatedKeys] = weakref.WeakKeyDictionary()
        self._compiled_blocks: CompiledBlocks | None = None

    @property
    def config(self):
        return self.transformer.config

    @property
    def device(self) -> torch.device:
        return self.transformer.patch_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def compile_blocks(self) -> None:
        """From now on, chunk forwards run the transformer blocks through `torch.compile` (compiled_blocks.py).

        Compilation happens at the first chunk of each shape. Re-caching after a prompt change, whose
        shapes vary, stays eager.
        """
        if self._compiled_blocks is None:
            self._compiled_blocks = CompiledBlocks()

    def cache_geometry(self, batch_size: int, latent_height: int, latent_width: int) -> CacheGeometry:
        config = self.config
        return CacheGeometry(
            num_layers=config.num_layers,
            batch_size=batch_size,
            tokens_per_frame=config.tokens_per_frame(latent_height, latent_width),
            num_heads=config.num_heads,
            head_dim=config.head_dim,
            dtype=self.dtype,
            device=self.device,
        )

    def new_cache(
        self,
        batch_size: int,
        latent_height: int,
        latent_width: int,
        sink_frames: int,
        window_frames: int,
        policy: CachePolicy | str = "rolling",
    ) -> KVCache:
        """An empty cache for this model and latent size, kept by `policy` (a `CachePolicy` or its name)."""
        if isinstance(policy, str):
            policy = cache_policy_named(policy)
        span = policy.attention_span(sink_frames, window_frames)
        # Relative RoPE numbers the visible frames 0..span-1, so the span must fit the table.
        if self.rope_policy == "relative" and span is not None and span > self.config.rope_max_len:
            raise ValueError(f"window_frames {span} exceeds the model's rope_max_len {self.config.rope_max_len}")
        return policy.allocate(self.cache_geometry(batch_size, latent_height, latent_width), sink_frames, window_frames)

    def encode_context(
        self, text: torch.Tensor, image_tokens: torch.Tensor | None = None
    ) -> list[CrossAttentionContext]:
        """Cross-attention keys/values of every layer, computed once per prompt."""
        with torch.no_grad():
            return self.transformer.encode_context(text.to(self.device), None if image_tokens is None else image_tokens.to(self.device))

    @torch.no_grad()
    def forward_chunk(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float,
        context: list[CrossAttentionContext],
        cache: KVCache,
        start_frame: int,
    ) -> torch.Tensor:
        """Velocity [B, C_out, F, H, W] of the chunk latents [B, C_in, F, H, W] starting at `start_frame`.

        The chunk's keys/values are written into its cache slots; calling this again for the same
        chunk (the next denoising step, or the commit pass of the clean chunk) overwrites them.
        """
        return self._run_chunk(latents, timestep, context, cache, start_frame, write_cache=True)

    def forward_chunk_with_grad(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float,
        context: list[CrossAttentionContext],
        cache: KVCache,
        start_frame: int,
    ) -> torch.Tensor:
        """`forward_chunk` for training: autograd runs through the chunk, and the cache is only read.

        The chunk attends to exactly what `forward_chunk` would let it attend to, but its own
        keys/values are spliced into a copy of the visible cache instead of being written: the
        commit pass and later chunks write the cache in place, which would otherwise invalidate
        the tensors saved for backward. No gradient reaches earlier chunks through the cache.
        """
        return self._run_chunk(latents, timestep, context, cache, start_frame, write_cache=False)

    def _run_chunk(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float,
        context: list[CrossAttentionContext],
        cache: KVCache,
        start_frame: int,
        write_cache: bool,
    ) -> torch.Tensor:
        model = self.transformer
        tokens, grid = model.patchify(latents.to(self.device))
        self._check_geometry(cache, grid, tokens.shape[0])
        slots = cache.plan(start_frame, grid.frames)
        rotary = self._chunk_rotary(slots, grid)
        frame_embedding, frame_modulation = model.embed_timesteps(
            torch.as_tensor(timestep, device=self.device), tokens.shape[0], grid.frames
        )

        rotated_keys = self._rotated_keys_of(cache) if write_cache and self.rope_policy == "relative" else None

        def self_attention(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            if rotated_keys is not None:
                keys, values = rotated_keys.write_and_read(cache, layer, slots, k, v, rotary.chunk, rotary.visible_keys)
                return attention(rotary.chunk.apply(q), keys, values)
            if self.rope_policy == "absolute":
                k = rotary.chunk.apply(k)
            if write_cache:
                cache.write(layer, slots.write_slots, k, v)
                keys, values = cache.visible(layer, slots)
            else:
                keys, values = _visible_with_chunk(cache, layer, slots, k, v)
            if rotary.visible_keys is not None:
                keys = rotary.visible_keys.apply(keys)
            return attention(rotary.chunk.apply(q), keys, values)

        if self._compiled_blocks is None:
            out = model.run_blocks(tokens, frame_embedding, frame_modulation, context, self_attention)
        else:
            out = self._compiled_blocks.run(model, tokens, frame_embedding, frame_modulation, context, self_attention)
        return model.unpatchify(out, grid)

    def prepare_chunk(self, latents: torch.Tensor, cache: KVCache, start_frame: int) -> tuple[torch.Tensor, ...]:
        """Rotates the visible keys of every layer for this chunk unless done already (relative policy),
        and returns the RoPE tables the chunk's forwards read.

        A chunk's first forward rotates the keys itself; a replayed CUDA graph, captured from a later
        forward of a chunk, does not, so the graph runner calls this before every replay, and holds
        on to the tables for as long as its graph reads them.
        """
        _, ph, pw = self.config.patch_size
        grid = PatchGrid(latents.shape[2], latents.shape[3] // ph, latents.shape[4] // pw)
        slots = cache.plan(start_frame, grid.frames)
        rotary = self._chunk_rotary(slots, grid)
        if self.rope_policy == "relative":
            rotated_keys = self._rotated_keys_of(cache)
            for layer in range(cache.num_layers):
                rotated_keys.prepare(cache, layer, slots, rotary.visible_keys)
        return rotary.chunk.cos, rotary.chunk.sin

    @torch.no_grad()
    def recache(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float,
        context: list[CrossAttentionContext],
        cache: KVCache,
        frames: Sequence[int],
        blocks: Sequence[int],
    ) -> None:
        """Recomputes the cached keys/values of `frames` (ascending) from their commit inputs in one pass.

        Used after a prompt change (LongLive's re-cache): the frames attend each other block-causally
        (a frame sees the frames of its own and of earlier `blocks`), under the new context.
        """
        model = self.transformer
        if len(frames) != latents.shape[2] or len(blocks) != len(frames):
            raise ValueError(f"recache got {latents.shape[2]} latent frames for {len(frames)} frame indices")
        if list(frames) != sorted(frames):
            raise ValueError(f"recache frames must be ascending, got {list(frames)}")
        tokens, grid = model.patchify(latents.to(self.device))
        self._check_geometry(cache, grid, tokens.shape[0])
        positions = list(frames) if self.rope_policy == "absolute" else list(range(len(frames)))
        self._check_absolute_range(max(positions) + 1)
        rotary = self._rope_tables(grid).at(positions)
        block_ids = torch.tensor(blocks, device=self.device).repeat_interleave(grid.tokens_per_frame)
        mask = block_ids[None, :] <= block_ids[:, None]
        slots = [cache.slot_of(frame) for frame in frames]
        frame_embedding, frame_modulation = model.embed_timesteps(
            torch.as_tensor(timestep, device=self.device), tokens.shape[0], grid.frames
        )

        def self_attention(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            rotated = rotary.apply(k)
            cache.write(layer, slots, rotated if self.rope_policy == "absolute" else k, v)
            return attention(rotary.apply(q), rotated, v, mask=mask)

        model.run_blocks(tokens, frame_embedding, frame_modulation, context, self_attention)

    def _check_geometry(self, cache: KVCache, grid: PatchGrid, batch: int) -> None:
        if grid.tokens_per_frame != cache.tokens_per_frame:
            raise ValueError(
                f"the chunk has {grid.tokens_per_frame} tokens per frame but the cache was made for "
                f"{cache.tokens_per_frame}; make a new cache for this latent size"
            )
        if batch != cache.keys[0].shape[0]:
            raise ValueError(f"the chunk has batch size {batch} but the cache was made for {cache.keys[0].shape[0]}")

    def _check_absolute_range(self, end_frame: int) -> None:
        if self.rope_policy == "absolute" and end_frame > self.config.rope_max_len:
            raise RopeRangeError(
                f"latent frame {end_frame - 1} is past the {self.config.rope_max_len} positions this model's "
                "absolute RoPE covers; start a new stream (reset) or use the 'relative' RoPE policy"
            )

    def _rope_tables(self, grid: PatchGrid) -> RotaryTables:
        dtype = rotation_dtype(self.dtype)
        key = (grid.height, grid.width, dtype, self.device)
        if key not in self._tables:
            self._tables[key] = RotaryTables(self.config, grid.height, grid.width, dtype, self.device)
        return self._tables[key]

    def _rotated_keys_of(self, cache: KVCache) -> RotatedKeys:
        if cache not in self._rotated_keys:
            self._rotated_keys[cache] = RotatedKeys(cache.num_layers)
        return self._rotated_keys[cache]

    def _chunk_rotary(self, slots: ChunkSlots, grid: PatchGrid) -> _ChunkRotary:
        # All denoising steps and the commit pass of a chunk (and every guidance branch) share the same tables.
        tables = self._rope_tables(grid)
        key = (self.rope_policy, slots, tables)
        if self._rotary_memo is not None and self._rotary_memo[0] == key:
            return self._rotary_memo[1]
        if self.rope_policy == "absolute":
            self._check_absolute_range(slots.end_frame)
            rotary = _ChunkRotary(chunk=tables.at(range(slots.start_frame, slots.end_frame)), visible_keys=None)
        else:
            rotary = _ChunkRotary(
                chunk=tables.at(slots.relative_query_positions()),
                visible_keys=tables.at(slots.relative_key_positions()),
            )
        self._rotary_memo = (key, rotary)
        return rotary
