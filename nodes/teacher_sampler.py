"""Offline teacher sampling: the bidirectional model over the whole clip, with joint text-motion guidance."""

from __future__ import annotations

import torch

from motionstream_core import (
    DEFAULT_MOTION_SCALE,
    DEFAULT_TEXT_SCALE,
    FirstFrameCondition,
    SOLVERS,
    TeacherConditions,
    TeacherSampler,
    to_vae_space,
    track_head_inputs,
)

from . import host
from .inputs import clip_image_tokens, encode_first_frame, latent_geometry, text_embedding, tracks_for_generation
from .latent_codecs import WanLatents


class MotionStreamTeacherSampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MOTIONSTREAM_MODEL",),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING", {"tooltip": "The null-text branch of the guidance (an empty or negative prompt)."}),
                "width": ("INT", {"default": 832, "min": 16, "max": 4096, "step": 16}),
                "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16}),
                "num_frames": ("INT", {"default": 81, "min": 1, "max": 1025, "step": 4}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
                "steps": ("INT", {"default": 30, "min": 1, "max": 200}),
                "shift": ("FLOAT", {"default": 5.0, "min": 0.1, "max": 20.0, "step": 0.5}),
                "solver": (list(SOLVERS), {"default": "euler", "tooltip": "heun is second order: two model passes a step."}),
                "text_scale": ("FLOAT", {"default": DEFAULT_TEXT_SCALE, "min": 0.0, "max": 20.0, "step": 0.1}),
                "motion_scale": ("FLOAT", {"default": DEFAULT_MOTION_SCALE, "min": 0.0, "max": 20.0, "step": 0.1}),
                "fps": ("FLOAT", {"default": 16.0, "min": 1.0, "max": 120.0, "step": 1.0}),
            },
            "optional": {
                "vae": ("VAE",),
                "start_image": ("IMAGE",),
                "clip_vision_output": ("CLIP_VISION_OUTPUT",),
                "tracks": ("TRACKS",),
            },
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    FUNCTION = "sample"
    CATEGORY = "MotionStream/sampling"
    DESCRIPTION = ("High-quality offline generation with the bidirectional teacher and joint text-motion guidance "
                   "(wt = text_scale, wm = motion_scale); decode the LATENT with VAE Decode.")

    def sample(self, model, positive, negative, width, height, num_frames, seed, steps, shift, solver,
               text_scale, motion_scale, fps, vae=None, start_image=None, clip_vision_output=None, tracks=None):
        dit, config = model.dit, model.dit.config
        if not isinstance(model.codec, WanLatents):
            raise ValueError(f"the teacher sampler runs Wan 2.1 models; {model.name} has its own latent codec "
                             "and streams: use the MotionStream Streaming Sampler")
        latent_frames, latent_height, latent_width = latent_geometry(width, height, num_frames)
        if config.is_image_to_video and (start_image is None or clip_vision_output is None or vae is None):
            raise ValueError("this image-to-video checkpoint needs start_image, its clip_vision_output and the VAE")
        device, dtype = host.compute_device(), dit.dtype

        condition_channels = None
        if start_image is not None:
            encoded = encode_first_frame(start_image, width, height, vae=vae).to(device, dtype)
            condition_channels = FirstFrameCondition(encoded)(0, latent_frames)
        track_channels = None
        if model.track_encoder is not None:
            encoder = model.track_encoder.to(device)
            if tracks is None:
                motion_scale = 0.0  # nothing to guide towards; the model sees null motion
                track_channels = torch.zeros(1, encoder.channels, latent_frames, latent_height, latent_width,
                                             device=device, dtype=dtype)
            else:
                source = (start_image.shape[2], start_image.shape[1]) if start_image is not None else None
                track_set = tracks_for_generation(tracks, width, height, fps, num_frames, source)
                inputs = track_head_inputs(track_set, device=device)
                with torch.no_grad():
                    track_channels = encoder(inputs.coords, inputs.visibility, inputs.track_ids,
                                             latent_height, latent_width, latent_frames)
        elif tracks is not None:
            raise ValueError("this checkpoint has no track head, so it cannot follow tracks")

        conditions = TeacherConditions(
            text=text_embedding(positive).to(device, dtype),
            null_text=text_embedding(negative).to(device, dtype),
            image_tokens=clip_image_tokens(clip_vision_output).to(device, dtype) if config.is_image_to_video else None,
            condition_channels=condition_channels,
            track_channels=track_channels,
        )
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(1, config.out_channels, latent_frames, latent_height, latent_width, generator=generator)
        progress = host.Progress(steps)
        interrupted = host.interrupt_check()

        def on_step(step, total, _x0):
            interrupted()
            progress.update(step)

        sampler = TeacherSampler(dit, steps=steps, shift=shift, solver=solver,
                                 text_scale=text_scale, motion_scale=motion_scale)
        dit.to(device)
        try:
            latents = sampler.sample(noise.to(device, dtype), conditions, on_step=on_step)
        finally:
            dit.to(host.offload_device())
            host.free_memory()
        return ({"samples": to_vae_space(latents.float().cpu())},)


NODE_CLASS_MAPPINGS = {"MotionStreamTeacherSampler": MotionStreamTeacherSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"MotionStreamTeacherSampler": "MotionStream Teacher Sampler (joint guidance)"}
