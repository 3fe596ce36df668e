"""The track formats this build reads, each declared once, and the lookups that dispatch on them.

Adding a format is one module in this package with a ``read(source, options)`` function plus one
:class:`TrackFormat` entry in :data:`BUILTIN_FORMATS`; the nodes' menus, file loading by suffix and
the demo CLI pick it up from here. Code outside the package (another pack, a test) adds its own
with :func:`register_track_format` and takes it back with :func:`unregister_track_format`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..tracks import TrackSet
from . import ati_json, comfy_tracks, cotracker, spline_editor, wan_move, widget_json
from .track_format import ReadOptions, TrackFormat

# Menu order: the first "text" and the first "file" format are the nodes' default choices.
BUILTIN_FORMATS = (
    TrackFormat(name="kjnodes_spline_editor", label="KJNodes SplineEditor", reads="text", parse=spline_editor.read),
    TrackFormat(name="ati_json", label="ATI / WanTrackToVideo", reads="text", parse=ati_json.read),
    TrackFormat(name="widget_json", label="MotionStream widget JSON", reads="text", parse=widget_json.read,
                suffixes=(".json",), export=widget_json.tracks_to_widget_json),
    TrackFormat(name="comfy_tracks", label="ComfyUI TRACKS", reads="object", parse=comfy_tracks.read,
                export=comfy_tracks.tracks_to_comfy),
    TrackFormat(name="cotracker", label="CoTracker", reads="file", parse=cotracker.read,
                suffixes=(".npz", ".npy", ".pt", ".pth")),
    # Its .npy files look like CoTracker's, so Wan-Move is chosen by name, never by suffix.
    TrackFormat(name="wan_move", label="Wan-Move", reads="file", parse=wan_move.read),
)

_registered: dict[str, TrackFormat] = {}

# How a file of each kind of format becomes the source its parser takes ("object" formats have no files).
_SOURCE_FROM_PATH: dict[str, Callable[[Path], Any]] = {
    "text": Path.read_bytes,  # bytes, so the parser reports bad UTF-8 like any other bad input
    "file": lambda path: path,
}


def register_track_format(track_format: TrackFormat) -> TrackFormat:
    """Add ``track_format``; its name, label and suffixes must be new."""
    for other in _registered.values():
        if track_format.name == other.name or track_format.label == other.label:
            raise ValueError(f"track format {track_format.name!r} ({track_format.label!r}) is already registered")
        shared = set(track_format.suffixes) & set(other.suffixes)
        if shared:
            raise ValueError(
                f"track format {track_format.name!r} claims {sorted(shared)}, already read by {other.name!r}"
            )
    _registered[track_format.name] = track_format
    return track_format


def unregister_track_format(name: str) -> None:
    track_format(name)  # the same error for an unknown name
    del _registered[name]


def list_track_formats(reads: str | None = None) -> tuple[TrackFormat, ...]:
    """Every registered format in menu order, or those whose parser ``reads`` "text", "file" or "object"."""
    return tuple(entry for entry in _registered.values() if reads is None or entry.reads == reads)


def track_format(name: str) -> TrackFormat:
    try:
        return _registered[name]
    except KeyError:
        raise ValueError(f"unknown track format {name!r} (known: {', '.join(_registered)})") from None


def track_format_labeled(label: str) -> TrackFormat:
    """The format a node menu shows (and a workflow stores) as ``label``."""
    for entry in _registered.values():
        if entry.label == label:
            return entry
    known = ", ".join(repr(entry.label) for entry in _registered.values())
    raise ValueError(f"unknown track format {label!r} (known: {known})")


def accepted_suffixes() -> tuple[str, ...]:
    return tuple(suffix for entry in _registered.values() for suffix in entry.suffixes)


def format_for_path(path: str | os.PathLike[str]) -> TrackFormat:
    """The format whose suffix ends the file name (the longest match wins; case does not matter)."""
    name = Path(path).name.lower()
    matches = [(len(suffix), entry) for entry in _registered.values()
               for suffix in entry.suffixes if name.endswith(suffix)]
    if not matches:
        suffix = Path(path).suffix
        files = f"{suffix!r} files" if suffix else f"files without a suffix ({Path(path).name})"
        raise ValueError(
            f"no track format reads {files} (accepted: {', '.join(accepted_suffixes())}); choose the format by name"
        )
    return max(matches, key=lambda match: match[0])[1]


def read_tracks(source: Any, format: str | TrackFormat, options: ReadOptions | None = None) -> TrackSet:
    """Parse ``source`` (text, a path or an object, as the format reads) with the format named ``format``."""
    return _resolve(format).read(source, options)


def load_tracks_file(
    path: str | os.PathLike[str],
    format: str | TrackFormat | None = None,
    options: ReadOptions | None = None,
) -> TrackSet:
    """Read a track file with the given format, or the one its suffix names (:func:`format_for_path`)."""
    path = Path(path)
    entry = format_for_path(path) if format is None else _resolve(format)
    source_from_path = _SOURCE_FROM_PATH.get(entry.reads)
    if source_from_path is None:
        raise ValueError(f"{entry.label} tracks are not read from files")
    if not path.is_file():
        raise FileNotFoundError(f"track file not found: {path}")
    return entry.read(source_from_path(path), options)


def _resolve(format: str | TrackFormat) -> TrackFormat:
    return format if isinstance(format, TrackFormat) else track_format(format)


for _entry in BUILTIN_FORMATS:
    register_track_format(_entry)
