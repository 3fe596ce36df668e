"""A stream's frames written to a video file as they come (PyAV), so that any length runs in constant memory.

`open_output_video` picks a fresh `<prefix>_<counter:05>_.<ext>` in ComfyUI's output folder and returns a
`VideoFileWriter`; the sampler `write`s each decoded chunk and `close`s it when the stream ends, is stopped or
is interrupted; `video_value` turns the file into ComfyUI's core VIDEO value.

What the writer guarantees:
- Constant memory: each chunk is converted, encoded and muxed before `write` returns; nothing is kept per
  frame. The encoder holds a bounded look-ahead, and the MP4 is fragmented (one fragment per keyframe, every
  ~2 s), so the muxer's index does not grow with the length either.
- No half-written file under the final name: frames go to `<name>.partial`, renamed into place by `close`.
  A killed process leaves only the `.partial` (playable up to its last complete fragment).
- `close` always finalises what was written: on a normal end, on Stop, on an interrupt and on an error in
  the caller alike (also as a context manager, whatever the exception). With no frame written it leaves no
  file. `discard` drops the file instead.
- Even sizes: yuv420p (what players expect) needs an even width and height, so a frame with an odd one is
  padded by repeating its last row/column: the file is up to one pixel larger, every generated pixel is kept.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
from fractions import Fraction
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from . import host

# MP4 written as fragments: the muxer keeps no per-frame index, and a cut-off file stays readable.
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+default_base_moof+use_metadata_tags"}
KEYFRAME_SECONDS = 2.0  # keyframe (and so MP4 fragment) interval


@dataclasses.dataclass(frozen=True)
class VideoFormat:
    """An encoder, its container and settings. Constant quality where the encoder has it, else `bits_per_pixel`."""

    name: str
    encoder: str  # FFmpeg's encoder name
    container: str  # FFmpeg's muxer name
    extension: str
    encoder_options: Mapping[str, str] = dataclasses.field(default_factory=dict)
    container_options: Mapping[str, str] = dataclasses.field(default_factory=dict)
    bits_per_pixel: float | None = None  # bit rate per pixel per frame, for encoders without constant quality
    pix_fmt: str = "yuv420p"


# The candidates, best first: the first one the installed PyAV can encode is the default.
VIDEO_FORMATS = (
    VideoFormat("h264", "libx264", "mp4", "mp4", {"crf": "18", "preset": "medium"}, FRAGMENTED_MP4),
    VideoFormat("h264", "libopenh264", "mp4", "mp4", {}, FRAGMENTED_MP4, bits_per_pixel=0.3),
    VideoFormat("vp9", "libvpx-vp9", "webm", "webm", {"crf": "30", "b": "0", "deadline": "good", "cpu-used": "5",
                                                        "row-mt": "1"}),
    VideoFormat("mpeg4", "mpeg4", "mp4", "mp4", {"flags": "+qscale", "global_quality": str(3 * 118)}, FRAGMENTED_MP4),
)


def import_av():
    """PyAV, which ComfyUI ships; a clear error where it is missing."""
    try:
        import av
    except ImportError as error:
        raise ImportError("writing video files needs PyAV: pip install av (ComfyUI ships it)") from error
    return av


def can_encode(video_format: VideoFormat) -> bool:
    av = import_av()
    try:
        av.codec.Codec(video_format.encoder, "w")
    except Exception:  # PyAV raises UnknownCodecError (a ValueError) or FFmpegError, by version
        return False
    return video_format.container in av.formats_available


def available_video_formats() -> list[VideoFormat]:
    return [video_format for video_format in VIDEO_FORMATS if can_encode(video_format)]


def choose_video_format(name: str | None = None) -> VideoFormat:
    """The first available candidate named `name` ("h264", "vp9", "mpeg4"), or of all of them for None/"auto"."""
    wanted = None if name in (None, "auto") else name
    if wanted is not None and wanted not in {video_format.name for video_format in VIDEO_FORMATS}:
        raise ValueError(f"unknown video format {name!r}; known: {sorted({f.name for f in VIDEO_FORMATS})}")
    for video_format in available_video_formats():
        if wanted in (None, video_format.name):
            return video_format
    available = sorted({f.name for f in available_video_formats()})
    raise RuntimeError(f"this PyAV cannot encode {wanted or 'any of ' + str([f.encoder for f in VIDEO_FORMATS])}"
                       f" (available: {available or 'none'})")


def frame_rate(fps: float | Fraction) -> Fraction:
    """The stream's fps as the exact rational the file stores (29.97 -> 2997/100, 16 -> 16/1)."""
    if not (math.isfinite(float(fps)) and fps > 0):
        raise ValueError(f"fps must be positive and finite, got {fps}")
    rate = fps if isinstance(fps, Fraction) else Fraction(float(fps)).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps {fps} is too small")
    return rate


