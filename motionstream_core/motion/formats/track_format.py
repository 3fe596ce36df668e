"""What a track format declares about itself (:class:`TrackFormat`) and what a caller may add (:class:`ReadOptions`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..tracks import TrackSet

# What a format's parser takes: "text" a string (or UTF-8 bytes), "file" a path, "object" an
# in-memory value another node hands over (ComfyUI's TRACKS dict).
READ_KINDS = ("text", "file", "object")


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """What the caller knows beside the source; ``None`` leaves it to the source or the format's default."""

    width: int | None = None
    height: int | None = None
    fps: float | None = None
    # The second file of formats that store visibility apart (Wan-Move, optionally CoTracker).
    visibility_path: str | Path | None = None

    def frame_size(self, what: str) -> tuple[int, int]:
        """``(width, height)``, for sources that do not record their frame size."""
        if self.width is None or self.height is None:
            raise ValueError(f"{what} do not record the frame size: set width and height")
        return self.width, self.height


@dataclasses.dataclass(frozen=True)
class TrackFormat:
    """One importer (and optional exporter) as the registry lists it."""

    name: str  # stable identifier for code, e.g. "cotracker"
    label: str  # shown in node menus and saved in workflows, so never renamed
    reads: str  # one of READ_KINDS
    parse: Callable[[Any, ReadOptions], TrackSet]
    suffixes: tuple[str, ...] = ()  # file-name endings that select this format in format_for_path
    export: Callable[[TrackSet], Any] | None = None  # TrackSet -> a source `parse` reads back

    def __post_init__(self) -> None:
        if not self.name or not self.label:
            raise ValueError("a track format needs a name and a label")
        if self.reads not in READ_KINDS:
            raise ValueError(f"track format {self.name!r} reads {self.reads!r}; expected one of {READ_KINDS}")
        for suffix in self.suffixes:
            if not suffix.startswith(".") or suffix != suffix.lower():
                raise ValueError(f"suffix {suffix!r} of track format {self.name!r} must be lower case and start with '.'")

    def read(self, source: Any, options: ReadOptions | None = None) -> TrackSet:
        return self.parse(source, options or ReadOptions())
