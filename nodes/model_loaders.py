"""Loader nodes: MotionStream transformers (students and teachers) and the Tiny VAE."""

from __future__ import annotations

import dataclasses

import torch

from motionstream_core import load_dit, StreamingConfig, TinyVAE, TrackEncoder, WanDiT

from . import downloads, host

DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CATEGORY = "MotionStream/loaders"


@dataclasses.dataclass
class MotionStreamModel:
    """What flows along a MOTIONSTREAM_MODEL link."""

    dit: WanDiT
    track_encoder: TrackEncoder | None
    streaming_defaults: StreamingConfig
    source: str


class MotionStreamModelLoader:
    @classmethod
    def INPUT_TYPES(cls):
        names = host.model_files("diffusion_models") + host.model_directories("diffusion_models")
        return {
            "required": {
                "model_name": (names + downloads.choices("diffusion_models"), {
                    "tooltip": "A Wan 2.1 transformer in models/diffusion_models: Track-v0, Self-Forcing, LongLive, "
                               "CausVid or a Wan 2.1 teacher, in any public layout. 'download:' entries fetch known "
                               "weights from Hugging Face into that folder."}),
                "weight_dtype": (list(DTYPES), {"default": "auto", "tooltip": "auto keeps the file's dtype (fp8 files become bf16)."}),
            }
        }

    RETURN_TYPES = ("MOTIONSTREAM_MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads a causal (student) or bidirectional (teacher) Wan 2.1 transformer for MotionStream."

    def load(self, model_name, weight_dtype="auto"):
        path = downloads.resolve("diffusion_models", model_name)
        dit, track_weights = load_dit(path, dtype=DTYPES[weight_dtype], device=host.offload_device())
        track_encoder = TrackEncoder.from_state_dict(track_weights).to(dit.dtype) if track_weights else None
        defaults = StreamingConfig.for_checkpoint(track_encoder is not None, dit.config.is_image_to_video)
        model = MotionStreamModel(dit.eval().requires_grad_(False), track_encoder, defaults, path)
        return (model,)


class MotionStreamTinyVAELoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                # Not "vae_name": the front end reserves that name for its full-VAE asset browser.
                "tiny_vae_name": (host.model_files("vae_approx") + downloads.choices("vae_approx"), {
                    "tooltip": "TAEHV for Wan 2.1 (taew2_1 / lighttaew2_1) in models/vae_approx."}),
                "dtype": (["fp16", "bf16", "fp32"], {"default": "fp16", "tooltip": "fp32 is used on the CPU regardless."}),
            }
        }

    RETURN_TYPES = ("MOTIONSTREAM_TINY_VAE",)
    RETURN_NAMES = ("tiny_vae",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads the Tiny VAE that decodes each streamed chunk to frames at a fraction of the full VAE's cost."

    def load(self, tiny_vae_name, dtype="fp16"):
        path = downloads.resolve("vae_approx", tiny_vae_name)
        device = host.compute_device()
        chosen = DTYPES[dtype] if device.type != "cpu" else torch.float32
        return (TinyVAE.from_file(path, device=device, dtype=chosen).eval(),)


NODE_CLASS_MAPPINGS = {
    "MotionStreamModelLoader": MotionStreamModelLoader,
    "MotionStreamTinyVAELoader": MotionStreamTinyVAELoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MotionStreamModelLoader": "MotionStream Model Loader",
    "MotionStreamTinyVAELoader": "MotionStream Tiny VAE Loader",
}
