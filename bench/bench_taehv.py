"""Decoding speed of the Tiny VAE (TAEHV, taew2_1 geometry) at 832x480.

Measures the steady state of a live stream: a decoder is primed with one latent
(untimed, also a warm-up), then ``--latent-frames`` latents are pushed (in chunks
of ``--chunk``, by default as ``decode_video`` would) and timed. Each of those latents yields 4 frames (1 in preview mode).
Random weights: speed does not depend on their values.

    python bench/bench_taehv.py                     # CPU fp32 full + preview; CUDA fp16 too if available
    python bench/bench_taehv.py --device cuda --dtype fp16 --latent-frames 8

On Linux CPUs, THP_MEM_ALLOC_ENABLE=1 (PyTorch's huge-page allocations) cut the
page-fault time of the large activations and made CPU decoding ~25% faster here.
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from motionstream_core.codecs.taehv import TinyVAE  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(device: str, dtype_name: str, args: argparse.Namespace) -> None:
    device = torch.device(device)
    torch.manual_seed(0)
    vae = TinyVAE(channels_last=not args.no_channels_last).eval().to(device=device, dtype=DTYPES[dtype_name])
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(args.batch, 1 + args.latent_frames, 16, args.height // 8, args.width // 8, generator=generator)
    latents = latents.to(device)
    chunk = args.chunk or vae.auto_latents_per_chunk(latents.shape)
    for preview in (False, True) if args.mode == "both" else (args.mode == "preview",):
        seconds = []
        for _ in range(args.repeats):
            decoder = vae.stream_decoder(preview=preview)
            decoder.push(latents[:, :1])
            synchronize(device)
            start = time.perf_counter()
            frames = [decoder.push(piece) for piece in latents[:, 1:].split(chunk, 1)]
            synchronize(device)
            seconds.append(time.perf_counter() - start)
            del frames, decoder
        frame_count = args.batch * args.latent_frames * (1 if preview else vae.time_upscale)
        best = min(seconds)
        print(
            f"{device.type:4s} {dtype_name} {'preview' if preview else 'full':7s} "
            f"{args.width}x{args.height} batch {args.batch} x {args.latent_frames} latents (chunks of {chunk}) "
            f"-> {frame_count:3d} frames: "
            f"{frame_count / best:8.2f} frames/s (best of {args.repeats}: {best:.2f} s; "
            f"all: {', '.join(f'{s:.2f}' for s in seconds)} s; channels_last={not args.no_channels_last})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cpu or cuda[:N]; default: cpu fp32, plus cuda fp16 when available")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: fp32 on cpu, fp16 on cuda")
    parser.add_argument("--latent-frames", type=int, default=2, help="latents in the timed chunk")
    parser.add_argument("--chunk", type=int, help="push the timed latents in chunks of this many (default: as decode_video does)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--mode", choices=["full", "preview", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-channels-last", action="store_true", help="use NCHW activations (for comparison)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.device:
        runs = [(args.device, args.dtype or ("fp32" if args.device == "cpu" else "fp16"))]
    else:
        runs = [("cpu", args.dtype or "fp32")]
        if torch.cuda.is_available():
            runs.append(("cuda", args.dtype or "fp16"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    with torch.inference_mode():
        for device, dtype_name in runs:
            bench(device, dtype_name, args)


if __name__ == "__main__":
    main()
