"""Loader nodes for MotionStream diffusion transformers."""

from __future__ import annotations

import dataclasses

import torch

from motionstream_core import WanDiT, load_dit

from . import host

DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclasses.dataclass
class MotionStreamModel:
    """What flows along a MOTIONSTREAM_MODEL link: the transformer and the weights found beside it."""

    dit: WanDiT
    track_encoder_weights: dict[str, torch.Tensor]
    source: str


class MotionStreamModelLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (host.model_files("diffusion_models"), {"tooltip": "A Wan 2.1 transformer in models/diffusion_models (original, Comfy-Org, Kijai or diffusers layout; Self-Forcing .pt files too)."}),
                "weight_dtype": (list(DTYPES), {"default": "auto", "tooltip": "auto keeps the file's dtype (fp8 files are dequantised to bf16)."}),
            }
        }

    RETURN_TYPES = ("MOTIONSTREAM_MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    CATEGORY = "MotionStream/loaders"
    DESCRIPTION = "Loads a causal (student) or bidirectional (teacher) Wan 2.1 transformer for MotionStream."

    def load(self, model_name, weight_dtype="auto"):
        path = host.model_path("diffusion_models", model_name)
        dit, track_weights = load_dit(path, dtype=DTYPES[weight_dtype], device=host.offload_device())
        return (MotionStreamModel(dit=dit.eval().requires_grad_(False), track_encoder_weights=track_weights, source=path),)


NODE_CLASS_MAPPINGS = {"MotionStreamModelLoader": MotionStreamModelLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"MotionStreamModelLoader": "MotionStream Model Loader"}
