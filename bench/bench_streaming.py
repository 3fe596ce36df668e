"""Streaming benchmark: per-chunk time must not grow with video length.

CPU (default), a small random model, 1 thread, process CPU time:

1. The rolling sink + window cache through the streaming session for a few hundred chunks: prints
   median(last 50) / median(first 50 after warm-up) (goal <= 1.05).
2. Side by side at chunk 10, 100 and 1000: the rolling cache against a fair growing baseline, a
   growing cache written the way ComfyUI's causal Wan AR model writes one (comfy/ldm/wan/ar_model.py):
   one buffer per layer allocated up front for the whole video, each chunk's keys rotated once with
   their absolute positions when written, attention reading the filled prefix. Nothing is
   reallocated and no cached key is rotated again. Each chunk is the session's model passes (the
   denoising steps + the commit) at that chunk's frames, with the caches filled as they are there;
   the modes and positions are interleaved round by round, and medians are printed with the ratio.

    python bench/bench_streaming.py [--chunks 310] [--positions 10,100,1000] [--rounds 7] [--threads 1]

Full size (`--full`, CUDA only): Wan 2.1 1.3B geometry (dim 1536, 30 layers, 12 heads, ffn
8960), 832x480 video (latent 104x60), MotionStream Track-v0 input layout (52 channels: noisy,
mask, first-frame latent, tracks), sink 3 / window 9 (the window counts the sink and the current
chunk), random bf16 weights. Prints frames per second (4 video frames per latent frame), first
chunk latency, per-chunk jitter and peak GPU memory. `bench/gpu_check.sh` measures this and more
in one table.

    python bench/bench_streaming.py --full [--chunks 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import statistics
import sys
import time
from typing import Sequence

import torch

from motionstream_core.model.config import WanConfig
from motionstream_core.streaming import BlockSchedule, CausalWanModel, GrowingKVCache, KVCache
from motionstream_core.streaming.kv_cache import ChunkSlots
from motionstream_core.testing.random_model import random_wan_dit
from motionstream_core.streaming.session import StreamConditions, StreamingConfig, StreamingSession

VIDEO_FRAMES_PER_LATENT_FRAME = 4

# rope_max_len only bounds absolute RoPE positions (relative RoPE numbers the window 0..8); the
# growing baseline at chunk 1000 reaches latent frame 3002.
CPU_MODEL = WanConfig(
    dim=128, ffn_dim=256, num_heads=1, num_layers=2, text_dim=64, freq_dim=64, text_len=16, rope_max_len=4096
)
CPU_LATENT = (12, 16)  # 6 x 8 = 48 tokens per latent frame

FULL_MODEL = WanConfig(
    dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_channels=52, out_channels=16, text_dim=4096, text_len=512
)
FULL_LATENT = (60, 104)  # 480 x 832 pixels / 8


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_average() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


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


class PreallocatedGrowingKVCache(GrowingKVCache):
    """Every frame, in buffers of `capacity_frames` allocated once: a growing cache as it is written in practice.

    As in ComfyUI's causal Wan AR model, each layer gets one key and one value buffer sized for the
    whole video before the first chunk; a chunk's frames are copied in at their frame index and
    attention reads the filled prefix (a view). Used with the "absolute" RoPE policy, the keys are
    rotated once, with their absolute positions, before they are written. Slots are frames, as in the
    library's growing cache, which reallocates instead.
    """

    def __init__(self, num_layers: int, batch_size: int, tokens_per_frame: int, num_heads: int, head_dim: int,
                 capacity_frames: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        self.tokens_per_frame = tokens_per_frame
        shape = (batch_size, capacity_frames, tokens_per_frame, num_heads, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self._write_counts = [0] * num_layers

    def plan(self, start_frame: int, num_frames: int) -> ChunkSlots:
        end = start_frame + num_frames
        if start_frame < 0 or num_frames < 1 or end > self.window_frames:
            raise ValueError(f"frames [{start_frame}, {end}) do not fit the {self.window_frames} preallocated frames")
        return super().plan(start_frame, num_frames)

    def write(self, layer: int, slots: Sequence[int], key: torch.Tensor, value: torch.Tensor) -> None:
        first, count = slots[0], len(slots)
        if tuple(slots) != tuple(range(first, first + count)):
            raise ValueError(f"a growing cache is written frame after frame, got slots {list(slots)}")
        for buffer, tokens in ((self.keys[layer], key), (self.values[layer], value)):
            buffer[:, first : first + count].copy_(tokens.unflatten(1, (count, self.tokens_per_frame)))
        self.count_write(layer)

    def restart(self) -> None:
        # Like resetting ComfyUI's end pointer: the buffers stay, every frame is written before it is read.
        pass


@dataclasses.dataclass
class CacheMode:
    """One column of the side-by-side comparison: a RoPE policy and a cache for it."""

    name: str
    engine: CausalWanModel
    cache: KVCache


def fill_cache(cache: KVCache, seed: int = 0) -> None:
    """Gives every slot values like real keys/values (the timing does not depend on them)."""
    generator = torch.Generator(device=cache.keys[0].device).manual_seed(seed)
    for tensor in cache.tensors():
        tensor.normal_(generator=generator)


def chunk_passes(mode: CacheMode, blocks: BlockSchedule, chunk: int, context, steps: Sequence[torch.Tensor],
                 commit_step: torch.Tensor, channels: int, latent: tuple[int, int]) -> None:
    """The model passes the session makes for chunk `chunk`: one per denoising step, then the commit."""
    start, size = blocks.start(chunk), blocks.size(chunk)
    device = mode.engine.device
    latents = torch.randn(1, channels, size, *latent, device=device, dtype=mode.engine.dtype)
    for timestep in (*steps, commit_step):
        mode.engine.forward_chunk(latents, timestep, context, mode.cache, start)


def compare_with_growing(model, streaming: StreamingConfig, latent, text, positions: Sequence[int], rounds: int,
                         clock=time.process_time) -> dict[str, dict[int, list[float]]]:
    """ms/chunk of each mode at each chunk position, interleaved round by round; prints the table."""
    blocks = BlockSchedule(streaming.block_frames)
    capacity = blocks.start(max(positions)) + blocks.size(max(positions))
    relative = CausalWanModel(model, "relative")
    absolute = CausalWanModel(model, "absolute")
    window = dict(sink_frames=streaming.sink_frames, window_frames=streaming.window_frames)
    geometry = absolute.cache_geometry(1, *latent)
    modes = [
        CacheMode("rolling", relative, relative.new_cache(1, *latent, policy="rolling", **window)),
        CacheMode("rolling-abs", absolute, absolute.new_cache(1, *latent, policy="rolling", **window)),
        CacheMode("growing", absolute, PreallocatedGrowingKVCache(capacity_frames=capacity, **geometry.as_kwargs())),
    ]
    for seed, mode in enumerate(modes):
        fill_cache(mode.cache, seed)
    context = model.encode_context(text)
    steps = [torch.tensor(float(step)) for step in streaming.denoising_steps]
    commit = torch.tensor(float(streaming.commit_step))
    channels = model.config.in_channels

    def run(mode, position):
        chunk_passes(mode, blocks, position, context, steps, commit, channels, latent)

    for mode in modes:  # warm-up: one untimed chunk of each kind
        for position in positions:
            run(mode, position)
    times = {mode.name: {position: [] for position in positions} for mode in modes}
    for round_index in range(rounds):
        order = [(mode, position) for position in positions for mode in modes]
        if round_index % 2:
            order.reverse()
        for mode, position in order:
            started = clock()
            run(mode, position)
            times[mode.name][position].append(clock() - started)
    return times


def print_comparison(times, streaming: StreamingConfig, positions, rounds: int, latent, config: WanConfig) -> None:
    blocks = BlockSchedule(streaming.block_frames)
    frame_bytes = 2 * config.num_layers * config.tokens_per_frame(*latent) * config.dim * 4
    print(f"rolling vs growing cache, ms/chunk: process CPU time, median of {rounds} interleaved rounds "
          f"[min-max]; {len(streaming.denoising_steps)} steps + commit = {len(streaming.denoising_steps) + 1} "
          "model passes per chunk")
    print("  rolling:     sink + rolling window with relative RoPE, as shipped (what the engine does with the raw keys)")
    print("  rolling-abs: the same cache with absolute RoPE: keys rotated once, when written")
    print("  growing:     every frame in buffers preallocated for the whole video (as ComfyUI's causal Wan AR "
          "model), absolute RoPE: keys rotated once, when written")

    def cell(values):
        return f"{statistics.median(values) * 1e3:8.2f} [{min(values) * 1e3:.1f}-{max(values) * 1e3:.1f}]"

    print("  frames seen: by the rolling / the growing cache (latent frames, the chunk's own included)")
    print(f"  {'chunk':>6} {'frames seen':>11} {'rolling':>22} {'rolling-abs':>22} {'growing':>22} "
          f"{'growing/rolling':>15} {'growing/rolling-abs':>19}")
    for position in positions:
        end = blocks.start(position) + blocks.size(position)
        seen = min(end, streaming.window_frames)
        rolling = statistics.median(times["rolling"][position])
        rolling_abs = statistics.median(times["rolling-abs"][position])
        growing = statistics.median(times["growing"][position])
        print(f"  {position:>6} {f'{seen} / {end}':>11} {cell(times['rolling'][position]):>22} "
              f"{cell(times['rolling-abs'][position]):>22} {cell(times['growing'][position]):>22} "
              f"{growing / rolling:>14.1f}x {growing / rolling_abs:>18.1f}x")
    last = max(positions)
    end = blocks.start(last) + blocks.size(last)
    print(f"  cache at chunk {last}: rolling {streaming.window_frames * frame_bytes / 2**20:.2f} MiB, "
          f"growing {end * frame_bytes / 2**20:.2f} MiB filled")


def run_cpu(num_chunks: int, warmup: int, positions: Sequence[int], rounds: int) -> None:
    model = random_wan_dit(CPU_MODEL, seed=0)
    text = torch.randn(1, CPU_MODEL.text_len, CPU_MODEL.text_dim)
    streaming = StreamingConfig.motionstream_paper()
    print(f"model: dim {CPU_MODEL.dim}, {CPU_MODEL.num_layers} layers, {CPU_MODEL.num_heads} head(s); latent "
          f"{CPU_LATENT[0]}x{CPU_LATENT[1]} ({CPU_MODEL.tokens_per_frame(*CPU_LATENT)} tokens/frame); "
          f"blocks of {streaming.block_frames[-1]}, sink {streaming.sink_frames}, window {streaming.window_frames}, "
          f"{len(streaming.denoising_steps)} steps + commit, RoPE {streaming.rope_policy}; "
          f"{torch.get_num_threads()} thread(s)")
    print(f"load average (1/5/15 min) at start: {load_average()} on {os.cpu_count()} CPU(s)")

    # Process CPU time: on a shared machine, wall time also measures the other processes' load.
    clock = time.process_time
    print("times are process CPU time (time.process_time)")
    if num_chunks:
        rolling = _session(model, streaming, CPU_LATENT, text)
        times = time_chunks(rolling, warmup + num_chunks, clock)[warmup:]
        first, last = statistics.median(times[:50]), statistics.median(times[-50:])
        print(f"rolling cache through the session: {num_chunks} chunks after {warmup} warm-up, "
              f"cache {rolling.cache.nbytes() / 2**20:.2f} MiB")
        print(f"  median of first 50: {first * 1e3:.2f} ms/chunk, of last 50: {last * 1e3:.2f} ms/chunk")
        print(f"  last/first ratio: {last / first:.3f} (goal <= 1.05)")
        print(f"  load average after: {load_average()}")

    if positions:
        times = compare_with_growing(model, streaming, CPU_LATENT, text, positions, rounds, clock)
        print_comparison(times, streaming, positions, rounds, CPU_LATENT, CPU_MODEL)
        print(f"  load average after: {load_average()}")


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


def _positions(text: str) -> list[int]:
    try:
        positions = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected chunk indices separated by commas, got {text!r}") from None
    if any(position < 0 for position in positions):
        raise argparse.ArgumentTypeError(f"chunk indices must be non-negative, got {text!r}")
    return positions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full-size model on CUDA")
    parser.add_argument("--chunks", type=int, default=None,
                        help="measured chunks (CPU default 310, at least 100; 0 skips the session run; full default 40)")
    parser.add_argument("--warmup", type=int, default=10, help="CPU: chunks discarded before measuring")
    parser.add_argument("--positions", type=_positions, default=[10, 100, 1000],
                        help="CPU: chunk indices at which rolling and growing caches are compared (default 10,100,1000; "
                             "empty skips the comparison)")
    parser.add_argument("--rounds", type=int, default=7, help="CPU: interleaved rounds of the comparison")
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
    num_chunks = 310 if args.chunks is None else args.chunks
    if num_chunks and num_chunks < 100:
        parser.error("--chunks must be 0 or at least 100 (the first and last 50 are compared)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    run_cpu(num_chunks, args.warmup, args.positions, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
