"""Animated PNG output (any browser plays it), written through Pillow and renamed into place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_animated_png(path: str | Path, frames: np.ndarray | torch.Tensor, fps: float = 16.0) -> Path:
    """Writes frames [T, H, W, 3] uint8 (or [T, 3, H, W] float in [0, 1]) as an endlessly looping APNG."""
    if isinstance(frames, torch.Tensor):
        frames = (frames.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be [T, H, W, 3], got {frames.shape}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    images = [Image.fromarray(frame) for frame in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")  # renamed into place, so no half-written file remains
    try:
        images[0].save(partial, format="PNG", save_all=True, append_images=images[1:],
                       duration=1000.0 / fps, loop=0, default_image=False)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path
