"""LoRA loader node: merges a LoRA from models/loras into a copy of a MotionStream transformer's weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from motionstream_core import merged_copy, read_lora

from . import host
from .model_loaders import CATEGORY


class MotionStreamLoraLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MOTIONSTREAM_MODEL",),
                "lora_name": (host.model_files("loras"), {
                    "tooltip": "A LoRA for this Wan 2.1 transformer in models/loras: PEFT/diffusers (lora_A/lora_B), "
                               "kohya/ComfyUI (lora_unet_..., lora_down/lora_up) or LongLive's lora .pt."}),
                "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                       "tooltip": "Scales the LoRA's change of the weights; 0 leaves the model as it is."}),
            }
        }

    RETURN_TYPES = ("MOTIONSTREAM_MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Merges a LoRA into the transformer's weights when the workflow runs, so sampling costs nothing "
                   "extra. The input model stays as it was; only the weights the LoRA changes take new memory.")

    def load(self, model, lora_name, strength=1.0):
        if strength == 0:
            return (model,)
        lora = read_lora(host.model_path("loras", lora_name))
        dit = merged_copy(model.dit, lora, strength)
        return (dataclasses.replace(model, dit=dit, name=f"{model.name} + LoRA {Path(lora_name).name}"),)


NODE_CLASS_MAPPINGS = {"MotionStreamLoraLoader": MotionStreamLoraLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"MotionStreamLoraLoader": "MotionStream LoRA Loader"}
