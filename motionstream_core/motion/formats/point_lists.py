"""Lists of ``{"x", "y"}`` pixel points, one point per frame: the shape KJNodes and ATI share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..tracks import MAX_FRAMES, TrackSet
from .parsing import check_frame_count, check_track_count, describe, finite_number, load_json


def parse_point_lists(source: Any, what: str, allow_batch: bool) -> list[list[tuple[float, float]]]:
    """One point list per track, from JSON text, a list of JSON strings, or already parsed lists.

    A single list of points is one track; ``allow_batch`` accepts one more level holding a single entry.
    """
    if isinstance(source, (str, bytes, bytearray)):
        data = load_json(source, what, allow_single_quotes=True)
    elif isinstance(source, Sequence) and source and all(isinstance(item, str) for item in source):
        # ComfyUI also passes a list of JSON strings, one track each.
        data = [load_json(item, what, allow_single_quotes=True) for item in source]
    else:
        data = source
    if not isinstance(data, list):
        raise ValueError(f"{what} must be a list of points or a list of tracks, got {describe(data)}")
    if not data:
        raise ValueError(f"{what} contains no tracks")
    if isinstance(data[0], Mapping):
        data = [data]
    elif allow_batch and isinstance(data[0], list) and data[0] and isinstance(data[0][0], list):
        if len(data) != 1:
            raise ValueError(f"{what} holds a batch of {len(data)} track sets; only one is supported")
        data = data[0]
    check_track_count(len(data))
    tracks = []
    for index, track in enumerate(data):
        if not isinstance(track, list):
            raise ValueError(f"track {index} of {what} must be a list of points, got {describe(track)}")
        if not track:
            raise ValueError(f"track {index} of {what} has no points")
        if len(track) > MAX_FRAMES:
            raise ValueError(f"track {index} of {what} has too many points (the limit is {MAX_FRAMES})")
        points = []
        for number, point in enumerate(track):
            where = f"point {number} of track {index}"
            if not isinstance(point, Mapping):
                raise ValueError(f"{where} must be an object with x and y, got {describe(point)}")
            points.append((finite_number(point.get("x"), f"x of {where}"), finite_number(point.get("y"), f"y of {where}")))
        tracks.append(points)
    return tracks


def tracks_from_point_lists(
    tracks: list[list[tuple[float, float]]], *, width: int, height: int, fps: float
) -> TrackSet:
    """A track set from :func:`parse_point_lists`; tracks shorter than the longest are invisible after their end."""
    num_frames = max(len(track) for track in tracks)
    check_frame_count(num_frames, len(tracks))
    points = np.empty((num_frames, len(tracks), 2), dtype=np.float64)
    visibility = np.zeros((num_frames, len(tracks)), dtype=bool)
    for column, track in enumerate(tracks):
        known = np.asarray(track, dtype=np.float64)
        points[: len(track), column] = known
        # Frames after the end are invisible; the position only keeps the array finite.
        points[len(track) :, column] = known[-1]
        visibility[: len(track), column] = True
    return TrackSet(points, visibility, width, height, fps)
