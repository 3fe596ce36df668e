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

from motionstream_core import PatchCodec, StreamingConfig, TinyVAE, to_vae_space

from .inputs import encode_first_frame, GRAY, latent_geometry, Need, resize_image, VAE_TEMPORAL

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


@dataclasses.dataclass(frozen=True, eq=False)
class Wan22Latents:
    """Wan 2.2 VAE latents (TI2V-5B): 48 channels, 16x spatial, 4x temporal with frame 0 on its own.

    The start image is only latent frame 0 (the session pins it clean, see image_conditioning.py), so
    only the image is encoded. to_vae_space reads the family off the channel count, so the LATENT
    output is what ComfyUI's Wan 2.2 VAE Decode takes.
    """

    vae: Any = None  # ComfyUI's Wan 2.2 VAE
    tiny_vae: TinyVAE | None = None

    spatial = 16
    latent_channels = 48
    needs = (Need(("tiny_vae", "vae"), "turns latents into frames: the Tiny VAE (taew2_2) decodes each chunk for the "
                                       "live preview, the Wan 2.2 VAE decodes the whole video at the end"),)

    def connect(self, vae=None, tiny_vae=None):
        if tiny_vae is not None and tiny_vae.latent_channels != self.latent_channels:
            raise ValueError(f"this Wan 2.2 model makes {self.latent_channels}-channel latents but the Tiny VAE takes "
                             f"{tiny_vae.latent_channels}: load taew2_2 (taew2_1 is for Wan 2.1 and Wan 2.2 14B)")
        return Wan22Latents(vae, tiny_vae)

    def geometry(self, width, height, num_frames):
        multiple = 2 * self.spatial  # the transformer's 2x2 patches
        if width % multiple or height % multiple:
            raise ValueError(f"width and height must be multiples of {multiple} for Wan 2.2, got {width}x{height}")
        if num_frames < 1 or (num_frames - 1) % VAE_TEMPORAL:
            raise ValueError(f"the frame count must be 4k + 1 (1, 5, 9, ..., 121), got {num_frames}")
        return (num_frames - 1) // VAE_TEMPORAL + 1, height // self.spatial, width // self.spatial

    def encode_start(self, image, width, height):
        return encode_first_frame(image, width, height, vae=self.vae, tiny_vae=self.tiny_vae, latent_frames=1)

    def decoder(self):
        return TinyVAEFrames(self.tiny_vae) if self.tiny_vae is not None else WholeVideoVAEFrames(self.vae)

    def latent_output(self, latents):
        return to_vae_space(latents)


# Wan checkpoints by latent channels (their output channels): the codec, and the streaming settings their
# students use (None: chosen from what else the checkpoint holds, StreamingConfig.for_checkpoint).
WAN_LATENT_FAMILIES = {
    48: (Wan22Latents, StreamingConfig.wan22_ti2v_5b),
}


def wan_latent_family(out_channels: int):
    """(codec, the family's streaming preset or None) of a Wan checkpoint; Wan 2.1 latents unless its channels
    say otherwise."""
    codec, preset = WAN_LATENT_FAMILIES.get(out_channels, (WanLatents, None))
    return codec(), preset


def wan_codec_and_defaults(out_channels: int, has_track_head: bool, is_image_to_video: bool):
    """(codec, streaming defaults) of a Wan checkpoint, the defaults from its latent family or else from its kind."""
    codec, preset = wan_latent_family(out_channels)
    defaults = preset() if preset is not None else StreamingConfig.for_checkpoint(has_track_head, is_image_to_video)
    return codec, defaults


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
