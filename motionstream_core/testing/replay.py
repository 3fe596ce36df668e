"""Replays a recorded causal rollout with this engine: `python -m motionstream_core.testing.replay IN OUT`.

The input is a safetensors file in the format of the golden fixture
`causal_rollout_absolute.safetensors`: weights under `model.*`, inputs `io.noise`
[B, F, C, H, W], `io.renoise` [blocks, steps - 1, B, F_block, C, H, W], `io.context`
[B, L, text_dim] (optionally `io.image_tokens`, `io.commit_noise` [blocks, B, F_block, C, H, W]),
and string metadata `config`, `sink_frames`, `window_frames_including_current`, `blocks`, `rope`,
`frames_per_block` (an integer or a JSON list, the last size repeating), `shift` (optionally
`denoising_steps` as a JSON list, `num_train_timesteps`, `context_noise`). The engine runs in
float64 with exactly those settings and the recorded noise; the output file holds
`output_latents` [B, F, C, H, W] and `step_x0` [blocks * steps, B, F_block, C, H, W] (the x0 of
every denoising step in order; per block as `step_x0.<block>` when block sizes differ).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..streaming.block_schedule import BlockSchedule
from ..model.config import WanConfig
from ..sampling.schedule import DEFAULT_DENOISING_STEPS, FlowMatchSchedule
from ..streaming.session import StreamConditions, StreamingConfig, StreamingSession
from ..model.weights import build_dit, read_metadata, read_state_dict, write_safetensors_atomically


class RecordedNoise:
    """The noise of a recorded rollout, handed out in the session's [B, C, F, H, W] layout."""

    def __init__(self, io: Mapping[str, torch.Tensor], blocks: BlockSchedule):
        self.io = io
        self.blocks = blocks

    def initial(self, chunk: int, shape: Sequence[int]) -> torch.Tensor:
        start = self.blocks.start(chunk)
        noise = self.io["io.noise"]
        if start + shape[2] > noise.shape[1]:
            raise ValueError(f"io.noise has {noise.shape[1]} frames; block {chunk} needs frames up to {start + shape[2]}")
        return noise[:, start : start + shape[2]].transpose(1, 2)

    def renoise(self, chunk: int, step: int, shape: Sequence[int]) -> torch.Tensor:
        return self.io["io.renoise"][chunk, step - 1].transpose(1, 2)

    def commit(self, chunk: int, shape: Sequence[int]) -> torch.Tensor:
        if "io.commit_noise" not in self.io:
            raise ValueError("the rollout re-noises before commit but has no io.commit_noise")
        return self.io["io.commit_noise"][chunk].transpose(1, 2)


def _metadata_value(metadata: Mapping[str, str], key: str, default=None):
    if key not in metadata:
        if default is None:
            raise ValueError(f"the rollout file has no {key!r} metadata")
        return default
    return json.loads(metadata[key])


def streaming_config_from_metadata(metadata: Mapping[str, str]) -> tuple[StreamingConfig, int]:
    """The engine settings of a recorded rollout, and its number of blocks."""
    block_frames = _metadata_value(metadata, "frames_per_block")
    context_noise = _metadata_value(metadata, "context_noise", 0)
    config = StreamingConfig(
        sink_frames=int(_metadata_value(metadata, "sink_frames")),
        window_frames=int(_metadata_value(metadata, "window_frames_including_current")),
        rope_policy=metadata.get("rope", "absolute"),
        denoising_steps=tuple(_metadata_value(metadata, "denoising_steps", list(DEFAULT_DENOISING_STEPS))),
        shift=float(_metadata_value(metadata, "shift")),
        num_train_timesteps=int(_metadata_value(metadata, "num_train_timesteps", 1000)),
        block_frames=tuple(block_frames) if isinstance(block_frames, list) else (int(block_frames),),
        commit_step=int(context_noise),
        commit_renoise=bool(_metadata_value(metadata, "context_renoise", False)),
    )
    return config, int(_metadata_value(metadata, "blocks"))


def replay(path: str | os.PathLike, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Runs the recorded rollout at `path`; returns `output_latents` and `step_x0` tensors."""
    metadata = read_metadata(path)
    tensors = read_state_dict(path)
    io = {k: tensors.pop(k) for k in [k for k in tensors if k.startswith("io.")]}
    for key in ("io.noise", "io.renoise", "io.context"):
        if key not in io:
            raise ValueError(f"the rollout file has no {key!r} tensor")
    streaming, num_blocks = streaming_config_from_metadata(metadata)
    model_config = WanConfig.from_dict(_metadata_value(metadata, "config"))
    transformer, _ = build_dit(tensors, config=model_config, dtype=dtype)

    schedule = FlowMatchSchedule(streaming.shift, streaming.num_train_timesteps)
    timesteps, sigmas = schedule.warp(streaming.denoising_steps)
    if "io.timesteps" in io and not torch.equal(io["io.timesteps"].to(torch.float32), timesteps):
        raise ValueError(
            f"the recorded timesteps {io['io.timesteps'].tolist()} are not the steps {list(streaming.denoising_steps)} "
            f"warped with shift {streaming.shift} ({timesteps.tolist()})"
        )

    blocks = BlockSchedule(streaming.block_frames)
    batch, frames, channels, height, width = io["io.noise"].shape
    step_x0: list[torch.Tensor] = []
    session = StreamingSession(
        transformer,
        streaming,
        latent_height=height,
        latent_width=width,
        batch_size=batch,
        noise=RecordedNoise(io, blocks),
        on_step=lambda chunk, step, x0: step_x0.append(x0.transpose(1, 2).contiguous()),
    )
    session.start(StreamConditions(text=io["io.context"].to(dtype), image_tokens=io.get("io.image_tokens")))
    chunks = [chunk.latents.transpose(1, 2) for chunk in session.stream(num_blocks)]

    outputs = {"output_latents": torch.cat(chunks, dim=1).contiguous()}
    steps = len(streaming.denoising_steps)
    if len(set(blocks.size(b) for b in range(num_blocks))) == 1:
        outputs["step_x0"] = torch.stack(step_x0)
    else:
        for block in range(num_blocks):
            outputs[f"step_x0.{block}"] = torch.stack(step_x0[block * steps : (block + 1) * steps])
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m motionstream_core.testing.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("rollout", help="recorded rollout (.safetensors)")
    parser.add_argument("output", help="where to write output_latents and step_x0 (.safetensors)")
    args = parser.parse_args(argv)
    outputs = replay(args.rollout)
    write_safetensors_atomically(outputs, args.output, metadata={"source": Path(args.rollout).name})
    print(f"wrote {', '.join(f'{k} {tuple(v.shape)}' for k, v in outputs.items())} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
