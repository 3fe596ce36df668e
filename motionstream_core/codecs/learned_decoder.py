"""A small learned decoder for the demo model's PatchCodec latents: the PCA decode plus a learned residual.

    frame = clamp(pca_decode(latent) + pixel_shuffle(refiner(latent)), -1, 1)     per frame

The DiT generates latents on a grid of tokens (`token` x `token` latent cells each); what it gets
wrong shows as token-sized blocks and coloured speckle that the linear PCA decode passes straight
to the pixels. The refiner is a few 3x3 convolutions at latent resolution that see a neighbourhood
of cells (so they can smooth across token borders), plus a learned bias per position inside a
token (convolutions alone cannot tell a token border from its middle). Its last convolution starts
at zero, so an untrained refiner decodes exactly as the PCA does.

Each frame is decoded on its own (no temporal state), so a stream decodes chunk by chunk.
`RefinedPatchCodec` has the interface PatchCodec's users need (encoding is PatchCodec's), so the
demo model and the ComfyUI nodes take either. The weights (safetensors) carry a fingerprint of the
codec they were trained for; `load_refined_codec` refuses a file made for another codec.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .patch_codec import PatchCodec

FORMAT = "motionstream-patch-decoder"


@dataclasses.dataclass(frozen=True)
class RefinerConfig:
    channels: int = 16  # latent channels (the codec's)
    factor: int = 4  # pixels per latent cell side (the codec's)
    width: int = 32  # feature channels
    blocks: int = 2  # residual blocks of two 3x3 convolutions
    token: int = 4  # latent cells per DiT token side (its patch size): the period of the position bias


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class LatentRefiner(nn.Module):
    """Latents [N, C, h, w] -> a pixel residual [N, 3, h * factor, w * factor] (in [-1, 1] units)."""

    def __init__(self, config: RefinerConfig = RefinerConfig()):
        super().__init__()
        self.config = config
        self.head = nn.Conv2d(config.channels, config.width, 3, padding=1)
        self.token_position = nn.Parameter(torch.zeros(1, config.width, config.token, config.token))
        self.blocks = nn.Sequential(*(ResidualBlock(config.width) for _ in range(config.blocks)))
        self.tail = nn.Conv2d(config.width, 3 * config.factor**2, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        height, width = latents.shape[-2:]
        token = self.config.token
        position = self.token_position.repeat(1, 1, -(-height // token), -(-width // token))[..., :height, :width]
        x = F.relu(self.head(latents) + position)
        x = F.relu(self.blocks(x))
        return F.pixel_shuffle(self.tail(x), self.config.factor)


class RefinedPatchCodec:
    """A PatchCodec whose decoding adds the refiner's residual to the PCA decode; encoding is the codec's."""

    def __init__(self, codec: PatchCodec, refiner: LatentRefiner):
        config = refiner.config
        if (config.channels, config.factor) != (codec.channels, codec.factor):
            raise ValueError(
                f"the refiner is for {config.channels}-channel latents of factor {config.factor}, "
                f"the codec has {codec.channels} channels and factor {codec.factor}"
            )
        self.codec = codec
        self.refiner = refiner.eval().requires_grad_(False)

    @property
    def factor(self) -> int:
        return self.codec.factor

    @property
    def channels(self) -> int:
        return self.codec.channels

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(frames)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.codec.encode_images(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, T, h, w] -> frames [B, 3, T, h * factor, w * factor] in [-1, 1] (clamped)."""
        base = self.codec.decode(latents)  # checks the shape
        batch, channels, time, height, width = latents.shape
        flat = latents.permute(0, 2, 1, 3, 4).reshape(batch * time, channels, height, width).to(torch.float32)
        with torch.no_grad():
            residual = self.refiner(flat)
        residual = residual.reshape(batch, time, 3, *residual.shape[-2:]).permute(0, 2, 1, 3, 4)
        return (base + residual).clamp(-1, 1)

    def decode_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [1, C, T, h, w] -> frames [T, 3, H, W] in [0, 1]."""
        return ((self.decode(latents)[0].permute(1, 0, 2, 3) + 1) / 2).clamp(0, 1)


def codec_fingerprint(codec: PatchCodec) -> str:
    """SHA-256 of the codec's factor and float32 parameters: ties a decoder to the codec it was trained for."""
    digest = hashlib.sha256(f"patch-codec factor={codec.factor};".encode())
    for tensor in (codec.basis, codec.mean, codec.scale):
        digest.update(np.ascontiguousarray(tensor.detach().to(torch.float32).numpy(), dtype="<f4").tobytes())
    return digest.hexdigest()


def save_refiner(path: str | Path, refiner: LatentRefiner, codec: PatchCodec, dtype: torch.dtype = torch.float16,
                 extra_metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().to(dtype).contiguous() for name, value in refiner.state_dict().items()}
    metadata = {
        **(extra_metadata or {}), "format": FORMAT, "config": json.dumps(dataclasses.asdict(refiner.config)),
        "codec_sha256": codec_fingerprint(codec),
    }
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_refined_codec(path: str | Path, codec: PatchCodec) -> RefinedPatchCodec:
    """The decoder in `path` for `codec`; a ``ValueError`` naming the file if it is not one, or is for another codec."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"decoder not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except Exception as error:  # safetensors raises its own types for a corrupt file
        raise ValueError(f"cannot read decoder {path.name}: {type(error).__name__}: {error}") from error
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path.name} is not a patch-codec decoder (metadata format {metadata.get('format')!r})")
    if metadata.get("codec_sha256") != codec_fingerprint(codec):
        raise ValueError(f"{path.name} was trained for another codec than this model's (codec fingerprints differ)")
    try:
        refiner = LatentRefiner(RefinerConfig(**json.loads(metadata["config"])))
        refiner.load_state_dict({name: value.float() for name, value in tensors.items()})
    except Exception as error:  # bad config JSON, unknown fields, missing or misshapen tensors
        raise ValueError(f"{path.name}: decoder weights do not match its config: {type(error).__name__}: {error}") from error
    return RefinedPatchCodec(codec, refiner)
