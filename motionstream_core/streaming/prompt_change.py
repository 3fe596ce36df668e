"""What a stream does with its cached frames when the prompt changes.

`StreamingConfig.prompt_change` names one of `PROMPT_CHANGE_POLICIES`, and
`StreamingSession.update(prompt_change=...)` may pick another for a single change:

- "keep" (`KeepCache`, the default): the cached keys/values stay as they were computed under the
  old prompt; the new prompt reaches the video through the cross-attention of new chunks only.
- "recache" (`RecacheWindow`, LongLive's re-cache): the keys/values of the frames the cache holds
  are recomputed under the new prompt in one block-causal pass over their commit inputs, so the
  next chunk's context already follows the new prompt. Needs a cache policy that can re-cache.

The session calls `after_prompt_change` once the new prompt is encoded, before the next chunk.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar, Iterable, Protocol

import torch

from .block_schedule import BlockSchedule
from .cache_policies import CachePolicy
from .commit_inputs import CommitInputs
from .kv_cache import KVCache

if TYPE_CHECKING:
    from .causal_model import CausalWanModel


class CachedBranch(Protocol):
    """Guidance branches of a stream that share a cache (one, or several batched along the batch
    dimension): their cache, their (new) prompt context and their commit inputs."""

    cache: KVCache
    context: list | None
    commit_inputs: CommitInputs


class PromptChangePolicy(abc.ABC):
    """Stateless, so one instance serves every stream."""

    # The name `StreamingConfig.prompt_change` and stored configs use.
    name: ClassVar[str]

    def check_cache_policy(self, cache_policy: CachePolicy) -> None:
        """Raises ValueError if this policy cannot work with `cache_policy`."""

    @abc.abstractmethod
    def after_prompt_change(
        self,
        model: CausalWanModel,
        branches: Iterable[CachedBranch],
        end_frame: int,
        blocks: BlockSchedule,
        commit_timestep: torch.Tensor,
    ) -> None:
        """Called with the new contexts in place; every frame before `end_frame` has been committed."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class KeepCache(PromptChangePolicy):
    name = "keep"

    def after_prompt_change(self, model, branches, end_frame, blocks, commit_timestep) -> None:
        pass


class RecacheWindow(PromptChangePolicy):
    name = "recache"

    def check_cache_policy(self, cache_policy: CachePolicy) -> None:
        if not cache_policy.can_recache:
            raise ValueError(
                f"the {self.name!r} prompt change needs a cache that can be re-cached, which the "
                f"{cache_policy.name!r} cache policy is not; use the 'rolling' cache policy"
            )

    def after_prompt_change(self, model, branches, end_frame, blocks, commit_timestep) -> None:
        for branch in branches:
            frames = branch.cache.held_frames(end_frame)
            if not frames:
                continue  # nothing committed yet
            inputs = branch.commit_inputs.of_frames(frames)
            model.recache(inputs, commit_timestep, branch.context, branch.cache, frames, [blocks.block_of(f) for f in frames])


PROMPT_CHANGE_POLICIES: dict[str, PromptChangePolicy] = {
    policy.name: policy for policy in (KeepCache(), RecacheWindow())
}


def prompt_change_named(name: str) -> PromptChangePolicy:
    if not isinstance(name, str) or name not in PROMPT_CHANGE_POLICIES:
        raise ValueError(f"unknown prompt change policy {name!r}; use one of {sorted(PROMPT_CHANGE_POLICIES)}")
    return PROMPT_CHANGE_POLICIES[name]
