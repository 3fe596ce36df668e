"""Image-to-video conditioning channels, and the provider interface every condition channel follows.

A *condition channel provider* is any callable `(first_latent_frame, num_latent_frames) -> tensor
[B, C, num_latent_frames, H, W]` giving extra input channels for a window of latent frames. The
streaming session concatenates the providers' outputs, in order, after the noisy latent. For
MotionStream Track-v0 (52 input channels) the order is
[16 noisy | 4 mask | 16 first-frame latent | 16 track channels]: `FirstFrameCondition` gives the
middle 20, the track head the last 16.
"""

from __future__ import annotations

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
