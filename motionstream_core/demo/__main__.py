"""The embedded demo: stream a video from the shipped example image and tracks, no download.

    python -m motionstream_core.demo --output out/demo.png

loads the small demo model that ships in `motionstream_core/demo/assets/` (a Wan 2.1 DiT of the same
architecture, 128x128, trained end to end on synthetic sprite clips by
`motionstream_core.training.demo_recipe`), streams chunks with `StreamingSession`, decodes each
chunk as it arrives (the model's `PatchCodec` plus the shipped learned decoder, when it was trained
for the model's codec), writes an animated PNG (browsers play it) and prints the frames per second.

Options: --tracks (a tracks file in any format the `motion.formats` registry knows by suffix, e.g.
widget JSON), --image (a PNG or JPEG, or .npy uint8 [H, W, 3] or float in [0, 1]), --frames, --seed,
--no-sinks (the same cache without its sink frames, for comparison), --no-tracks (the null-motion
input), --motion-scale (motion guidance of the student, one more forward per step; 0 turns it off;
default: the model's), --model (another demo-format checkpoint), --pca-decoder (decode with the plain
PCA of the codec, without the learned decoder, for comparison), --scale (pixel repeat of the written video).

Every argument and input file is checked before the video is generated. A problem is reported as
one line, ``error: ...``, on stderr: exit code 2 for a bad argument or input (nothing was
generated), 1 for a failure while generating or writing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..codecs.learned_decoder import RefinedPatchCodec
from ..motion.formats import accepted_suffixes
from ..motion.geometry import rescale_tracks
from .animated_png import write_animated_png
from .model import DEFAULT_FRAMES, IMAGE_SUFFIXES, load_demo_image, load_demo_model, load_demo_tracks

# Every frame is kept (and written) at once: these bound the memory of one run (about 0.8 GB at most).
MAX_DEMO_FRAMES = 1_000
MAX_SCALE = 4
MAX_THREADS = 1_024


class UsageError(Exception):
    """A bad argument or input file, found before anything is generated (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage and exit; main reports one line instead
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(description="Stream a video with the embedded demo model and write an animated PNG.")
    parser.add_argument("--output", default="out/demo.png", help="animated PNG to write (.png)")
    parser.add_argument("--tracks", help=f"tracks file, read by its suffix: {', '.join(accepted_suffixes())} "
                                         "(default: the shipped example)")
    parser.add_argument("--image", help="first frame: a PNG or JPEG (.png, .jpg, .jpeg; converted to RGB) or a .npy "
                                        "array [H, W, 3], uint8 or float in [0, 1] (default: the shipped example)")
    parser.add_argument("--model", help="demo-format weights, .safetensors (default: the shipped model)")
    parser.add_argument("--frames", type=int, help=f"video frames to stream, 1 to {MAX_DEMO_FRAMES} "
                                                   f"(default: the tracks' length, or {DEFAULT_FRAMES})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pca-decoder", action="store_true",
                        help="decode with the codec's plain PCA decode, not the learned decoder (comparison)")
    parser.add_argument("--no-sinks", action="store_true", help="drop the sink frames from the cache (comparison)")
    parser.add_argument("--no-tracks", action="store_true", help="stream with the null-motion input")
    parser.add_argument("--motion-scale", type=float,
                        help="motion guidance wm of the student (0: off, one forward per step; default: the model's setting)")
    parser.add_argument("--scale", type=int, default=2, help=f"integer pixel repeat of the written video, 1 to {MAX_SCALE}")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except UsageError as error:
        _report(error)
        return 2
    except (ValueError, OSError) as error:
        _report(error)
        return 1


def _report(error: BaseException) -> None:
    print(f"error: {' '.join(str(error).split())}", file=sys.stderr)


def _run(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.frames is not None:
        _check_range("--frames", args.frames, 1, MAX_DEMO_FRAMES)
    _check_range("--scale", args.scale, 1, MAX_SCALE)
    if args.threads is not None:
        _check_range("--threads", args.threads, 1, MAX_THREADS)
    if args.motion_scale is not None and not math.isfinite(args.motion_scale):
        raise UsageError(f"--motion-scale must be a finite number, got {args.motion_scale}")
    if args.no_tracks and args.tracks:
        raise UsageError("--tracks and --no-tracks exclude each other")
    if args.image is not None and Path(args.image).suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"--image {args.image}: expected a PNG (.png), JPEG (.jpg, .jpeg) or .npy file")
    output = check_output_path(args.output)
    if args.threads:
        torch.set_num_threads(args.threads)

    image = _load("--image", args.image, load_demo_image)
    tracks = None if args.no_tracks else _load("--tracks", args.tracks, load_demo_tracks)
    if args.frames is not None:
        num_frames = args.frames
    elif tracks is not None:
        num_frames = tracks.num_frames
        if num_frames > MAX_DEMO_FRAMES:
            raise UsageError(f"the tracks have {num_frames} frames, more than the demo streams ({MAX_DEMO_FRAMES}); "
                             "pass --frames")
    else:
        num_frames = DEFAULT_FRAMES
    decoder = "pca" if args.pca_decoder else None
    demo = _load("--model", args.model, lambda path: load_demo_model(path, decoder=decoder))
    if args.motion_scale is not None:
        demo.streaming = dataclasses.replace(demo.streaming, motion_scale=args.motion_scale)
    if tuple(image.shape[1:]) != (demo.size, demo.size):
        image = F.interpolate(image[None], size=(demo.size, demo.size), mode="bilinear", align_corners=False)[0]
    if tracks is not None:
        try:
            tracks = rescale_tracks(tracks, demo.size, demo.size)
        except ValueError as error:
            raise UsageError(f"--tracks {args.tracks or '(the shipped example)'}: {error}") from None

    result = demo.stream(image, tracks, num_frames, seed=args.seed, sinks=not args.no_sinks)
    frames = (result.frames.clamp(0, 1) * 255).round().to(torch.uint8)  # repeat after, in a quarter of the memory
    if args.scale > 1:
        frames = frames.repeat_interleave(args.scale, 2).repeat_interleave(args.scale, 3)
    path = write_animated_png(output, frames.permute(0, 2, 3, 1).numpy(), fps=demo.fps)
    print(json.dumps({
        "output": str(path), "frames": result.frames.shape[0], "size": demo.size, "seconds": round(result.seconds, 3),
        "frames_per_second": round(result.frames_per_second, 1), "first_chunk_ms": round(1000 * result.first_chunk_seconds, 1),
        "realtime_fps": demo.fps, "sinks": not args.no_sinks, "tracks": tracks is not None,
        "motion_scale": demo.streaming.motion_scale,
        "decoder": "learned" if isinstance(demo.codec, RefinedPatchCodec) else "pca",
    }))
    print(f"wrote {path}: {result.frames.shape[0]} frames at {result.frames_per_second:.1f} frames/s "
          f"(model + decoding, {torch.get_num_threads()} threads; real time is {demo.fps:g} frames/s)")
    return 0


def _check_range(flag: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise UsageError(f"{flag} must be in [{low}, {high}], got {value}")


def _load(flag: str, value: str | None, loader: Callable[[Any], Any]) -> Any:
    try:
        return loader(value)
    except (ValueError, OSError) as error:
        raise UsageError(f"{flag} {value or '(the shipped default)'}: {error}") from None


def check_output_path(value: str) -> Path:
    """The --output path, checked before any work: a .png name, not a folder, in a folder this process can write.

    Missing folders are not created here (the writer creates them); the nearest existing one is
    checked instead, by creating and removing a probe file in it.
    """
    path = Path(value)
    if path.suffix.lower() != ".png":
        raise UsageError(f"--output {value}: the demo writes an animated PNG; give a file name ending in .png")
    try:
        if path.is_dir():
            raise UsageError(f"--output {value} is a folder; give a file name ending in .png")
        if path.exists() and not path.is_file():
            raise UsageError(f"--output {value} exists and is not a regular file")
        folder = path.parent
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir():
            raise UsageError(f"--output {value}: {folder} is not a folder")
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.probe-"):
            pass
    except OSError as error:
        raise UsageError(f"--output {value}: cannot write there: {error.strerror or error}") from None
    return path


if __name__ == "__main__":
    raise SystemExit(main())
