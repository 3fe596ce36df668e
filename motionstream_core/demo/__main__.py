"""The embedded demo: stream a video from the shipped example image and tracks, no download.

    python -m motionstream_core.demo --output out/demo.png

loads the small demo model that ships in `motionstream_core/demo/assets/` (a Wan 2.1 DiT of the same
architecture, 128x128, trained end to end on synthetic sprite clips by
`motionstream_core.training.demo_recipe`), streams chunks with `StreamingSession`, decodes each
chunk with the model's `PatchCodec` as it arrives, writes an animated PNG (browsers play it) and
prints the frames per second.

Options: --tracks (a tracks file in any format the `motion.formats` registry knows by suffix, e.g.
widget JSON), --image (.npy uint8 [H, W, 3] or float in [0, 1]), --frames, --seed, --no-sinks (the
same cache without its sink frames, for comparison), --no-tracks (the null-motion input),
--motion-scale (motion guidance of the student, one more forward per step; 0 turns it off;
default: the model's), --model (another demo-format checkpoint), --scale (pixel repeat of the
written video).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch
import torch.nn.functional as F

from ..motion.formats import accepted_suffixes
from ..motion.geometry import rescale_tracks
from .animated_png import write_animated_png
from .model import DEFAULT_FRAMES, load_demo_image, load_demo_model, load_demo_tracks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Stream a video with the embedded demo model and write an animated PNG.")
    parser.add_argument("--output", default="out/demo.png", help="animated PNG to write")
    parser.add_argument("--tracks", help=f"tracks file, read by its suffix: {', '.join(accepted_suffixes())} "
                                         "(default: the shipped example)")
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
    path = write_animated_png(args.output, frames, fps=demo.fps)
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
