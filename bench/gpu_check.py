"""The whole GPU measurement in one command: DiT, streaming and Tiny VAE figures in one table.

    bash bench/gpu_check.sh                          # CUDA: Wan 2.1 1.3B at 832x480, bf16 (a few minutes on an H200)
    bash bench/gpu_check.sh --only stream-track-v0   # one group of rows (each row prints the command that redoes it)
    bash bench/gpu_check.sh --smoke                  # CPU: a tiny config and a few chunks (< 60 s), so the script cannot rot

Random weights throughout (speed does not depend on their values). The model is Wan 2.1 1.3B
(dim 1536, 30 layers, 12 heads of 128, ffn 8960) with MotionStream Track-v0's input layout: 52
channels = 16 noisy + 4 mask + 16 first-frame latent + 16 track channels from a random track head
fed with moving point tracks. Token counts are derived from the latent size (832x480 -> latent
104x60 -> patches 52x30 per latent frame) and Track-v0's chunks of 3 latent frames.

Groups of rows:

- dit: one forward of the DiT over one chunk (3 latent frames), eager and compiled (torch.compile
  of the forward; the streaming session has no compile switch), interleaved round by round.
- stream-track-v0, stream-paper: the streaming session at Track-v0's cache (sink 1, window 6,
  a first block of 1 latent frame then blocks of 3) and at the paper's (sink 3, window 9, blocks
  of 3), 4 denoising steps + the commit per chunk: video frames/s, first-chunk latency (a new
  session, its cache and prompt encoding included, to the first chunk's latents), per-chunk p50 /
  p99 once the window is full, peak memory. The -vae variants also decode every chunk with the
  Tiny VAE (fp16) as it is produced, so frames/s and latency count decoded frames.
- stream-track-v0-compiled: stream-track-v0 with the engine's transformer blocks compiled, when
  the core offers that (CausalWanModel.compile_blocks); GPU only.
- taehv: the Tiny VAE alone in fp16, streaming chunks of 3 latents; beside it the reference
  design (madebyollin/taehv's StreamingTAEHV, one frame at a time) when --taehv-reference points
  at a checkout of it.

GPU times come from CUDA events, each chunk synchronised before the next starts (as a live
stream hands every chunk on); everything is warmed up first. The smoke run times with process
CPU time and its figures mean nothing; it only proves the script still runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import platform
import shlex
import statistics
import sys
import time
from typing import Callable

import torch

from bench_taehv import load_reference, reference_model, reference_push  # the same reference loading as bench_taehv
from motionstream_core.codecs.taehv import TinyVAE
from motionstream_core.model.config import WanConfig
from motionstream_core.motion.track_head import TrackChannelProvider, TrackEncoder, TrackHeadInputs
from motionstream_core.streaming.causal_model import CausalWanModel
from motionstream_core.streaming.image_conditioning import MASK_CHANNELS
from motionstream_core.streaming.session import StreamConditions, StreamingConfig, StreamingSession
from motionstream_core.testing.random_model import random_wan_dit

VIDEO_FRAMES_PER_LATENT_FRAME = 4
GROUPS = ("dit", "stream-track-v0", "stream-track-v0-vae", "stream-paper", "stream-paper-vae", "taehv",
          "stream-track-v0-compiled")
# The most seconds each group is expected to take at full size on an H200 (compilation included): a group
# is skipped when it would end past the budget, so the whole run stays under 8 minutes.
ALLOWANCE_S = {"dit": 240, "stream-track-v0": 45, "stream-track-v0-vae": 50, "stream-paper": 50, "stream-paper-vae": 55,
               "taehv": 20, "stream-track-v0-compiled": 240}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NO_CUDA_MESSAGE = (
    "gpu_check measures on a CUDA GPU, and torch sees none here (torch.cuda.is_available() is False). "
    "Run `bash bench/gpu_check.sh --smoke` for the CPU smoke run (tiny config, figures meaningless)."
)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What one run measures: the model, the video size, dtypes and how many samples."""

    name: str
    model: WanConfig
    latent: tuple[int, int]  # latent height, width
    dtype: str
    vae_dtype: str
    chunks: int  # measured chunks per streaming row (after the window is full)
    dit_rounds: int
    vae_chunks: int
    compile_backend: str
    tracks: int


