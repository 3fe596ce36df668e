"""The colour membership one sprite should produce near a candidate centre, given the located sprites around it.

The sprite locator fits this model to the observed membership (see
:mod:`.sprite_location`).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from .colour_membership import membership_from_chroma, membership_from_score
from .sprites import SpriteAppearance

# Pixels this close to a located front sprite (which covers up to 0.5 px outside its outline) are not used.
_FRONT_SPRITE_MARGIN_PX = 0.8


@dataclasses.dataclass(frozen=True)
class Surroundings:
    """Located sprites that change how a sprite looks: those in front hide it, those behind tint its outline."""

    in_front: list[tuple[SpriteAppearance, torch.Tensor]]
    behind: list[tuple[SpriteAppearance, torch.Tensor]] = dataclasses.field(default_factory=list)  # back to front

    def subset(self, frames: torch.Tensor) -> Surroundings:
        return Surroundings(
            [(sprite, centres[frames]) for sprite, centres in self.in_front],
            [(sprite, centres[frames]) for sprite, centres in self.behind],
        )


class MembershipWindow:
    """A square of ``2 * radius + 1`` pixels per frame around ``centres``, of one membership map."""

    def __init__(self, membership: torch.Tensor, centres: torch.Tensor, radius: int):
        num_frames, height, width = membership.shape
        side = 2 * radius + 1
        first = torch.round(centres).long() - radius
        padded = F.pad(membership, (side, side, side, side))
        first_col = first[:, 0].clamp(-side, width)
        first_row = first[:, 1].clamp(-side, height)
        steps = torch.arange(side)
        cols = first_col[:, None] + steps  # [T, K] frame columns
        rows = first_row[:, None] + steps
        frame_index = torch.arange(num_frames)[:, None, None]
        self.values = padded[frame_index, rows[:, :, None] + side, cols[:, None, :] + side]  # [T, K, K]
        xs = (cols.to(torch.float32) + 0.5)[:, None, :].expand(-1, side, -1)
        ys = (rows.to(torch.float32) + 0.5)[:, :, None].expand(-1, -1, side)
        self.pixel_centres = torch.stack([xs, ys], dim=-1)  # [T, K, K, 2]
        self.inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]

    def subset(self, frames: torch.Tensor) -> MembershipWindow:
        part = object.__new__(MembershipWindow)
        part.values = self.values[frames]
        part.pixel_centres = self.pixel_centres[frames]
        part.inside = self.inside[frames]
        return part

    def centroid(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mass ``[T, ...]`` and centroid ``[T, ..., 2]`` of weights ``[T, ..., K, K]``."""
        mass = weights.sum(dim=(-2, -1))
        extra = weights.ndim - 3
        centres = self.pixel_centres.view(
            self.pixel_centres.shape[0], *([1] * extra), *self.pixel_centres.shape[1:]
        )
        moment = (weights.unsqueeze(-1) * centres).sum(dim=(-3, -2))
        return mass, moment / mass.clamp(min=1e-12).unsqueeze(-1)

    def offsets_from(self, centres: torch.Tensor) -> torch.Tensor:
        """``[T, K, K, 2]`` offsets of the pixel centres from ``[T, 2]`` centres."""
        return self.pixel_centres - centres[:, None, None, :]


class SpriteModel:
    """The membership one sprite should produce in a window, given the located sprites around it.

    Pixels outside the frame, or that a sprite in front may cover even partly,
    are *unusable*: left out of both the observed and the predicted membership,
    since they mix colours and the front sprite's position is not exact. Over
    located sprites behind, the sprite's anti-aliased outline mixes with their
    colours, which the prediction includes (textures change only brightness, so
    every sprite pixel has its colour's chroma; the background counts as grey).
    """

    def __init__(self, window: MembershipWindow, sprite: SpriteAppearance, surroundings: Surroundings):
        self.window = window
        self.sprite = sprite
        usable = window.inside.clone()
        for front, centres in surroundings.in_front:
            usable &= front.signed_distance(window.offsets_from(centres)) > _FRONT_SPRITE_MARGIN_PX
        self.usable = usable.to(torch.float32)
        self.observed = window.values * self.usable

        target = torch.tensor(sprite.colour, dtype=torch.float32)
        target = target - target.mean()
        self.chroma_length = float(target.norm())
        direction = target / self.chroma_length
        under = torch.zeros(*window.pixel_centres.shape[:3], 3)
        for other, centres in surroundings.behind:
            alpha = other.alpha(window.offsets_from(centres)).unsqueeze(-1)
            colour = torch.tensor(other.colour, dtype=torch.float32)
            under = under * (1 - alpha) + (colour - colour.mean()) * alpha
        self.under_along = (under * direction).sum(dim=-1)  # [T, K, K]
        self.under_off = (under - self.under_along.unsqueeze(-1) * direction).norm(dim=-1)

    def subset(self, frames: torch.Tensor) -> SpriteModel:
        part = object.__new__(SpriteModel)
        part.window = self.window.subset(frames)
        part.sprite = self.sprite
        part.chroma_length = self.chroma_length
        for name in ("usable", "observed", "under_along", "under_off"):
            setattr(part, name, getattr(self, name)[frames])
        return part

    def predict(self, candidates: torch.Tensor) -> torch.Tensor:
        """``[T, C, K, K]`` membership on usable pixels with the sprite at ``candidates`` ``[T, C, 2]``."""
        offsets = self.window.pixel_centres[:, None] - candidates[:, :, None, None, :]
        alpha = self.sprite.alpha(offsets)
        along = alpha * self.chroma_length + (1 - alpha) * self.under_along[:, None]
        off = (1 - alpha) * self.under_off[:, None]
        return membership_from_chroma(along, off, self.chroma_length) * self.usable[:, None]

    def unhidden_mass(self, centres: torch.Tensor) -> torch.Tensor:
        """``[T]`` predicted membership mass if nothing hid the sprite (only the frame border does)."""
        alpha = self.sprite.alpha(self.window.offsets_from(centres))
        return (membership_from_score(alpha) * self.window.inside).sum(dim=(1, 2))

    def squared_error(self, candidates: torch.Tensor) -> torch.Tensor:
        """``[T, C]`` sum of squared differences between predicted and observed membership."""
        return (self.predict(candidates) - self.observed[:, None]).square().sum(dim=(-2, -1))
