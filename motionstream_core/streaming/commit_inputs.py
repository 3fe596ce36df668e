"""The model inputs the frames held in a KV cache were committed with: what a re-cache runs on.

Re-caching after a prompt change (LongLive) recomputes the held frames' keys/values under the new
prompt, so it needs the inputs of their commit passes. A rolling cache keeps them in a latent ring
buffer with the cache's own slots, small next to the cache itself; a growing cache keeps none.
"""

from __future__ import annotations

import abc
from typing import Sequence

import torch

from .kv_cache import KVCache


class CommitInputs(abc.ABC):
    """The session records every commit input here; a re-cache reads back those of the held frames."""

    @abc.abstractmethod
    def remember(self, commit_input: torch.Tensor, start_frame: int) -> None:
        """Records the commit input [B, C, F, H, W] of the frames [start_frame, start_frame + F)."""

    @abc.abstractmethod
    def of_frames(self, frames: Sequence[int]) -> torch.Tensor:
        """The recorded inputs [B, C, len(frames), H, W] of `frames`, which the cache holds."""


class SlotCommitInputs(CommitInputs):
    """One latent input per slot of a fixed-capacity cache, overwritten together with that slot."""

    def __init__(self, cache: KVCache):
        self.cache = cache
        self._inputs: torch.Tensor | None = None

    def remember(self, commit_input: torch.Tensor, start_frame: int) -> None:
        shape = list(commit_input.shape)
        shape[2] = self.cache.window_frames
        if self._inputs is None or list(self._inputs.shape) != shape:
            self._inputs = commit_input.new_zeros(shape)
        for offset in range(commit_input.shape[2]):
            self._inputs[:, :, self.cache.slot_of(start_frame + offset)] = commit_input[:, :, offset]

    def of_frames(self, frames: Sequence[int]) -> torch.Tensor:
        if self._inputs is None:
            raise ValueError("no frame has been committed yet, so there is nothing to re-cache")
        slots = torch.tensor([self.cache.slot_of(f) for f in frames], device=self._inputs.device)
        return self._inputs.index_select(2, slots)


class NoCommitInputs(CommitInputs):
    """For caches that cannot be re-cached: records nothing."""

    def __init__(self, cache_policy_name: str):
        self.cache_policy_name = cache_policy_name

    def remember(self, commit_input: torch.Tensor, start_frame: int) -> None:
        pass

    def of_frames(self, frames: Sequence[int]) -> torch.Tensor:
        raise ValueError(
            f"a re-cache needs the commit inputs of the cached frames, which the {self.cache_policy_name!r} "
            "cache policy does not keep; use the 'rolling' cache policy"
        )
