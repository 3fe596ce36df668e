"""The embedded demo: stream a video from the shipped example image and tracks, no download.

    python -m motionstream_core.demo --output out/demo.png

loads the small demo model that ships in `motionstream_core/assets/` (a Wan 2.1 DiT of the same
architecture, 128x128, trained end to end on synthetic sprite clips by
`motionstream_core.training.demo_recipe`), streams chunks with `StreamingSession`, decodes each
chunk with the model's `PatchCodec` as it arrives, writes an animated PNG (browsers play it) and
prints the frames per second. Only numpy and torch are needed.

Options: --tracks (widget JSON, see `track_formats`), --image (.npy uint8 [H, W, 3] or float in
[0, 1]), --frames, --seed, --no-sinks (the same cache without its sink frames, for comparison),
--no-tracks (the null-motion input), --motion-scale (motion guidance of the student, one more
forward per step; 0 turns it off; default: the model's), --model (another demo-format checkpoint),
--scale (pixel repeat of the written video).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import struct
import time
import zlib
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .patch_codec import PatchCodec
from .session import StreamConditions, StreamingConfig, StreamingSession
from .track_formats import tracks_from_widget_json
from .track_geometry import rescale_tracks
from .track_head import TrackChannelProvider, TrackHeadInputs, track_head_inputs
from .tracks import TrackSet
from .training.checkpoints import load_weights
from .training.conditioned_model import TrackConditionedDiT
from .weights import read_metadata

ASSETS = "assets"
MODEL_FILE = "demo_model.safetensors"
IMAGE_FILE = "demo_image.npy"
TRACKS_FILE = "demo_tracks.json"
DEFAULT_FRAMES = 64


def asset_path(name: str) -> Path:
    return Path(str(resources.files("motionstream_core").joinpath(ASSETS, name)))


@dataclasses.dataclass
class StreamResult:
    frames: torch.Tensor  # [T, 3, H, W] in [0, 1]
    seconds: float  # generation + decoding, wall clock
    first_chunk_seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.frames.shape[0] / self.seconds if self.seconds > 0 else math.inf


@dataclasses.dataclass
class DemoModel:
    model: TrackConditionedDiT
    streaming: StreamingConfig
    codec: PatchCodec
    size: int
    fps: float
    renumber_track_ids: bool = True

    @property
    def latent_size(self) -> int:
        return self.size // self.codec.factor

    @property
    def text_dim(self) -> int:
        return self.model.config.text_dim

    def text(self) -> torch.Tensor:
        """The fixed (all-zero) text embedding the demo model was trained with."""
        return torch.zeros(1, 1, self.text_dim)

    def first_frame_latents(self, image: torch.Tensor) -> torch.Tensor:
        """Image [3, H, W] in [0, 1] -> the encoding of it followed by a gray frame [1, C, 2, h, w]."""
        frames = torch.stack((image, torch.full_like(image, 0.5)))
        return self.codec.encode_images(frames)

    def track_provider(self, tracks: TrackSet | None) -> TrackChannelProvider:
        """Track channels of a window of latent frames (one latent frame per video frame); zeros without tracks.

        The demo model was trained with the synthetic clips' own track ids (0 .. N-1), so tracks
        are renumbered 0 .. N-1 in the order given (the widget's ids are arbitrary labels).
        """
        inputs = None
        if tracks is not None:
            inputs = track_head_inputs(tracks)
            if self.renumber_track_ids:
                inputs = inputs._replace(track_ids=torch.arange(tracks.num_tracks, dtype=torch.int64)[None])

        def window(start: int, stop: int) -> TrackHeadInputs | None:
            if inputs is None:
                return None
            return TrackHeadInputs(inputs.coords[:, start:stop], inputs.visibility[:, start:stop], inputs.track_ids)

        return TrackChannelProvider(self.model.track_encoder, window, self.latent_size, self.latent_size)

    def session(self, seed: int = 0, sinks: bool = True) -> StreamingSession:
        streaming = self.streaming if sinks else dataclasses.replace(self.streaming, sink_frames=0)
        return StreamingSession(
            self.model.transformer, streaming, latent_height=self.latent_size, latent_width=self.latent_size, seed=seed
        )

    @torch.no_grad()
    def stream(
        self,
        image: torch.Tensor,
        tracks: TrackSet | None,
        num_frames: int,
        seed: int = 0,
        sinks: bool = True,
        on_frames: Callable[[torch.Tensor], None] | None = None,
        keep_frames: bool = True,
    ) -> StreamResult:
        """Streams `num_frames` video frames from `image` [3, H, W] in [0, 1] following `tracks`.

        Each chunk is decoded as soon as it is generated (`on_frames` gets [t, 3, H, W]); the
        time counts both. With `keep_frames=False` only the frame count is kept (long rollouts).
        """
        if tuple(image.shape) != (3, self.size, self.size):
            raise ValueError(f"the demo model takes a 3x{self.size}x{self.size} image, got {tuple(image.shape)}")
        session = self.session(seed, sinks)
        began = time.perf_counter()
        session.start(StreamConditions(
            text=self.text(), first_frame_latents=self.first_frame_latents(image),
            motion_providers=[self.track_provider(tracks)],
        ))
        frames, produced, first_chunk = [], 0, None
        while produced < num_frames:
            chunk = session.next_chunk()
            decoded = self.codec.decode_images(chunk.latents)[: num_frames - produced]
            produced += decoded.shape[0]
            if first_chunk is None:
                first_chunk = time.perf_counter() - began
            if on_frames is not None:
                on_frames(decoded)
            if keep_frames:
                frames.append(decoded)
        seconds = time.perf_counter() - began
        video = torch.cat(frames) if frames else torch.zeros(0, 3, self.size, self.size)
        return StreamResult(video, seconds, first_chunk or 0.0)


def load_demo_model(path: str | Path | None = None, dtype: torch.dtype = torch.float32) -> DemoModel:
    """The shipped demo model (or another file the demo recipe wrote)."""
    path = Path(path) if path is not None else asset_path(MODEL_FILE)
    metadata = read_metadata(path)
    if "codec" not in metadata:
        raise ValueError(f"{path} is not a demo model: it has no codec in its metadata")
    model, streaming = load_weights(path, dtype=dtype)
    if model.track_encoder is None or streaming is None:
        raise ValueError(f"{path} is not a demo model: it needs a track head and a streaming config")
    model.eval().requires_grad_(False)
    return DemoModel(
        model=model, streaming=streaming, codec=PatchCodec.from_json(metadata["codec"]),
        size=int(metadata.get("demo_size", 128)), fps=float(metadata.get("demo_fps", 16.0)),
        renumber_track_ids=metadata.get("track_ids", "renumber") == "renumber",
    )


def load_demo_image(path: str | Path | None = None) -> torch.Tensor:
    """An image [3, H, W] in [0, 1] from .npy ([H, W, 3] uint8, or float in [0, 1])."""
    array = np.load(Path(path) if path is not None else asset_path(IMAGE_FILE))
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"the image must be [H, W, 3], got {array.shape}")
    image = torch.from_numpy(np.ascontiguousarray(array))
    image = image.float() / 255.0 if array.dtype == np.uint8 else image.float().clamp(0, 1)
    return image.permute(2, 0, 1).contiguous()


def load_demo_tracks(path: str | Path | None = None) -> TrackSet:
    path = Path(path) if path is not None else asset_path(TRACKS_FILE)
    return tracks_from_widget_json(path.read_text())


# --- animated PNG (APNG), stdlib only ---


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_apng(path: str | Path, frames: np.ndarray | torch.Tensor, fps: float = 16.0) -> Path:
    """Writes frames [T, H, W, 3] uint8 (or [T, 3, H, W] float in [0, 1]) as an endlessly looping APNG."""
    if isinstance(frames, torch.Tensor):
        frames = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be [T, H, W, 3], got {frames.shape}")
    count, height, width, _ = frames.shape
    delay_num, delay_den = 1000, max(1, int(round(fps * 1000)))
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))]
    out.append(_chunk(b"acTL", struct.pack(">II", count, 0)))
    sequence = 0
    for index, frame in enumerate(frames):
        out.append(_chunk(b"fcTL", struct.pack(">IIIIIHHBB", sequence, width, height, 0, 0, delay_num, delay_den, 0, 0)))
        sequence += 1
        rows = np.concatenate((np.zeros((height, 1), np.uint8), frame.reshape(height, width * 3)), axis=1)
        data = zlib.compress(rows.tobytes(), 6)
        if index == 0:
            out.append(_chunk(b"IDAT", data))
        else:
            out.append(_chunk(b"fdAT", struct.pack(">I", sequence) + data))
            sequence += 1
    out.append(_chunk(b"IEND", b""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")  # renamed into place, so no half-written file remains
    try:
        partial.write_bytes(b"".join(out))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def read_apng_info(path: str | Path) -> dict:
    """Frame count, size and chunk sequence check of an APNG written by `write_apng` (for tests)."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    position, kinds, info = 8, [], {}
    while position < len(data):
        length = struct.unpack(">I", data[position:position + 4])[0]
        kind = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        crc = struct.unpack(">I", data[position + 8 + length:position + 12 + length])[0]
        if crc != zlib.crc32(kind + body) & 0xFFFFFFFF:
            raise ValueError(f"bad CRC in chunk {kind!r}")
        kinds.append(kind)
        if kind == b"IHDR":
            info["width"], info["height"] = struct.unpack(">II", body[:8])
        elif kind == b"acTL":
            info["num_frames"], info["num_plays"] = struct.unpack(">II", body)
        position += 12 + length
    info["chunks"] = kinds
    info["frame_controls"] = kinds.count(b"fcTL")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Stream a video with the embedded demo model and write an animated PNG.")
    parser.add_argument("--output", default="out/demo.png", help="animated PNG to write")
    parser.add_argument("--tracks", help="widget JSON tracks (default: the shipped example)")
    parser.add_argument("--image", help=".npy first frame [H, W, 3] (default: the shipped example)")
    parser.add_argument("--model", help="demo-format weights (default: the shipped model)")
    parser.add_argument("--frames", type=int, help=f"video frames to stream (default: the tracks' length, or {DEFAULT_FRAMES})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-sinks", action="store_true", help="drop the sink frames from the cache (comparison)")
    parser.add_argument("--no-tracks", action="store_true", help="stream with the null-motion input")
    parser.add_argument("--motion-scale", type=float,
                        help="motion guidance wm of the student (0: off, one forward per step; default: the model's setting)")
    parser.add_argument("--scale", type=int, default=2, help="integer pixel repeat of the written video")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    demo = load_demo_model(args.model)
    if args.motion_scale is not None:
        demo.streaming = dataclasses.replace(demo.streaming, motion_scale=args.motion_scale)
    image = load_demo_image(args.image)
    if tuple(image.shape[1:]) != (demo.size, demo.size):
        image = F.interpolate(image[None], size=(demo.size, demo.size), mode="bilinear", align_corners=False)[0]
    tracks = None if args.no_tracks else rescale_tracks(load_demo_tracks(args.tracks), demo.size, demo.size)
    num_frames = args.frames or (tracks.num_frames if tracks is not None else DEFAULT_FRAMES)
    result = demo.stream(image, tracks, num_frames, seed=args.seed, sinks=not args.no_sinks)
    frames = result.frames
    if args.scale > 1:
        frames = frames.repeat_interleave(args.scale, 2).repeat_interleave(args.scale, 3)
    path = write_apng(args.output, frames, fps=demo.fps)
    print(json.dumps({
        "output": str(path), "frames": result.frames.shape[0], "size": demo.size, "seconds": round(result.seconds, 3),
        "frames_per_second": round(result.frames_per_second, 1), "first_chunk_ms": round(1000 * result.first_chunk_seconds, 1),
        "realtime_fps": demo.fps, "sinks": not args.no_sinks, "tracks": tracks is not None,
        "motion_scale": demo.streaming.motion_scale,
    }))
    print(f"wrote {path}: {result.frames.shape[0]} frames at {result.frames_per_second:.1f} frames/s "
          f"(model + decoding, {torch.get_num_threads()} threads; real time is {demo.fps:g} frames/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
