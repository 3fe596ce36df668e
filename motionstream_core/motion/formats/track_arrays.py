"""Point-tracker arrays ``tracks [B, T, N, 2]`` / ``visibility [B, T, N]`` and the files that hold them.

Shared by CoTracker and Wan-Move: reading ``.npy``/``.npz``/``.pt`` safely, dropping the optional
batch axis, and checking shapes before building a :class:`TrackSet`.

Files are read within fixed bounds, whatever they declare:

- no pickles: ``.npy``/``.npz`` arrays of Python objects are refused, ``.pt`` files are read with
  ``torch.load(weights_only=True)`` and only in the zip format (the legacy format allocates what
  its header claims before reading it), after the sizes their zip directory declares were
  checked (:data:`MAX_ARRAY_FILE_BYTES` in all, 1 MiB of pickled structure);
- ``.npy`` headers are read first (``numpy.lib.format``), and the shape they declare is checked
  against the track limits and against the bytes actually there before any data is read;
- ``.npz`` archives are never decompressed as a whole: only the arrays a loader asks for are read,
  each after its header was checked, and all arrays read from one file together may not exceed
  :data:`MAX_ARRAY_FILE_BYTES` (a zip bomb costs at most that, and nothing when its header
  declares more or a shape beyond the track limits);
- the content decides the format, not the name: a ``.npz`` archive saved under a ``.npy`` name is
  reported as such.

Every failure is a ``ValueError`` naming the file and the problem (:class:`TrackFileError` for
the file itself, ``FileNotFoundError`` for a missing one), and every file opened is closed again.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from numpy.lib import format as npy_format

from ..tracks import (
    MAX_FRAMES,
    MAX_TRACK_POINTS,
    MAX_TRACKS,
    TrackSet,
    coordinate_tensor,
    numeric_tensor,
    visibility_mask,
)
from .parsing import check_frame_count, check_track_count

# Every array a track file needs, read from one file: float64 [T, N, 3] coordinates plus visibility
# at the largest track set, and 1 MiB for scalars and headers.
MAX_ARRAY_FILE_BYTES = 3 * 8 * MAX_TRACK_POINTS + 2**20

class TrackFileError(ValueError):
    """A file that cannot be read as track arrays; the message names it and the problem."""


_MAX_PICKLE_BYTES = 2**20  # the structure of a .pt file (tensor data is stored beside it)
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # an archive with members / an empty one
_NPY_SUFFIX = ".npy"


class ArrayFile:
    """One opened ``.npy``/``.npz``/``.pt`` file; arrays are read on request, within the file's byte budget.

    ``names`` lists the arrays (a ``.npy`` file holds one, named ``""``; so does a ``.pt`` file
    holding anything but a dict); ``shape(name)`` is known before reading the data for ``.npy``
    and ``.npz`` files; ``read(name)`` returns a numpy array, or for ``.pt`` files whatever
    ``torch.load`` rebuilt.
    """

    def __init__(self, path: Path, max_bytes: int = MAX_ARRAY_FILE_BYTES) -> None:
        self.path = path
        self.kind = ""  # "npy", "npz", "pt" (a dict) or "pt-object"
        self.max_bytes = max_bytes
        self._budget = max_bytes
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, zipfile.ZipInfo] = {}
        self._headers: dict[str, tuple[tuple[int, ...], bool, np.dtype, int]] = {}
        self._content: dict[str, Any] = {}  # .pt

    def _open(self) -> None:
        suffix = self.path.suffix.lower()
        with open(self.path, "rb") as handle:
            magic = handle.read(len(_NPY_MAGIC))
        is_npy, is_zip = magic.startswith(_NPY_MAGIC), magic[:4] in _ZIP_MAGICS
        if suffix == ".npy":
            if is_zip:
                raise TrackFileError(f"{self.path.name} is a zip archive (an .npz file?), not a .npy array; rename it to .npz")
            if not is_npy:
                raise TrackFileError(f"cannot read {self.path.name}: not a .npy file (no NumPy header)")
            self.kind = "npy"
            with open(self.path, "rb") as handle:
                self._headers[""] = self._check_header(handle, self.path.name, self.path.stat().st_size)
        elif suffix == ".npz":
            if is_npy:
                raise TrackFileError(f"{self.path.name} is a single .npy array, not an .npz archive; rename it to .npy")
            if not is_zip:
                raise TrackFileError(f"cannot read {self.path.name}: not an .npz (zip) archive")
            self.kind = "npz"
            self._zip = zipfile.ZipFile(self.path)
            for info in self._zip.infolist():
                if info.filename.endswith(_NPY_SUFFIX) and not info.is_dir():
                    self._members[info.filename[: -len(_NPY_SUFFIX)]] = info
        elif suffix in (".pt", ".pth"):
            self.kind = "pt"
            self._load_torch(is_zip)
        else:
            raise TrackFileError(f"unsupported track file type {suffix!r} (use .npz, .npy or .pt)")

    def _load_torch(self, is_zip: bool) -> None:
        if not is_zip:
            raise TrackFileError(
                f"cannot read {self.path.name}: not a zip-format torch file (the legacy format, or not "
                "a torch file at all); re-save it with torch.save"
            )
        with zipfile.ZipFile(self.path) as archive:
            members = archive.infolist()
        declared = sum(info.file_size for info in members)
        if declared > self.max_bytes:
            raise TrackFileError(f"{self.path.name} unpacks to {declared} bytes, more than the limit of {self.max_bytes}")
        pickled = sum(info.file_size for info in members if info.filename.endswith(".pkl"))
        if pickled > _MAX_PICKLE_BYTES:  # unpickling builds Python objects: far more memory than bytes
            raise TrackFileError(
                f"{self.path.name} holds {pickled} bytes of pickled structure; a track file holds a few "
                f"tensors (at most {_MAX_PICKLE_BYTES} bytes of it)"
            )
        content = torch.load(self.path, map_location="cpu", weights_only=True)
        if isinstance(content, Mapping):
            self._content = {str(key): value for key, value in content.items()}
        else:
            self._content = {"": content}
            self.kind = "pt-object"

    def _check_header(self, handle: IO[bytes], what: str, available: int) -> tuple[tuple[int, ...], bool, np.dtype, int]:
        """Shape, order, dtype and data size from a .npy header, checked against the budget and the bytes there."""
        try:
            version = npy_format.read_magic(handle)
            header = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}.get(version)
            if header is not None:
                shape, fortran_order, dtype = header(handle)
        except Exception as error:  # numpy's ValueError, a bad zip stream, a header literal too deep to parse
            raise TrackFileError(f"cannot read {what}: bad .npy header: {_summary(error)}") from error
        if header is None:  # 3.0 only differs for structured dtypes, which tracks never are
            raise TrackFileError(f"{what}: unsupported .npy format version {version[0]}.{version[1]}")
        if dtype.hasobject:
            raise TrackFileError(f"{what} holds Python objects; only numeric arrays are read (no pickles)")
        if dtype.fields is not None or dtype.subdtype is not None:
            raise TrackFileError(f"{what} has a structured dtype {dtype}; expected plain numbers")
        if dtype.kind == "c":
            raise TrackFileError(f"{what}: complex values (dtype {dtype}) are not accepted, only real numbers")
        if dtype.kind not in "biuf":
            raise TrackFileError(f"{what} must be numeric, got dtype {dtype}")
        if any(isinstance(size, bool) or size < 0 for size in shape):
            raise TrackFileError(f"{what} declares an invalid shape {list(shape)}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > self._budget:
            raise TrackFileError(
                f"{what} declares shape {list(shape)} of {dtype} ({nbytes} bytes), more than the "
                f"limit of {self.max_bytes} bytes"
            )
        remaining = available - handle.tell()
        if remaining != nbytes:
            problem = "is truncated" if remaining < nbytes else "has extra bytes after the array"
            raise TrackFileError(
                f"{what} {problem}: its header declares shape {list(shape)} of {dtype} ({nbytes} bytes), "
                f"but {remaining} bytes follow"
            )
        return tuple(shape), fortran_order, dtype, nbytes

    def _header(self, name: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
        if name not in self._headers:
            info = self._members[name]
            with self._zip.open(info) as handle:
                self._headers[name] = self._check_header(handle, self.label(name), info.file_size)
        return self._headers[name]

    def label(self, name: str = "") -> str:
        return self.path.name if name == "" else f"'{name}' in {self.path.name}"

    @property
    def is_mapping(self) -> bool:
        """Whether the file holds named arrays (``.npz``, a ``.pt`` dict) rather than one object."""
        return self.kind in ("npz", "pt")

    @property
    def names(self) -> tuple[str, ...]:
        if self.kind == "npz":
            return tuple(self._members)
        if self.kind in ("pt", "pt-object"):
            return tuple(self._content)
        return ("",)

    def first_present(self, names: Sequence[str]) -> str | None:
        return next((name for name in names if name in self.names), None)

    def shape(self, name: str = "") -> tuple[int, ...] | None:
        """The shape, known before reading the data (``None`` for content that is not an array)."""
        if self.kind in ("npy", "npz"):
            return self._header(name)[0]
        value = self._content[name]
        return tuple(value.shape) if isinstance(value, (np.ndarray, torch.Tensor)) else None

    def read(self, name: str = "") -> Any:
        if self.kind not in ("npy", "npz"):
            return self._content[name]
        shape, fortran_order, dtype, nbytes = self._header(name)
        if nbytes > self._budget:
            raise TrackFileError(f"the arrays read from {self.path.name} exceed the limit of {self.max_bytes} bytes")
        self._budget -= nbytes
        opened = self._zip.open(self._members[name]) if self.kind == "npz" else open(self.path, "rb")
        with opened as handle:
            _skip_header(handle)
            return _read_data(handle, shape, fortran_order, dtype, nbytes, self.label(name))

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None


def _skip_header(handle: IO[bytes]) -> None:
    version = npy_format.read_magic(handle)
    reader = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    reader(handle)


def _read_data(handle: IO[bytes], shape: tuple[int, ...], fortran_order: bool, dtype: np.dtype,
               nbytes: int, what: str) -> np.ndarray:
    array = np.empty(math.prod(shape), dtype=dtype)
    buffer = memoryview(array.view(np.uint8))
    filled = 0
    while filled < nbytes:
        count = handle.readinto(buffer[filled:])
        if not count:
            raise TrackFileError(f"{what} is truncated: {filled} of {nbytes} data bytes")
        filled += count
    return array.reshape(shape, order="F" if fortran_order else "C")


@contextmanager
def open_array_file(path: Path, max_bytes: int = MAX_ARRAY_FILE_BYTES) -> Iterator[ArrayFile]:
    """Open an array file; errors opening it (and :func:`read_array`'s) are ``ValueError`` naming it.

    At most ``max_bytes`` of array data are read from it, in all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"track file not found: {path}")
    source = ArrayFile(path, max_bytes)
    try:
        _guarded(source, "", source._open)
        yield source
    finally:
        source.close()