FULL = Setup(
    name="Wan 2.1 1.3B, 832x480",
    model=WanConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_channels=52, out_channels=16,
                    text_dim=4096, text_len=512),
    latent=(60, 104), dtype="bf16", vae_dtype="fp16", chunks=100, dit_rounds=20, vae_chunks=60,
    compile_backend="inductor", tracks=256,
)
SMOKE = Setup(
    name="smoke: tiny random model, 64x32",
    model=WanConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, in_channels=52, out_channels=16,
                    text_dim=32, freq_dim=32, text_len=8),
    latent=(4, 8), dtype="fp32", vae_dtype="fp32", chunks=3, dit_rounds=2, vae_chunks=2,
    # Dynamo's tracing without Inductor's code generation: the CPU compile alone would take minutes here.
    compile_backend="eager", tracks=8,
)


# --- clocks -------------------------------------------------------------------------------------


class Clock:
    """CUDA events on a GPU (the device's own time line), process CPU time on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.name = "CUDA events" if self.cuda else "process CPU time"

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.process_time()

    def seconds(self, start, end) -> float:
        """Time between two marks; waits for the device to reach the second one."""
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return end - start


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (CPU)"
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of fewer than 100 samples is their maximum)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.2f} ms"


# --- inputs -------------------------------------------------------------------------------------


class MovingTracks:
    """Point tracks circling over the frame, any window of pixel frames on demand (an endless drag)."""

    def __init__(self, count: int, device: torch.device):
        generator = torch.Generator().manual_seed(2)
        self.centres = (0.2 + 0.6 * torch.rand(count, 2, generator=generator)).to(device)
        self.phases = (2 * math.pi * torch.rand(count, generator=generator)).to(device)
        self.ids = torch.arange(count, device=device)[None]
        self.device = device

    def __call__(self, start: int, stop: int) -> TrackHeadInputs:
        frames = torch.arange(start, stop, device=self.device, dtype=torch.float32)[:, None]
        angle = self.phases[None] + 0.05 * frames
        coords = self.centres[None] + 0.15 * torch.stack((angle.cos(), angle.sin()), dim=-1)
        visibility = torch.ones(1, stop - start, self.ids.shape[1], device=self.device)
        return TrackHeadInputs(coords[None], visibility, self.ids)


@dataclasses.dataclass
class Bench:
    setup: Setup
    device: torch.device
    clock: Clock
    model: torch.nn.Module
    track_encoder: TrackEncoder
    vae: TinyVAE
    text: torch.Tensor
    first_frame: torch.Tensor

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.setup.dtype]

    def conditions(self) -> StreamConditions:
        height, width = self.setup.latent
        tracks = TrackChannelProvider(self.track_encoder, MovingTracks(self.setup.tracks, self.device), height, width)
        return StreamConditions(text=self.text, first_frame_latents=self.first_frame, motion_providers=[tracks])


def build(setup: Setup, device: torch.device) -> Bench:
    config = setup.model
    dtype = DTYPES[setup.dtype]
    track_channels = config.in_channels - config.out_channels - (MASK_CHANNELS + config.out_channels)
    if track_channels < 1:
        raise ValueError(f"{config.in_channels} input channels leave none for the tracks")
    torch.manual_seed(0)
    model = random_wan_dit(config, seed=0, dtype=dtype, device=device)
    track_encoder = TrackEncoder(channels=track_channels).to(device=device, dtype=dtype).eval()
    vae = TinyVAE().eval().to(device=device, dtype=DTYPES[setup.vae_dtype])
    generator = torch.Generator(device=device).manual_seed(1)
    height, width = setup.latent
    text = torch.randn(1, config.text_len, config.text_dim, generator=generator, device=device, dtype=dtype)
    # The first image and a gray frame, encoded: what FirstFrameCondition takes.
    first_frame = torch.randn(1, config.out_channels, 2, height, width, generator=generator, device=device, dtype=dtype)
    return Bench(setup, device, Clock(device), model, track_encoder, vae, text, first_frame)


# --- rows ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    name: str
    what: str
    result: str
    memory: str
    group: str


def dit_rows(bench: Bench, compile_forward: bool = True) -> list[Row]:
    """One forward over one chunk of 3 latent frames, eager and compiled, interleaved."""
    setup, config, device = bench.setup, bench.setup.model, bench.device
    frames = StreamingConfig.track_v0().block_frames[-1]
    height, width = setup.latent
    tokens = frames * config.tokens_per_frame(height, width)
    generator = torch.Generator(device=device).manual_seed(3)
    latents = torch.randn(1, config.in_channels, frames, height, width, generator=generator, device=device,
                          dtype=bench.dtype)
    timestep = torch.full((1,), 500.0, device=device)
    context = bench.model.encode_context(bench.text)
    model = bench.model

    def eager():
        return model(latents, timestep, context)

    variants: dict[str, Callable] = {"eager": eager}
    notes = {"eager": ""}
    if compile_forward:
        compiled_forward = torch.compile(lambda x, t: model(x, t, context), backend=setup.compile_backend)
        variants["compiled"] = lambda: compiled_forward(latents, timestep)
        started = time.perf_counter()
        try:
            variants["compiled"]()
            synchronize(device)
            notes["compiled"] = (f"torch.compile({setup.compile_backend}) of the forward, first call "
                                 f"{time.perf_counter() - started:.0f} s wall incl. compilation; ")
        except Exception as error:  # noqa: BLE001 - a failed compile is a result to report, not a crash
            notes["compiled"] = f"failed: torch.compile: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
            del variants["compiled"]
    for function in variants.values():  # warm-up
        for _ in range(2):
            function()
    synchronize(device)

    times = {name: [] for name in variants}
    for round_index in range(setup.dit_rounds):
        order = list(variants.items())
        if round_index % 2:
            order.reverse()
        for name, function in order:
            start = bench.clock.mark()
            function()
            end = bench.clock.mark()
            times[name].append(bench.clock.seconds(start, end))
    memory = {}
    for name, function in variants.items():
        reset_peak(device)
        function()
        synchronize(device)
        memory[name] = peak_gib(device)

    rows = []
    what = (f"DiT forward, 1 chunk: {frames} latent frames x {config.tokens_per_frame(height, width)} = {tokens} tokens, "
            f"{config.in_channels} ch, {setup.dtype}")
    for name in ("eager", "compiled") if compile_forward else ("eager",):
        if name not in times:
            rows.append(Row(f"dit-{name}", what, notes[name], "-", "dit"))
            continue
        median = statistics.median(times[name])
        ratio = ""
        if name == "compiled" and "eager" in times:
            ratio = f", {statistics.median(times['eager']) / median:.2f}x eager"
        rows.append(Row(
            f"dit-{name}", what,
            f"{notes[name]}{ms(median)}/forward (median of {len(times[name])} interleaved rounds, "
            f"min {ms(min(times[name]))}){ratio}, {tokens / median:,.0f} tokens/s",
            memory[name], "dit",
        ))
    return rows


def stream_row(bench: Bench, group: str) -> Row:
    setup, device, clock = bench.setup, bench.device, bench.clock
    paper = group.startswith("stream-paper")
    decode = group.endswith("-vae")
    compiled = group.endswith("-compiled")
    streaming = StreamingConfig.motionstream_paper() if paper else StreamingConfig.track_v0()
    height, width = setup.latent
    engine = bench.model
    if compiled:
        if not hasattr(CausalWanModel, "compile_blocks"):
            return Row(group, "-", "not available: this core's CausalWanModel has no compile_blocks()", "-", group)
        if setup is SMOKE or device.type != "cuda":
            return Row(group, "-", "not run on the CPU: Inductor's compilation takes minutes there", "-", group)
        engine = CausalWanModel(bench.model, streaming.rope_policy)
        engine.compile_blocks()

    def new_stream():
        session = StreamingSession(engine, streaming, latent_height=height, latent_width=width, seed=0)
        session.start(bench.conditions())
        return session, bench.vae.stream_decoder() if decode else None

    def produce(session, decoder) -> int:
        """One chunk (decoded when asked); the number of video frames it gives."""
        chunk = session.next_chunk()
        if decoder is None:
            first = 1 if chunk.start_frame == 0 else VIDEO_FRAMES_PER_LATENT_FRAME
            return first + VIDEO_FRAMES_PER_LATENT_FRAME * (chunk.num_frames - 1)
        return decoder.push(chunk.latents.movedim(1, 2)).shape[1]

    # Warm-up (and compilation): a stream past the point where the window is full.
    warm_up = time.perf_counter()
    session, decoder = new_stream()
    while session.next_frame < streaming.window_frames + streaming.block_frames[-1]:
        produce(session, decoder)
    del session, decoder
    synchronize(device)
    warm_up = time.perf_counter() - warm_up

    reset_peak(device)
    start = clock.mark()
    session, decoder = new_stream()
    first_frames = produce(session, decoder)
    first_latency = clock.seconds(start, clock.mark())
    while session.next_frame < streaming.window_frames:  # chunks before the window is full cost less
        produce(session, decoder)
    times, frames = [], 0
    for _ in range(setup.chunks):
        start = clock.mark()
        frames += produce(session, decoder)
        times.append(clock.seconds(start, clock.mark()))
    memory = peak_gib(device)

    config = setup.model
    tokens_per_frame = config.tokens_per_frame(height, width)
    blocks = "/".join(str(size) for size in streaming.block_frames)
    what = (f"streaming, {'paper' if paper else 'Track-v0'}: sink {streaming.sink_frames} / window "
            f"{streaming.window_frames} latent frames ({streaming.window_frames * tokens_per_frame} keys), blocks "
            f"{blocks}, {len(streaming.denoising_steps)} steps + commit, {setup.dtype}"
            + (f", Tiny VAE {setup.vae_dtype} decode" if decode else ", no decode")
            + (", blocks compiled (CausalWanModel.compile_blocks)" if compiled else ""))
    median = statistics.median(times)
    result = (f"{frames / sum(times):.1f} video frames/s; first chunk {ms(first_latency)} ({first_frames} frame"
              f"{'s' if first_frames != 1 else ''}); per chunk ({frames // len(times)} frames) p50 {ms(median)}, "
              f"p99 {ms(percentile(times, 0.99))}, max {ms(max(times))} over {len(times)} chunks"
              + (f"; warm-up stream incl. compilation {warm_up:.0f} s wall" if compiled else ""))
    return Row(group, what, result, memory, group)


def taehv_rows(bench: Bench, reference_path: str | None) -> list[Row]:
    setup, device, clock = bench.setup, bench.device, bench.clock
    height, width = setup.latent
    per_chunk = StreamingConfig.track_v0().block_frames[-1]
    chunks = setup.vae_chunks
    generator = torch.Generator(device=device).manual_seed(4)
    latents = torch.randn(1, 1 + per_chunk * (chunks + 2), bench.vae.latent_channels, height, width,
                          generator=generator, device=device).to(bench.vae.dtype)
    pieces = [latents[:, :1]] + list(latents[:, 1:].split(per_chunk, 1))

    decoders: dict[str, tuple[Callable, object]] = {"ours": (lambda stream, x: stream.push(x), bench.vae.stream_decoder())}
    note = ""
    if reference_path:
        try:
            module = load_reference(reference_path)
            decoders["reference"] = (reference_push, module.StreamingTAEHV(reference_model(module, bench.vae)))
        except Exception as error:  # noqa: BLE001 - reported in the table
            note = f"; reference not loaded: {type(error).__name__}: {error}"
    times = {name: [] for name in decoders}
    outputs = {name: [] for name in decoders}
    for index, piece in enumerate(pieces):
        order = list(decoders.items())
        if index % 2:
            order.reverse()
        for name, (push, stream) in order:
            start = clock.mark()
            frames = push(stream, piece)
            elapsed = clock.seconds(start, clock.mark())
            if index >= 3:  # the first latent, then two chunks of warm-up
                times[name].append(elapsed)
            if index < 4:
                outputs[name].append(frames.float())
    rows = []
    frames_per_chunk = per_chunk * bench.vae.time_upscale
    decoder = bench.vae.stream_decoder()
    decoder.push(pieces[0])
    reset_peak(device)
    decoder.push(pieces[1])
    memory = peak_gib(device)
    del decoder
    for name, samples in times.items():
        median = statistics.median(samples)
        result = (f"{frames_per_chunk / median:.1f} frames/s; per chunk of {per_chunk} latents ({frames_per_chunk} frames) "
                  f"p50 {ms(median)}, p99 {ms(percentile(samples, 0.99))} over {len(samples)} chunks")
        if name == "reference":
            difference = max((a - b).abs().max().item() for a, b in zip(outputs["ours"], outputs["reference"]))
            result += (f", {statistics.median(samples) / statistics.median(times['ours']):.2f}x ours' time; "
                       f"largest difference from ours {difference:.2g}")
        rows.append(Row(
            "taehv" if name == "ours" else "taehv-reference",
            f"Tiny VAE {setup.vae_dtype} streaming decode, {width * 8}x{height * 8}"
            + (", madebyollin/taehv StreamingTAEHV (one frame at a time), interleaved with ours" if name == "reference"
               else ", chunks of 3 latents pushed at once"),
            result + (note if name == "ours" else ""),
            memory if name == "ours" else "-",
            "taehv",
        ))
    return rows


# --- driver -------------------------------------------------------------------------------------


def command_for(args, group: str) -> str:
    parts = ["bash", "bench/gpu_check.sh"]
    if args.smoke:
        parts.append("--smoke")
    if args.chunks is not None:
        parts += ["--chunks", str(args.chunks)]
    if group == "dit" and args.compile_backend:
        parts += ["--compile-backend", args.compile_backend]
    if group == "taehv" and args.taehv_reference:
        parts += ["--taehv-reference", args.taehv_reference]
    return shlex.join(parts + ["--only", group])


def print_table(rows: list[Row], args) -> None:
    print("peak memory: torch.cuda.max_memory_allocated over the measured part, weights included")
    print("| row | what | result | peak memory | command |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row.name} | {row.what} | {row.result} | {row.memory} | `{command_for(args, row.group)}` |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="groups: " + ", ".join(GROUPS))
    parser.add_argument("--smoke", action="store_true", help="tiny config on the CPU, a few chunks: checks the script runs")
    parser.add_argument("--only", nargs="+", choices=GROUPS, metavar="GROUP", help="measure only these groups of rows")
    parser.add_argument("--chunks", type=int, help="measured chunks per streaming row (default 100; smoke 3)")
    parser.add_argument("--device", help="default: cuda (cpu with --smoke)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled DiT row")
    parser.add_argument("--compile-backend", help="torch.compile backend (default inductor; smoke: eager, tracing only)")
    parser.add_argument("--taehv-reference", metavar="PATH",
                        help="a checkout of madebyollin/taehv (or its taehv.py): adds its StreamingTAEHV beside ours")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip groups that could end after this many seconds (default 450; smoke: none skipped)")
    args = parser.parse_args(argv)
    if args.chunks is not None and args.chunks < 1:
        parser.error("--chunks must be at least 1")

    setup = SMOKE if args.smoke else FULL
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        return 2
    if args.chunks is not None:
        setup = dataclasses.replace(setup, chunks=args.chunks)
    if args.compile_backend:
        setup = dataclasses.replace(setup, compile_backend=args.compile_backend)
    budget = args.budget_s if args.budget_s is not None else (math.inf if args.smoke else 450.0)
    if device.type == "cpu":
        torch.set_num_threads(1)  # threads spinning on a shared 2-core machine only add CPU time
    groups = [group for group in GROUPS if not args.only or group in args.only]

    torch.set_grad_enabled(False)
    began = time.perf_counter()
    config = setup.model
    height, width = setup.latent
    tokens_per_frame = config.tokens_per_frame(height, width)
    print("command:", shlex.join([sys.executable, *sys.argv]))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"{datetime.date.today()} {device} ({device_name}), torch {torch.__version__}"
          + (f", CUDA {torch.version.cuda}" if device.type == "cuda" else f", {torch.get_num_threads()} thread(s)")
          + f"; load average {'/'.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"setup: {setup.name}; dim {config.dim}, {config.num_layers} layers, {config.num_heads} heads of "
          f"{config.head_dim}, ffn {config.ffn_dim}, {config.in_channels} input channels; latent {width}x{height} -> "
          f"{tokens_per_frame} tokens per latent frame; {setup.dtype} weights, Tiny VAE {setup.vae_dtype}; "
          f"clock: {Clock(device).name}" + (" (smoke: the figures mean nothing)" if args.smoke else ""))
    started = time.perf_counter()
    bench = build(setup, device)
    synchronize(device)
    print(f"random weights built in {time.perf_counter() - started:.1f} s", flush=True)

    rows: list[Row] = []
    for group in groups:
        allowance = 0 if args.smoke else ALLOWANCE_S[group]
        if time.perf_counter() - began + allowance > budget:
            rows.append(Row(group, "-", f"skipped: it could end past the {budget:.0f} s budget (--budget-s)", "-", group))
            continue
        started = time.perf_counter()
        try:
            if group == "dit":
                found = dit_rows(bench, compile_forward=not args.no_compile)
            elif group == "taehv":
                found = taehv_rows(bench, args.taehv_reference)
            else:
                found = [stream_row(bench, group)]
        except Exception as error:  # noqa: BLE001 - one failing group must not lose the others' figures
            found = [Row(group, "-", f"failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}", "-", group)]
        rows.extend(found)
        print(f"{group}: done in {time.perf_counter() - started:.1f} s", flush=True)

    print()
    print_table(rows, args)
    print(f"\ntotal {time.perf_counter() - began:.0f} s; load average {'/'.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 1 if any(row.result.startswith("failed") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
