"""Streaming generation: the causal chunk-by-chunk model over a KV cache, and the session a node or CLI drives."""

from .block_schedule import BlockSchedule
from .causal_model import CausalWanModel, RopeRangeError
from .image_conditioning import FirstFrameCondition
from .session import LatentChunk, StreamConditions, StreamingConfig, StreamingSession, StreamInterrupted

__all__ = [
    "BlockSchedule", "CausalWanModel", "FirstFrameCondition", "RopeRangeError",
    "LatentChunk", "StreamConditions", "StreamingConfig", "StreamingSession", "StreamInterrupted",
]
