"""Wan 2.1 diffusion transformer: the bidirectional base model that causal students share weights with.

Parameter names follow the original Wan release (the canonical naming here); `weights.py`
converts other layouts to it. Timesteps may differ per latent frame, which is what
causal students need: every token is modulated by the timestep of its own frame.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import attention
from .config import WanConfig
from .rope import RotaryEmbedding, RotaryTables, rotation_dtype

# (layer index, query, key, value) -> attended values [B, Lq, H * D]; q/k/v are [B, L, H, D], not yet rotated.
SelfAttentionFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """[..., dim] embedding, cosines first; float64 so that large timesteps keep their precision."""
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float64, device=timesteps.device) / half
    angles = timesteps.to(torch.float64)[..., None] * torch.pow(10000.0, -exponent)
    return torch.cat((angles.cos(), angles.sin()), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            # The same arithmetic as below in one call (a fused kernel on CUDA); these norms run on every q and k.
            return F.rms_norm(x, self.weight.shape, self.weight.to(x.dtype), self.eps)
        # Normalised in float32, even for float64 input, weighted in the input dtype: what the released models do.
        x32 = x.float()
        normed = (x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)).to(x.dtype)
        weight = self.weight.to(x.dtype)
        # `normed` is a fresh tensor: without autograd it can take the weight in place.
        return normed * weight if torch.is_grad_enabled() else normed.mul_(weight)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in at least float32, returned in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        weight = self.weight.to(x32.dtype) if self.weight is not None else None
        bias = self.bias.to(x32.dtype) if self.bias is not None else None
        return F.layer_norm(x32, self.normalized_shape, weight, bias, self.eps).to(x.dtype)


# addcmul does a product and a sum in one pass over the tokens, where `a + b * c` takes two.


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [B, F, T, D] with per-frame shift/scale [B, F, 1, D], computed in float32 or better."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    return torch.addcmul(shift.to(dtype), x.to(dtype), 1 + scale.to(dtype)).to(x.dtype)


def gated_residual(x: torch.Tensor, update: torch.Tensor, gate: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """x + update * gate in float32 or better; `in_place` overwrites x (only when autograd is off and x is ours)."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    if in_place and x.dtype == dtype:
        return x.addcmul_(update.to(dtype), gate.to(dtype))
    return torch.addcmul(x.to(dtype), update.to(dtype), gate.to(dtype)).to(x.dtype)


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    return x.unflatten(-1, (num_heads, -1))


