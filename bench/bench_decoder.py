"""The demo's learned decoder against the plain PCA decode of the same latents, on the CPU.

1. Generated frames: the held-out clips of bench_demo.py (dataset seed 424242, 31 frames) streamed by the
   demo student from their first frame with their own tracks (noise seed = clip index); the latents of
   each rollout decoded both ways. PSNR (mean over clips, frames in [0, 1]) and mean absolute error
   against the clips' true frames, and track following (`score_track_following(...).epe`, pixels) of
   each decode: the decoder must not make the sprites harder to locate.
2. Clean round trips: the true frames encoded by the codec and decoded both ways.
3. Decoding cost: ms of process CPU time per frame, each decode timed on the same chunks in interleaved
   rounds; and the demo example streamed with each decoder (generation + decoding, frames per second of
   process CPU time, interleaved). Timings are figures to read, not asserted anywhere.
4. A PNG of a few frames: true / PCA / learned rows, for the eye (--png).

    OMP_NUM_THREADS=1 python bench/bench_decoder.py
    OMP_NUM_THREADS=1 python bench/bench_decoder.py --clips 8 --decoder runs/decoder/decoder.safetensors
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from motionstream_core.codecs.learned_decoder import RefinedPatchCodec  # noqa: E402
from motionstream_core.demo import (  # noqa: E402
    DECODER_FILE, asset_path, load_demo_image, load_demo_model, load_demo_tracks,
)
from motionstream_core.synthetic import (  # noqa: E402
    SyntheticMotionConfig, clip_seed, generate_clip, score_track_following,
)

HELD_OUT = 424_242


def psnr(frames: torch.Tensor, truth: torch.Tensor) -> float:
    mse = float((frames - truth).square().mean())
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


def nanmean(values):
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def summary(scores: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(nanmean(values), 4) for name, values in scores.items()}


def decode_ms_per_frame(decoders: dict, latents: torch.Tensor, chunk: int, rounds: int) -> dict[str, float]:
    times = {name: [] for name in decoders}
    for _ in range(rounds):
        for name, codec in decoders.items():
            began = time.process_time()
            for start in range(0, latents.shape[2], chunk):
                codec.decode_images(latents[:, :, start:start + chunk])
            times[name].append(1000 * (time.process_time() - began) / latents.shape[2])
    return {name: round(statistics.median(values), 3) for name, values in times.items()}


def stream_fps(demos: dict, frames: int, rounds: int) -> dict[str, float]:
    image, tracks = load_demo_image(), load_demo_tracks()
    rates = {name: [] for name in demos}
    for _ in range(rounds):
        for name, demo in demos.items():
            began = time.process_time()
            demo.stream(image, tracks, frames, seed=0, keep_frames=False)
            rates[name].append(frames / (time.process_time() - began))
    return {name: round(statistics.median(values), 2) for name, values in rates.items()}


def comparison_png(path: str, rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], scale: int) -> None:
    """One column per chosen frame; rows: true, PCA, learned (repeated for each clip)."""
    from PIL import Image

    bands = [torch.cat([torch.cat(list(kind), dim=2) for kind in triple], dim=1) for triple in rows]
    grid = torch.cat(bands, dim=1)
    array = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(array)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--frames", type=int, default=31)
    parser.add_argument("--model", help="demo weights whose latents are decoded (default: the shipped model)")
    parser.add_argument("--decoder", help=f"decoder weights (default: the shipped {DECODER_FILE})")
    parser.add_argument("--png", default="out/bench_decoder.png")
    parser.add_argument("--png-clips", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--png-frames", type=int, nargs="*", default=[0, 1, 10, 30])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stream-frames", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pca_demo = load_demo_model(args.model, decoder="pca")
    learned_demo = load_demo_model(args.model, decoder=args.decoder or asset_path(DECODER_FILE))
    pca, learned = pca_demo.codec, learned_demo.codec
    assert isinstance(learned, RefinedPatchCodec)
    decoders = {"pca": pca, "learned": learned}
    config = SyntheticMotionConfig(width=pca_demo.size, height=pca_demo.size, num_frames=args.frames, fps=pca_demo.fps)

    scores = {f"{what}_{name}": [] for what in ("psnr_generated", "mae_generated", "epe", "psnr_clean", "mae_clean")
              for name in decoders}
    png_rows, timing_latents = [], None
    for index in range(args.clips):
        clip = generate_clip(config, clip_seed(HELD_OUT, index))
        latents = pca_demo.stream(clip.frames[0], clip.tracks, args.frames, seed=index, keep_frames=False,
                                  keep_latents=True).latents
        clean = pca.encode_images(clip.frames)
        timing_latents = latents if timing_latents is None else timing_latents
        decoded = {}
        for name, codec in decoders.items():
            frames = decoded[name] = codec.decode_images(latents)
            scores[f"psnr_generated_{name}"].append(psnr(frames, clip.frames))
            scores[f"mae_generated_{name}"].append(float((frames - clip.frames).abs().mean()))
            scores[f"epe_{name}"].append(score_track_following(frames, clip).epe)
            round_trip = codec.decode_images(clean)
            scores[f"psnr_clean_{name}"].append(psnr(round_trip, clip.frames))
            scores[f"mae_clean_{name}"].append(float((round_trip - clip.frames).abs().mean()))
        if index in args.png_clips:
            picks = [f for f in args.png_frames if f < args.frames]
            png_rows.append((clip.frames[picks], decoded["pca"][picks], decoded["learned"][picks]))
        print(f"clip {index + 1}/{args.clips}: PSNR pca {scores['psnr_generated_pca'][-1]:.2f} "
              f"learned {scores['psnr_generated_learned'][-1]:.2f}", flush=True)

    chunk = pca_demo.streaming.block_frames[-1]  # latent frames per streamed chunk (one video frame each)
    report = {
        "clips": args.clips, "frames": args.frames, **summary(scores),
        "decode_ms_per_frame": decode_ms_per_frame(decoders, timing_latents, chunk, args.rounds),
        "stream_fps_cpu_time": stream_fps({"pca": pca_demo, "learned": learned_demo}, args.stream_frames, 3),
        "decoder_bytes": os.path.getsize(args.decoder or asset_path(DECODER_FILE)),
        "threads": torch.get_num_threads(),
    }
    if png_rows and args.png:
        comparison_png(args.png, png_rows, scale=2)
        report["png"] = args.png
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
