"""Centre paths of sprites: each sprite moves without rotating along one trajectory kind.

- ``linear``: constant velocity between two points;
- ``curved``: a cubic Bezier curve;
- ``circular``: an arc of a circle at constant angular speed;
- ``stop_and_go``: a quadratic Bezier curve travelled in bursts separated by
  holds (frames on which the sprite does not move at all);
- ``static``: the sprite never moves.

Every path keeps the sprite's centre at least half its size from each border,
so the whole sprite stays in the frame, and moves it by at most
``max_speed`` pixels from one frame to the next.
"""

from __future__ import annotations

import math

import numpy as np

from .clip_config import SyntheticMotionConfig

_MIN_SPEED_FRACTION = 0.25


def random_trajectory(
    kind: str, config: SyntheticMotionConfig, half_extent: float, rng: np.random.Generator
) -> np.ndarray:
    """Float64 ``[T, 2]`` centre path inside the box that keeps the sprite in the frame."""
    low = np.array([half_extent, half_extent])
    high = np.array([config.width - half_extent, config.height - half_extent])
    steps = config.num_frames - 1
    progress = np.linspace(0.0, 1.0, config.num_frames) if steps else np.zeros(1)

    def random_point() -> np.ndarray:
        return rng.uniform(low, high)

    if kind == "static" or steps == 0:
        path = np.repeat(random_point()[None], config.num_frames, axis=0)
    elif kind == "linear":
        start, end = random_point(), random_point()
        path = start + progress[:, None] * (end - start)
    elif kind == "curved":
        path = _bezier(np.stack([random_point() for _ in range(4)]), progress)
    elif kind == "circular":
        room = (high - low) / 2
        radius = float(min(room)) * rng.uniform(0.3, 1.0)
        centre = rng.uniform(low + radius, high - radius)
        turn = rng.uniform(0.5 * math.pi, 2 * math.pi)
        if radius > 0:
            turn = min(turn, config.max_speed * steps / radius)
        turn *= rng.choice([-1.0, 1.0])
        angles = rng.uniform(0, 2 * math.pi) + turn * progress
        path = centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    else:  # stop_and_go
        path = _bezier(np.stack([random_point() for _ in range(3)]), _stop_and_go_progress(steps, rng))
    # Shrinking towards the start keeps the path in the (convex) box.
    return _limit_speed(path, config.max_speed * rng.uniform(_MIN_SPEED_FRACTION, 1.0))


def _bezier(control: np.ndarray, progress: np.ndarray) -> np.ndarray:
    degree = len(control) - 1
    u = progress[:, None]
    return sum(
        math.comb(degree, k) * u**k * (1 - u) ** (degree - k) * control[k] for k in range(degree + 1)
    )


def _stop_and_go_progress(steps: int, rng: np.random.Generator) -> np.ndarray:
    """``[steps + 1]`` progress in [0, 1]: moving bursts separated by 1 or 2 holds (repeated values)."""
    if steps < 3:
        return np.linspace(0.0, 1.0, steps + 1)
    holds = 1 if steps < 5 else int(rng.integers(1, 3))
    hold_steps = max(holds, int(round(steps * rng.uniform(0.25, 0.5))))
    move_steps = steps - hold_steps
    if move_steps < holds + 1:
        holds, hold_steps = 1, steps - 2
        move_steps = 2
    moves = _random_composition(move_steps, holds + 1, rng)
    pauses = _random_composition(hold_steps, holds, rng)
    weights: list[float] = []
    for index in range(holds + 1):
        weights += [1.0] * moves[index]
        if index < holds:
            weights += [0.0] * pauses[index]
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    return cumulative / cumulative[-1]


def _random_composition(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    """``parts`` positive integers summing to ``total``."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False)) if parts > 1 else np.array([], int)
    edges = np.concatenate([[0], cuts, [total]])
    return [int(n) for n in np.diff(edges)]


def _limit_speed(path: np.ndarray, max_speed: float) -> np.ndarray:
    if len(path) < 2:
        return path
    fastest = float(np.linalg.norm(np.diff(path, axis=0), axis=1).max())
    if fastest <= max_speed:
        return path
    # The small safety factor absorbs float32 rounding of the stored tracks.
    return path[0] + (path - path[0]) * (max_speed / fastest * (1 - 1e-6))
