"""A Wan transformer together with its track head: what every training stage trains, scores with or copies.

Input channels are [noisy latent | image-to-video condition channels | track channels], the order
the streaming session and the teacher sampler use. "Null motion" is all-zero track channels.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..sampling.guidance import Branch, branch_weights, guided_velocity
from ..sampling.model_input import assemble_input, branch_contexts
from ..motion.track_head import TrackEncoder
from ..model.wan_dit import CrossAttentionContext, WanDiT
from .data import ClipBatch


class TrackConditionedDiT(nn.Module):
    def __init__(self, transformer: WanDiT, track_encoder: TrackEncoder | None = None):
        super().__init__()
        self.transformer = transformer
        self.track_encoder = track_encoder

    @property
    def config(self):
        return self.transformer.config

    @property
    def motion_channels(self) -> int:
        return 0 if self.track_encoder is None else self.track_encoder.channels

    def clone(self) -> "TrackConditionedDiT":
        """An independent copy (the student and the critic both start as copies of the teacher)."""
        return copy.deepcopy(self)

    def track_channels(self, batch: ClipBatch, start_frame: int = 0, num_frames: int | None = None) -> torch.Tensor | None:
        """Track channels [B, C, num_frames, H, W] of latent frames [start, start + num_frames), zero where
        the batch drops motion. Equals the same slice of the whole-clip encoding."""
        if self.track_encoder is None:
            return None
        if not batch.has_tracks:
            raise ValueError("this model has a track head but the batch has no tracks")
        num_frames = batch.num_frames - start_frame if num_frames is None else num_frames
        height, width = batch.latent_size
        device = self.track_encoder.proj.weight.device
        occluded = None if batch.track_occluded is None else batch.track_occluded.to(device)
        channels = self.track_encoder.encode_window(
            batch.track_coords.to(device), batch.track_visibility.to(device), batch.track_ids.to(device),
            latent_start=start_frame, latent_frames=num_frames, latent_height=height, latent_width=width,
            occluded=occluded,
        )
        return channels * batch.motion_keep.to(channels)[:, None, None, None, None]

    def model_input(
        self,
        noisy: torch.Tensor,
        condition_channels: torch.Tensor | None,
        track_channels: torch.Tensor | None,
        with_motion: bool = True,
    ) -> torch.Tensor:
        return assemble_input(noisy, condition_channels, track_channels, self.config.in_channels, with_motion)

    def encode_context(self, text: torch.Tensor, image_tokens: torch.Tensor | None = None) -> list[CrossAttentionContext]:
        """Cross-attention keys/values of every layer, with autograd (unlike `CausalWanModel.encode_context`)."""
        return self.transformer.encode_context(text, image_tokens)

    def velocity(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | list[CrossAttentionContext],
        condition_channels: torch.Tensor | None = None,
        track_channels: torch.Tensor | None = None,
        with_motion: bool = True,
        image_tokens: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Bidirectional (or masked) flow velocity of the whole clip."""
        model_input = self.model_input(noisy, condition_channels, track_channels, with_motion)
        return self.transformer(
            model_input, timesteps, context, image_context=image_tokens, attention_mask=attention_mask
        )

    def branch_contexts(
        self,
        text: torch.Tensor,
        null_text: torch.Tensor | None,
        image_tokens: torch.Tensor | None,
        text_scale: float,
        motion_scale: float,
    ) -> dict[Branch, list[CrossAttentionContext]]:
        """The context of every guidance branch that contributes at these scales."""
        return branch_contexts(self.encode_context, text, null_text, image_tokens, text_scale, motion_scale)

    def guided_velocity(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        contexts: dict[Branch, list[CrossAttentionContext]],
        condition_channels: torch.Tensor | None,
        track_channels: torch.Tensor | None,
        text_scale: float,
        motion_scale: float,
    ) -> torch.Tensor:
        """Joint text-motion guided velocity: one forward per contributing branch (three with both scales)."""
        if Branch.NULL_MOTION in branch_weights(text_scale, motion_scale) and track_channels is None:
            raise ValueError("motion guidance (motion_scale > 0) needs a track head")

        def predict(branch: Branch) -> torch.Tensor:
            return self.velocity(
                noisy, timesteps, contexts[branch], condition_channels, track_channels, with_motion=branch.uses_motion
            )

        return guided_velocity(predict, text_scale, motion_scale)
