"""Times one forward of the Wan 2.1 DiT beside diffusers' WanTransformer3DModel and prints tokens per second.

  python bench/bench_dit.py                 # small config on the CPU, full 1.3B config when CUDA is present
  python bench/bench_dit.py --full --device cuda --dtype bf16
  python bench/bench_dit.py --frames 3 --width 208 --height 120 --rounds 5   # a quick CPU look

The full config is Wan 2.1 1.3B (dim 1536, 30 layers, 12 heads, ffn 8960) at 832x480 with
21 latent frames (81 video frames), random weights. When diffusers is installed (it is a test
dependency), its WanTransformer3DModel gets the same weights (converted to its key names) and
runs beside ours: the two take turns round by round, medians are printed, and the largest
difference between their outputs shows they compute the same thing. Times are process CPU time
on the CPU (a shared machine's load does not enter them) and CUDA events on a GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from motionstream_core import WanConfig
from motionstream_core.model.key_schemes import wan_to_diffusers
from motionstream_core.testing.random_model import random_wan_dit

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FULL = WanConfig()  # the defaults are the 1.3B text-to-video model
SMALL = WanConfig(dim=256, ffn_dim=1024, num_heads=2, num_layers=4, text_dim=256, text_len=64)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def diffusers_twin(model, dtype, device):
    """diffusers' WanTransformer3DModel holding `model`'s weights, or None without diffusers."""
    try:
        from diffusers import WanTransformer3DModel
    except ImportError:
        return None
    settings = {key: value for key, value in model.config.to_diffusers_config().items() if not key.startswith("_")}
    # Built on the device itself (not on "meta": its rotary tables are buffers that are not in the weights).
    with torch.device(device):
        twin = WanTransformer3DModel(**settings)
    twin.load_state_dict(wan_to_diffusers(model.state_dict()), strict=True)
    # As from_pretrained(torch_dtype=...) loads it: the modules diffusers keeps in float32 stay there.
    keep = set(getattr(twin, "_keep_in_fp32_modules", None) or ())
    for name, module in twin.named_modules():
        target = torch.float32 if keep & set(name.split(".")) else dtype
        for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
            if tensor.is_floating_point():
                tensor.data = tensor.data.to(target)
    return twin.eval()


class Clock:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def start(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.process_time()

    def seconds_since(self, start) -> float:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return time.process_time() - start


def time_forward(config: WanConfig, width: int, height: int, latent_frames: int, device, dtype, rounds: int,
                 reference: bool):
    """{implementation: (seconds per forward of each round, peak GiB)}, the tokens, and the largest output difference."""
    model = random_wan_dit(config, seed=0, dtype=dtype, device=device)
    twin = diffusers_twin(model, dtype, device) if reference else None
    latent_height, latent_width = height // 8, width // 8
    generator = torch.Generator(device=device).manual_seed(1)
    latents = torch.randn(1, config.in_channels, latent_frames, latent_height, latent_width, generator=generator,
                          device=device, dtype=dtype)
    # Exactly text_len tokens: ours pads shorter prompts, diffusers' model does not.
    text = torch.randn(1, config.text_len, config.text_dim, generator=generator, device=device, dtype=dtype)
    timesteps = torch.full((1,), 500.0, device=device)
    tokens = latent_frames * config.tokens_per_frame(latent_height, latent_width)
    runs = {"ours": lambda: model(latents, timesteps, text)}
    if twin is not None:
        runs["diffusers"] = lambda: twin(latents, timesteps, text, return_dict=False)[0]

    clock = Clock(device)
    seconds = {name: [] for name in runs}
    peaks = {}
    with torch.inference_mode():
        outputs = {name: run().float() for name, run in runs.items()}  # also the warm-up
        difference = (outputs["ours"] - outputs["diffusers"]).abs().max().item() if twin is not None else None
        del outputs
        for name, run in runs.items():
            if device.type == "cuda":
                synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            run()
            synchronize(device)
            peaks[name] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        for round_index in range(rounds):
            order = list(runs.items())
            if round_index % 2:
                order.reverse()
            for name, run in order:
                start = clock.start()
                run()
                seconds[name].append(clock.seconds_since(start))
    return {name: (seconds[name], peaks[name]) for name in runs}, tokens, difference


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--full", action="store_true", help="also run the full 1.3B config (default on CUDA)")
    parser.add_argument("--rounds", "--repeats", type=int, default=5, dest="rounds",
                        help="interleaved rounds after a warm-up (medians are printed)")
    parser.add_argument("--width", type=int, default=416, help="small config: video width")
    parser.add_argument("--height", type=int, default=240, help="small config: video height")
    parser.add_argument("--frames", type=int, default=9, help="small config: latent frames")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-reference", action="store_true", help="skip diffusers' WanTransformer3DModel")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    print(f"command: {' '.join(sys.argv)}")
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {torch.get_num_threads()} threads")
          + f"; times: {'CUDA events' if device.type == 'cuda' else 'process CPU time'}, median of {args.rounds} "
          f"interleaved rounds; load average {'/'.join(f'{v:.2f}' for v in os.getloadavg())}")
    runs = [("small", SMALL, args.width, args.height, args.frames)]
    if args.full or device.type == "cuda":
        runs.append(("1.3B", FULL, 832, 480, 21))
    else:
        print("1.3B at 832x480x21: skipped on the CPU (pass --full to force; it takes tens of minutes)")
    torch.set_grad_enabled(False)
    for name, config, width, height, frames in runs:
        results, tokens, difference = time_forward(
            config, width, height, frames, device, dtype, args.rounds, reference=not args.no_reference)
        if "diffusers" not in results and not args.no_reference:
            print("  (diffusers is not installed: ours alone)")
        ours = statistics.median(results["ours"][0])
        for implementation, (seconds, peak) in results.items():
            median = statistics.median(seconds)
            print(
                f"{name:>5} {implementation:>9} {width}x{height}, {frames} latent frames, {tokens} tokens, {str(dtype)[6:]}: "
                f"{median * 1000:.1f} ms/forward [{min(seconds) * 1000:.1f}-{max(seconds) * 1000:.1f}], "
                f"{tokens / median:,.0f} tokens/s"
                + (f", peak {peak:.2f} GiB" if peak == peak else "")
                + (f"; {median / ours:.2f}x ours' time, largest output difference {difference:.2g}"
                   if implementation == "diffusers" else "")
            )
    print(f"load average after: {'/'.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
