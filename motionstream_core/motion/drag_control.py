"""Live drag control: handle drags become a stable grid of tracks for the chunks not generated yet.

A fixed grid of tracks (stable ids for the whole session) covers the image. Dragging a handle
moves the grid points near the grab point with a smooth cosine falloff, so a drag moves a region
rather than one pixel; a moved region stays where it was dropped. Static anchors pin the grid
around them (for the handles grabbed after them). Positions of a pixel frame are fixed the first
time a chunk asks for them, so an edit made while chunk k is generated shapes chunk k+1 onward
and never rewrites chunk k.

Coordinates are normalised to the frame (0..1); times are seconds of video. Distances, and so
radii, are measured in units of the frame's shorter side (`aspect` = width / height), so a radius
is a circle on the image whatever its shape.

Handles combine like this, for every grid point on its own:

- a handle's weight on a point is ``falloff(distance from the grab point to where the point is
  at grab time) * (1 - pinned)``, fixed when it grabs; so a second drag grabs a region where the
  first one left it and moves it further;
- handles whose drags overlap in time share a point (their weights are divided by their sum where
  it exceeds 1), so two handles pulling one point at once blend instead of adding up past a full
  move; drags one after another add up.

The widget JSON's region drags (``motionstream_core.motion.formats.region_drags``) are expanded
into this grid by :func:`region_grid_positions`; js/track_editor_state.js mirrors the same rules
to preview them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from .track_head import TrackHeadInputs

DEFAULT_GRID_SIZE = 50
DEFAULT_RADIUS = 0.15
MAX_GRID_SIZE = 64
MAX_RADIUS = 2.0
# Pixels of the shorter side per grid track in `default_grid_size`.
GRID_CELL_PIXELS = 16
MIN_AUTO_GRID_SIZE = 4


def default_grid_size(width: int, height: int) -> int:
    """The grid a frame of `width` x `height` pixels gets when none is asked for: one track per
    GRID_CELL_PIXELS of the shorter side, from 4 up to DEFAULT_GRID_SIZE (so 8 x 8 tracks on the
    embedded demo's 128 x 128 frames, which was trained with up to 64 tracks, and 30 x 30 at 832 x 480)."""
    return max(MIN_AUTO_GRID_SIZE, min(DEFAULT_GRID_SIZE, round(min(width, height) / GRID_CELL_PIXELS)))


def cosine_falloff(distance: torch.Tensor, radius: float) -> torch.Tensor:
    """1 at the centre, 0 from `radius` on, smooth in between."""
    inside = distance < radius
    return torch.where(inside, 0.5 * (1 + torch.cos(math.pi * distance / radius)), torch.zeros_like(distance))


def _check_radius(radius: float) -> float:
    radius = float(radius)
    if not 0 < radius <= MAX_RADIUS:  # also NaN
        raise ValueError(f"radius must be in (0, {MAX_RADIUS:g}], got {radius}")
    return radius


@dataclasses.dataclass
class _Handle:
    grab: torch.Tensor  # [2] where the drag started
    weights: torch.Tensor  # [N] influence on each grid track, fixed at grab time
    times: list[float]
    positions: list[torch.Tensor]
    released: bool = False

    @property
    def start(self) -> float:
        return self.times[0]

    @property
    def end(self) -> float:
        """When the drag ends: its last sample once released, never while it is held."""
        return self.times[-1] if self.released else math.inf

    def offset_at(self, time: float) -> torch.Tensor:
        """Handle displacement at a time: linear between samples, held after the last one."""
        if time <= self.times[0]:
            return torch.zeros(2)
        for index in range(1, len(self.times)):
            if time <= self.times[index]:
                t0, t1 = self.times[index - 1], self.times[index]
                mix = (time - t0) / (t1 - t0) if t1 > t0 else 1.0
                position = self.positions[index - 1] * (1 - mix) + self.positions[index] * mix
                return position - self.grab
        return self.positions[-1] - self.grab

    def offsets_at(self, times: torch.Tensor) -> torch.Tensor:
        """`offset_at` for every time of `times` [T] at once: [T, 2]."""
        sample_times = torch.tensor(self.times, dtype=torch.float64)
        positions = torch.stack(self.positions).to(torch.float64)  # [S, 2]
        times = times.to(torch.float64)
        after = torch.searchsorted(sample_times, times, right=False).clamp(1, max(1, len(self.times) - 1))
        before = after - 1
        if len(self.times) == 1:
            return torch.zeros(times.shape[0], 2)
        t0, t1 = sample_times[before], sample_times[after]
        span = t1 - t0
        # Two samples at one time: the later one holds from then on, as in `offset_at`.
        mix = torch.where(span > 0, (times - t0) / span.clamp(min=1e-12), torch.ones_like(span))
        mix = mix.clamp(0, 1)[:, None]
        position = positions[before] * (1 - mix) + positions[after] * mix
        position = torch.where((times <= sample_times[0])[:, None], positions[0], position)
        position = torch.where((times > sample_times[-1])[:, None], positions[-1], position)
        return (position - self.grab.to(torch.float64)).to(torch.float32)


class DragController:
    def __init__(self, fps: float = 16.0, grid_size: int = DEFAULT_GRID_SIZE, radius: float = DEFAULT_RADIUS,
                 aspect: float = 1.0):
        if (not fps > 0 or not math.isfinite(fps) or not 1 <= grid_size <= MAX_GRID_SIZE
                or not 0 < radius <= MAX_RADIUS or not 0 < aspect < math.inf):
            raise ValueError(
                f"invalid drag controller settings: fps {fps}, grid {grid_size}, radius {radius}, aspect {aspect}"
            )
        self.fps = float(fps)
        self.radius = float(radius)
        # Normalised x and y differences -> units of the shorter side.
        self._scale = torch.tensor([max(aspect, 1.0), max(1.0 / aspect, 1.0)])
        cells = (torch.arange(grid_size, dtype=torch.float32) + 0.5) / grid_size
        rows, cols = torch.meshgrid(cells, cells, indexing="ij")
        self.base_points = torch.stack((cols.flatten(), rows.flatten()), dim=-1)  # [N, 2] (x, y)
        self.track_ids = torch.arange(self.base_points.shape[0])
        self._pinned = torch.zeros(self.base_points.shape[0])
        self._handles: dict[object, _Handle] = {}
        self._finished: list[_Handle] = []
        self._frames: list[torch.Tensor] = []  # positions of every pixel frame handed out so far

    @property
    def frames_committed(self) -> int:
        return len(self._frames)

    def _distance(self, points: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        return ((points - centre) * self._scale).norm(dim=-1)

    def pin(self, x: float, y: float, radius: float | None = None) -> None:
        """A static anchor: the grid around it does not move for handles grabbed from now on."""
        if not all(math.isfinite(v) for v in (x, y)):
            raise ValueError(f"an anchor must be at finite coordinates, got x={x}, y={y}")
        radius = self.radius if radius is None else _check_radius(radius)
        distance = self._distance(self.base_points, torch.tensor([float(x), float(y)]))
        self._pinned = torch.maximum(self._pinned, cosine_falloff(distance, radius))

    def drag(self, handle: object, time: float, x: float, y: float, radius: float | None = None) -> None:
        """A timestamped sample of a handle; the first sample of a handle is where it grabbed the image
        (and `radius`, default the controller's, the size of what it grabbed)."""
        if not all(math.isfinite(v) for v in (time, x, y)):
            raise ValueError(f"drag sample must be finite numbers, got t={time}, x={x}, y={y}")
        point = torch.tensor([float(x), float(y)])
        if handle not in self._handles:
            radius = self.radius if radius is None else _check_radius(radius)
            current = self._positions_at(float(time))
            weights = cosine_falloff(self._distance(current, point), radius) * (1 - self._pinned)
            self._handles[handle] = _Handle(point, weights, [float(time)], [point])
            return
        state = self._handles[handle]
        if time < state.times[-1]:
            raise ValueError(f"drag samples of handle {handle!r} went back in time ({time} < {state.times[-1]})")
        state.times.append(float(time))
        state.positions.append(point)

    def release(self, handle: object) -> None:
        if handle in self._handles:
            state = self._handles.pop(handle)
            state.released = True
            self._finished.append(state)

    def _all_handles(self) -> list[_Handle]:
        return self._finished + list(self._handles.values())

    @staticmethod
    def _shared_weights(handles: list[_Handle]) -> torch.Tensor:
        """[H, N] weights, divided among handles whose drags overlap in time where they sum past 1."""
        weights = torch.stack([h.weights for h in handles])
        starts = torch.tensor([h.start for h in handles], dtype=torch.float64)
        ends = torch.tensor([h.end for h in handles], dtype=torch.float64)
        overlap = (starts[:, None] < ends[None, :]) & (starts[None, :] < ends[:, None])
        overlap |= torch.eye(len(handles), dtype=torch.bool)
        rows = (overlap.sum(dim=1) > 1).nonzero().squeeze(1)
        if not rows.numel():
            return weights  # every weight is at most 1 on its own
        shared = weights.clone()
        shared[rows] = weights[rows] / (overlap[rows].to(weights.dtype) @ weights).clamp(min=1.0)
        return shared

    def _positions_at(self, time: float) -> torch.Tensor:
        handles = self._all_handles()
        if not handles:
            return self.base_points.clone()
        offsets = torch.stack([h.offset_at(time) for h in handles])  # [H, 2]
        return self.base_points + self._shared_weights(handles).T @ offsets

    def positions_at_times(self, times: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """[T, N, 2] grid positions at the given times as the handles stand now (commits nothing)."""
        times = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
        handles = self._all_handles()
        positions = self.base_points.unsqueeze(0).repeat(times.shape[0], 1, 1)
        if not handles:
            return positions
        weights = self._shared_weights(handles)  # [H, N]
        offsets = torch.stack([handle.offsets_at(times) for handle in handles])  # [H, T, 2]
        moves = torch.matmul(offsets.permute(2, 1, 0), weights)  # [2, T, N]
        return positions + moves.permute(1, 2, 0)

    def frame_positions(self, first_frame: int, num_frames: int) -> torch.Tensor:
        """[num_frames, N, 2] grid positions; frames asked for once keep their positions forever."""
        while len(self._frames) < first_frame + num_frames:
            self._frames.append(self._positions_at(len(self._frames) / self.fps))
        return torch.stack(self._frames[first_frame : first_frame + num_frames])

    def track_window(self, start: int, stop: int) -> TrackHeadInputs:
        """Track-head inputs of pixel frames [start, stop): a source for `TrackChannelProvider`."""
        coords = self.frame_positions(start, stop - start).unsqueeze(0)
        return TrackHeadInputs(coords, torch.ones(coords.shape[:3]), self.track_ids.unsqueeze(0))


@dataclasses.dataclass(frozen=True)
class RegionHandle:
    """One region edit of a drawn timeline: a drag (`kind` "path", drawn ahead, or "live", made while
    a stream ran; both move the grid the same way) or an "anchor" (pins the grid within `radius` for
    the drags that grab after its first time). `times` ascend; an anchor has one position."""

    kind: str
    radius: float
    times: tuple[float, ...]
    points: tuple[tuple[float, float], ...]

    def __post_init__(self):
        if self.kind not in ("path", "live", "anchor"):
            raise ValueError(f"a region handle's kind is 'path', 'live' or 'anchor', got {self.kind!r}")
        _check_radius(self.radius)
        if not self.times or len(self.times) != len(self.points):
            raise ValueError("a region handle needs one point per time, and at least one")
        if any(b < a for a, b in zip(self.times, self.times[1:])):
            raise ValueError("a region handle's times must ascend")


def region_grid_positions(
    handles: Sequence[RegionHandle],
    times: Sequence[float] | torch.Tensor,
    grid_size: int = DEFAULT_GRID_SIZE,
    aspect: float = 1.0,
) -> torch.Tensor:
    """[len(times), grid_size**2, 2] normalised grid positions that `handles` make at `times` (seconds):
    a :class:`DragController` driven with every handle in the order of their first times (an anchor
    before a drag that grabs at the same time)."""
    controller = DragController(grid_size=grid_size, aspect=aspect)
    order = sorted(range(len(handles)), key=lambda i: (handles[i].times[0], handles[i].kind != "anchor", i))
    for index in order:
        handle = handles[index]
        if handle.kind == "anchor":
            controller.pin(*handle.points[0], radius=handle.radius)
            continue
        for time, (x, y) in zip(handle.times, handle.points):
            controller.drag(index, time, x, y, radius=handle.radius)
        controller.release(index)
    return controller.positions_at_times(times)
