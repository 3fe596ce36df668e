"""Cache policies: which earlier frames a streaming chunk attends to, and the KV cache that holds them.

`StreamingConfig.cache_policy` names one of `CACHE_POLICIES`:

- "rolling" (`RollingWithSinks`, the default): the first `sink_frames` frames stay forever and the
  newest ones roll through a ring buffer; `window_frames` bounds both attention and memory, so
  every chunk costs the same however long the video runs.
- "growing" (`GrowingBaseline`): every frame stays and the cache grows with the video; memory and
  per-chunk time grow without bound. A baseline for tests and benchmarks only.

The causal model asks a policy how far a chunk may attend (`attention_span`) and for a cache
(`allocate`); the session asks it where to keep the commit inputs a re-cache needs after a prompt
change (`commit_inputs`). A new policy subclasses `CachePolicy` and is added to `CACHE_POLICIES`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

import torch

from .commit_inputs import CommitInputs, NoCommitInputs, SlotCommitInputs
from .kv_cache import GrowingKVCache, KVCache, RollingKVCache


@dataclasses.dataclass(frozen=True)
class CacheGeometry:
    """The shape of one frame of keys/values in every layer of a model, and where they live."""

    num_layers: int
    batch_size: int
    tokens_per_frame: int
    num_heads: int
    head_dim: int
    dtype: torch.dtype = torch.float32
    device: torch.device | str = "cpu"

    def as_kwargs(self) -> dict:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


class CachePolicy(abc.ABC):
    """Which frames a stream keeps attending to; stateless, so one instance serves every stream."""

    # The name `StreamingConfig.cache_policy` and stored configs use.
    name: ClassVar[str]
    # Whether the held frames can be re-computed after a prompt change (see prompt_change.py).
    can_recache: ClassVar[bool]

    @abc.abstractmethod
    def attention_span(self, sink_frames: int, window_frames: int) -> int | None:
        """The most latent frames a chunk attends to, its own included; None when unbounded."""

    @abc.abstractmethod
    def allocate(self, geometry: CacheGeometry, sink_frames: int, window_frames: int) -> KVCache:
        """An empty cache for one stream (and one guidance branch)."""

    @abc.abstractmethod
    def commit_inputs(self, cache: KVCache) -> CommitInputs:
        """Where the session records the commit inputs of the frames `cache` holds."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RollingWithSinks(CachePolicy):
    """Attention sink + rolling window in one allocation of `window_frames` slots: constant memory."""

    name = "rolling"
    can_recache = True

    def attention_span(self, sink_frames: int, window_frames: int) -> int | None:
        return window_frames

    def allocate(self, geometry: CacheGeometry, sink_frames: int, window_frames: int) -> KVCache:
        return RollingKVCache(sink_frames=sink_frames, window_frames=window_frames, **geometry.as_kwargs())

    def commit_inputs(self, cache: KVCache) -> CommitInputs:
        return SlotCommitInputs(cache)


class GrowingBaseline(CachePolicy):
    """Every frame, in a cache reallocated as it grows; ignores the sink and window settings."""

    name = "growing"
    can_recache = False

    def attention_span(self, sink_frames: int, window_frames: int) -> int | None:
        return None

    def allocate(self, geometry: CacheGeometry, sink_frames: int, window_frames: int) -> KVCache:
        return GrowingKVCache(**geometry.as_kwargs())

    def commit_inputs(self, cache: KVCache) -> CommitInputs:
        return NoCommitInputs(self.name)


CACHE_POLICIES: dict[str, CachePolicy] = {policy.name: policy for policy in (RollingWithSinks(), GrowingBaseline())}


def cache_policy_named(name: str) -> CachePolicy:
    if not isinstance(name, str) or name not in CACHE_POLICIES:
        raise ValueError(f"unknown cache policy {name!r}; use one of {sorted(CACHE_POLICIES)}")
    return CACHE_POLICIES[name]
