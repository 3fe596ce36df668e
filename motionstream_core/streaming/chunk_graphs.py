"""Steady-state chunk forwards replayed from captured CUDA graphs.

Once the rolling window is full, every forward of a relative-RoPE stream has the same shapes and
reads and writes the same tensors (the cache, the rotated keys, the RoPE tables of the chunk's
positions, the prompt's context); only the slots a chunk writes move round the ring buffer. So a
graph is captured at the first forward of each (cache, write slots, input shape, context), with
its inputs in static buffers, and replayed for every later forward with the same key: the
remaining denoising steps and the commit pass of that chunk, and every chunk that comes back to
the same slots. Before each replay the visible keys are rotated for the chunk (eagerly, once per
chunk), as an eager forward would.

Everything else runs eagerly: the first chunks, before the window is full; the absolute RoPE
policy, whose tables change with every chunk; a growing cache, which reallocates; any device
other than CUDA. A prompt change (a new context) captures new graphs for that cache.
"""

from __future__ import annotations

import dataclasses

import torch

from ..model.wan_dit import CrossAttentionContext
from .causal_model import CausalWanModel
from .kv_cache import KVCache, RollingKVCache

# Eager forwards on a side stream before a capture, as CUDA graphs need (lazy initialisation of
# cuBLAS workspaces, torch.compile's first run).
_WARMUP_FORWARDS = 2


@dataclasses.dataclass
class _CapturedForward:
    graph: "torch.cuda.CUDAGraph"
    latents: torch.Tensor
    timestep: torch.Tensor
    output: torch.Tensor
    # What the graph reads besides its inputs and the cache, held so that their memory stays the graph's.
    context: list[CrossAttentionContext]
    rope_tables: tuple[torch.Tensor, ...]


class ChunkGraphs:
    """`forward_chunk` of a causal model, replaying a CUDA graph wherever the forward is in steady state."""

    def __init__(self, model: CausalWanModel):
        self.model = model
        self._captured: dict[tuple, _CapturedForward] = {}
        self._context_of: dict[int, list[CrossAttentionContext]] = {}
        self._pool = None

    def forward_chunk(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        context: list[CrossAttentionContext],
        cache: KVCache,
        start_frame: int,
    ) -> torch.Tensor:
        if not self._is_steady(latents, cache, start_frame):
            return self.model.forward_chunk(latents, timestep, context, cache, start_frame)
        timestep = torch.as_tensor(timestep, device=self.model.device)
        slots = cache.plan(start_frame, latents.shape[2])
        if self._context_of.get(id(cache)) is not context:
            self._forget(cache)
            self._context_of[id(cache)] = context
        key = (id(cache), slots.write_slots, tuple(latents.shape), latents.dtype, tuple(timestep.shape), timestep.dtype)
        rope_tables = self.model.prepare_chunk(latents, cache, start_frame)
        captured = self._captured.get(key)
        if captured is None:
            captured = self._capture(latents, timestep, context, cache, start_frame, rope_tables)
            self._captured[key] = captured
        captured.latents.copy_(latents)
        captured.timestep.copy_(timestep)
        captured.graph.replay()
        return captured.output.clone()

    def _is_steady(self, latents: torch.Tensor, cache: KVCache, start_frame: int) -> bool:
        model = self.model
        if model.device.type != "cuda" or model.rope_policy != "relative" or not isinstance(cache, RollingKVCache):
            return False
        return cache.plan(start_frame, latents.shape[2]).visible_slots == cache.window_frames

    def _forget(self, cache: KVCache) -> None:
        self._captured = {key: value for key, value in self._captured.items() if key[0] != id(cache)}
        self._context_of.pop(id(cache), None)

    def _capture(self, latents, timestep, context, cache, start_frame, rope_tables) -> _CapturedForward:
        static_latents = latents.to(self.model.device).clone()
        static_timestep = timestep.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(_WARMUP_FORWARDS):
                self.model.forward_chunk(static_latents, static_timestep, context, cache, start_frame)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # Graphs share one memory pool. That is safe here: replays run one at a time, static inputs
        # live outside the pool, and every output is copied out right after its replay, so what one
        # replay overwrites in the pool is dead to every other graph.
        with torch.cuda.graph(graph, pool=self._pool):
            output = self.model.forward_chunk(static_latents, static_timestep, context, cache, start_frame)
        return _CapturedForward(graph, static_latents, static_timestep, output, context, rope_tables)
