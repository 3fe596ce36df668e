"""Speed of the synthetic sprite benchmark: clip generation and scoring, on the CPU.

Generation renders ``--clips`` clips (default 128x128, 33 frames, 1-3 sprites)
one after another; scoring runs each scorer on the rendered frames of
``--score-clips`` of them (the ground truth, so every sprite is found).

    python bench/bench_synthetic.py
    python bench/bench_synthetic.py --threads 2 --frames 81 --max-sprites 6
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from motionstream_core.synthetic import (  # noqa: E402
    SyntheticMotionConfig, colour_drift, content_drift, generate_clip, locate_sprites, score_track_following,
)


def timed(function, items):
    start = time.perf_counter()
    for item in items:
        function(item)
    return (time.perf_counter() - start) / len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--max-sprites", type=int, default=3)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--score-clips", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = SyntheticMotionConfig(
        width=args.size, height=args.size, num_frames=args.frames, max_sprites=args.max_sprites
    )
    generate_clip(config, 0)  # warm-up

    seconds = timed(lambda seed: generate_clip(config, seed), range(args.clips))
    print(
        f"generate_clip {args.size}x{args.size}x{args.frames} frames, 1-{args.max_sprites} sprites, "
        f"{args.threads} thread(s): {1 / seconds:7.1f} clips/s ({seconds * 1e3:.1f} ms/clip, "
        f"{args.frames / seconds:,.0f} frames/s)",
        flush=True,
    )

    clips = [generate_clip(config, seed) for seed in range(args.score_clips)]
    sprites = sum(clip.metadata.num_sprites for clip in clips) / len(clips)
    scorers = {
        "locate_sprites": lambda clip: locate_sprites(clip.frames, clip),
        "score_track_following": lambda clip: score_track_following(clip.frames, clip),
        "colour_drift": lambda clip: colour_drift(clip.frames, clip=clip),
        "content_drift": lambda clip: content_drift(clip.frames, clip=clip),
    }
    for name, scorer in scorers.items():
        seconds = timed(scorer, clips)
        print(
            f"{name:22s} {args.frames} frames, {sprites:.1f} sprites/clip on average: "
            f"{seconds * 1e3:7.1f} ms/clip ({args.frames / seconds:,.0f} frames/s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
