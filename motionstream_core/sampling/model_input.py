"""What a track-conditioned Wan DiT is fed in each guidance branch.

Input channels are [noisy latent | image conditioning | track channels]; the null-motion branch sees
zero track channels, the null-text branch the negative (or empty) prompt.
"""

from __future__ import annotations

from typing import Callable

import torch

from .guidance import Branch, branch_weights


def assemble_input(
    noisy: torch.Tensor,
    condition_channels: torch.Tensor | None,
    track_channels: torch.Tensor | None,
    in_channels: int,
    with_motion: bool = True,
) -> torch.Tensor:
    """The model input [B, in_channels, F, H, W]; a wrong channel count names every part."""
    parts = {"noisy latent": noisy}
    if condition_channels is not None:
        parts["image conditioning"] = condition_channels.to(noisy)
    if track_channels is not None:
        parts["tracks"] = track_channels.to(noisy) if with_motion else torch.zeros_like(track_channels, dtype=noisy.dtype)
    total = sum(part.shape[1] for part in parts.values())
    if total != in_channels:
        layout = " + ".join(f"{part.shape[1]} {name}" for name, part in parts.items())
        raise ValueError(
            f"the model takes {in_channels} input channels, but the inputs give {layout} = {total}; a text-to-video "
            "model takes no start image, and only models with a track head take tracks"
        )
    return torch.cat(list(parts.values()), dim=1)


def branch_contexts(
    encode_context: Callable,
    text: torch.Tensor,
    null_text: torch.Tensor | None,
    image_tokens: torch.Tensor | None,
    text_scale: float,
    motion_scale: float,
) -> dict[Branch, object]:
    """`encode_context(text, image_tokens)` of every branch that contributes at these guidance scales."""
    contexts = {}
    for branch in branch_weights(text_scale, motion_scale):
        if not branch.uses_text and null_text is None:
            raise ValueError("text guidance (text_scale > 0) needs the negative/empty prompt embedding (null_text)")
        contexts[branch] = encode_context(text if branch.uses_text else null_text, image_tokens)
    return contexts
