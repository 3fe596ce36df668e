"""Cross-attention contexts of several prompts stacked into one batch, as batched guidance branches need."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .wan_dit import CrossAttentionContext


def _padded(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """[B, L, H, D] zero-padded to `length` tokens."""
    return F.pad(tokens, (0, 0, 0, 0, 0, length - tokens.shape[1]))


def _token_mask(context: CrossAttentionContext, length: int) -> torch.Tensor:
    own = context.mask
    if own is None:
        own = torch.ones(context.key.shape[0], 1, 1, context.key.shape[1], dtype=torch.bool, device=context.key.device)
    return F.pad(own, (0, length - own.shape[-1]), value=False)


def stack_contexts(contexts: Sequence[CrossAttentionContext]) -> CrossAttentionContext:
    """One layer's contexts concatenated along the batch dimension, in order.

    Prompts of different lengths are zero-padded to the longest, and the padding is masked out of
    cross-attention, so every row still attends to exactly its own prompt's tokens.
    """
    if len({c.image_key is None for c in contexts}) > 1:
        raise ValueError("contexts with and without image tokens cannot share a batch")
    length = max(c.key.shape[1] for c in contexts)
    needs_mask = any(c.mask is not None or c.key.shape[1] != length for c in contexts)
    stacked = CrossAttentionContext(
        key=torch.cat([_padded(c.key, length) for c in contexts]),
        value=torch.cat([_padded(c.value, length) for c in contexts]),
        mask=torch.cat([_token_mask(c, length) for c in contexts]) if needs_mask else None,
    )
    if contexts[0].image_key is not None:
        stacked.image_key = torch.cat([c.image_key for c in contexts])
        stacked.image_value = torch.cat([c.image_value for c in contexts])
    return stacked


def stack_layer_contexts(contexts: Sequence[list[CrossAttentionContext]]) -> list[CrossAttentionContext]:
    """Per-layer contexts of several prompts (each from `encode_context`) stacked layer by layer."""
    return [stack_contexts(layer) for layer in zip(*contexts)]
