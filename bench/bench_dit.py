"""Times one forward of the Wan 2.1 DiT and prints tokens per second.

  python bench/bench_dit.py                 # small config on the CPU, full 1.3B config when CUDA is present
  python bench/bench_dit.py --full --device cuda --dtype bf16

The full config is Wan 2.1 1.3B (dim 1536, 30 layers, 12 heads, ffn 8960) at 832x480 with
21 latent frames (81 video frames), random weights.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from motionstream_core import WanConfig, WanDiT

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FULL = WanConfig()  # the defaults are the 1.3B text-to-video model
SMALL = WanConfig(dim=256, ffn_dim=1024, num_heads=2, num_layers=4, text_dim=256, text_len=64)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(config: WanConfig, width: int, height: int, latent_frames: int, device, dtype, repeats: int):
    torch.manual_seed(0)
    with torch.device(device):
        model = WanDiT(config).to(dtype).eval()
    latent_height, latent_width = height // 8, width // 8
    latents = torch.randn(1, config.in_channels, latent_frames, latent_height, latent_width, device=device, dtype=dtype)
    text = torch.randn(1, config.text_len, config.text_dim, device=device, dtype=dtype)
    timesteps = torch.full((1,), 500.0, device=device)
    tokens = latent_frames * config.tokens_per_frame(latent_height, latent_width)
    seconds = []
    with torch.inference_mode():
        for attempt in range(repeats + 1):
            synchronize(device)
            start = time.perf_counter()
            model(latents, timesteps, text)
            synchronize(device)
            if attempt:  # the first run is warm-up
                seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return tokens, median, peak


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--full", action="store_true", help="also run the full 1.3B config (default on CUDA)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    print(f"command: {' '.join(sys.argv)}")
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {torch.get_num_threads()} threads"))
    runs = [("small", SMALL, 416, 240, 9)]
    if args.full or device.type == "cuda":
        runs.append(("1.3B", FULL, 832, 480, 21))
    else:
        print("1.3B at 832x480x21: skipped on the CPU (pass --full to force; it takes tens of minutes)")
    for name, config, width, height, frames in runs:
        tokens, seconds, peak = time_forward(config, width, height, frames, device, dtype, args.repeats)
        print(
            f"{name:>5} {width}x{height}, {frames} latent frames, {tokens} tokens, {str(dtype)[6:]}: "
            f"{seconds * 1000:.1f} ms/forward, {tokens / seconds:,.0f} tokens/s"
            + (f", peak {peak:.2f} GiB" if peak == peak else "")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
