"""A model's latent codec as the streaming sampler uses it: one interface, one class per codec family.

A codec says which latents a video size has (`geometry`), turns the start image into model-space
latents (`encode_start`), makes a decoder that turns each generated chunk into frames as it arrives
(`decoder`), and gives the LATENT output (`latent_output`). A MOTIONSTREAM_MODEL carries its codec;
the sampler `connect`s it to the VAE inputs it was given, which only the Wan family uses.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import torch

from motionstream_core import PatchCodec, TinyVAE, to_vae_space

from .inputs import encode_first_frame, GRAY, latent_geometry, Need, resize_image

NO_FRAMES = torch.zeros(0, 0, 0, 3)


class FrameDecoder(Protocol):
    """Model-space latents [1, C, t, h, w] in, IMAGE frames [T, H, W, 3] (float, on the CPU) out."""

    live: bool  # frames come chunk by chunk (so they can be previewed), not only from flush()

    def push(self, latents: torch.Tensor) -> torch.Tensor: ...

    def flush(self) -> torch.Tensor: ...


class LatentCodec(Protocol):
    needs: tuple[Need, ...]  # sampler inputs the codec cannot work without

    def connect(self, vae: Any = None, tiny_vae: TinyVAE | None = None) -> LatentCodec: ...

    def geometry(self, width: int, height: int, num_frames: int) -> tuple[int, int, int]:
        """(latent frames, latent height, latent width); raises a ValueError naming the rule a size breaks."""

    def encode_start(self, image: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """IMAGE [B, H, W, C] -> model-space latents [1, C, F, h, w] of the image and gray frames after it."""

    def decoder(self) -> FrameDecoder: ...

    def latent_output(self, latents: torch.Tensor) -> torch.Tensor: ...


class TinyVAEFrames:
    """The Tiny VAE decodes every chunk as soon as it is generated."""

    live = True

    def __init__(self, tiny_vae: TinyVAE):
        self.vae = tiny_vae
        self.stream = tiny_vae.stream_decoder()

    def push(self, latents):
        frames = self.stream.push(latents.movedim(1, 2).to(self.vae.device, self.vae.dtype))
        return frames[0].movedim(1, -1).float().cpu()

    def flush(self):
        return self.stream.flush()[0].movedim(1, -1).float().cpu()


class WholeVideoVAEFrames:
    """ComfyUI's Wan VAE decodes the whole video once the stream has ended (so there is no live preview)."""

    live = False

    def __init__(self, vae):
        self.vae = vae
        self.latents = []

    def push(self, latents):
        self.latents.append(latents.float().cpu())
        return NO_FRAMES

    def flush(self):
        decoded = self.vae.decode(to_vae_space(torch.cat(self.latents, dim=2)))
        self.latents = []
        return decoded.reshape(-1, *decoded.shape[-3:]).float().cpu()


@dataclasses.dataclass(frozen=True, eq=False)
class WanLatents:
    """Wan 2.1 VAE latents: 8x spatial, 4x temporal with frame 0 on its own, normalised per channel."""

    vae: Any = None  # ComfyUI's Wan 2.1 VAE
    tiny_vae: TinyVAE | None = None

    needs = (Need(("tiny_vae", "vae"), "turns latents into frames: the Tiny VAE decodes each chunk for the live "
                                       "preview, the Wan 2.1 VAE decodes the whole video at the end"),)

    def connect(self, vae=None, tiny_vae=None):
        return WanLatents(vae, tiny_vae)

    def geometry(self, width, height, num_frames):
        return latent_geometry(width, height, num_frames)

    def encode_start(self, image, width, height):
        return encode_first_frame(image, width, height, vae=self.vae, tiny_vae=self.tiny_vae)

    def decoder(self):
        return TinyVAEFrames(self.tiny_vae) if self.tiny_vae is not None else WholeVideoVAEFrames(self.vae)

    def latent_output(self, latents):
        return to_vae_space(latents)


class PatchCodecFrames:
    live = True

    def __init__(self, codec: PatchCodec):
        self.codec = codec

    def push(self, latents):
        return self.codec.decode_images(latents.float().cpu()).movedim(1, -1)

    def flush(self):
        return NO_FRAMES


@dataclasses.dataclass(frozen=True, eq=False)
class PatchCodecLatents:
    """A model's own PatchCodec (the embedded demo): `factor`x spatial, one latent frame per video frame."""

    codec: PatchCodec

    needs = ()

    def connect(self, vae=None, tiny_vae=None):
        return self  # it brings its own codec: VAE inputs are not used

    def geometry(self, width, height, num_frames):
        factor = self.codec.factor
        if width % factor or height % factor:
            raise ValueError(f"width and height must be multiples of {factor} for this model, got {width}x{height}")
        if num_frames < 1:
            raise ValueError(f"the frame count must be at least 1, got {num_frames}")
        return num_frames, height // factor, width // factor

    def encode_start(self, image, width, height):
        start = resize_image(image, width, height)[0].movedim(-1, 0)  # [3, H, W]
        return self.codec.encode_images(torch.stack((start, torch.full_like(start, GRAY))))

    def decoder(self):
        return PatchCodecFrames(self.codec)

    def latent_output(self, latents):
        return latents
