"""Turning ComfyUI link values (CONDITIONING, CLIP_VISION_OUTPUT, IMAGE, VAE, TRACKS) into library inputs."""

from __future__ import annotations

import dataclasses
from typing import Mapping

import torch
import torch.nn.functional as F

from motionstream_core import resample_tracks, resize_crop_tracks, ResizeCrop, to_model_space, TrackSet

VAE_SPATIAL = 8
VAE_TEMPORAL = 4
# Gray frames after the start image: Wan image-to-video encodes the image followed by mid-gray.
GRAY = 0.5


@dataclasses.dataclass(frozen=True)
class Need:
    """A sampler input a model cannot run without (any one of `inputs`), and what it is for."""

    inputs: tuple[str, ...]
    why: str

    def met(self, given: Mapping[str, object]) -> bool:
        return any(given.get(name) is not None for name in self.inputs)

    def __str__(self) -> str:
        return f"{' or '.join(self.inputs)} ({self.why})"


def latent_geometry(width: int, height: int, num_frames: int) -> tuple[int, int, int]:
    """(latent frames, latent height, latent width) of a video; Wan's VAE keeps frame 0 on its own."""
    if width % (2 * VAE_SPATIAL) or height % (2 * VAE_SPATIAL):
        raise ValueError(f"width and height must be multiples of {2 * VAE_SPATIAL}, got {width}x{height}")
    if num_frames < 1 or (num_frames - 1) % VAE_TEMPORAL:
        raise ValueError(f"the frame count must be 4k + 1 (1, 5, 9, ..., 81), got {num_frames}")
    return (num_frames - 1) // VAE_TEMPORAL + 1, height // VAE_SPATIAL, width // VAE_SPATIAL


def text_embedding(conditioning) -> torch.Tensor:
    """The umT5 embeddings [1, L, 4096] of a CONDITIONING (its first entry)."""
    try:
        embedding = conditioning[0][0]
    except (IndexError, TypeError, KeyError) as error:
        raise ValueError("expected a CONDITIONING from CLIPTextEncode (with the umT5 'wan' text encoder)") from error
    if not isinstance(embedding, torch.Tensor) or embedding.ndim != 3:
        raise ValueError(f"the CONDITIONING holds no [batch, tokens, dim] embedding (got {type(embedding).__name__})")
    return embedding


def clip_image_tokens(clip_vision_output) -> torch.Tensor:
    """CLIP-H penultimate hidden states [1, 257, 1280], which Wan image-to-video models attend to."""
    tokens = getattr(clip_vision_output, "penultimate_hidden_states", None)
    if tokens is None and isinstance(clip_vision_output, dict):
        tokens = clip_vision_output.get("penultimate_hidden_states")
    if tokens is None:
        raise ValueError("the CLIP_VISION_OUTPUT has no penultimate_hidden_states; use CLIPVisionEncode with CLIP-H")
    return tokens


def resize_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> [1, height, width, 3]: first image, centre-cropped to the aspect, then resized."""
    transform = ResizeCrop.comfy_upscale(image.shape[2], image.shape[1], width, height, crop="center")
    top, left = int(transform.crop_top), int(transform.crop_left)
    cropped = image[:1, top : top + int(transform.crop_height), left : left + int(transform.crop_width), :3]
    resized = F.interpolate(cropped.movedim(-1, 1).float(), size=(height, width), mode="bilinear",
                            antialias=True, align_corners=False)
    return resized.clamp(0, 1).movedim(1, -1)


def encode_first_frame(image: torch.Tensor, width: int, height: int, vae=None, tiny_vae=None,
                       latent_frames: int = 3) -> torch.Tensor:
    """Model-space latents [1, 16, F, h, w] of the start image followed by gray frames.

    F = 3 is enough for any length: later frames encode the same gray, and the image
    conditioning repeats the last encoded latent past its horizon.
    """
    start = resize_image(image, width, height)
    pixel_frames = 1 + VAE_TEMPORAL * (latent_frames - 1)
    frames = torch.full((pixel_frames, height, width, 3), GRAY, dtype=start.dtype)
    frames[0] = start[0]
    if vae is not None:  # ComfyUI's Wan VAE returns raw latents [1, 16, F, h, w]
        return to_model_space(vae.encode(frames).float())
    if tiny_vae is not None:
        video = frames.movedim(-1, 1).unsqueeze(0).to(tiny_vae.device, tiny_vae.dtype)
        return tiny_vae.encode_video(video).movedim(1, 2).float()  # NTCHW -> [B, C, T, H, W]
    raise ValueError("a start image needs a VAE (the Wan 2.1 VAE, or the Tiny VAE) to be encoded")


def tracks_for_generation(tracks, width: int, height: int, fps: float, pixel_frames: int | None,
                          source_size: tuple[int, int] | None = None) -> TrackSet:
    """TRACKS drawn on the (uncropped) source image -> tracks in generation pixels, frames and fps.
    `pixel_frames` None (a stream of no set length): as many frames as the tracks last at `fps`."""
    source_width, source_height = source_size or (width, height)
    track_set = tracks if isinstance(tracks, TrackSet) else TrackSet.from_comfy_tracks(
        tracks, width=source_width, height=source_height
    )
    if pixel_frames is None:
        pixel_frames = int((track_set.num_frames - 1) / track_set.fps * fps + 1e-6) + 1
    track_set = resample_tracks(track_set, fps=fps, num_frames=pixel_frames)
    transform = ResizeCrop.comfy_upscale(track_set.width, track_set.height, width, height, crop="center")
    return resize_crop_tracks(track_set, transform)
