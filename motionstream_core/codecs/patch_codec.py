"""A tiny fixed latent codec for the demo model: pixel-unshuffle + an orthonormal (PCA) projection.

    latent = diag(1 / scale) @ basis @ (unshuffle(2 * frame - 1) - mean)     per latent cell
    frame  = (unshuffle^-1(basis^T @ diag(scale) @ latent + mean) + 1) / 2

Each latent cell covers `factor x factor` pixels of one frame (no temporal compression: one
latent frame per video frame). `basis` [C, 3 * factor**2] has orthonormal rows (the leading
principal components of patches of synthetic frames), `mean` [3 * factor**2] is the mean patch
and `scale` [C] the standard deviation of each component, so latents have about unit variance.
Decoding is the least-squares inverse: it reproduces the part of each patch that lies in the
span of the basis exactly, so the round-trip error is the PCA residual.

Nothing is trained by gradient; `fit` takes a few seconds. The parameters are small enough to
travel as JSON in a weights file's metadata (`to_json` / `from_json`).
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F


class PatchCodec:
    def __init__(self, basis: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, factor: int):
        basis, mean, scale = (torch.as_tensor(t, dtype=torch.float32) for t in (basis, mean, scale))
        patch = 3 * factor * factor
        if basis.ndim != 2 or basis.shape[1] != patch:
            raise ValueError(f"basis must be [C, {patch}] for factor {factor}, got {tuple(basis.shape)}")
        if tuple(mean.shape) != (patch,) or tuple(scale.shape) != (basis.shape[0],):
            raise ValueError(f"mean must be [{patch}] and scale [{basis.shape[0]}]")
        if (scale <= 0).any():
            raise ValueError("scale must be positive")
        self.basis, self.mean, self.scale, self.factor = basis, mean, scale, int(factor)
        # encode: latent = (x - mean) @ enc ; decode: x = latent @ dec + mean
        self._enc = (basis / scale[:, None]).T.contiguous()  # [P, C]
        self._dec = (basis * scale[:, None]).contiguous()  # [C, P]

    @property
    def channels(self) -> int:
        return self.basis.shape[0]

    # --- fitting and storage ---

    @classmethod
    def fit(cls, frames: torch.Tensor, channels: int = 16, factor: int = 4, whiten: bool = True) -> "PatchCodec":
        """PCA of the `factor x factor` patches of frames [N, 3, H, W] in [0, 1].

        `whiten` gives every component unit variance; without it all components share one scale
        (unit variance on average), so latent-space errors weigh as they do in pixels.
        """
        patches = _patches(frames.to(torch.float32) * 2 - 1, factor).to(torch.float64)  # [M, P]
        mean = patches.mean(0)
        centred = patches - mean
        covariance = centred.T @ centred / max(1, centred.shape[0] - 1)
        values, vectors = torch.linalg.eigh(covariance)
        order = values.argsort(descending=True)[:channels]
        basis = vectors[:, order].T  # [C, P]
        # A fixed sign per component (largest entry positive) so that refits are comparable.
        signs = torch.sign(basis.gather(1, basis.abs().argmax(1, keepdim=True)))
        basis = basis * signs
        scale = values[order].clamp(min=1e-8).sqrt()
        if not whiten:
            scale = scale.square().mean().sqrt().expand_as(scale).clone()
        return cls(basis.float(), mean.float(), scale.float(), factor)

    def to_json(self) -> str:
        return json.dumps({
            "factor": self.factor, "basis": self.basis.tolist(), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
        })

    @classmethod
    def from_json(cls, text: str) -> "PatchCodec":
        data = json.loads(text)
        return cls(torch.tensor(data["basis"]), torch.tensor(data["mean"]), torch.tensor(data["scale"]), int(data["factor"]))

    # --- coding ---

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [B, 3, T, H, W] in [-1, 1] -> latents [B, C, T, H / factor, W / factor]."""
        if frames.ndim != 5 or frames.shape[1] != 3:
            raise ValueError(f"frames must be [B, 3, T, H, W], got {tuple(frames.shape)}")
        batch, _, time, height, width = frames.shape
        f = self.factor
        if height % f or width % f:
            raise ValueError(f"frame size {height}x{width} is not divisible by {f}")
        flat = frames.permute(0, 2, 1, 3, 4).reshape(batch * time, 3, height, width).to(torch.float32)
        cells = F.pixel_unshuffle(flat, f)  # [BT, P, h, w]
        latents = torch.einsum("nphw,pc->nchw", cells - self.mean.view(1, -1, 1, 1), self._enc)
        return latents.reshape(batch, time, self.channels, height // f, width // f).permute(0, 2, 1, 3, 4)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, T, h, w] -> frames [B, 3, T, h * factor, w * factor] in [-1, 1] (clamped)."""
        if latents.ndim != 5 or latents.shape[1] != self.channels:
            raise ValueError(f"latents must be [B, {self.channels}, T, h, w], got {tuple(latents.shape)}")
        batch, _, time, height, width = latents.shape
        flat = latents.permute(0, 2, 1, 3, 4).reshape(batch * time, self.channels, height, width).to(torch.float32)
        cells = torch.einsum("nchw,cp->nphw", flat, self._dec) + self.mean.view(1, -1, 1, 1)
        frames = F.pixel_shuffle(cells, self.factor).clamp(-1, 1)
        return frames.reshape(batch, time, 3, height * self.factor, width * self.factor).permute(0, 2, 1, 3, 4)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Frames [T, 3, H, W] in [0, 1] -> latents [1, C, T, h, w]."""
        return self.encode(images.permute(1, 0, 2, 3).unsqueeze(0) * 2 - 1)

    def decode_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [1, C, T, h, w] -> frames [T, 3, H, W] in [0, 1]."""
        return ((self.decode(latents)[0].permute(1, 0, 2, 3) + 1) / 2).clamp(0, 1)


def _patches(frames: torch.Tensor, factor: int) -> torch.Tensor:
    cells = F.pixel_unshuffle(frames, factor)  # [N, P, h, w]
    return cells.permute(0, 2, 3, 1).reshape(-1, cells.shape[1])
