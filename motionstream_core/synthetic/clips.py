"""Procedural videos of textured sprites moving along known paths, with exact point tracks.

A clip is a static, low-saturation background (:mod:`.backgrounds`) with 1..k
sprites (:mod:`.sprites`) composited on it (:mod:`.rendering`). Every sprite
moves without rotating along one trajectory kind (:mod:`.trajectories`); the
tracks of ``static`` sprites are flagged ``static``.

Geometry (pixel coordinates as in :mod:`..motion.tracks`: ``0`` is the left/top edge,
pixel ``(row i, column j)`` has its centre at ``(j + 0.5, i + 0.5)``):

- every sprite lies entirely inside the frame on every frame: its centre stays
  at least half its size from each border, so every track point lies in
  ``[0, width] x [0, height]``;
- a sprite's centre moves by at most ``max_speed`` pixels from one frame to the
  next;
- a sprite carries ``points_per_sprite`` tracks: its centre, then points at
  ``0.3 * size`` from the centre, evenly spread in angle. Sprites translate
  only, so each point keeps its offset from the centre.

Sprites are painted in list order (index 0 at the back). A point is invisible
on a frame exactly when a sprite painted after its own covers it (the
coverer's signed distance at the point is negative: its alpha exceeds 0.5).
Points never leave the frame, so occlusion is the only source of invisibility:
every point is specified (``TrackSet.specified``), and an invisible one is occluded.

Randomness comes only from ``numpy.random.default_rng(seed)``: a seed always
gives the same clip.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from ..motion.tracks import TrackSet
from .backgrounds import random_background
from .clip_config import SyntheticMotionConfig
from .rendering import render_frames
from .sprites import SpriteAppearance, random_sprite
from .trajectories import random_trajectory

TRACK_POINT_RADIUS = 0.3  # of the sprite size; inside both shapes

_NON_OVERLAP_ATTEMPTS = 40


@dataclasses.dataclass(frozen=True, eq=False)
class ClipMetadata:
    """Everything about a clip except its frames and tracks; what the scorer needs.

    ``sprites`` are in painting order (index 0 at the back). Track ``n`` belongs
    to sprite ``track_sprite[n]`` and sits at ``centre_paths[t, track_sprite[n]]
    + track_offsets[n]`` on frame ``t``; ``track_ids`` are the clip's
    ``tracks.track_ids``. ``visible_fraction[t, s]`` is the share of sprite
    ``s``'s rendered coverage not hidden by sprites in front of it.
    """

    width: int
    height: int
    fps: float
    seed: int
    background_kind: str
    background: torch.Tensor  # float32 [3, H, W]
    sprites: tuple[SpriteAppearance, ...]
    trajectory_kinds: tuple[str, ...]
    centre_paths: torch.Tensor  # float64 [T, S, 2]
    track_sprite: torch.Tensor  # int64 [N]
    track_offsets: torch.Tensor  # float64 [N, 2]
    track_ids: torch.Tensor  # int64 [N]
    visible_fraction: torch.Tensor  # float32 [T, S]

    @property
    def num_sprites(self) -> int:
        return len(self.sprites)

    @property
    def num_frames(self) -> int:
        return int(self.centre_paths.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticClip:
    frames: torch.Tensor  # float32 [T, 3, H, W] in [0, 1]
    tracks: TrackSet
    metadata: ClipMetadata


def generate_clip(config: SyntheticMotionConfig, seed: int) -> SyntheticClip:
    """The clip of ``seed``: frames, exact tracks and the metadata the scorer uses."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    num_sprites = int(rng.integers(config.min_sprites, config.max_sprites + 1))
    background_kind = str(rng.choice(config.background_kinds))
    background = random_background(background_kind, config.width, config.height, rng)

    hue_spacing = 1.0 / num_sprites
    first_hue = rng.random()
    sprites: list[SpriteAppearance] = []
    paths: list[np.ndarray] = []
    kinds: list[str] = []
    for index in range(num_sprites):
        hue = (first_hue + index * hue_spacing + rng.uniform(-0.1, 0.1) * hue_spacing) % 1.0
        sprite = random_sprite(config, hue, rng)
        attempts = 1 if config.allow_occlusion else _NON_OVERLAP_ATTEMPTS
        for _ in range(attempts):
            kind = str(rng.choice(config.trajectory_kinds))
            path = random_trajectory(kind, config, sprite.half_extent, rng)
            if config.allow_occlusion or _keeps_clear(path, sprite, paths, sprites):
                sprites.append(sprite)
                paths.append(path)
                kinds.append(kind)
                break
        # A sprite that finds no free path in a crowded frame is left out.

    centre_paths = np.stack(paths, axis=1)  # [T, S, 2]
    offsets = track_point_offsets(config.points_per_sprite, rng)
    return clip_from_paths(config, seed, background_kind, background, sprites, centre_paths, kinds, offsets)


