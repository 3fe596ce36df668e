"""How a sprite looks: a disc or rounded square of one saturated colour with a dark texture.

The texture (rings, stripes or a checker) is point-symmetric. Colours are
built so that :mod:`.colour_membership` can find each sprite by colour alone:
a colour's *chroma* is the RGB vector minus its grey component (its mean over
channels). Backgrounds have chroma at most
:data:`.backgrounds.BACKGROUND_MAX_CHROMA`; sprite colours have chroma of 0.5
or more, with hues spread evenly around the colour wheel (at least 48 degrees
apart); textures darken all three channels equally, which leaves the chroma of
every sprite pixel exactly its colour's.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math

import numpy as np
import torch

from .clip_config import SyntheticMotionConfig

TEXTURE_DEPTH = 0.2  # darkest texture value subtracted from every channel
SPRITE_GREY_FLOOR = 0.25  # every sprite channel is at least this, so darkening never clips
ROUNDED_CORNER_FRACTION = 0.25  # corner radius of a rounded square, of its size


@dataclasses.dataclass(frozen=True)
class SpriteAppearance:
    """How one sprite looks; its position on each frame lives in ``ClipMetadata.centre_paths``."""

    shape: str  # one of SPRITE_SHAPES
    size: float  # disc diameter or square side, pixels
    colour: tuple[float, float, float]  # RGB of the undarkened sprite
    texture: str  # one of SPRITE_TEXTURES
    texture_period: float  # pixels
    texture_angle: float  # radians; orientation of stripes and checker

    @property
    def half_extent(self) -> float:
        """Half the side of the sprite's axis-aligned bounding box."""
        return self.size / 2

    @property
    def bounding_radius(self) -> float:
        """Radius of the smallest circle around the centre that contains the sprite."""
        if self.shape == "disc":
            return self.size / 2
        corner = ROUNDED_CORNER_FRACTION * self.size
        return (self.size / 2 - corner) * math.sqrt(2) + corner

    def signed_distance(self, offsets: torch.Tensor) -> torch.Tensor:
        """Signed distance (negative inside) of ``[..., 2]`` offsets from the sprite's centre."""
        if self.shape == "disc":
            return torch.hypot(offsets[..., 0], offsets[..., 1]) - self.size / 2
        corner = ROUNDED_CORNER_FRACTION * self.size
        excess = offsets.abs() - (self.size / 2 - corner)
        outside = excess.clamp(min=0)
        outside = torch.hypot(outside[..., 0], outside[..., 1])
        inside = excess.amax(dim=-1).clamp(max=0)
        return outside + inside - corner

    def alpha(self, offsets: torch.Tensor) -> torch.Tensor:
        """Coverage in ``[0, 1]`` with a one-pixel anti-aliased edge (0.5 on the outline)."""
        return (0.5 - self.signed_distance(offsets)).clamp(0.0, 1.0)

    def darkening(self, offsets: torch.Tensor) -> torch.Tensor:
        """Grey value in ``[0, TEXTURE_DEPTH]`` subtracted from every channel (even in the offset)."""
        frequency = 2 * math.pi / self.texture_period
        if self.texture == "rings":
            pattern = torch.cos(frequency * torch.hypot(offsets[..., 0], offsets[..., 1]))
        else:
            cos_a, sin_a = math.cos(self.texture_angle), math.sin(self.texture_angle)
            along = offsets[..., 0] * cos_a + offsets[..., 1] * sin_a
            if self.texture == "stripes":
                pattern = torch.cos(frequency * along)
            else:
                across = -offsets[..., 0] * sin_a + offsets[..., 1] * cos_a
                pattern = torch.cos(frequency * along) * torch.cos(frequency * across)
        return TEXTURE_DEPTH * 0.5 * (1.0 + pattern)


def random_sprite(config: SyntheticMotionConfig, hue: float, rng: np.random.Generator) -> SpriteAppearance:
    """A sprite of ``hue`` (in ``[0, 1)``) with size, shape and texture drawn from ``config``."""
    size = float(rng.uniform(config.min_sprite_size, config.max_sprite_size))
    pure = np.array(colorsys.hsv_to_rgb(hue, 1.0, 1.0))
    colour = SPRITE_GREY_FLOOR + (1 - SPRITE_GREY_FLOOR) * pure
    return SpriteAppearance(
        shape=str(rng.choice(config.sprite_shapes)),
        size=size,
        colour=tuple(float(c) for c in colour),
        texture=str(rng.choice(config.sprite_textures)),
        texture_period=float(size * rng.uniform(0.25, 0.45)),
        texture_angle=float(rng.uniform(0, math.pi)),
    )
