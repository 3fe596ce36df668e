"""The transformer blocks of a causal chunk forward through `torch.compile`.

What is compiled is each block's computation before and after self-attention (norms, modulation,
projections, residuals, cross-attention, feed-forward), where fusing the float32 upcasts into the
surrounding kernels pays; the cache writes, RoPE and attention between them stay eager. The
blocks share code and differ only in weights, so every block reuses one compiled graph per chunk
shape (a first block of one frame and later blocks of three are two shapes). Shapes are static:
compilation happens at the first chunk of each shape, and a changed shape (another latent size,
a prompt longer than `text_len`) compiles anew, up to torch.compile's recompile limit per process,
past which these functions run eagerly.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..model.wan_dit import CrossAttentionContext, SelfAttentionFn, TransformerBlock, WanDiT


def _self_attention_inputs(block: TransformerBlock, x: torch.Tensor, frame_modulation: torch.Tensor):
    return block.self_attention_inputs(x, frame_modulation)


def _after_self_attention(
    block: TransformerBlock,
    x: torch.Tensor,
    attended: torch.Tensor,
    frame_modulation: torch.Tensor,
    context: CrossAttentionContext,
) -> torch.Tensor:
    return block.after_self_attention(x, attended, frame_modulation, context)


class CompiledBlocks:
    def __init__(self):
        self._self_attention_inputs = torch.compile(_self_attention_inputs, dynamic=False)
        self._after_self_attention = torch.compile(_after_self_attention, dynamic=False)

    def run(
        self,
        model: WanDiT,
        tokens: torch.Tensor,
        frame_embedding: torch.Tensor,
        frame_modulation: torch.Tensor,
        context: Sequence[CrossAttentionContext],
        self_attention: SelfAttentionFn,
    ) -> torch.Tensor:
        """What `model.run_blocks` computes."""
        for index, block in enumerate(model.blocks):
            q, k, v = self._self_attention_inputs(block, tokens, frame_modulation)
            attended = self_attention(index, q, k, v)
            tokens = self._after_self_attention(block, tokens, attended, frame_modulation, context[index])
        return model.head(tokens, frame_embedding)
