"""The pack's own widget JSON (``motionstream-tracks``, versions 1 and 2), written by the canvas editor.

::

    {
      "format": "motionstream-tracks",
      "version": 1,
      "width": 832,               # frame size in pixels the tracks were drawn on
      "height": 480,
      "fps": 16,                  # optional, default 16; frame i is at time i / fps
      "duration": 5.0,            # optional, seconds; default: the last keyframe time
      "tracks": [
        {
          "id": 3,                # required, unique integer in [0, 2**24 - 1]
          "static": false,        # optional, default false
          "keyframes": [          # at least one
            {"t": 0.0, "x": 0.25, "y": 0.50},
            {"t": 1.5, "x": 0.40, "y": 0.55, "visible": false},
            {"t": 2.0, "x": 0.45, "y": 0.60}
          ]
        },
        {"id": 7, "static": true, "keyframes": [{"t": 0.0, "x": 0.8, "y": 0.2}]}
      ]
    }

- ``t`` is in seconds (so a document survives a change of fps); ``x`` and ``y``
  are normalised to the frame, ``0..1`` from the left/top to the right/bottom
  edge (pixel ``x * width``). Points may leave the frame by up to one frame size
  (``-1..2``); anything further is rejected.
- The clip has ``floor(duration * fps) + 1`` frames. Between two keyframes a track
  moves linearly; whether it is visible there is the ``visible`` flag (default
  ``true``) of the earlier keyframe, so ``"visible": false`` hides the point until
  the next keyframe.
- Before its first keyframe a track is unspecified. After its last keyframe a
  moving track is unspecified, while a static track (an anchor pinning a region)
  stays where it is, with the visibility of its last keyframe, until the end.
  Between its first and last keyframe a track is specified, so a hidden stretch
  (``"visible": false``) is an occluded point (``TrackSet.specified``): the
  user says it is there but hidden, not that nothing is known.
  All keyframes of a static track must share one position. (So a moving track
  with a single keyframe shows only on a frame at exactly that time; a point
  that should stay put is a static track.)
- Unknown keys are ignored, so later versions may add fields; a version this
  build does not know is rejected.
- Version 2 adds region drags: ``"regions"`` (handles that move a grid of tracks,
  see :mod:`.region_drags`) and ``"region_grid"``. Their grid tracks come first in
  the TrackSet; ``"tracks"`` may then be empty. A document without regions is
  written as version 1, which every build reads.

js/track_editor_state.js writes the same schema.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..geometry import rescale_tracks
from ..tracks import (
    DEFAULT_FPS,
    MAX_FPS,
    MAX_FRAME_SIZE,
    MAX_FRAMES,
    MAX_TRACK_ID,
    TrackSet,
)
from .parsing import (
    HugeInteger,
    bounded_integer,
    check_frame_count,
    check_track_count,
    describe,
    finite_number,
    keyframe_list,
    keyframe_point,
    load_json,
    strict_boolean,
)
from .region_drags import GRID_FIRST_ID, parse_regions, region_grid_tracks
from .track_format import ReadOptions

WIDGET_FORMAT = "motionstream-tracks"
WIDGET_VERSION = 2  # the newest version this build reads; it reads every version from 1 on
_POINT_TRACKS_VERSION = 1  # what a document without regions is written as

# Two times closer than this (seconds) are the same instant.
_TIME_EPSILON = 1e-6


def tracks_from_widget_json(source: str | bytes | Mapping[str, Any], *, from_time: float | None = None) -> TrackSet:
    """Read a ``motionstream-tracks`` document (a JSON string or an already parsed dict).

    ``from_time`` (seconds) reads the document as a live edit of a stream that has reached that time:
    frame 0 is at ``from_time`` (not 0), and the frames run past the duration and every keyframe to the
    first frame after them all, whose state (static tracks and dropped regions held, moving tracks
    ended) is what holds from then on. So an edit costs frames from now on only, however long the
    stream has run.
    """
    document = source if isinstance(source, Mapping) else load_json(source, "widget JSON")
    if not isinstance(document, Mapping):
        raise ValueError(f"widget JSON must be an object, got {describe(document)}")
    if document.get("format") != WIDGET_FORMAT:
        raise ValueError(f"not a {WIDGET_FORMAT!r} document (format is {describe(document.get('format'))})")
    version = document.get("version")
    if isinstance(version, HugeInteger) or (isinstance(version, int) and not isinstance(version, bool)):
        if isinstance(version, HugeInteger) or not 1 <= version <= WIDGET_VERSION:
            raise ValueError(
                f"unsupported widget JSON version {describe(version)} (this build reads 1 to {WIDGET_VERSION})"
            )
    else:
        raise ValueError(f"widget JSON version must be an integer, got {describe(version)}")

    width = bounded_integer(document.get("width"), "width", 1, MAX_FRAME_SIZE)
    height = bounded_integer(document.get("height"), "height", 1, MAX_FRAME_SIZE)
    fps = finite_number(document.get("fps", DEFAULT_FPS), "fps")
    if not 0.0 < fps <= MAX_FPS:
        raise ValueError(f"fps must be in (0, {MAX_FPS}], got {fps}")

    raw_tracks = document.get("tracks")
    if not isinstance(raw_tracks, list):
        raise ValueError(f"'tracks' of the widget JSON must be a list, got {describe(raw_tracks)}")
    regions, region_ids, grid = parse_regions(document, version, width, height)
    if not raw_tracks and not regions:
        raise ValueError("the widget JSON has no tracks: draw one in the track editor")
    grid_tracks = grid * grid if regions else 0
    check_track_count(len(raw_tracks) + grid_tracks)
    tracks = [_parse_track(raw, index) for index, raw in enumerate(raw_tracks)]
    ids = [track[0] for track in tracks]
    if len(set(ids)) != len(ids):
        raise ValueError("track ids must be unique")
    shared = set(ids) & set(region_ids)
    if shared:
        raise ValueError(f"id {min(shared)} is both a track's and a region's; ids must be unique across both")
    if regions and max(ids, default=-1) >= GRID_FIRST_ID:
        raise ValueError(f"track ids from {GRID_FIRST_ID} on belong to the region-drag grid in a document with regions")

    if document.get("duration") is None:
        duration = max([float(track[2][-1]) for track in tracks] + [region.times[-1] for region in regions])
    else:
        duration = finite_number(document["duration"], "duration")
        if duration < 0:
            raise ValueError(f"duration must not be negative, got {duration}")
    first_time = 0.0
    if from_time is None:
        frames_float = duration * fps
    else:
        first_time = finite_number(from_time, "from_time")
        if first_time < 0:
            raise ValueError(f"from_time must not be negative, got {first_time}")
        last_keyframe = max([float(track[2][-1]) for track in tracks] + [region.times[-1] for region in regions])
        # up to the first frame strictly after the duration and every keyframe (at least that one frame)
        frames_float = max(0.0, math.floor((max(duration, last_keyframe) - first_time) * fps + 1e-6) + 1.0)
        duration = frames_float / fps
    if frames_float >= MAX_FRAMES:
        raise ValueError(f"too many frames: {duration} s at {fps} fps (the limit is {MAX_FRAMES})")
    num_frames = math.floor(frames_float + 1e-6) + 1
    check_frame_count(num_frames, len(tracks) + grid_tracks)

    frame_times = first_time + np.arange(num_frames, dtype=np.float64) / fps
    points = np.empty((num_frames, len(tracks), 2), dtype=np.float64)
    visibility = np.empty((num_frames, len(tracks)), dtype=bool)
    specified = np.empty((num_frames, len(tracks)), dtype=bool)
    for column, (_, static, times, positions, visible) in enumerate(tracks):
        points[:, column], visibility[:, column], specified[:, column] = _sample_keyframes(
            frame_times, times, positions, visible, hold_after_end=static
        )
    static = [track[1] for track in tracks]
    if regions:
        grid_points, grid_visibility, grid_ids = region_grid_tracks(regions, grid, frame_times, width, height)
        points = np.concatenate([grid_points, points], axis=1)
        visibility = np.concatenate([grid_visibility, visibility], axis=1)
        specified = np.concatenate([grid_visibility, specified], axis=1)
        ids, static = grid_ids + ids, [False] * len(grid_ids) + static
    return TrackSet.from_normalized(
        points,
        visibility,
        width,
        height,
        fps,
        track_ids=ids,
        static=static,
        specified=specified,
    )


def _parse_track(raw: Any, index: int) -> tuple[int, bool, np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"track {index} must be an object, got {describe(raw)}")
    track_id = bounded_integer(raw.get("id"), f"id of track {index}", 0, MAX_TRACK_ID)
    static = strict_boolean(raw.get("static", False), f"'static' of track {track_id}")
    keyframes = keyframe_list(raw, f"track {track_id}")
    rows = []
    for number, keyframe in enumerate(keyframes):
        where = f"keyframe {number} of track {track_id}"
        time, x, y = keyframe_point(keyframe, where)
        visible = strict_boolean(keyframe.get("visible", True), f"'visible' of {where}")
        rows.append((time, x, y, visible))
    rows.sort(key=lambda row: row[0])
    times = np.array([row[0] for row in rows], dtype=np.float64)
    if len(times) > 1 and float(np.diff(times).min()) < _TIME_EPSILON:
        raise ValueError(f"track {track_id} has two keyframes at the same time")
    positions = np.array([(row[1], row[2]) for row in rows], dtype=np.float64)
    if static and not np.all(positions == positions[0]):
        raise ValueError(f"static track {track_id} must not move (all keyframes need the same x and y)")
    visible = np.array([row[3] for row in rows], dtype=bool)
    return track_id, static, times, positions, visible


def _sample_keyframes(
    frame_times: np.ndarray,
    times: np.ndarray,
    positions: np.ndarray,
    visible: np.ndarray,
    hold_after_end: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions, visibility and specification of a track on ``frame_times``."""
    last = len(times) - 1
    segment = np.searchsorted(times, frame_times + _TIME_EPSILON, side="right") - 1
    start = np.clip(segment, 0, last)
    end = np.minimum(start + 1, last)
    span = times[end] - times[start]
    weight = np.divide(frame_times - times[start], span, out=np.zeros_like(span), where=span > 0)
    weight = np.clip(weight, 0.0, 1.0)[:, None]
    sampled = positions[start] + (positions[end] - positions[start]) * weight
    before = segment < 0
    after = frame_times > times[last] + _TIME_EPSILON
    sampled_specified = ~before if hold_after_end else ~before & ~after
    return sampled, visible[start] & sampled_specified, sampled_specified


