"""Image-to-video conditioning, and the provider interface every condition channel follows.

A *condition channel provider* is any callable `(first_latent_frame, num_latent_frames) -> tensor
[B, C, num_latent_frames, H, W]` giving extra input channels for a window of latent frames. The
streaming session concatenates the providers' outputs, in order, after the noisy latent. For
MotionStream Track-v0 (52 input channels) the order is
[16 noisy | 4 mask | 16 first-frame latent | 16 track channels]: `FirstFrameCondition` gives the
middle 20, the track head the last 16.

How the start image reaches the model is a mode (`IMAGE_CONDITIONING_MODES`):
- "channels" (Wan 2.1 image-to-video): mask + encoded-image channels beside every frame's noisy latent;
- "clean_latent" (Wan 2.2 TI2V-5B): no extra channels; latent frame 0 *is* the image's clean latent,
  seen at timestep 0 while the rest of its block is denoised (`CleanFirstFrame`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

ConditionChannelProvider = Callable[[int, int], torch.Tensor]

# Wan's causal VAE packs 4 pixel frames per latent frame; the mask has one channel for each.
MASK_CHANNELS = 4


def first_frame_mask(
    batch_size: int,
    first_latent_frame: int,
    num_latent_frames: int,
    latent_height: int,
    latent_width: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """[B, 4, F, H, W]: ones on latent frame 0 (the given image), zeros on every later frame."""
    mask = torch.zeros(batch_size, MASK_CHANNELS, num_latent_frames, latent_height, latent_width, dtype=dtype, device=device)
    if first_latent_frame == 0 and num_latent_frames > 0:
        mask[:, :, 0] = 1
    return mask


class FirstFrameCondition:
    """Mask + encoded-first-frame channels of Wan image-to-video, for any window of an endless video.

    `encoded_video` is the VAE encoding [B, C, F_enc, H, W] of the first image followed by gray
    frames (zeros in [-1, 1] pixel space), as Wan I2V builds it. Beyond the encoded horizon F_enc
    the last encoded latent is repeated, so a stream can run past whatever was encoded without
    touching the VAE again. That latent encodes gray frames; later latents of an actual long
    encoding differ from it only through the causal VAE's fading memory of the first image, so
    encode a few latent frames (at least 2, so that the repeated one is a gray one).
    """

    def __init__(self, encoded_video: torch.Tensor):
        if encoded_video.ndim != 5 or encoded_video.shape[2] < 1:
            raise ValueError(
                f"encoded_video must be [B, C, F, H, W] with at least one latent frame, got {tuple(encoded_video.shape)}"
            )
        self.encoded_video = encoded_video

    @property
    def num_channels(self) -> int:
        return MASK_CHANNELS + self.encoded_video.shape[1]

    def __call__(self, first_latent_frame: int, num_latent_frames: int) -> torch.Tensor:
        if first_latent_frame < 0 or num_latent_frames < 1:
            raise ValueError(f"invalid latent window: first frame {first_latent_frame}, {num_latent_frames} frames")
        encoded = self.encoded_video
        horizon = encoded.shape[2]
        frames = torch.arange(first_latent_frame, first_latent_frame + num_latent_frames, device=encoded.device)
        latents = encoded.index_select(2, frames.clamp(max=horizon - 1))
        batch, _, _, height, width = encoded.shape
        mask = first_frame_mask(
            batch, first_latent_frame, num_latent_frames, height, width, dtype=encoded.dtype, device=encoded.device
        )
        return torch.cat((mask, latents), dim=1)


class CleanFirstFrame:
    """Wan 2.2 TI2V conditioning: latent frame 0 of the stream is the start image's clean latent.

    The frame is pinned, not denoised: wherever it is in a chunk's latents the session writes the
    clean latent over it (`pin`), and the model sees it at timestep 0 (`timesteps`), as Wan 2.2
    TI2V's per-token timesteps do. Later chunks see it through the KV cache only.

    `first_frame_latents` is the model-space encoding [B, C, F_enc, H, W] of the start image
    (optionally followed by more frames, which are not used): frame 0 of a causal VAE's encoding
    depends on the first image alone.
    """

    def __init__(self, first_frame_latents: torch.Tensor):
        if first_frame_latents.ndim != 5 or first_frame_latents.shape[2] < 1:
            raise ValueError(
                "first_frame_latents must be [B, C, F, H, W] with at least one latent frame, got "
                f"{tuple(first_frame_latents.shape)}"
            )
        self.latent = first_frame_latents[:, :, :1]

    @staticmethod
    def pinned_frames(first_latent_frame: int, num_latent_frames: int) -> int:
        """How many leading frames of the window are pinned: 1 for the window that holds frame 0."""
        return 1 if first_latent_frame == 0 and num_latent_frames > 0 else 0

    def pin(self, latents: torch.Tensor, first_latent_frame: int) -> torch.Tensor:
        """`latents` [B, C, F, H, W] of the window from `first_latent_frame`, with frame 0 (if in it) made the clean latent."""
        if not self.pinned_frames(first_latent_frame, latents.shape[2]):
            return latents
        if self.latent.shape[:2] != latents.shape[:2] or self.latent.shape[3:] != latents.shape[3:]:
            raise ValueError(
                f"the first-frame latent has shape {tuple(self.latent.shape)}, which does not fit latents "
                f"{tuple(latents.shape)}: it needs the same batch size, channels, height and width"
            )
        pinned = latents.clone()
        pinned[:, :, :1] = self.latent.to(device=latents.device, dtype=latents.dtype)
        return pinned

    def timesteps(self, timestep: torch.Tensor, batch_size: int, first_latent_frame: int, num_latent_frames: int) -> torch.Tensor:
        """Per-frame timesteps [batch_size, F]: `timestep` everywhere, 0 on the pinned frame."""
        per_frame = torch.as_tensor(timestep).reshape(-1, 1).expand(batch_size, num_latent_frames).clone()
        per_frame[:, : self.pinned_frames(first_latent_frame, num_latent_frames)] = 0
        return per_frame


@dataclasses.dataclass(frozen=True)
class ImageConditioningMode:
    """What a stream makes of `first_frame_latents`: extra input channels, a pinned clean frame, or both."""

    name: str
    channel_provider: Callable[[torch.Tensor], ConditionChannelProvider] | None = None
    clean_frame: Callable[[torch.Tensor], CleanFirstFrame] | None = None

    def providers(self, first_frame_latents: torch.Tensor | None) -> list[ConditionChannelProvider]:
        if first_frame_latents is None or self.channel_provider is None:
            return []
        return [self.channel_provider(first_frame_latents)]

    def pinned_frame(self, first_frame_latents: torch.Tensor | None) -> CleanFirstFrame | None:
        if first_frame_latents is None or self.clean_frame is None:
            return None
        return self.clean_frame(first_frame_latents)


IMAGE_CONDITIONING_MODES = {
    mode.name: mode
    for mode in (
        ImageConditioningMode("channels", channel_provider=FirstFrameCondition),
        ImageConditioningMode("clean_latent", clean_frame=CleanFirstFrame),
    )
}


def image_conditioning_named(name: str) -> ImageConditioningMode:
    mode = IMAGE_CONDITIONING_MODES.get(name)
    if mode is None:
        raise ValueError(f"unknown image_conditioning {name!r}; use one of {sorted(IMAGE_CONDITIONING_MODES)}")
    return mode
