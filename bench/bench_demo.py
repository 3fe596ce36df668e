"""Acceptance figures of the embedded demo model, on the CPU.

1. Track following on held-out synthetic clips at 128x128 (seeds no training clip uses): the
   student streams each clip from its first frame with the clip's tracks, and with its tracks
   removed (the null-motion input, all-zero track channels); EPE of each (`score_track_following`,
   pixels) and their ratio. Goals: EPE with tracks <= 4 px, and >= 5x lower than without.
2. Drift over a --rollout-chunks rollout (1,000 by default: 2,998 frames) of a held-out clip
   whose tracks span the whole rollout, with the sink frames and without them (same cache, same
   window): colour and content drift of the background (`colour_drift`, `content_drift`, mean
   over the last quarter of the frames) and their ratios. Goal: with sinks <= 1/3 of without.
3. Streaming speed: frames/s of the main job (generation + decoding, chunk by chunk) on the CPU.

    python bench/bench_demo.py
    python bench/bench_demo.py --model runs/demo/ode_init.safetensors --clips 8 --rollout-chunks 200
    python bench/bench_demo.py --clip-set validation --skip drift speed --streaming '{"motion_scale": 1.5}'
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from motionstream_core.demo import load_demo_image, load_demo_model, load_demo_tracks  # noqa: E402
from motionstream_core.synthetic import (  # noqa: E402
    SyntheticMotionConfig, clip_seed, colour_drift, content_drift, generate_clip, score_track_following,
)

# Dataset seeds of the track-following clips. Training clips come from seed 0 (and the codec's from
# 1_000_003); these are disjoint. Checkpoints are chosen on "validation" so that the reported
# "held-out" figures stay unbiased.
CLIP_SETS = {"held-out": 424_242, "validation": 373_737}
ROLLOUT_DATASET_SEED = 515_151


def nanmean(values):
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def track_following(demo, clips: int, frames: int, seed: int, dataset_seed: int = CLIP_SETS["held-out"]):
    config = SyntheticMotionConfig(width=demo.size, height=demo.size, num_frames=frames, fps=demo.fps)
    with_tracks, without_tracks, lost = [], [], []
    for index in range(clips):
        clip = generate_clip(config, clip_seed(dataset_seed, index))
        guided = demo.stream(clip.frames[0], clip.tracks, frames, seed=seed + index)
        free = demo.stream(clip.frames[0], None, frames, seed=seed + index)
        score = score_track_following(guided.frames, clip)
        with_tracks.append(score.epe)
        lost.append(score.lost_fraction)
        without_tracks.append(score_track_following(free.frames, clip).epe)
    return nanmean(with_tracks), nanmean(without_tracks), nanmean(lost), with_tracks, without_tracks


def drift(demo, chunks: int, seed: int):
    blocks = demo.streaming.block_frames
    frames = sum(blocks[min(i, len(blocks) - 1)] for i in range(chunks))
    config = SyntheticMotionConfig(width=demo.size, height=demo.size, num_frames=frames, fps=demo.fps)
    clip = generate_clip(config, clip_seed(ROLLOUT_DATASET_SEED, 0))
    results = {}
    for sinks in (True, False):
        started = time.perf_counter()
        video = demo.stream(clip.frames[0], clip.tracks, frames, seed=seed, sinks=sinks).frames
        colour = colour_drift(video, clip=clip)
        content = content_drift(video, clip=clip)
        results[sinks] = (colour.summary, content.summary, time.perf_counter() - started)
    return frames, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="demo-format weights (default: the shipped model)")
    parser.add_argument("--clips", type=int, default=48,
                        help="track-following clips (means over 16 clips scatter by about 1 px from set to set)")
    parser.add_argument("--frames", type=int, default=31, help="frames per held-out clip (1 + 3k)")
    parser.add_argument("--rollout-chunks", type=int, default=1000)
    parser.add_argument("--speed-frames", type=int, default=193)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clip-set", choices=tuple(CLIP_SETS), default="held-out",
                        help="track-following clips: the reported held-out set, or the validation set used to pick checkpoints")
    parser.add_argument("--streaming", default="{}",
                        help='JSON overrides of the model\'s streaming settings, e.g. \'{"commit_step": 0, "motion_scale": 1.5}\'')
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=(), choices=("epe", "drift", "speed"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    demo = load_demo_model(args.model)
    overrides = json.loads(args.streaming)
    demo.streaming = dataclasses.replace(demo.streaming, **overrides)
    report = {"model": args.model or "shipped", "threads": args.threads, "streaming_overrides": overrides}

    if "speed" not in args.skip:
        image, tracks = load_demo_image(), load_demo_tracks()
        demo.stream(image, tracks, 16)  # warm-up
        result = demo.stream(image, tracks, args.speed_frames, seed=args.seed)
        report["speed"] = {"frames": args.speed_frames, "frames_per_second": round(result.frames_per_second, 1),
                           "first_chunk_ms": round(1000 * result.first_chunk_seconds, 1), "realtime_goal_fps": demo.fps}
        print(f"speed: {result.frames_per_second:.1f} frames/s at {demo.size}x{demo.size} incl. decoding "
              f"({args.threads} threads; goal >= {demo.fps:g}), first chunk {1000 * result.first_chunk_seconds:.1f} ms",
              flush=True)

    if "epe" not in args.skip:
        epe, epe_free, lost, per_clip, per_clip_free = track_following(
            demo, args.clips, args.frames, args.seed, CLIP_SETS[args.clip_set])
        ratio = epe_free / epe if epe > 0 else math.inf
        report["track_following"] = {
            "clip_set": args.clip_set, "clips": args.clips, "frames": args.frames, "epe_px": round(epe, 3), "epe_without_tracks_px": round(epe_free, 3),
            "ratio": round(ratio, 2), "lost_fraction": round(lost, 3),
            "per_clip_epe": [round(v, 2) for v in per_clip], "per_clip_epe_without_tracks": [round(v, 2) for v in per_clip_free],
        }
        print(f"track following ({args.clips} {args.clip_set} clips, {args.frames} frames, 128x128): EPE {epe:.3f} px with tracks "
              f"(goal <= 4), {epe_free:.3f} px without; ratio {ratio:.2f}x (goal >= 5); lost {lost:.3f}", flush=True)

    if "drift" not in args.skip:
        frames, results = drift(demo, args.rollout_chunks, args.seed)
        (colour_s, content_s, time_s), (colour_n, content_n, time_n) = results[True], results[False]
        report["drift"] = {
            "chunks": args.rollout_chunks, "frames": frames,
            "colour_with_sinks": colour_s, "colour_without_sinks": colour_n, "colour_ratio": colour_s / colour_n,
            "content_with_sinks": content_s, "content_without_sinks": content_n, "content_ratio": content_s / content_n,
            "seconds_with_sinks": round(time_s, 1), "seconds_without_sinks": round(time_n, 1),
        }
        print(f"drift over {args.rollout_chunks} chunks ({frames} frames), mean of the last quarter: colour {colour_s:.4f} "
              f"with sinks vs {colour_n:.4f} without (ratio {colour_s / colour_n:.3f}, goal <= 0.333); content "
              f"{content_s:.4f} vs {content_n:.4f} (ratio {content_s / content_n:.3f})", flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
