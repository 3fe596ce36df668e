"""The static, low-saturation background of a clip: a smooth linear gradient, or value noise.

The noise has three octaves, with features from about a third down to a
twentieth of the frame. Every background pixel is a grey level in
``[0.2, 0.8]`` plus chroma of norm at most :data:`BACKGROUND_MAX_CHROMA`, far
below the chroma of any sprite colour (see :mod:`.sprites`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

BACKGROUND_MAX_CHROMA = 0.06

# Grey-level amplitude of each octave of the noise background, coarsest first.
_NOISE_OCTAVE_AMPLITUDES = (0.2, 0.1, 0.05)


def random_background(kind: str, width: int, height: int, rng: np.random.Generator) -> torch.Tensor:
    """Float32 ``[3, H, W]``: grey level in [0.2, 0.8] plus chroma of norm at most BACKGROUND_MAX_CHROMA."""
    if kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        low, high = np.sort(rng.uniform(0.25, 0.75, size=2))
        centres = _pixel_centres(width, height).to(torch.float64)
        direction = torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)
        along = (centres - torch.tensor([width / 2, height / 2], dtype=torch.float64)) @ direction
        span = float(abs(direction[0]) * width + abs(direction[1]) * height) / 2
        ramp = (along / max(span, 1e-9)).clamp(-1, 1) * 0.5 + 0.5  # [H, W] in [0, 1]
        grey = low + (high - low) * ramp
        ends = _random_chroma(rng, 2)
        chroma_map = ends[0][:, None, None] * (1 - ramp) + ends[1][:, None, None] * ramp
    else:
        cells = int(rng.integers(3, 7))
        grey = torch.full((height, width), 0.5, dtype=torch.float64)
        for octave, amplitude in enumerate(_NOISE_OCTAVE_AMPLITUDES):
            octave_cells = cells * 2**octave
            coarse_grey = torch.from_numpy(rng.uniform(-amplitude, amplitude, size=(1, 1, octave_cells, octave_cells)))
            grey += F.interpolate(coarse_grey, size=(height, width), mode="bicubic", align_corners=False)[0, 0]
        grey = grey.clamp(0.2, 0.8)
        coarse_chroma = _random_chroma(rng, cells * cells).T.reshape(1, 3, cells, cells)
        chroma_map = F.interpolate(coarse_chroma, size=(height, width), mode="bilinear", align_corners=False)[0]
    # Interpolating chroma vectors keeps them in the chroma plane and within the bound.
    return (grey[None] + chroma_map).to(torch.float32)


def _pixel_centres(width: int, height: int) -> torch.Tensor:
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)  # [H, W, 2] as (x, y)


def _random_chroma(rng: np.random.Generator, count: int) -> torch.Tensor:
    """``[count, 3]`` chroma vectors (zero channel mean) of norm at most BACKGROUND_MAX_CHROMA."""
    basis = np.array([[1.0, -1.0, 0.0], [1.0, 1.0, -2.0]])
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    angle = rng.uniform(0, 2 * math.pi, size=count)
    radius = BACKGROUND_MAX_CHROMA * np.sqrt(rng.uniform(0, 1, size=count))
    planar = np.stack([np.cos(angle), np.sin(angle)], axis=1) * radius[:, None]
    return torch.from_numpy(planar @ basis)
