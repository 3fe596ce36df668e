"""Trains the demo model's learned decoder (`codecs/learned_decoder.py`) on the latents the demo student generates.

The shipped `demo/assets/demo_decoder.safetensors` (800 steps, 2.4 minutes on one thread of a shared 2-core
CPU) came from two caches of streamed pairs, 56 clips of 31 frames (dataset seed 31; its last 6 clips
validate) and 150 clips of 10 frames (seed 32; more clips for the same streaming time: the decoder
overfits the backgrounds of the clips it sees), then training on both:

    OMP_NUM_THREADS=1 python -m motionstream_core.training.decoder_recipe --out runs/decoder --clips 56 --frames 31 \\
        --dataset-seed 31 --steps 0
    OMP_NUM_THREADS=1 python -m motionstream_core.training.decoder_recipe --out runs/decoder_short --clips 150 --frames 10 \\
        --dataset-seed 32 --steps 0
    OMP_NUM_THREADS=1 python -m motionstream_core.training.decoder_recipe --out runs/decoder_mse \\
        --data runs/decoder/pairs.safetensors --more-data runs/decoder_short/pairs.safetensors \\
        --loss mse --lr 1e-3 --steps 800 --minutes 2.5 --eval-every 100 \\
        --export motionstream_core/demo/assets/demo_decoder.safetensors

(The first cache was written by a longer Charbonnier run stopped early, the second by `stream_pairs` called
directly with the same arguments; the commands above make the same pairs.) The loss is MSE: with L1 or
Charbonnier the decoder learned nothing (held-out PSNR unchanged to 0.01 dB over 800-1,000 steps), as most of
the error of a generated frame is content the student got wrong (a sprite a pixel off, a background
drifted), whose error has a median near zero whatever the decoder does; MSE rewards the conditional mean,
which smooths the token blocks and speckle.

Data: synthetic clips (128x128; dataset seeds 31 and 32: no training pool, validation or held-out set
uses them) streamed by the demo model from their first frame with their own tracks, as the demo and
bench_demo.py stream them (noise seed = clip index). The shipped decoder saw the student shipped before
the region-drag fine-tune, whose latents look alike; it serves both, as it depends only on the codec. Each generated latent frame is paired with
the clip's true frame: the decoder learns to turn what the student actually produces (token-sized
blocks, speckle around sprites) into the frame it should have been. A share of each batch is the
codec's clean encoding of true frames, so that a good latent still decodes as well as the PCA does.
The last clips are kept out of training and report the PSNR of both decodes as training goes.

Loss in pixels ([-1, 1] units; --loss), Adam with a cosine decay, batches of whole frames; the step with the
best held-out PSNR of generated frames is kept. The generated pairs are cached (`--data`), so a second run
trains without streaming again.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

from ..codecs.learned_decoder import LatentRefiner, RefinerConfig, save_refiner
from ..demo.model import load_demo_model
from ..synthetic import SyntheticMotionConfig, clip_seed, generate_clip


def stream_pairs(model_path: str | None, clips: int, frames: int, dataset_seed: int) -> dict[str, torch.Tensor]:
    """Generated latents [N, C, h, w], clean latents [N, C, h, w] and true frames [N, 3, H, W] (uint8), per clip."""
    demo = load_demo_model(model_path, decoder="pca")
    config = SyntheticMotionConfig(width=demo.size, height=demo.size, num_frames=frames, fps=demo.fps)
    generated, clean, truth, clip_index = [], [], [], []
    began = time.perf_counter()
    for index in range(clips):
        clip = generate_clip(config, clip_seed(dataset_seed, index))
        result = demo.stream(clip.frames[0], clip.tracks, frames, seed=index, keep_frames=False, keep_latents=True)
        generated.append(result.latents[0].transpose(0, 1))
        clean.append(demo.codec.encode_images(clip.frames)[0].transpose(0, 1))
        truth.append((clip.frames * 255).round().to(torch.uint8))
        clip_index.append(torch.full((frames,), index))
        print(f"streamed clip {index + 1}/{clips} ({time.perf_counter() - began:.0f} s)", flush=True)
    return {"generated": torch.cat(generated), "clean": torch.cat(clean), "frames": torch.cat(truth),
            "clip": torch.cat(clip_index)}


def charbonnier(prediction: torch.Tensor, target: torch.Tensor, epsilon: float = 1e-3) -> torch.Tensor:
    return ((prediction - target).square() + epsilon**2).sqrt().mean()


LOSSES = {
    "charbonnier": charbonnier,
    "mse": lambda prediction, target: (prediction - target).square().mean(),
}


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of frames in [-1, 1] (peak-to-peak 2)."""
    mse = float((prediction - target).square().mean())
    return 10 * math.log10(4 / mse) if mse > 0 else math.inf


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/decoder")
    parser.add_argument("--model", help="demo weights whose student generates the latents (default: the shipped model)")
    parser.add_argument("--data", help="cache of the streamed pairs (.safetensors); made if missing (default: OUT/pairs.safetensors)")
    parser.add_argument("--more-data", nargs="*", default=[],
                        help="more pair caches (made by earlier runs' --data) to train on; validation clips come from --data")
    parser.add_argument("--clips", type=int, default=56)
    parser.add_argument("--frames", type=int, default=31)
    parser.add_argument("--dataset-seed", type=int, default=31)
    parser.add_argument("--validation-clips", type=int, default=6)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--minutes", type=float, default=10.0, help="the training loop ends after this wall-clock time")
    parser.add_argument("--batch", type=int, default=16, help="frames per step")
    parser.add_argument("--clean-share", type=float, default=0.25, help="share of each batch that is clean latents")
    parser.add_argument("--loss", choices=tuple(LOSSES), default="mse")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--export", help="also write the decoder (fp16) here, e.g. the demo's assets")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from safetensors.torch import load_file, save_file

    data_path = Path(args.data) if args.data else out / "pairs.safetensors"
    if data_path.is_file():
        data = load_file(str(data_path))
    else:
        data = stream_pairs(args.model, args.clips, args.frames, args.dataset_seed)
        save_file({name: value.contiguous() for name, value in data.items()}, str(data_path))
    for offset, extra in enumerate(args.more_data, start=1):  # their clips train only: ids below --data's
        more = load_file(extra)
        more["clip"] = more["clip"] - 1_000_000 * offset
        data = {name: torch.cat((data[name], more[name])) for name in data}
    demo = load_demo_model(args.model, decoder="pca")
    codec, dit_patch = demo.codec, demo.model.transformer.config.patch_size

    validation = data["clip"] >= int(data["clip"].max()) + 1 - args.validation_clips  # --data's last clips
    train = {name: value[~validation] for name, value in data.items()}
    held = {name: value[validation] for name, value in data.items()}
    targets = train["frames"].float() / 127.5 - 1
    held_targets = held["frames"].float() / 127.5 - 1

    token = dit_patch[-1] if isinstance(dit_patch, (tuple, list)) else int(dit_patch)
    refiner = LatentRefiner(RefinerConfig(codec.channels, codec.factor, args.width, args.blocks, token))
    optimizer = torch.optim.Adam(refiner.parameters(), lr=args.lr)

    def decode(latents: torch.Tensor, train_mode: bool) -> torch.Tensor:
        base = codec.decode(latents.transpose(0, 1)[None])[0].transpose(0, 1)  # [N, 3, H, W], no gradient needed
        return base + refiner(latents) if train_mode else (base + refiner(latents)).clamp(-1, 1)

    def evaluate() -> dict[str, float]:
        with torch.no_grad():
            pca = {kind: codec.decode(held[kind].transpose(0, 1)[None])[0].transpose(0, 1) for kind in ("generated", "clean")}
            learned = {kind: decode(held[kind], False) for kind in ("generated", "clean")}
        return {f"{name}_{kind}": round(psnr(frames[kind], held_targets), 3)
                for name, frames in (("pca", pca), ("learned", learned)) for kind in ("generated", "clean")}

    print(json.dumps({"frames": len(targets), "held_frames": len(held_targets), "token": token,
                      "parameters": sum(p.numel() for p in refiner.parameters()), **evaluate()}), flush=True)
    clean_count = round(args.batch * args.clean_share)
    began, step, best = time.perf_counter(), 0, (evaluate()["learned_generated"], 0, copy.deepcopy(refiner.state_dict()))
    while step < args.steps and time.perf_counter() - began < 60 * args.minutes:
        progress = min(1.0, max(step / args.steps, (time.perf_counter() - began) / (60 * args.minutes)))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        picks = torch.randint(len(targets), (args.batch,))
        latents = torch.cat((train["generated"][picks[clean_count:]], train["clean"][picks[:clean_count]]))
        target = torch.cat((targets[picks[clean_count:]], targets[picks[:clean_count]]))
        loss = LOSSES[args.loss](decode(latents, True), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % args.eval_every == 0:
            entry = {"step": step, "loss": round(float(loss), 5), "seconds": round(time.perf_counter() - began), **evaluate()}
            print(json.dumps(entry), flush=True)
            if entry["learned_generated"] > best[0]:  # the decoder overfits the clips it sees: keep the best on held clips
                best = (entry["learned_generated"], step, copy.deepcopy(refiner.state_dict()))

    refiner.load_state_dict(best[2])
    final = {"steps": step, "kept_step": best[1], "seconds": round(time.perf_counter() - began), **evaluate()}
    print(json.dumps(final), flush=True)
    metadata = {"recipe": json.dumps({**vars(args), "final": final})}
    save_refiner(out / "decoder.safetensors", refiner, codec, extra_metadata=metadata)
    if args.export:
        path = save_refiner(args.export, refiner, codec, extra_metadata=metadata)
        print(f"exported {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
