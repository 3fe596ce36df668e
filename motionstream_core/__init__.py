"""MotionStream core: a plain PyTorch library (no ComfyUI imports) for motion-conditioned streaming video diffusion."""

from .causal import CausalWanModel
from .config import WanConfig
from .session import LatentChunk, StreamConditions, StreamingConfig, StreamingSession, StreamInterrupted
from .wan_dit import WanDiT
from .weights import WeightsError, build_dit, load_dit, read_state_dict, save_state_dict

__all__ = [
    "CausalWanModel",
    "LatentChunk",
    "StreamConditions",
    "StreamInterrupted",
    "StreamingConfig",
    "StreamingSession",
    "WanConfig",
    "WanDiT",
    "WeightsError",
    "build_dit",
    "load_dit",
    "read_state_dict",
    "save_state_dict",
]
