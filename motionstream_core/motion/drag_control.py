"""Live drag control: handle drags become a stable grid of tracks for the chunks not generated yet.

A fixed grid of tracks (stable ids for the whole session) covers the image. Dragging a handle
moves the grid points near the grab point with a smooth cosine falloff, so a drag moves a region
rather than one pixel; a moved region stays where it was dropped. Static anchors pin the grid
around them. Positions of a pixel frame are fixed the first time a chunk asks for them, so an
edit made while chunk k is generated shapes chunk k+1 onward and never rewrites chunk k.
Coordinates are normalised to the frame (0..1); times are seconds of video.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .track_head import TrackHeadInputs

DEFAULT_GRID_SIZE = 50
DEFAULT_RADIUS = 0.15


def cosine_falloff(distance: torch.Tensor, radius: float) -> torch.Tensor:
    """1 at the centre, 0 from `radius` on, smooth in between."""
    inside = distance < radius
    return torch.where(inside, 0.5 * (1 + torch.cos(math.pi * distance / radius)), torch.zeros_like(distance))


@dataclasses.dataclass
class _Handle:
    grab: torch.Tensor  # [2] where the drag started
    weights: torch.Tensor  # [N] influence on each grid track, fixed at grab time
    times: list[float]
    positions: list[torch.Tensor]

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


class DragController:
    def __init__(self, fps: float = 16.0, grid_size: int = DEFAULT_GRID_SIZE, radius: float = DEFAULT_RADIUS):
        if fps <= 0 or grid_size < 1 or not 0 < radius <= 2:
            raise ValueError(f"invalid drag controller settings: fps {fps}, grid {grid_size}, radius {radius}")
        self.fps = float(fps)
        self.radius = float(radius)
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

    def pin(self, x: float, y: float) -> None:
        """A static anchor: the grid around it does not move."""
        distance = (self.base_points - torch.tensor([x, y])).norm(dim=-1)
        self._pinned = torch.maximum(self._pinned, cosine_falloff(distance, self.radius))

    def drag(self, handle: object, time: float, x: float, y: float) -> None:
        """A timestamped sample of a handle; the first sample of a handle is where it grabbed the image."""
        if not all(math.isfinite(v) for v in (time, x, y)):
            raise ValueError(f"drag sample must be finite numbers, got t={time}, x={x}, y={y}")
        point = torch.tensor([float(x), float(y)])
        if handle not in self._handles:
            current = self._positions_at(float(time))
            weights = cosine_falloff((current - point).norm(dim=-1), self.radius) * (1 - self._pinned)
            self._handles[handle] = _Handle(point, weights, [float(time)], [point])
            return
        state = self._handles[handle]
        if time < state.times[-1]:
            raise ValueError(f"drag samples of handle {handle!r} went back in time ({time} < {state.times[-1]})")
        state.times.append(float(time))
        state.positions.append(point)

    def release(self, handle: object) -> None:
        if handle in self._handles:
            self._finished.append(self._handles.pop(handle))

    def _positions_at(self, time: float) -> torch.Tensor:
        handles = self._finished + list(self._handles.values())
        if not handles:
            return self.base_points.clone()
        weights = torch.stack([h.weights for h in handles])  # [H, N]
        # Overlapping handles blend instead of adding up past a full move.
        weights = weights / weights.sum(dim=0).clamp(min=1.0)
        offsets = torch.stack([h.offset_at(time) for h in handles])  # [H, 2]
        return self.base_points + weights.T @ offsets

    def frame_positions(self, first_frame: int, num_frames: int) -> torch.Tensor:
        """[num_frames, N, 2] grid positions; frames asked for once keep their positions forever."""
        while len(self._frames) < first_frame + num_frames:
            self._frames.append(self._positions_at(len(self._frames) / self.fps))
        return torch.stack(self._frames[first_frame : first_frame + num_frames])

    def track_window(self, start: int, stop: int) -> TrackHeadInputs:
        """Track-head inputs of pixel frames [start, stop): a source for `TrackChannelProvider`."""
        coords = self.frame_positions(start, stop - start).unsqueeze(0)
        return TrackHeadInputs(coords, torch.ones(coords.shape[:3]), self.track_ids.unsqueeze(0))
