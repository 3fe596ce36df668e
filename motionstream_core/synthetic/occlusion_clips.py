"""Clips in which one sprite passes behind another and comes out again, for scoring reappearance.

:func:`generate_clip` lets sprites overlap, but a sprite hidden entirely and
then shown again is rare there (about 1 clip in 100 at 128x128), so these
clips are built on purpose. Two sprites over a random background, hues half
the colour wheel apart:

- the *occluder*, painted in front: static, of the largest sizes the config
  allows (``max_sprite_size - 2`` to ``max_sprite_size``);
- the *mover*, painted behind: of the smallest sizes (``min_sprite_size`` to
  ``min_sprite_size + 2``), on a straight line at constant speed that passes
  the occluder's centre on the middle frame ``(T - 1) // 2``, at a distance of
  at most 0.3 of the *hiding reach* (half the occluder's size less the mover's
  bounding radius and 1 px; within the reach the mover is covered entirely).

The speed is the slowest at which the two sprites' bounding circles are over
1 px apart on the first and on the last frame, or faster, up to
``max_speed`` and what the frame leaves room for. So the mover shows whole on
the first frame, is hidden entirely on the middle frame and shows whole again
on the last. Clips too short (or a frame too small) for that at ``max_speed``,
and sprite sizes too close for the occluder to cover the mover, are a
``ValueError`` that says so.

Tracks, visibility and metadata are built as :func:`generate_clip` builds
them (``points_per_sprite`` tracks per sprite, a point invisible while a
sprite in front covers it, the occluder's tracks static). The mover's centre
track is invisible on one run of frames, ``hidden_from`` to ``hidden_to - 1``
(a line through a convex shape). Randomness comes only from a numpy generator
seeded with the seed and a fixed tag: a seed always gives the same clip.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .backgrounds import random_background
from .clip_config import SyntheticMotionConfig
from .clips import SyntheticClip, clip_from_paths, track_point_offsets
from .sprites import SpriteAppearance, random_sprite

MOVER, OCCLUDER = 0, 1  # sprite indices (painting order: the mover is behind)
_SIZE_BAND = 2.0  # pixels: the mover's sizes from the smallest, the occluder's from the largest
_MISS_FRACTION = 0.3  # of the hiding reach: how far off the occluder's centre the mover's line passes
_PLACEMENT_ATTEMPTS = 40
_OCCLUSION_STREAM = 0x0CC1  # mixed into the seed, so these clips draw apart from generate_clip's


@dataclasses.dataclass(frozen=True, eq=False)
class OcclusionClip:
    clip: SyntheticClip
    hidden_from: int  # first frame on which the mover's centre track is invisible
    hidden_to: int  # first frame after that run on which it is visible again
    mover: int = MOVER
    occluder: int = OCCLUDER


def occlusion_clip(config: SyntheticMotionConfig, seed: int) -> OcclusionClip:
    """The occlusion clip of ``seed`` at ``config``'s size, length, fps and sprite look; see the module docstring."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng([int(seed), _OCCLUSION_STREAM])
    background_kind = str(rng.choice(config.background_kinds))
    background = random_background(background_kind, config.width, config.height, rng)
    first_hue = rng.random()
    smallest, largest = config.min_sprite_size, config.max_sprite_size
    mover = random_sprite(_sized(config, smallest, min(smallest + _SIZE_BAND, largest)), first_hue, rng)
    occluder_hue = (first_hue + 0.5 + rng.uniform(-0.05, 0.05)) % 1.0
    occluder = random_sprite(_sized(config, max(largest - _SIZE_BAND, smallest), largest), occluder_hue, rng)

    reach = occluder.size / 2 - mover.bounding_radius - 1.0
    if reach <= 0:
        raise ValueError(
            f"an occluder of {occluder.size:.1f} px cannot hide a mover of {mover.size:.1f} px; "
            "widen the config's sprite sizes"
        )
    middle = (config.num_frames - 1) // 2
    shortest = min(middle, config.num_frames - 1 - middle)
    miss = float(rng.uniform(-_MISS_FRACTION, _MISS_FRACTION)) * reach
    clear = occluder.bounding_radius + mover.bounding_radius + 1.0
    slowest = math.sqrt(clear**2 - miss**2) / shortest * (1 + 1e-6) if shortest else math.inf
    if slowest > config.max_speed:
        raise ValueError(
            f"an occlusion clip needs a speed of {slowest:.2f} px/frame over {config.num_frames} frames, more than "
            f"max_speed {config.max_speed:g}; use more frames (about {2 * math.ceil(clear / max(config.max_speed, 1e-9)) + 1})"
        )
    speed_fraction = float(rng.random())
    for _ in range(_PLACEMENT_ATTEMPTS):
        angle = float(rng.uniform(0, 2 * math.pi))
        fastest = _fastest_fitting(config, mover, occluder, angle, miss, middle, slowest)
        if fastest is None:
            continue
        speed = slowest + speed_fraction * (fastest - slowest)
        low, high = _centre_box(config, mover, occluder, angle, miss, middle, speed)
        centre = rng.uniform(low, high)
        break
    else:
        raise ValueError(f"no room in a {config.width}x{config.height} frame for the occlusion clip of seed {seed}")

    direction = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    steps = np.arange(config.num_frames, dtype=np.float64) - middle
    mover_path = centre + miss * normal + speed * steps[:, None] * direction
    occluder_path = np.repeat(centre[None], config.num_frames, axis=0)
    clip = clip_from_paths(
        config, int(seed), background_kind, background, [mover, occluder],
        np.stack([mover_path, occluder_path], axis=1), ["linear", "static"],
        track_point_offsets(config.points_per_sprite, rng),
    )
    centre_track = int((clip.metadata.track_sprite == MOVER).nonzero()[0, 0])
    hidden = (~clip.tracks.visibility[:, centre_track]).nonzero()[:, 0]
    hidden_from, hidden_to = int(hidden[0]), int(hidden[-1]) + 1
    if hidden_to - hidden_from != len(hidden) or hidden_from == 0 or hidden_to >= config.num_frames:
        raise RuntimeError(f"occlusion clip {seed}: the mover's centre is hidden on frames {hidden.tolist()}")
    return OcclusionClip(clip, hidden_from, hidden_to)