def tracks_to_widget_dict(tracks: TrackSet) -> dict[str, Any]:
    """The widget document for ``tracks`` (one keyframe per frame for moving tracks).

    Keyframes span each track's specified frames, from the first to the last (to the end for a
    static track, which the document holds); unspecified frames between them cannot be told apart
    in the document and are written hidden (occluded).
    """
    size = torch.tensor([tracks.width, tracks.height], dtype=torch.float64)
    normalized = tracks.points.to(torch.float64) / size
    visibility = tracks.visibility
    times = [index / tracks.fps for index in range(tracks.num_frames)]
    document_tracks = []
    for column in range(tracks.num_tracks):
        static = bool(tracks.static[column])
        known = tracks.specified[:, column].nonzero().flatten().tolist() or [0]
        # A static track holds its last keyframe to the end, so its keyframes run to the end too.
        first, last = known[0], tracks.num_frames - 1 if static else known[-1]
        if static:
            # Position is constant, so a keyframe is only needed where visibility changes.
            changes = [first] + [
                index
                for index in range(first + 1, last + 1)
                if bool(visibility[index, column]) != bool(visibility[index - 1, column])
            ]
        else:
            changes = range(first, last + 1)
        keyframes = []
        for index in changes:
            keyframe = {
                "t": times[index],
                "x": float(normalized[index, column, 0]),
                "y": float(normalized[index, column, 1]),
            }
            if not bool(visibility[index, column]):
                keyframe["visible"] = False
            keyframes.append(keyframe)
        document_tracks.append(
            {"id": int(tracks.track_ids[column]), "static": static, "keyframes": keyframes}
        )
    return {
        "format": WIDGET_FORMAT,
        "version": _POINT_TRACKS_VERSION,
        "width": tracks.width,
        "height": tracks.height,
        "fps": tracks.fps,
        "duration": tracks.duration,
        "tracks": document_tracks,
    }


def tracks_to_widget_json(tracks: TrackSet) -> str:
    """:func:`tracks_to_widget_dict` serialised as compact JSON."""
    return json.dumps(tracks_to_widget_dict(tracks), separators=(",", ":"))


def read(source: str | bytes, options: ReadOptions) -> TrackSet:
    """Registry entry point. The document records its own size and fps; a given size rescales it
    (the coordinates are normalised), as the editor node does for a connected image."""
    tracks = tracks_from_widget_json(source)
    if options.width is None or options.height is None or (options.width, options.height) == (tracks.width, tracks.height):
        return tracks
    return rescale_tracks(tracks, options.width, options.height)