def clip_from_paths(
    config: SyntheticMotionConfig,
    seed: int,
    background_kind: str,
    background: torch.Tensor,
    sprites: Sequence[SpriteAppearance],
    centre_paths: np.ndarray,
    kinds: Sequence[str],
    offsets: np.ndarray,
) -> SyntheticClip:
    """The clip of ``sprites`` (painting order) moving along ``centre_paths`` ``[T, S, 2]`` over ``background``.

    ``offsets`` ``[P, 2]`` are the track points of every sprite in units of its
    size (its centre first); tracks, visibility, static flags and metadata
    follow the rules of the module docstring. :func:`generate_clip` draws its
    clips this way; other clip builders (e.g. :mod:`.occlusion_clips`) share it.
    """
    sprites = list(sprites)
    kinds = list(kinds)
    rendered = render_frames(background, sprites, torch.from_numpy(centre_paths))

    per_sprite = len(offsets)
    track_sprite = np.repeat(np.arange(len(sprites)), per_sprite)
    track_offsets = np.concatenate([offsets * sprite.size for sprite in sprites], axis=0)
    points = centre_paths[:, track_sprite] + track_offsets[None]
    visibility = _unoccluded(torch.from_numpy(points), torch.from_numpy(track_sprite), sprites,
                             torch.from_numpy(centre_paths))
    static = np.array([kinds[s] == "static" for s in track_sprite])
    track_ids = torch.arange(len(track_sprite), dtype=torch.int64)
    tracks = TrackSet(
        torch.from_numpy(points.astype(np.float32)), visibility, config.width, config.height, config.fps,
        track_ids=track_ids, static=torch.from_numpy(static), specified=torch.ones_like(visibility),
    )
    metadata = ClipMetadata(
        width=config.width,
        height=config.height,
        fps=float(config.fps),
        seed=int(seed),
        background_kind=background_kind,
        background=background,
        sprites=tuple(sprites),
        trajectory_kinds=tuple(kinds),
        centre_paths=torch.from_numpy(centre_paths),
        track_sprite=torch.from_numpy(track_sprite).to(torch.int64),
        track_offsets=torch.from_numpy(track_offsets),
        track_ids=track_ids,
        visible_fraction=rendered.visible_fraction,
    )
    return SyntheticClip(rendered.frames, tracks, metadata)


def _keeps_clear(
    path: np.ndarray, sprite: SpriteAppearance, paths: Sequence[np.ndarray], sprites: Sequence[SpriteAppearance]
) -> bool:
    for other_path, other in zip(paths, sprites):
        distance = np.linalg.norm(path - other_path, axis=1)
        if float(distance.min()) <= sprite.bounding_radius + other.bounding_radius + 1.0:
            return False
    return True


def track_point_offsets(points_per_sprite: int, rng: np.random.Generator) -> np.ndarray:
    """``[P, 2]`` offsets in units of the sprite size: the centre, then a ring."""
    ring = points_per_sprite - 1
    angles = rng.uniform(0, 2 * math.pi) + 2 * math.pi * np.arange(ring) / max(ring, 1)
    around = TRACK_POINT_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.concatenate([np.zeros((1, 2)), around], axis=0)


def _unoccluded(
    points: torch.Tensor, track_sprite: torch.Tensor, sprites: Sequence[SpriteAppearance], centre_paths: torch.Tensor
) -> torch.Tensor:
    """Bool ``[T, N]``: no sprite painted after a point's own covers it."""
    visible = torch.ones(points.shape[:2], dtype=torch.bool)
    for index, sprite in enumerate(sprites):
        behind = track_sprite < index
        if not bool(behind.any()):
            continue
        offsets = points[:, behind] - centre_paths[:, index, None, :]
        visible[:, behind] &= sprite.signed_distance(offsets) >= 0
    return visible
