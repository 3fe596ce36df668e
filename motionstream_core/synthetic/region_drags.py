"""One region drag per sprite of a clip, as the track editor writes it, and the grid tracks it expands to.

A user who moves an object with a region drag grabs it near its centre and pulls; the editor stores the
handle's path and radius (widget JSON version 2) and the Track Editor node expands it into the
DragController's grid, whose points near the grab move with a cosine falloff and whose other points stay
put. Training on these tracks against the clip itself (in which the sprite moves fully and the
background stays still) teaches a model what a region drag means; the benchmark scores the same drags.
"""

from __future__ import annotations

import json

from ..motion.drag_control import default_grid_size
from ..motion.formats import tracks_from_widget_json
from ..motion.tracks import TrackSet
from .clips import SyntheticClip

# Pixels added to a sprite's bounding radius for its region drag: half a grid cell of the editor's 8x8
# grid at 128x128, so the grab reaches the grid points just outside the sprite.
REGION_MARGIN_PIXELS = 8.0


def region_drag_document(clip: SyntheticClip, margin_pixels: float = REGION_MARGIN_PIXELS, grid: int | None = None) -> dict:
    """The widget document (version 2) of one region drag per sprite: grabbed at the sprite's centre at
    frame 0, a keyframe on every frame along its true centre path (an anchor for a static sprite), radius
    the sprite's bounding radius + `margin_pixels` over the frame's shorter side; coordinates rounded to 4
    decimals and the grid named (the editor's default for the frame unless `grid` is given), as the editor
    writes them."""
    metadata = clip.metadata
    shorter = min(metadata.width, metadata.height)
    regions = []
    for index, sprite in enumerate(metadata.sprites):
        radius = round((sprite.bounding_radius + margin_pixels) / shorter, 4)
        path = metadata.centre_paths[:, index].tolist()
        keyframes = [{"t": frame / metadata.fps, "x": round(x / metadata.width, 4), "y": round(y / metadata.height, 4)}
                     for frame, (x, y) in enumerate(path)]
        if metadata.trajectory_kinds[index] == "static":
            regions.append({"id": index, "kind": "anchor", "radius": radius, "keyframes": keyframes[:1]})
        else:
            regions.append({"id": index, "kind": "path", "radius": radius, "keyframes": keyframes})
    return {
        "format": "motionstream-tracks", "version": 2, "width": metadata.width, "height": metadata.height,
        "fps": metadata.fps, "duration": (metadata.num_frames - 1) / metadata.fps, "tracks": [],
        "region_grid": default_grid_size(metadata.width, metadata.height) if grid is None else grid,
        "regions": regions,
    }


def region_drag_tracks(clip: SyntheticClip, margin_pixels: float = REGION_MARGIN_PIXELS, grid: int | None = None) -> TrackSet:
    """The grid tracks of :func:`region_drag_document`, read as the Track Editor node reads the editor's JSON."""
    return tracks_from_widget_json(json.dumps(region_drag_document(clip, margin_pixels, grid)))
