"""Joint text-motion classifier-free guidance of MotionStream.

    v = a * v(null_text, m) + (1 - a) * v(t, null_motion)
        + wt * (v(t, m) - v(null_text, m)) + wm * (v(t, m) - v(t, null_motion)),   a = wt / (wt + wm)

Null motion means zero track channels; null text means the negative (or empty) prompt embedding.
Written as a weighted sum of the three branch predictions, each weight is a plain number, so a
branch whose weight is zero is never evaluated: wm = 0 is text CFG (two forwards), wt = 0 is
motion CFG (two forwards), and wt = wm = 0 turns guidance off (one forward, the conditional).
"""

from __future__ import annotations

import enum
import math
from typing import Callable

import torch

DEFAULT_TEXT_SCALE = 3.0
DEFAULT_MOTION_SCALE = 1.5


class Branch(enum.Enum):
    CONDITIONAL = "text+motion"
    NULL_TEXT = "motion only"
    NULL_MOTION = "text only"

    @property
    def uses_text(self) -> bool:
        return self is not Branch.NULL_TEXT

    @property
    def uses_motion(self) -> bool:
        return self is not Branch.NULL_MOTION


def branch_weights(text_scale: float, motion_scale: float) -> dict[Branch, float]:
    """Weight of each branch prediction in the guided velocity; branches with weight 0 are left out."""
    for name, scale in (("text_scale", text_scale), ("motion_scale", motion_scale)):
        if not math.isfinite(scale) or scale < 0:
            raise ValueError(f"{name} must be a finite, non-negative number, got {scale}")
    total = text_scale + motion_scale
    if total == 0:
        return {Branch.CONDITIONAL: 1.0}
    a = text_scale / total
    weights = {
        Branch.CONDITIONAL: total,
        Branch.NULL_TEXT: a - text_scale,
        Branch.NULL_MOTION: (1 - a) - motion_scale,
    }
    return {branch: weight for branch, weight in weights.items() if weight != 0}


def guided_velocity(
    predict: Callable[[Branch], torch.Tensor],
    text_scale: float = DEFAULT_TEXT_SCALE,
    motion_scale: float = DEFAULT_MOTION_SCALE,
) -> torch.Tensor:
    """Combines branch predictions; `predict(branch)` is called once per branch that contributes."""
    guided = None
    for branch, weight in branch_weights(text_scale, motion_scale).items():
        prediction = predict(branch)
        term = prediction.to(torch.promote_types(prediction.dtype, torch.float32)) * weight
        guided = term if guided is None else guided + term
    return guided
