"""What a synthetic clip is drawn from: the configuration, its choices and its limits."""

from __future__ import annotations

import dataclasses
import math

from ..motion.tracks import MAX_FRAME_SIZE, MAX_FRAMES

TRAJECTORY_KINDS = ("linear", "curved", "circular", "stop_and_go", "static")
SPRITE_SHAPES = ("disc", "rounded_square")
SPRITE_TEXTURES = ("rings", "stripes", "checker")
BACKGROUND_KINDS = ("gradient", "noise")

MAX_SPRITES = 6  # keeps sprite hues at least 48 degrees apart
MAX_POINTS_PER_SPRITE = 64
MIN_SPRITE_SIZE = 4.0


@dataclasses.dataclass(frozen=True)
class SyntheticMotionConfig:
    """What :func:`.generate_clip` draws from. Sizes are in pixels, speed in pixels per frame.

    Each clip draws its sprite count uniformly from ``min_sprites..max_sprites``,
    and for each sprite a size, shape, texture and trajectory kind uniformly from
    the given ranges and choices. Each path's speed is capped at a limit drawn
    from ``[0.25, 1] * max_speed``; a faster path is shrunk towards its start.
    With ``allow_occlusion=False`` the bounding circles of any two sprites stay
    over 1 px apart on every frame; a sprite that finds no such path in 40
    tries is left out, so a crowded frame can hold fewer than ``min_sprites``.
    """

    width: int = 128
    height: int = 128
    num_frames: int = 33
    fps: float = 16.0
    min_sprites: int = 1
    max_sprites: int = 3
    min_sprite_size: float = 14.0  # disc diameter / square side
    max_sprite_size: float = 28.0
    max_speed: float = 2.5
    points_per_sprite: int = 5
    allow_occlusion: bool = True
    sprite_shapes: tuple[str, ...] = SPRITE_SHAPES
    sprite_textures: tuple[str, ...] = SPRITE_TEXTURES
    background_kinds: tuple[str, ...] = BACKGROUND_KINDS
    trajectory_kinds: tuple[str, ...] = TRAJECTORY_KINDS

    def __post_init__(self) -> None:
        for name, maximum in (("width", MAX_FRAME_SIZE), ("height", MAX_FRAME_SIZE), ("num_frames", MAX_FRAMES)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
                raise ValueError(f"{name} must be an integer in [1, {maximum}], got {value!r}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be positive, got {self.fps}")
        if not 1 <= self.min_sprites <= self.max_sprites <= MAX_SPRITES:
            raise ValueError(
                f"need 1 <= min_sprites <= max_sprites <= {MAX_SPRITES}, got {self.min_sprites}..{self.max_sprites}"
            )
        largest = min(self.width, self.height)
        if not MIN_SPRITE_SIZE <= self.min_sprite_size <= self.max_sprite_size <= largest:
            raise ValueError(
                f"sprite sizes must satisfy {MIN_SPRITE_SIZE:g} <= min <= max <= {largest} (the frame), "
                f"got {self.min_sprite_size:g}..{self.max_sprite_size:g}"
            )
        if not (math.isfinite(self.max_speed) and self.max_speed >= 0):
            raise ValueError(f"max_speed must be a non-negative number of pixels per frame, got {self.max_speed}")
        if not 1 <= self.points_per_sprite <= MAX_POINTS_PER_SPRITE:
            raise ValueError(f"points_per_sprite must be in [1, {MAX_POINTS_PER_SPRITE}], got {self.points_per_sprite}")
        for name, allowed in (
            ("sprite_shapes", SPRITE_SHAPES),
            ("sprite_textures", SPRITE_TEXTURES),
            ("background_kinds", BACKGROUND_KINDS),
            ("trajectory_kinds", TRAJECTORY_KINDS),
        ):
            chosen = tuple(getattr(self, name))
            unknown = [value for value in chosen if value not in allowed]
            if not chosen or unknown:
                raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {chosen}")
            object.__setattr__(self, name, chosen)
