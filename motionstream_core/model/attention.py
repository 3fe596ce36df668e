"""The one attention function every module uses, so causal masks and backends live in one place."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-head attention on [B, L, H, D] tensors, returning [B, Lq, H * D].

    `mask` is boolean, True where a query may attend a key, broadcastable to
    [B, H, Lq, Lk] (a plain [Lq, Lk] works).
    """
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"attention mask must be boolean, got {mask.dtype}")
    out = F.scaled_dot_product_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask=mask
    )
    return out.transpose(1, 2).flatten(2)
