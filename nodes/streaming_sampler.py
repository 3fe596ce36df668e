"""The streaming sampler: a causal student generates the video chunk by chunk inside the graph run,
each chunk decoded and shown in the browser as soon as it exists, steerable by live drags."""

from __future__ import annotations

import dataclasses

import torch

from motionstream_core import StreamConditions, StreamingSession, TrackChannelProvider

from . import host
from .inputs import clip_image_tokens, tracks_for_generation
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
                "model": ("MOTIONSTREAM_MODEL", {"tooltip": "What the model needs is in the Model Loader's description; "
                                                            "inputs it does not use may stay unconnected."}),
                "width": ("INT", {"default": 832, "min": 16, "max": 4096, "step": 16,
                                  "tooltip": "The embedded demo model makes 128x128 only (other sizes are an error)."}),
                "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16}),
                "num_frames": ("INT", {"default": 81, "min": 1, "max": 100001, "step": 4,
                                       "tooltip": "Video frames: 4k + 1 for Wan 2.1 models, any count for the embedded "
                                                  "demo. Memory and time per chunk stay constant, so this can be long."}),
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
                "positive": ("CONDITIONING", {"tooltip": "Wan 2.1 models: CLIPTextEncode with the umT5 'wan' text encoder. "
                                                         "The embedded demo has its own fixed text."}),
                "tiny_vae": ("MOTIONSTREAM_TINY_VAE", {"tooltip": "Wan 2.1 models: decodes every chunk at once for the live "
                                                                  "preview and the IMAGE output."}),
                "vae": ("VAE", {"tooltip": "Wan 2.1 models: the Wan 2.1 VAE encodes the start image and decodes the result "
                                           "when no Tiny VAE is connected."}),
                "start_image": ("IMAGE", {"tooltip": "The first frame, centre-cropped and resized to width x height."}),
                "clip_vision_output": ("CLIP_VISION_OUTPUT", {"tooltip": "CLIP-H of the start image, for Wan 2.1 "
                                                                         "image-to-video checkpoints."}),
                "tracks": ("TRACKS",),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("IMAGE", "LATENT")
    RETURN_NAMES = ("images", "latent")
    FUNCTION = "generate"
    CATEGORY = "MotionStream/sampling"
    DESCRIPTION = ("Streams a video chunk by chunk with a causal student; drags in a connected track editor steer the next "
                   "chunks. Each model decodes with its own codec: Wan 2.1 models with the Tiny VAE (or the VAE), the "
                   "embedded demo with its built-in one, so it needs only a start image. A missing input is named "
                   "when the run starts.")

    def generate(self, model, width, height, num_frames, seed, fps, sink_frames, window_frames, denoising_steps, shift,
                 positive=None, tiny_vae=None, vae=None, start_image=None, clip_vision_output=None, tracks=None,
                 unique_id=None):
        dit, config = model.dit, model.dit.config
        model.check_inputs(positive=positive, tiny_vae=tiny_vae, vae=vae, start_image=start_image,
                           clip_vision_output=clip_vision_output)
        model.check_size(width, height)
        codec = model.codec.connect(vae=vae, tiny_vae=tiny_vae)
        latent_frames, latent_height, latent_width = codec.geometry(width, height, num_frames)
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
            first_frame = codec.encode_start(start_image, width, height).to(device, dtype)
        source_size = (start_image.shape[2], start_image.shape[1]) if start_image is not None else None

        def to_generation(track_set):  # the initial tracks and every live edit
            track_set = tracks_for_generation(track_set, width, height, fps, num_frames, source_size)
            return model.tracks_with_trained_ids(track_set)

        live = LiveTracks(to_generation(tracks) if tracks is not None else None, to_generation)
        providers = []
        if model.track_encoder is not None:
            providers.append(TrackChannelProvider(model.track_encoder.to(device), live.window, latent_height, latent_width))
        elif tracks is not None:
            raise ValueError("this checkpoint has no track head, so it cannot follow tracks; disconnect them or load a motion model")
        conditions = StreamConditions(
            text=model.text(positive).to(device, dtype),
            image_tokens=clip_image_tokens(clip_vision_output).to(device, dtype) if config.is_image_to_video else None,
            first_frame_latents=first_frame,
            motion_providers=providers,
        )
        decoder = codec.decoder()
        frames = []

        def on_frames(chunk_frames, chunk_index, done):
            """Every decoded chunk's frames [T, H, W, 3] come through here once, in order."""
            frames.append(chunk_frames)
            if decoder.live:
                host.send_frames(unique_id, chunk_frames, fps, chunk_index, done)

        progress = host.Progress(latent_frames)
        dit.to(device)
        session = None
        try:
            session = StreamingSession(dit, streaming, latent_height=latent_height, latent_width=latent_width,
                                       seed=seed, interrupt=host.interrupt_check())
            session.start(conditions)
            with running_stream(host.current_prompt_id(), unique_id, live):
                latents, chunk_count = self._stream(session, decoder, latent_frames, progress, on_frames)
        finally:
            del session
            dit.to(host.offload_device())
            host.free_memory()
        rest = decoder.flush()  # where a decoder keeps frames back (the whole-video VAE), with the transformer offloaded
        if rest.shape[0]:
            on_frames(rest, chunk_count, True)

        images = torch.cat(frames, dim=0)[:num_frames]
        return (images.float().cpu(), {"samples": codec.latent_output(latents.float())})

    @staticmethod
    def _stream(session, decoder, latent_frames, progress, on_frames):
        """Latents [1, C, F, h, w] of the whole video and the number of chunks; each chunk's frames go to on_frames."""
        chunks, produced = [], 0
        while produced < latent_frames:
            chunk = session.next_chunk()
            latents = chunk.latents[:, :, : latent_frames - produced]  # the last block may run past the end
            produced += latents.shape[2]
            chunks.append(latents.float().cpu())
            decoded = decoder.push(latents)
            if decoded.shape[0]:
                on_frames(decoded, chunk.index, produced >= latent_frames)
            progress.update(produced)
        return torch.cat(chunks, dim=2), len(chunks)


NODE_CLASS_MAPPINGS = {"MotionStreamStreamingSampler": MotionStreamStreamingSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"MotionStreamStreamingSampler": "MotionStream Streaming Sampler"}
