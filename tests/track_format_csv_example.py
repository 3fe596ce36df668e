"""An example track format from outside the core: CSV rows ``track,frame,x,y`` in pixels.

Frames a track has no row for are invisible. tests/test_track_format_registry.py registers it with
one entry and loads files through the nodes; that is all a new format needs.
"""

import csv

import numpy as np

from motionstream_core import ReadOptions, TrackSet


def read(path, options: ReadOptions) -> TrackSet:
    with open(path, newline="") as file:
        rows = [(int(row["track"]), int(row["frame"]), float(row["x"]), float(row["y"])) for row in csv.DictReader(file)]
    if not rows:
        raise ValueError(f"{path} has no rows")
    track_ids = sorted({row[0] for row in rows})
    column = {track_id: index for index, track_id in enumerate(track_ids)}
    num_frames = max(row[1] for row in rows) + 1
    points = np.zeros((num_frames, len(track_ids), 2))
    visibility = np.zeros((num_frames, len(track_ids)), dtype=bool)
    for track_id, frame, x, y in rows:
        points[frame, column[track_id]] = (x, y)
        visibility[frame, column[track_id]] = True
    width, height = options.frame_size("CSV track rows")
    return TrackSet(points, visibility, width, height, options.fps or 16.0, track_ids=track_ids)
