"""Streaming benchmark: per-chunk time must not grow with video length.

CPU (default): a small random model streams a few hundred chunks through the rolling sink +
window cache; prints median(last 50) / median(first 50 after warm-up) (goal <= 1.05) and how
much slower the same engine is at chunk 100 with an unbounded, growing cache (goal >= 5x).

    python bench/bench_streaming.py [--chunks 310] [--threads 1]

Full size (`--full`, CUDA only): Wan 2.1 1.3B geometry (dim 1536, 30 layers, 12 heads, ffn
8960), 832x480 video (latent 104x60), MotionStream Track-v0 input layout (52 channels: noisy,
mask, first-frame latent, tracks), sink 3 / window 9 (the window counts the sink and the current
chunk), random bf16 weights. Prints frames per second (4 video frames per latent frame), first
chunk latency, per-chunk jitter and peak GPU memory.

    python bench/bench_streaming.py --full [--chunks 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import statistics
import sys
import time

import torch

from motionstream_core.model.config import WanConfig
from motionstream_core.testing.random_model import random_wan_dit
from motionstream_core.streaming.session import StreamConditions, StreamingConfig, StreamingSession

VIDEO_FRAMES_PER_LATENT_FRAME = 4

CPU_MODEL = WanConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2, text_dim=64, freq_dim=64, text_len=16)
CPU_LATENT = (12, 16)  # 6 x 8 = 48 tokens per latent frame

FULL_MODEL = WanConfig(
    dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_channels=52, out_channels=16, text_dim=4096, text_len=512
)
FULL_LATENT = (60, 104)  # 480 x 832 pixels / 8


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_chunks(session: StreamingSession, num_chunks: int, clock=time.perf_counter) -> list[float]:
    """Time of each chunk, from the start of its first step to its committed latents."""
    device = session.model.device
    times = []
    for _ in range(num_chunks):
        _sync(device)
        started = clock()
        session.next_chunk()
        _sync(device)
        times.append(clock() - started)
    return times


def _session(model, streaming, latent, text, providers=(), first_frame=None, seed=0):
    session = StreamingSession(model, streaming, latent_height=latent[0], latent_width=latent[1], seed=seed)
    session.start(StreamConditions(text=text, first_frame_latents=first_frame, channel_providers=list(providers)))
    return session


def run_cpu(num_chunks: int, warmup: int, growing_until: int) -> None:
    model = random_wan_dit(CPU_MODEL, seed=0)
    text = torch.randn(1, CPU_MODEL.text_len, CPU_MODEL.text_dim)
    streaming = StreamingConfig.motionstream_paper()
    print(f"model: dim {CPU_MODEL.dim}, {CPU_MODEL.num_layers} layers, {CPU_MODEL.num_heads} head(s); latent "
          f"{CPU_LATENT[0]}x{CPU_LATENT[1]} ({CPU_MODEL.tokens_per_frame(*CPU_LATENT)} tokens/frame); "
          f"blocks of {streaming.block_frames[-1]}, sink {streaming.sink_frames}, window {streaming.window_frames}, "
          f"{len(streaming.denoising_steps)} steps + commit, RoPE {streaming.rope_policy}; "
          f"{torch.get_num_threads()} thread(s)")

    # Process CPU time: on a shared machine, wall time also measures the other processes' load.
    clock = time.process_time
    print("times are process CPU time (time.process_time)")
    rolling = _session(model, streaming, CPU_LATENT, text)
    times = time_chunks(rolling, warmup + num_chunks, clock)[warmup:]
    first, last = statistics.median(times[:50]), statistics.median(times[-50:])
    print(f"rolling cache: {num_chunks} chunks after {warmup} warm-up, cache {rolling.cache.nbytes() / 2**20:.2f} MiB")
    print(f"  median of first 50: {first * 1e3:.2f} ms/chunk, of last 50: {last * 1e3:.2f} ms/chunk")
    print(f"  last/first ratio: {last / first:.3f} (goal <= 1.05)")

    growing_config = dataclasses.replace(streaming, cache_policy="growing")
    growing = _session(model, growing_config, CPU_LATENT, text)
    growing_times = time_chunks(growing, growing_until + 3, clock)
    around = slice(growing_until - 2, growing_until + 3)  # median of chunks 98..102 against noise
    grown, bounded = statistics.median(growing_times[around]), statistics.median(times[around.start - warmup : around.stop - warmup])
    print(f"growing cache at chunk {growing_until}: {grown * 1e3:.2f} ms/chunk vs rolling {bounded * 1e3:.2f} ms/chunk, "
          f"cache {growing.cache.nbytes() / 2**20:.2f} MiB")
    print(f"  growing/rolling ratio at chunk {growing_until}: {grown / bounded:.1f}x (goal >= 5x)")


class RandomTracks:
    """Stand-in for the track head: fixed random channels, windowed like the real encoder."""

    def __init__(self, channels: int, latent: tuple[int, int], device, dtype, horizon: int = 64):
        generator = torch.Generator(device=device).manual_seed(1)
        self.encoded = torch.randn(1, channels, horizon, *latent, generator=generator, device=device, dtype=dtype)

    def __call__(self, first_latent_frame: int, num_latent_frames: int) -> torch.Tensor:
        frames = torch.arange(first_latent_frame, first_latent_frame + num_latent_frames, device=self.encoded.device)
        return self.encoded.index_select(2, frames % self.encoded.shape[2])


def run_full(num_chunks: int, config: WanConfig = FULL_MODEL, latent=FULL_LATENT, device="cuda", dtype=torch.bfloat16) -> None:
    device = torch.device(device)
    started = time.perf_counter()
    model = random_wan_dit(config, seed=0, dtype=dtype, device=device)
    _sync(device)
    print(f"random {config.dim}/{config.num_layers}/{config.num_heads} model on {device} ({dtype}) built in "
          f"{time.perf_counter() - started:.1f} s")
    streaming = StreamingConfig.motionstream_paper()
    text = torch.randn(1, config.text_len, config.text_dim, device=device, dtype=dtype)
    first_frame = torch.randn(1, config.out_channels, 2, *latent, device=device, dtype=dtype)
    track_channels = config.in_channels - 2 * config.out_channels - 4
    providers = [RandomTracks(track_channels, latent, device, dtype)] if track_channels > 0 else []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    started = time.perf_counter()
    session = _session(model, streaming, latent, text, providers, first_frame)
    first_chunk = time_chunks(session, 1)[0]
    print(f"first chunk latency (cold, incl. prompt encoding): {(time.perf_counter() - started) * 1e3:.0f} ms "
          f"(chunk alone {first_chunk * 1e3:.0f} ms, {streaming.block_frames[0]} latent frames)")
    times = time_chunks(session, num_chunks)
    steady = times[2:] if len(times) > 4 else times
    median = statistics.median(steady)
    frames = streaming.block_frames[-1] * VIDEO_FRAMES_PER_LATENT_FRAME
    p95 = sorted(steady)[int(0.95 * (len(steady) - 1))]
    print(f"{num_chunks} chunks of {frames} video frames, tokens/frame {config.tokens_per_frame(*latent)}, "
          f"sink {streaming.sink_frames} / window {streaming.window_frames}")
    print(f"  median {median * 1e3:.1f} ms/chunk -> {frames / median:.1f} video frames/s")
    print(f"  jitter: std {statistics.pstdev(steady) * 1e3:.1f} ms, p95 - median {(p95 - median) * 1e3:.1f} ms, "
          f"min {min(steady) * 1e3:.1f} / max {max(steady) * 1e3:.1f} ms")
    print(f"  first 10 vs last 10 (median): {statistics.median(steady[:10]) * 1e3:.1f} / "
          f"{statistics.median(steady[-10:]) * 1e3:.1f} ms")
    print(f"  KV cache {session.cache.nbytes() / 2**20:.0f} MiB")
    if device.type == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full-size model on CUDA")
    parser.add_argument("--chunks", type=int, default=None, help="measured chunks (CPU default 310, full default 40)")
    parser.add_argument("--warmup", type=int, default=10, help="CPU: chunks discarded before measuring")
    parser.add_argument("--growing-until", type=int, default=100, help="CPU: chunk at which the growing cache is compared")
    parser.add_argument("--threads", type=int, default=1, help="CPU: torch threads (1 gives the steadiest timings)")
    args = parser.parse_args(argv)
    print("command:", shlex.join([sys.executable, *sys.argv]))
    torch.set_grad_enabled(False)
    if args.full:
        if not torch.cuda.is_available():
            print("SKIPPED full-size benchmark: CUDA is not available on this machine")
            return 0
        run_full(args.chunks or 40)
        return 0
    torch.set_num_threads(args.threads)
    num_chunks = args.chunks or 310
    if num_chunks < 300 or num_chunks < args.growing_until + 3:
        parser.error("--chunks must be at least 300 (and cover --growing-until)")
    run_cpu(num_chunks, args.warmup, args.growing_until)
    return 0


if __name__ == "__main__":
    sys.exit(main())
