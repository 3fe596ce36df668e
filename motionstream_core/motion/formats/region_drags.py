"""Region drags of the widget JSON (version 2): handles the editor draws, expanded here into the
:class:`~motionstream_core.motion.drag_control.DragController` grid of tracks.

A region handle is small (a grab point, a few keyframes, a radius), so a live edit that adds a drag
stays small; the grid of ``region_grid ** 2`` tracks it moves only exists once the document is read.

::

    "region_grid": 30,            # optional: grid tracks per side, at most 64 (default: one per 16 px
                                  # of the frame's shorter side, from 4 to 50; see default_grid_size)
    "regions": [
      {"id": 4, "kind": "path",   "radius": 0.15,
       "keyframes": [{"t": 0.0, "x": 0.30, "y": 0.50}, {"t": 2.0, "x": 0.55, "y": 0.45}]},
      {"id": 5, "kind": "live",   "radius": 0.10,
       "keyframes": [{"t": 2.5, "x": 0.70, "y": 0.30}, {"t": 3.1, "x": 0.75, "y": 0.40}]},
      {"id": 6, "kind": "anchor", "radius": 0.12, "keyframes": [{"t": 0.0, "x": 0.80, "y": 0.80}]}
    ]

- ``kind``: ``"path"`` a drag drawn ahead on the timeline, ``"live"`` a drag made while a stream
  ran (timed by the stream's clock, at the pointer's own pace); both move the grid alike.
  ``"anchor"`` pins the grid within its radius for every drag that grabs from its time on.
- ``radius``: in units of the frame's shorter side, in ``(0, 2]``.
- ``keyframes``: as for tracks (``t`` seconds, ``x``/``y`` normalised, ``-1..2``); the first is
  where the drag grabs. Before it the region is untouched; after the last one it stays where it was
  dropped. An anchor's keyframes all share one position.
- The grid tracks come first in the TrackSet, with ids ``GRID_FIRST_ID + i`` (row-major from the
  top left), so their ids stay the same across edits; they are visible while inside the frame.
  Point tracks of a document with regions may not use those ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..drag_control import MAX_GRID_SIZE, MAX_RADIUS, RegionHandle, default_grid_size, region_grid_positions
from ..tracks import MAX_TRACK_ID, OUT_OF_FRAME_MARGIN
from .parsing import bounded_integer, describe, finite_number, keyframe_list, keyframe_point

REGIONS_VERSION = 2
MAX_REGIONS = 64  # each drag re-weighs the grid, so reading costs grow with regions**2
REGION_KINDS = ("path", "live", "anchor")
# Grid track i has id GRID_FIRST_ID + i: the top of the id range, the same for every grid size.
GRID_FIRST_ID = MAX_TRACK_ID + 1 - MAX_GRID_SIZE**2

_TIME_EPSILON = 1e-6


def parse_regions(
    document: Mapping[str, Any], version: int, width: int, height: int
) -> tuple[list[RegionHandle], list[int], int]:
    """The region handles of a widget document, their ids and the grid size; ``([], [], grid)`` without regions."""
    raw = document.get("regions")
    grid = document.get("region_grid")
    grid = default_grid_size(width, height) if grid is None else bounded_integer(grid, "region_grid", 1, MAX_GRID_SIZE)
    if raw is None:
        return [], [], grid
    if version < REGIONS_VERSION:
        raise ValueError(f"'regions' need widget JSON version {REGIONS_VERSION} (the document says {version})")
    if not isinstance(raw, list):
        raise ValueError(f"'regions' of the widget JSON must be a list, got {describe(raw)}")
    if len(raw) > MAX_REGIONS:
        raise ValueError(f"too many region drags: {len(raw)} (the limit is {MAX_REGIONS})")
    handles, ids = [], []
    for index, entry in enumerate(raw):
        region_id, handle = _parse_region(entry, index)
        ids.append(region_id)
        handles.append(handle)
    if len(set(ids)) != len(ids):
        raise ValueError("region ids must be unique")
    return handles, ids, grid


def _parse_region(raw: Any, index: int) -> tuple[int, RegionHandle]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"region {index} must be an object, got {describe(raw)}")
    region_id = bounded_integer(raw.get("id"), f"id of region {index}", 0, MAX_TRACK_ID)
    kind = raw.get("kind")
    if kind not in REGION_KINDS:
        raise ValueError(f"'kind' of region {region_id} must be one of {', '.join(REGION_KINDS)}; got {describe(kind)}")
    radius = finite_number(raw.get("radius"), f"'radius' of region {region_id}")
    if not 0 < radius <= MAX_RADIUS:
        raise ValueError(f"'radius' of region {region_id} must be in (0, {MAX_RADIUS:g}], got {radius:g}")
    keyframes = keyframe_list(raw, f"region {region_id}")
    rows = []
    for number, keyframe in enumerate(keyframes):
        where = f"keyframe {number} of region {region_id}"
        time, x, y = keyframe_point(keyframe, where)
        rows.append((time, x, y))
    rows.sort(key=lambda row: row[0])
    if any(b[0] - a[0] < _TIME_EPSILON for a, b in zip(rows, rows[1:])):
        raise ValueError(f"region {region_id} has two keyframes at the same time")
    if kind == "anchor" and any((row[1], row[2]) != (rows[0][1], rows[0][2]) for row in rows):
        raise ValueError(f"anchor region {region_id} must not move (all keyframes need the same x and y)")
    handle = RegionHandle(kind, radius, tuple(row[0] for row in rows), tuple((row[1], row[2]) for row in rows))
    return region_id, handle


def region_grid_tracks(
    handles: list[RegionHandle], grid: int, frame_times: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(normalised points [F, grid**2, 2], visibility [F, grid**2], ids) of the grid the handles move,
    at each of ``frame_times`` (seconds)."""
    positions = region_grid_positions(handles, torch.from_numpy(frame_times), grid_size=grid, aspect=width / height)
    positions = positions.to(torch.float64).numpy()
    visible = np.all((positions >= 0.0) & (positions <= 1.0), axis=-1)
    # Points pushed out of the frame are invisible; keep them inside the band a TrackSet accepts.
    positions = np.clip(positions, -OUT_OF_FRAME_MARGIN, 1.0 + OUT_OF_FRAME_MARGIN)
    return positions, visible, [GRID_FIRST_ID + index for index in range(grid * grid)]