class AttentionProjections(nn.Module):
    """The q/k/v/o projections and q/k RMS norms that self- and cross-attention share."""

    def __init__(self, config: WanConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.q = nn.Linear(config.dim, config.dim)
        self.k = nn.Linear(config.dim, config.dim)
        self.v = nn.Linear(config.dim, config.dim)
        self.o = nn.Linear(config.dim, config.dim)
        self.norm_q = RMSNorm(config.dim, config.eps) if config.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(config.dim, config.eps) if config.qk_norm else nn.Identity()


class SelfAttention(AttentionProjections):
    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised, head-split query/key/value [B, L, H, D] before any rotation."""
        q = _split_heads(self.norm_q(self.q(x)), self.num_heads)
        k = _split_heads(self.norm_k(self.k(x)), self.num_heads)
        v = _split_heads(self.v(x), self.num_heads)
        return q, k, v


@dataclasses.dataclass
class CrossAttentionContext:
    """Keys/values of the conditioning tokens for one layer; computed once per prompt."""

    key: torch.Tensor
    value: torch.Tensor
    image_key: torch.Tensor | None = None
    image_value: torch.Tensor | None = None
    # Boolean [B, 1, 1, L], False on the padding of prompts batched with longer ones (context_batch.py).
    mask: torch.Tensor | None = None


class CrossAttention(AttentionProjections):
    def __init__(self, config: WanConfig):
        super().__init__(config)
        if config.is_image_to_video:
            self.k_img = nn.Linear(config.dim, config.dim)
            self.v_img = nn.Linear(config.dim, config.dim)
            self.norm_k_img = RMSNorm(config.dim, config.eps) if config.qk_norm else nn.Identity()

    def project_context(self, text: torch.Tensor, image: torch.Tensor | None) -> CrossAttentionContext:
        context = CrossAttentionContext(
            key=_split_heads(self.norm_k(self.k(text)), self.num_heads),
            value=_split_heads(self.v(text), self.num_heads),
        )
        if image is not None:
            if not hasattr(self, "k_img"):
                raise ValueError("image tokens were given to a text-to-video model")
            context.image_key = _split_heads(self.norm_k_img(self.k_img(image)), self.num_heads)
            context.image_value = _split_heads(self.v_img(image), self.num_heads)
        elif hasattr(self, "k_img"):
            raise ValueError("this image-to-video model needs CLIP image tokens (image_context)")
        return context

    def forward(self, x: torch.Tensor, context: CrossAttentionContext) -> torch.Tensor:
        q = _split_heads(self.norm_q(self.q(x)), self.num_heads)
        out = attention(q, context.key, context.value, mask=context.mask)
        if context.image_key is not None:
            out = out + attention(q, context.image_key, context.image_value)
        return self.o(out)


class FeedForward(nn.Sequential):
    def __init__(self, config: WanConfig):
        super().__init__(
            nn.Linear(config.dim, config.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(config.ffn_dim, config.dim)
        )


class TransformerBlock(nn.Module):
    def __init__(self, config: WanConfig):
        super().__init__()
        self.norm1 = LayerNorm(config.dim, eps=config.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(config)
        self.norm3 = (
            LayerNorm(config.dim, eps=config.eps, elementwise_affine=True) if config.cross_attn_norm else nn.Identity()
        )
        self.cross_attn = CrossAttention(config)
        self.norm2 = LayerNorm(config.dim, eps=config.eps, elementwise_affine=False)
        self.ffn = FeedForward(config)
        self.modulation = nn.Parameter(torch.randn(1, 6, config.dim) / config.dim**0.5)

    def forward(
        self,
        x: torch.Tensor,
        frame_modulation: torch.Tensor,
        context: CrossAttentionContext,
        attend_self: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """x [B, F, T, D] (frames, tokens per frame); frame_modulation [B, F, 6, D]."""
        attended = attend_self(*self.self_attention_inputs(x, frame_modulation))
        return self.after_self_attention(x, attended, frame_modulation, context)

    # The two halves around self-attention, which a causal engine may compile separately from its cache logic.

    def _modulation(self, frame_modulation: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mod = (self.modulation.to(frame_modulation.dtype)[:, None] + frame_modulation).unsqueeze(3)
        return mod.unbind(2)

    def self_attention_inputs(
        self, x: torch.Tensor, frame_modulation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Un-rotated query, key, value [B, F * T, H, D] of the self-attention."""
        shift_sa, scale_sa, *_ = self._modulation(frame_modulation)
        return self.self_attn.project(modulate(self.norm1(x), shift_sa, scale_sa).flatten(1, 2))

    def after_self_attention(
        self,
        x: torch.Tensor,
        attended: torch.Tensor,
        frame_modulation: torch.Tensor,
        context: CrossAttentionContext,
    ) -> torch.Tensor:
        """The block's output from its input x and the attended values [B, F * T, H * D]."""
        _, _, gate_sa, shift_ff, scale_ff, gate_ff = self._modulation(frame_modulation)
        frames = x.shape[1]
        h = self.self_attn.o(attended)
        x = gated_residual(x, h.unflatten(1, (frames, -1)), gate_sa)
        # From here x is this block's own tensor: without autograd the residuals can be added in place.
        in_place = not torch.is_grad_enabled()

        h = self.cross_attn(self.norm3(x).flatten(1, 2), context).unflatten(1, (frames, -1)).to(x.dtype)
        x = x.add_(h) if in_place else x + h

        h = self.ffn(modulate(self.norm2(x), shift_ff, scale_ff))
        return gated_residual(x, h, gate_ff, in_place=in_place)


class OutputHead(nn.Module):
    def __init__(self, config: WanConfig):
        super().__init__()
        self.norm = LayerNorm(config.dim, eps=config.eps, elementwise_affine=False)
        self.head = nn.Linear(config.dim, config.out_channels * config.patch_volume)
        self.modulation = nn.Parameter(torch.randn(1, 2, config.dim) / config.dim**0.5)

    def forward(self, x: torch.Tensor, frame_embedding: torch.Tensor) -> torch.Tensor:
        mod = (self.modulation.to(frame_embedding.dtype)[:, None] + frame_embedding[:, :, None]).unsqueeze(3)
        shift, scale = mod.unbind(2)
        return self.head(modulate(self.norm(x), shift, scale))


class ImageProjection(nn.Module):
    """CLIP image tokens -> model width, for image-to-video checkpoints."""

    def __init__(self, config: WanConfig):
        super().__init__()
        self.proj = nn.Sequential(
            LayerNorm(config.image_dim),
            nn.Linear(config.image_dim, config.image_dim),
            nn.GELU(),
            nn.Linear(config.image_dim, config.dim),
            LayerNorm(config.dim),
        )
        if config.image_pos_len:
            self.emb_pos = nn.Parameter(torch.zeros(1, config.image_pos_len, config.image_dim))

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "emb_pos"):
            if image_tokens.shape[1] != self.emb_pos.shape[1]:
                raise ValueError(
                    f"this checkpoint expects {self.emb_pos.shape[1]} image tokens "
                    f"(first and last frame), got {image_tokens.shape[1]}"
                )
            image_tokens = image_tokens + self.emb_pos.to(image_tokens.dtype)
        return self.proj(image_tokens)


