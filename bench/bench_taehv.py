"""Decoding speed of the Tiny VAE (TAEHV, taew2_1 geometry) at 832x480, beside the reference design when given.

Measures the steady state of a live stream: a decoder is primed with one latent
(untimed, also a warm-up), then ``--latent-frames`` latents are pushed (in chunks
of ``--chunk``, by default as ``decode_video`` would) and timed. Each of those latents yields 4 frames (1 in preview mode).
Random weights: speed does not depend on their values.

With ``--reference PATH`` (a checkout of madebyollin/taehv, or its taehv.py; nothing of it is
shipped here), the same weights also run through its ``StreamingTAEHV``, which decodes one frame
per call, fed one latent at a time and drained as a player would; the largest difference between
its frames and ours is printed as a check that both decode the same thing. The decoders take
turns round by round, and medians are printed: process CPU time on the CPU, CUDA events on a GPU.

    python bench/bench_taehv.py                     # CPU fp32 full + preview; CUDA fp16 too if available
    python bench/bench_taehv.py --device cuda --dtype fp16 --latent-frames 8
    python bench/bench_taehv.py --reference ../taehv --width 416 --height 240

On Linux CPUs, THP_MEM_ALLOC_ENABLE=1 (PyTorch's huge-page allocations) cut the
page-fault time of the large activations and made CPU decoding ~25% faster here.
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from motionstream_core.codecs.taehv import TinyVAE  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_reference(path):
    """madebyollin/taehv's module from a checkout (its folder or its taehv.py)."""
    file = Path(path)
    if file.is_dir():
        file = file / "taehv.py"
    if not file.is_file():
        raise FileNotFoundError(f"no taehv.py at {path}")
    spec = importlib.util.spec_from_file_location("taehv_reference", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_model(module, vae: TinyVAE):
    """The reference TAEHV with the same weights, device and dtype as `vae` (full frame rate)."""
    reference = module.TAEHV(checkpoint_path=None)
    reference.load_state_dict({key: value.float() for key, value in vae.state_dict().items()})
    return reference.to(device=vae.device, dtype=vae.dtype).eval()


def reference_push(stream, latents: torch.Tensor) -> torch.Tensor:
    """Feeds NTCHW latents to a StreamingTAEHV one at a time and drains every frame they give."""
    frames = []
    for index in range(latents.shape[1]):
        frame = stream.decode(latents[:, index : index + 1])
        while frame is not None:
            frames.append(frame)
            frame = stream.decode()
    if not frames:
        return latents.new_zeros((latents.shape[0], 0, 3, 0, 0))
    return torch.cat(frames, 1)


class Clock:
    """CUDA events on a GPU, process CPU time on the CPU (wall time on a shared machine measures the others too)."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self):
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.process_time()

    def seconds_since(self, start) -> float:
        if self.device.type == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return time.process_time() - start


def bench(device: str, dtype_name: str, args: argparse.Namespace) -> None:
    device = torch.device(device)
    torch.manual_seed(0)
    vae = TinyVAE(channels_last=not args.no_channels_last).eval().to(device=device, dtype=DTYPES[dtype_name])
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(args.batch, 1 + args.latent_frames, 16, args.height // 8, args.width // 8, generator=generator)
    latents = latents.to(device=device, dtype=vae.dtype)
    chunk = args.chunk or vae.auto_latents_per_chunk(latents.shape)

    # name -> (new stream, push latents -> frames, frames per latent)
    decoders = {}
    for preview in (False, True) if args.mode == "both" else (args.mode == "preview",):
        decoders["preview" if preview else "full"] = (
            lambda preview=preview: vae.stream_decoder(preview=preview),
            lambda stream, x: [stream.push(piece) for piece in x.split(chunk, 1)],
            1 if preview else vae.time_upscale,
        )
    if args.reference and "full" in decoders:
        module = load_reference(args.reference)
        reference = reference_model(module, vae)
        decoders["full, reference"] = (
            lambda: module.StreamingTAEHV(reference), lambda stream, x: [reference_push(stream, x)], vae.time_upscale,
        )

    clock = Clock(device)
    seconds = {name: [] for name in decoders}
    outputs = {}
    for round_index in range(args.repeats):
        order = list(decoders.items())
        if round_index % 2:
            order.reverse()
        for name, (new_stream, push, _) in order:
            stream = new_stream()
            push(stream, latents[:, :1])
            synchronize(device)
            start = clock.start()
            frames = push(stream, latents[:, 1:])
            seconds[name].append(clock.seconds_since(start))
            if round_index == 0:
                outputs[name] = torch.cat(frames, 1).float()
            del frames, stream

    load = "/".join(f"{value:.2f}" for value in os.getloadavg())
    clock_name = "CUDA events" if device.type == "cuda" else "process CPU time"
    print(f"{device.type} {dtype_name}, {args.width}x{args.height}, batch {args.batch} x {args.latent_frames} latents "
          f"(ours in chunks of {chunk}), channels_last={not args.no_channels_last}; median of {args.repeats} "
          f"interleaved rounds, {clock_name}; load average {load}", flush=True)
    for name, (_, _, per_latent) in decoders.items():
        frame_count = args.batch * args.latent_frames * per_latent
        median = statistics.median(seconds[name])
        line = (f"  {name:16s} -> {frame_count:3d} frames: {frame_count / median:8.2f} frames/s "
                f"(median {median:.3f} s; all: {', '.join(f'{s:.3f}' for s in seconds[name])} s)")
        if name == "full, reference":
            difference = (outputs[name] - outputs["full"]).abs().max().item()
            line += (f"; {median / statistics.median(seconds['full']):.2f}x ours' time; "
                     f"largest difference from ours {difference:.2g}")
        print(line, flush=True)


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
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (medians are printed)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-channels-last", action="store_true", help="use NCHW activations (for comparison)")
    parser.add_argument("--reference", metavar="PATH",
                        help="a checkout of madebyollin/taehv (or its taehv.py): its StreamingTAEHV runs beside ours")
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
