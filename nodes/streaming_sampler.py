"""The streaming sampler: a causal student generates the video chunk by chunk inside the graph run,
each chunk decoded and shown in the browser as soon as it exists, steerable by live drags."""

from __future__ import annotations

import dataclasses

import torch

from motionstream_core import StreamConditions, StreamingSession, to_vae_space, TrackChannelProvider

from . import host
from .inputs import (
    clip_image_tokens,
    encode_first_frame,
    latent_geometry,
    text_embedding,
    tracks_for_generation,
)
from .live_control import LiveTracks, running_stream

def _parse_steps(text: str) -> tuple[int, ...] | None:
    if not text.strip():
        return None
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError as error:
        raise ValueError(f"denoising_steps must be comma-separated integers like 1000,750,500,250, got {text!r}") from error


class MotionStreamStreamingSampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MOTIONSTREAM_MODEL",),
                "positive": ("CONDITIONING", {"tooltip": "CLIPTextEncode with the umT5 'wan' text encoder."}),
                "width": ("INT", {"default": 832, "min": 16, "max": 4096, "step": 16}),
                "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16}),
                "num_frames": ("INT", {"default": 81, "min": 1, "max": 100001, "step": 4,
                                       "tooltip": "Video frames (4k + 1). Memory and time per chunk stay constant, so this can be long."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
                "fps": ("FLOAT", {"default": 16.0, "min": 1.0, "max": 120.0, "step": 1.0,
                                  "tooltip": "Frame rate the tracks are timed in and the preview plays at."}),
                "sink_frames": ("INT", {"default": -1, "min": -1, "max": 64, "tooltip": "-1: the checkpoint's default."}),
                "window_frames": ("INT", {"default": -1, "min": -1, "max": 256,
                                          "tooltip": "Attention span in latent frames incl. sink and current chunk; -1: the checkpoint's default."}),
                "denoising_steps": ("STRING", {"default": "", "tooltip": "e.g. 1000,750,500,250; empty: the checkpoint's default."}),
                "shift": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 20.0, "step": 0.5, "tooltip": "0: the checkpoint's default."}),
            },
            "optional": {
                "tiny_vae": ("MOTIONSTREAM_TINY_VAE", {"tooltip": "Decodes every chunk at once for the live preview and the IMAGE output."}),
                "vae": ("VAE", {"tooltip": "The Wan 2.1 VAE: encodes the start image; decodes the result when no Tiny VAE is connected."}),
                "start_image": ("IMAGE",),
                "clip_vision_output": ("CLIP_VISION_OUTPUT", {"tooltip": "CLIP-H of the start image, for image-to-video checkpoints."}),
                "tracks": ("TRACKS",),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("IMAGE", "LATENT")
    RETURN_NAMES = ("images", "latent")
    FUNCTION = "generate"
    CATEGORY = "MotionStream/sampling"
    DESCRIPTION = "Streams a video chunk by chunk with a causal student; drags in a connected track editor steer the next chunks."

    def generate(self, model, positive, width, height, num_frames, seed, fps, sink_frames, window_frames,
                 denoising_steps, shift, tiny_vae=None, vae=None, start_image=None, clip_vision_output=None,
                 tracks=None, unique_id=None):
        dit, config = model.dit, model.dit.config
        latent_frames, latent_height, latent_width = latent_geometry(width, height, num_frames)
        if tiny_vae is None and vae is None:
            raise ValueError("connect a Tiny VAE (live preview) or the Wan VAE to turn the latents into frames")
        if config.is_image_to_video and (start_image is None or clip_vision_output is None):
            raise ValueError("this image-to-video checkpoint needs a start_image and its clip_vision_output")
        overrides = {"sink_frames": sink_frames, "window_frames": window_frames, "shift": shift,
                     "denoising_steps": _parse_steps(denoising_steps)}
        streaming = dataclasses.replace(
            model.streaming_defaults,
            **{k: v for k, v in overrides.items() if v not in (None, -1, 0.0)},
        )

        device = host.compute_device()
        dtype = dit.dtype
        first_frame = None
        if start_image is not None:
            first_frame = encode_first_frame(start_image, width, height, vae=vae, tiny_vae=tiny_vae).to(device, dtype)
        pixel_frames = num_frames
        source_size = (start_image.shape[2], start_image.shape[1]) if start_image is not None else None

        def to_generation(track_set):
            return tracks_for_generation(track_set, width, height, fps, pixel_frames, source_size)

        live = LiveTracks(to_generation(tracks) if tracks is not None else None, to_generation)
        providers = []
        if model.track_encoder is not None:
            providers.append(TrackChannelProvider(model.track_encoder.to(device), live.window, latent_height, latent_width))
        elif tracks is not None:
            raise ValueError("this checkpoint has no track head, so it cannot follow tracks; disconnect them or load a motion model")
        conditions = StreamConditions(
            text=text_embedding(positive).to(device, dtype),
            image_tokens=clip_image_tokens(clip_vision_output).to(device, dtype) if config.is_image_to_video else None,
            first_frame_latents=first_frame,
            motion_providers=providers,
        )
        progress = host.Progress(latent_frames)
        dit.to(device)
        session = decoder = None
        try:
            session = StreamingSession(dit, streaming, latent_height=latent_height, latent_width=latent_width,
                                       seed=seed, interrupt=host.interrupt_check())
            session.start(conditions)
            decoder = tiny_vae.stream_decoder() if tiny_vae is not None else None
            with running_stream(host.current_prompt_id(), unique_id, live):
                latents, frames = self._stream(session, decoder, latent_frames, progress, unique_id, fps)
        finally:
            del session, decoder
            dit.to(host.offload_device())
            host.free_memory()

        if not frames:
            decoded = vae.decode(to_vae_space(latents.to(torch.float32)))
            images = decoded.reshape(-1, *decoded.shape[-3:])[:num_frames]
        else:
            images = torch.cat(frames, dim=0)[:num_frames]
        return (images.float().cpu(), {"samples": to_vae_space(latents.float())})

    @staticmethod
    def _stream(session, decoder, latent_frames, progress, node_id, fps):
        chunks, frames, produced = [], [], 0
        while produced < latent_frames:
            chunk = session.next_chunk()
            latents = chunk.latents[:, :, : latent_frames - produced]  # the last block may run past the end
            produced += latents.shape[2]
            chunks.append(latents.float().cpu())
            if decoder is not None:
                decoded = decoder.push(latents.movedim(1, 2).to(decoder.vae.device, decoder.vae.dtype))
                chunk_frames = decoded[0].movedim(1, -1).float().cpu()  # [T, H, W, 3]
                frames.append(chunk_frames)
                host.send_frames(node_id, chunk_frames, fps, chunk.index, done=produced >= latent_frames)
            progress.update(produced)
        return torch.cat(chunks, dim=2), frames


NODE_CLASS_MAPPINGS = {"MotionStreamStreamingSampler": MotionStreamStreamingSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"MotionStreamStreamingSampler": "MotionStream Streaming Sampler"}