@dataclasses.dataclass
class PatchGrid:
    """Token grid of a latent video after patchify."""

    frames: int
    height: int
    width: int

    @property
    def tokens_per_frame(self) -> int:
        return self.height * self.width


class WanDiT(nn.Module):
    def __init__(self, config: WanConfig):
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Conv3d(
            config.in_channels, config.dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.text_embedding = nn.Sequential(
            nn.Linear(config.text_dim, config.dim), nn.GELU(approximate="tanh"), nn.Linear(config.dim, config.dim)
        )
        self.time_embedding = nn.Sequential(
            nn.Linear(config.freq_dim, config.dim), nn.SiLU(), nn.Linear(config.dim, config.dim)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(config.dim, 6 * config.dim))
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.head = OutputHead(config)
        if config.is_image_to_video:
            self.img_emb = ImageProjection(config)
        self._rope_tables: tuple[tuple, RotaryTables] | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    # --- pieces a causal engine drives one chunk at a time ---

    def patchify(self, latents: torch.Tensor) -> tuple[torch.Tensor, PatchGrid]:
        """[B, C, F, H, W] -> tokens [B, F', T, D] and their grid."""
        if latents.ndim != 5:
            raise ValueError(f"latents must be [B, C, F, H, W], got shape {tuple(latents.shape)}")
        if latents.shape[1] != self.config.in_channels:
            raise ValueError(
                f"the model takes {self.config.in_channels} input channels, got {latents.shape[1]}"
            )
        pt, ph, pw = self.config.patch_size
        _, _, frames, height, width = latents.shape
        if frames % pt or height % ph or width % pw:
            raise ValueError(
                f"latent video {frames}x{height}x{width} is not divisible by the patch size {pt}x{ph}x{pw}"
            )
        tokens = self.patch_embedding(latents.to(self.dtype))
        grid = PatchGrid(*tokens.shape[2:])
        # Contiguous: a permuted residual stream would make every norm copy it and every residual add stride.
        return tokens.flatten(3).permute(0, 2, 3, 1).contiguous(), grid

    def unpatchify(self, tokens: torch.Tensor, grid: PatchGrid) -> torch.Tensor:
        """[B, F', T, C * patch volume] -> [B, C, F, H, W]."""
        pt, ph, pw = self.config.patch_size
        batch = tokens.shape[0]
        x = tokens.reshape(batch, grid.frames, grid.height, grid.width, pt, ph, pw, self.config.out_channels)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(batch, self.config.out_channels, grid.frames * pt, grid.height * ph, grid.width * pw)

    def embed_timesteps(self, timesteps: torch.Tensor, batch: int, frames: int):
        """Per-frame time embedding [B, F, D] and block modulation [B, F, 6, D], both in float32 or better."""
        timesteps = torch.as_tensor(timesteps, device=self.patch_embedding.weight.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(batch)
        if timesteps.ndim == 1:
            timesteps = timesteps[:, None].expand(-1, frames)
        if timesteps.shape != (batch, frames):
            raise ValueError(
                f"timesteps must be [B] or [B, frames] = [{batch}, {frames}], got {tuple(timesteps.shape)}"
            )
        weight_dtype = self.time_embedding[0].weight.dtype
        embedding = self.time_embedding(sinusoidal_embedding(timesteps, self.config.freq_dim).to(weight_dtype))
        modulation = self.time_projection(embedding).unflatten(-1, (6, self.config.dim))
        stat_dtype = torch.promote_types(embedding.dtype, torch.float32)
        return embedding.to(stat_dtype), modulation.to(stat_dtype)

    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        if text.ndim != 3 or text.shape[-1] != self.config.text_dim:
            raise ValueError(
                f"text embeddings must be [B, L, {self.config.text_dim}], got shape {tuple(text.shape)}"
            )
        missing = self.config.text_len - text.shape[1]
        if missing > 0:
            text = F.pad(text, (0, 0, 0, missing))
        return self.text_embedding(text.to(self.dtype))

    def encode_context(
        self, text: torch.Tensor, image_tokens: torch.Tensor | None = None
    ) -> list[CrossAttentionContext]:
        """Cross-attention keys/values of every layer for one prompt (and CLIP image tokens)."""
        text = self.embed_text(text)
        image = self.img_emb(image_tokens.to(self.dtype)) if image_tokens is not None else None
        if image is None and self.config.is_image_to_video:
            raise ValueError("this image-to-video model needs CLIP image tokens (image_context)")
        return [block.cross_attn.project_context(text, image) for block in self.blocks]

    def rotary_embedding(self, frame_positions: torch.Tensor | Sequence[int], grid: PatchGrid) -> RotaryEmbedding:
        """Tables in the dtype queries and keys are rotated in (no layer converts them again), cut from tables
        of the last latent grid seen, so that repeated forwards at one size do not rebuild them."""
        device, dtype = self.patch_embedding.weight.device, rotation_dtype(self.dtype)
        key = (grid.height, grid.width, dtype, device)
        if self._rope_tables is None or self._rope_tables[0] != key:
            self._rope_tables = (key, RotaryTables(self.config, grid.height, grid.width, dtype, device))
        if isinstance(frame_positions, torch.Tensor):
            frame_positions = frame_positions.reshape(-1).tolist()
        return self._rope_tables[1].at(list(frame_positions))

    def run_blocks(
        self,
        tokens: torch.Tensor,
        frame_embedding: torch.Tensor,
        frame_modulation: torch.Tensor,
        context: list[CrossAttentionContext],
        self_attention: SelfAttentionFn,
    ) -> torch.Tensor:
        for index, block in enumerate(self.blocks):
            tokens = block(
                tokens,
                frame_modulation,
                context[index],
                lambda q, k, v, index=index: self_attention(index, q, k, v),
            )
        return self.head(tokens, frame_embedding)

    # --- the plain bidirectional model ---

    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | list[CrossAttentionContext],
        image_context: torch.Tensor | None = None,
        frame_positions: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        self_attention: SelfAttentionFn | None = None,
    ) -> torch.Tensor:
        """Predicted flow velocity [B, C_out, F, H, W].

        latents: [B, C_in, F, H, W]; timesteps: [B] or [B, F'] per latent frame (after temporal
        patching); context: text embeddings [B, L, text_dim] or the result of `encode_context`;
        image_context: CLIP tokens [B, N, image_dim] for image-to-video; frame_positions: RoPE
        frame index of each latent frame (default 0..F'-1); attention_mask: boolean [Lq, Lk]
        over tokens, True = may attend; self_attention: replaces the whole self-attention (the
        hook a causal engine uses), receiving un-rotated q, k, v.
        """
        tokens, grid = self.patchify(latents)
        batch = tokens.shape[0]
        frame_embedding, frame_modulation = self.embed_timesteps(timesteps, batch, grid.frames)
        if not isinstance(context, list):
            context = self.encode_context(context, image_context)
        if self_attention is None:
            if frame_positions is None:
                frame_positions = torch.arange(grid.frames)
            if len(frame_positions) != grid.frames:
                raise ValueError(f"got {len(frame_positions)} frame positions for {grid.frames} latent frames")
            rope = self.rotary_embedding(frame_positions, grid)

            def self_attention(_layer, q, k, v):
                return attention(rope.apply(q), rope.apply(k), v, mask=attention_mask)

        out = self.run_blocks(tokens, frame_embedding, frame_modulation, context, self_attention)
        return self.unpatchify(out, grid)


def count_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