def to_rgb24(frames) -> np.ndarray:
    """[T, H, W, 3] (or one [H, W, 3]) float in [0, 1] or uint8, a tensor or an array -> uint8 array [T, H, W, 3]."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach()
        if frames.dtype != torch.uint8:
            if not frames.is_floating_point():
                raise TypeError(f"frames must be float in [0, 1] or uint8, got {frames.dtype}")
            frames = (frames.float().clamp(0, 1) * 255).round().to(torch.uint8)
        frames = frames.cpu().numpy()
    else:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8:
            if frames.dtype.kind != "f":
                raise TypeError(f"frames must be float in [0, 1] or uint8, got {frames.dtype}")
            frames = np.round(np.clip(frames, 0, 1) * 255).astype(np.uint8)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3] (channels last, like ComfyUI's IMAGE), got {frames.shape}")
    return frames


def even_size(height: int, width: int) -> tuple[int, int]:
    """The size in the file: yuv420p needs an even width and height, so odd ones grow by one."""
    return height + height % 2, width + width % 2


def pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Repeats the last row/column of frames [T, H, W, 3] whose height/width is odd."""
    height, width = frames.shape[1:3]
    if height % 2 == 0 and width % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def partial_path(path: str | Path) -> Path:
    """Where a file is written until it is finalised."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


class VideoFileWriter:
    """Writes frames to `path` chunk by chunk, at `fps`, in `video_format` (a VideoFormat, its name, or None: the
    first available). `metadata` (str, or values stored as JSON) goes into the container, like ComfyUI's workflow.

        with VideoFileWriter("out.mp4", fps=16) as writer:
            for chunk in stream:          # [t, H, W, 3] in [0, 1] or uint8
                writer.write(chunk)
        writer.path, writer.frames_written

    The file is opened at the first `write`, which sets the frame size. `close` returns the final path (None
    if no frame was written); it is safe to call more than once and from another thread than `write`."""

    def __init__(self, path: str | Path, fps: float | Fraction, video_format: VideoFormat | str | None = None,
                 metadata: Mapping[str, object] | None = None):
        self.path = Path(path)
        self.partial_path = partial_path(self.path)
        self.fps = frame_rate(fps)
        self.video_format = video_format if isinstance(video_format, VideoFormat) else choose_video_format(video_format)
        if self.path.suffix.lower() != "." + self.video_format.extension:
            raise ValueError(f"{self.path.name}: a {self.video_format.name} file must end in .{self.video_format.extension}")
        self.metadata = {key: value if isinstance(value, str) else json.dumps(value) for key, value in (metadata or {}).items()}
        self.frames_written = 0
        self.frame_size: tuple[int, int] | None = None  # (height, width) of the frames given
        self.closed = False
        self.result: Path | None = None  # the final path, once closed with frames
        self.output_file: host.OutputFile | None = None  # set by open_output_video
        self._container = self._stream = None
        self._lock = threading.Lock()

    def write(self, frames) -> None:
        """Encodes frames [T, H, W, 3] (float in [0, 1] or uint8; one frame [H, W, 3] too) and appends them."""
        av = import_av()
        frames = to_rgb24(frames)
        with self._lock:
            if self.closed:
                raise RuntimeError(f"{self.path.name} is closed")
            if self._container is None:
                self._open(*frames.shape[1:3])
            elif tuple(frames.shape[1:3]) != self.frame_size:
                raise ValueError(f"frames of {tuple(frames.shape[1:3])} in a video of {self.frame_size} (height, width)")
            for frame in pad_to_even(frames):
                picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                picture.pts = self.frames_written
                self._container.mux(self._stream.encode(picture))
                self.frames_written += 1

    def _open(self, height: int, width: int) -> None:
        av = import_av()
        video_format = self.video_format
        self.frame_size = (height, width)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(str(self.partial_path), mode="w", format=video_format.container,
                            options=dict(video_format.container_options))
        try:
            for key, value in self.metadata.items():
                container.metadata[key] = value
            stream = container.add_stream(video_format.encoder, rate=self.fps)
            stream.height, stream.width = even_size(height, width)
            stream.pix_fmt = video_format.pix_fmt
            stream.codec_context.time_base = 1 / self.fps
            stream.codec_context.gop_size = max(1, round(KEYFRAME_SECONDS * float(self.fps)))
            if video_format.bits_per_pixel is not None:
                stream.bit_rate = max(1, round(video_format.bits_per_pixel * stream.width * stream.height * float(self.fps)))
            stream.options = dict(video_format.encoder_options)
        except BaseException:
            container.close()
            raise
        self._container, self._stream = container, stream

    def close(self) -> Path | None:
        """Finalises the file: flushes the encoder, closes the container and renames `.partial` into place.
        Returns the final path, or None when no frame was written (then no file is left)."""
        with self._lock:
            if self.closed:
                return self.result
            self.closed = True
            container, self._container = self._container, None
            try:
                if container is not None:
                    try:
                        container.mux(self._stream.encode())  # the frames the encoder still holds
                    finally:
                        container.close()
            except BaseException:
                self.partial_path.unlink(missing_ok=True)
                raise
            if not self.frames_written:
                self.partial_path.unlink(missing_ok=True)
                return None
            os.replace(self.partial_path, self.path)
            self.result = self.path
            return self.result

    def discard(self) -> None:
        """Stops writing and leaves no file."""
        with self._lock:
            self.closed = True
            container, self._container = self._container, None
            try:
                if container is not None:
                    container.close()
            finally:
                self.partial_path.unlink(missing_ok=True)

    def __enter__(self) -> VideoFileWriter:
        return self

    def __exit__(self, *exception) -> None:
        # Stop, interrupt or error alike: the frames written so far are a valid video and are kept.
        self.close()


def open_output_video(filename_prefix: str, fps: float | Fraction, video_format: VideoFormat | str | None = None,
                      width: int = 0, height: int = 0, metadata: Mapping[str, object] | None = None) -> VideoFileWriter:
    """A writer to a fresh `<filename_prefix>_<counter:05>_.<ext>` in ComfyUI's output folder (its filename
    counter; `width`/`height` fill %width%/%height% in the prefix). `writer.output_file` names the file for the UI.
    The `.partial` is created here, so the name is taken at once."""
    video_format = video_format if isinstance(video_format, VideoFormat) else choose_video_format(video_format)
    while True:
        output = host.new_output_file(filename_prefix, video_format.extension, width, height)
        try:
            os.close(os.open(partial_path(output.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:  # another writer took the name in between: the counter moves past it
            continue
        break
    writer = VideoFileWriter(output.path, fps, video_format, metadata)
    writer.output_file = output
    return writer


def video_value(path: str | Path):
    """ComfyUI's core VIDEO value for a written file (VideoFromFile inside ComfyUI, `host.VideoFile` outside)."""
    return host.video_from_file(str(path))


def preview_ui(output_file: host.OutputFile) -> dict:
    """A node's UI result that shows the finished file in ComfyUI's video preview (like its SaveVideo node)."""
    return {"images": [output_file.ui_entry()], "animated": (True,)}