def _sized(config: SyntheticMotionConfig, smallest: float, largest: float) -> SyntheticMotionConfig:
    return dataclasses.replace(config, min_sprite_size=smallest, max_sprite_size=largest)


def _centre_box(
    config: SyntheticMotionConfig, mover: SpriteAppearance, occluder: SpriteAppearance,
    angle: float, miss: float, middle: int, speed: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds ``(low, high)`` of the occluder's centre that keep both sprites whole in the frame all along."""
    direction = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    size = np.array([config.width, config.height], dtype=np.float64)
    ends = miss * normal + speed * np.stack([-middle * direction, (config.num_frames - 1 - middle) * direction])
    low = np.maximum(mover.half_extent - ends.min(axis=0), occluder.half_extent)
    high = np.minimum(size - mover.half_extent - ends.max(axis=0), size - occluder.half_extent)
    return low, high


def _fastest_fitting(
    config: SyntheticMotionConfig, mover: SpriteAppearance, occluder: SpriteAppearance,
    angle: float, miss: float, middle: int, slowest: float,
) -> float | None:
    """The highest speed up to ``max_speed`` at which the path fits the frame along ``angle``; None if even ``slowest`` does not."""

    def fits(speed: float) -> bool:
        low, high = _centre_box(config, mover, occluder, angle, miss, middle, speed)
        return bool(np.all(low <= high))

    if not fits(slowest):
        return None
    if fits(config.max_speed):
        return float(config.max_speed)
    good, bad = slowest, float(config.max_speed)
    for _ in range(40):
        trial = (good + bad) / 2
        good, bad = (trial, bad) if fits(trial) else (good, trial)
    return good
