"""The Wan 2.1 diffusion transformer: architecture, attention, RoPE, and weights in every public layout."""

from .config import WanConfig
from .lora import merged_copy, read_lora
from .wan_dit import WanDiT
from .weights import WeightsError, build_dit, load_dit, read_metadata, read_state_dict, save_state_dict

__all__ = [
    "WanConfig", "WanDiT",
    "merged_copy", "read_lora",
    "WeightsError", "build_dit", "load_dit", "read_metadata", "read_state_dict", "save_state_dict",
]
