"""Wan-Move ``*_tracks.npy [1, T, N, 2]`` / ``*_visibility.npy [1, T, N]`` pairs.

Coordinates are pixels of the input image; the leading batch axis is optional. The files do not
record the frame size, so it must be given. :func:`save_wan_move_tracks` never leaves a
half-written file (see there for what a crash between its two renames leaves, and how to tell).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from ..tracks import DEFAULT_FPS, TrackSet
from .track_arrays import check_batch_index, check_tracks_shape, check_visibility_shape
from .track_arrays import open_array_file, read_array, tracks_from_arrays
from .track_format import ReadOptions


def tracks_from_wan_move(
    track: Any,
    visibility: Any,
    *,
    width: int,
    height: int,
    fps: float = DEFAULT_FPS,
    batch_index: int = 0,
) -> TrackSet:
    """Wan-Move ``track [1, T, N, 2]`` / ``visibility [1, T, N]`` arrays (batch axis optional).

    Coordinates are pixels of the input image, whose size is ``width`` x ``height``.
    """
    if visibility is None:
        raise ValueError("Wan-Move tracks need their visibility array")
    return tracks_from_arrays(
        track, visibility, width=width, height=height, fps=fps,
        batch_index=batch_index, what="Wan-Move",
    )


def load_wan_move_tracks(
    tracks_path: str | os.PathLike[str],
    visibility_path: str | os.PathLike[str],
    *,
    width: int,
    height: int,
    fps: float = DEFAULT_FPS,
    batch_index: int = 0,
) -> TrackSet:
    """Load a Wan-Move ``*_tracks.npy`` / ``*_visibility.npy`` pair (headers are checked before any data is read)."""
    tracks_path, visibility_path = Path(tracks_path), Path(visibility_path)
    for path in (tracks_path, visibility_path):
        if path.suffix.lower() != ".npy":
            raise ValueError(f"Wan-Move tracks are .npy files, got {path}")
    batch_index = check_batch_index(batch_index)
    with open_array_file(tracks_path) as source:
        track = read_array(source, check_shape=lambda shape: check_tracks_shape(
            shape, f"Wan-Move tracks in {tracks_path.name}", batch_index))
    with open_array_file(visibility_path) as source:
        visibility = read_array(source, check_shape=lambda shape: check_visibility_shape(
            shape, f"Wan-Move visibility in {visibility_path.name}", batch_index))
    try:
        return tracks_from_wan_move(track, visibility, width=width, height=height, fps=fps, batch_index=batch_index)
    except ValueError as error:
        raise ValueError(f"{tracks_path.name} / {visibility_path.name}: {error}") from None


def tracks_to_wan_move(tracks: TrackSet) -> tuple[np.ndarray, np.ndarray]:
    """Wan-Move arrays: float32 ``[1, T, N, 2]`` pixel tracks and bool ``[1, T, N]`` visibility."""
    return tracks.points.numpy()[None].copy(), tracks.visibility.numpy()[None].copy()


def save_wan_move_tracks(
    tracks: TrackSet, tracks_path: str | os.PathLike[str], visibility_path: str | os.PathLike[str]
) -> None:
    """Write :func:`tracks_to_wan_move` as a ``.npy`` pair, never leaving a half-written file.

    Both arrays are first written to temporaries beside their final names,
    ``.<name>.partial-<pid>-<token>``, and flushed to disk; only when both are complete are
    they renamed over the final names (visibility first, then tracks). If anything fails
    before that (a full disk, an interrupt), both temporaries are removed and the files
    already there are untouched. Temporaries of a writer that was killed are removed by the
    next write to the same names, once their process is gone.

    The two renames are not one atomic step: a crash between them leaves the new visibility
    file beside the old tracks file. To let a reader detect such a mismatched pair, both files
    of one write carry the same modification time to the nanosecond (set on the temporaries,
    kept by the renames, unique per write): :func:`wan_move_pair_matches` compares them. Files
    copied without keeping their times (and filesystems with coarse timestamps, for two writes
    within their resolution) defeat that check, so it tells "written together", not "valid";
    the loader checks that the shapes agree in any case.
    """
    tracks_path, visibility_path = Path(tracks_path), Path(visibility_path)
    for path in (tracks_path, visibility_path):
        if path.suffix.lower() != ".npy":
            raise ValueError(f"Wan-Move tracks are written as .npy files, got {path}")
        if path.is_dir():
            raise ValueError(f"cannot write Wan-Move tracks to {path}: it is a folder")
    if os.path.abspath(tracks_path) == os.path.abspath(visibility_path):
        raise ValueError(f"the tracks and the visibility would both be written to {tracks_path}")
    track_array, visibility_array = tracks_to_wan_move(tracks)
    for path in (tracks_path, visibility_path):
        remove_stale_partials(path)
    token = secrets.token_hex(4)
    temporaries = [partial_path(path, token) for path in (visibility_path, tracks_path)]
    try:
        for temporary, array in zip(temporaries, (visibility_array, track_array)):
            with open(temporary, "xb") as handle:
                npy_format.write_array(handle, array, allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
        stamp = _unique_stamp(tracks_path, visibility_path)
        for temporary in temporaries:
            os.utime(temporary, ns=(stamp, stamp))
        os.replace(temporaries[0], visibility_path)
        os.replace(temporaries[1], tracks_path)
    finally:
        for temporary in temporaries:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
    for folder in {tracks_path.parent, visibility_path.parent}:
        _sync_folder(folder)


def wan_move_pair_matches(tracks_path: str | os.PathLike[str], visibility_path: str | os.PathLike[str]) -> bool:
    """Whether the two files were written together by :func:`save_wan_move_tracks` (their shared stamp)."""
    return os.stat(tracks_path).st_mtime_ns == os.stat(visibility_path).st_mtime_ns


_PARTIAL_MARK = ".partial-"


def partial_path(path: Path, token: str) -> Path:
    """The temporary a write to ``path`` goes through: hidden, beside it, naming this process."""
    return path.with_name(f".{path.name}{_PARTIAL_MARK}{os.getpid()}-{token}")


def remove_stale_partials(path: Path) -> list[Path]:
    """Remove temporaries of writes to ``path`` whose writer process is gone; returns them."""
    pattern = re.compile(re.escape(f".{path.name}{_PARTIAL_MARK}") + r"(\d+)-[0-9a-f]+")
    removed = []
    try:
        entries = list(os.scandir(path.parent if str(path.parent) else "."))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _process_alive(pid):
            continue  # a write in progress (or a pid reused since: left alone, never guessed)
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists; ``True`` whenever that cannot be told (nothing is removed then)."""
    if pid <= 0:
        return True
    try:
        if os.name == "nt":
            return _windows_process_alive(pid)
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except Exception:  # PermissionError: someone else's process
        return True
    return True


def _windows_process_alive(pid: int) -> bool:
    import ctypes  # os.kill(pid, 0) would terminate the process on Windows

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() != 87  # ERROR_INVALID_PARAMETER: no such process
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _unique_stamp(*paths: Path) -> int:
    """A modification time (ns) no existing file of the pair carries, so a mixed pair never matches."""
    stamp = time.time_ns()
    existing = set()
    for path in paths:
        with contextlib.suppress(OSError):
            existing.add(os.stat(path).st_mtime_ns)
    while stamp in existing:
        stamp += 1
    return stamp


def _sync_folder(folder: Path) -> None:
    """Flush the folder entry (the renames) to disk where the platform allows it."""
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        descriptor = os.open(folder if str(folder) else ".", os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def read(path: str | os.PathLike[str], options: ReadOptions) -> TrackSet:
    """Registry entry point: needs the visibility file and the frame size; fps defaults to 16."""
    if options.visibility_path is None:
        raise ValueError("Wan-Move tracks need their *_visibility.npy file (visibility_path)")
    width, height = options.frame_size("Wan-Move track files")
    return load_wan_move_tracks(
        path, options.visibility_path, width=width, height=height, fps=options.fps or DEFAULT_FPS
    )