def _guarded(source: ArrayFile, name: str, call: Callable[[], Any]) -> Any:
    """``call()``, with any failure that is not already a :class:`TrackFileError` turned into one naming the file."""
    try:
        return call()
    except TrackFileError:
        raise
    except Exception as error:  # corrupt content: zipfile, zlib, numpy and torch raise many types (some ValueError)
        raise TrackFileError(f"cannot read {source.label(name)}: {_summary(error)}") from error


def _summary(error: BaseException) -> str:
    """The exception type and the first line of its message, without terminal escapes, at most 200 characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    text = text.splitlines()[0] if text else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def read_array(source: ArrayFile, name: str = "", *, check_shape: Callable[[tuple[int, ...]], None] | None = None) -> Any:
    """``source.read(name)``, after ``check_shape(shape)`` where the file declares the shape before the data."""
    if check_shape is not None:
        shape = _guarded(source, name, lambda: source.shape(name))
        if shape is not None:
            check_shape(shape)
    return _guarded(source, name, lambda: source.read(name))


def read_array_file(path: Path) -> Any:
    """The array (``.npy``), dict of every array (``.npz``) or content (``.pt``/``.pth``) of ``path``.

    Loaders that need only some arrays use :func:`open_array_file` and read just those.
    """
    with open_array_file(path) as source:
        if not source.is_mapping:
            return read_array(source)
        return {name: read_array(source, name) for name in source.names}


def check_tracks_shape(shape: Sequence[int], what: str, batch_index: int = 0, channels: Sequence[int] = (2,)) -> None:
    """Raise unless ``shape`` is ``[T, N, C]`` or ``[B, T, N, C]`` with ``C`` in ``channels`` within the track limits."""
    shape = tuple(int(size) for size in shape)
    if len(shape) == 4:
        if not 0 <= batch_index < shape[0]:
            raise ValueError(f"{what}: batch index {batch_index} is out of range for batch size {shape[0]}")
        shape = shape[1:]
    elif len(shape) != 3:
        raise ValueError(f"{what} must have 3 or 4 dimensions, got shape {list(shape)}")
    if shape[-1] not in channels:
        expected = " or ".join(str(count) for count in channels)
        raise ValueError(f"{what} must end in an (x, y) axis of size {expected}, got {list(shape)}")
    num_frames, num_tracks = shape[:2]
    check_track_count(num_tracks)
    if num_frames == 0:
        raise ValueError(f"{what} have no frames")
    check_frame_count(num_frames, num_tracks)


def check_visibility_shape(shape: Sequence[int], what: str, batch_index: int = 0) -> None:
    """Raise unless ``shape`` is ``[T, N]`` or ``[B, T, N]`` (with room for ``batch_index``) within the track limits."""
    shape = tuple(int(size) for size in shape)
    if len(shape) == 3:
        if not 0 <= batch_index < shape[0]:
            raise ValueError(f"{what}: batch index {batch_index} is out of range for batch size {shape[0]}")
        shape = shape[1:]
    elif len(shape) != 2:
        raise ValueError(f"{what} must have 2 or 3 dimensions, got shape {list(shape)}")
    if shape[0] > MAX_FRAMES or shape[1] > MAX_TRACKS:
        raise ValueError(f"{what} has shape {list(shape)}, beyond {MAX_FRAMES} frames x {MAX_TRACKS} tracks")


def check_batch_index(batch_index: Any) -> int:
    if isinstance(batch_index, bool) or not isinstance(batch_index, (int, np.integer)):
        raise ValueError(f"batch_index must be an integer, got {batch_index!r}")
    return int(batch_index)


def tracks_from_arrays(
    tracks_array: Any,
    visibility_array: Any,
    *,
    width: int,
    height: int,
    fps: float,
    batch_index: int,
    what: str,
) -> TrackSet:
    """Pixel tracks (batch axis optional) and visibility (``None``: all visible; else boolean or exactly 0/1) to a track set.

    A tracker gives every point on every frame, so a point it marks not visible is occluded (specified)."""
    batch_index = check_batch_index(batch_index)
    tracks = coordinate_tensor(tracks_array, f"{what} tracks")
    check_tracks_shape(tracks.shape, f"{what} tracks", batch_index)
    tracks = tracks[batch_index] if tracks.ndim == 4 else tracks
    num_frames, num_tracks = int(tracks.shape[0]), int(tracks.shape[1])
    if visibility_array is None:
        visibility = torch.ones(num_frames, num_tracks, dtype=torch.bool)
    else:
        visibility = numeric_tensor(visibility_array, f"{what} visibility")
        if visibility.ndim == 3:
            if not 0 <= batch_index < visibility.shape[0]:
                raise ValueError(
                    f"{what} visibility: batch index {batch_index} is out of range for batch size {visibility.shape[0]}"
                )
            visibility = visibility[batch_index]
        if tuple(visibility.shape) != (num_frames, num_tracks):
            raise ValueError(
                f"{what} visibility has shape {list(visibility.shape)}, "
                f"expected [{num_frames}, {num_tracks}] (or with a batch axis) to match the tracks"
            )
        visibility = visibility_mask(visibility, (num_frames, num_tracks), f"{what} visibility")
    return TrackSet(tracks, visibility, width, height, fps, specified=torch.ones_like(visibility))
