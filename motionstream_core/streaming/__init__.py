"""Streaming generation: the causal chunk-by-chunk model over a KV cache, and the session a node or CLI drives.

Cache policies (cache_policies.py) decide which earlier frames a chunk attends to; prompt change
policies (prompt_change.py) decide what happens to those cached frames when the prompt changes.
"""

from .background_decode import BackgroundDecoder
from .block_schedule import BlockSchedule
from .cache_policies import CACHE_POLICIES, CacheGeometry, CachePolicy, GrowingBaseline, RollingWithSinks, cache_policy_named
from .causal_model import CausalWanModel, RopeRangeError
from .commit_inputs import CommitInputs
from .image_conditioning import FirstFrameCondition
from .kv_cache import GrowingKVCache, KVCache, RollingKVCache
from .presets import PRESETS, CheckpointFacts, StreamingPreset, choose_preset, preset_named, summarize_streaming
from .prompt_change import PROMPT_CHANGE_POLICIES, KeepCache, PromptChangePolicy, RecacheWindow, prompt_change_named
from .prompt_schedule import MAX_LIVE_PROMPT_CHARS, MAX_PROMPT_ENTRIES, PromptSchedule, PromptTimeline, ScheduledPrompt
from .session import LatentChunk, StreamConditions, StreamingConfig, StreamingSession, StreamInterrupted

__all__ = [
    "BackgroundDecoder", "BlockSchedule", "CausalWanModel", "FirstFrameCondition", "RopeRangeError",
    "LatentChunk", "StreamConditions", "StreamingConfig", "StreamingSession", "StreamInterrupted",
    "CACHE_POLICIES", "CacheGeometry", "CachePolicy", "GrowingBaseline", "RollingWithSinks", "cache_policy_named",
    "PROMPT_CHANGE_POLICIES", "KeepCache", "PromptChangePolicy", "RecacheWindow", "prompt_change_named",
    "CommitInputs", "GrowingKVCache", "KVCache", "RollingKVCache",
    "MAX_LIVE_PROMPT_CHARS", "MAX_PROMPT_ENTRIES", "PromptSchedule", "PromptTimeline", "ScheduledPrompt",
    "PRESETS", "CheckpointFacts", "StreamingPreset", "choose_preset", "preset_named", "summarize_streaming",
]
