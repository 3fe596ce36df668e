"""Stage 1 under torchrun with two CPU processes (gloo, FSDP2) computes what one process computes."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from motionstream_core.model.weights import read_state_dict

TINY_RUN = {
    "steps": 3,
    "seed": 5,
    "model": {
        "wan_config": {"dim": 64, "ffn_dim": 96, "num_heads": 2, "num_layers": 2, "in_channels": 8,
                       "out_channels": 8, "text_dim": 24, "freq_dim": 32, "text_len": 16},
        "track_channels": 4,
        "track_id_dim": 8,
    },
    "data": {"kind": "random", "kwargs": {"channels": 8, "num_frames": 6, "latent_height": 4, "latent_width": 4,
                                          "text_len": 5, "text_dim": 24, "num_tracks": 6}},
    "optimizer": {"lr": 1e-3},
    "teacher": {"augmentation": {"max_tracks": 4, "text_dropout": 0.3, "motion_dropout": 0.3}},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_teacher(tmp_path, name, processes, batch_size):
    output = tmp_path / name
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps({**TINY_RUN, "output_dir": str(output), "batch_size": batch_size}))
    command = [sys.executable, "-m", "motionstream_core.training", "teacher", "--config", str(config)]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                   "-m", "motionstream_core.training", "teacher", "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    losses = [json.loads(line)["loss"] for line in (output / "metrics.jsonl").read_text().splitlines()]
    return losses, read_state_dict(output / "teacher.safetensors"), result.stdout


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_give_the_losses_and_weights_of_one(tmp_path):
    single, single_weights, _ = run_teacher(tmp_path, "single", processes=1, batch_size=4)
    double, double_weights, stdout = run_teacher(tmp_path, "double", processes=2, batch_size=2)
    assert len(single) == len(double) == 3
    # Step 0 shows the same data, noise and augmentation; steps 1-2 also show synchronised gradients.
    assert double == pytest.approx(single, rel=1e-5)
    assert stdout.count("step 0 ") == 1  # only rank 0 reports
    assert set(single_weights) == set(double_weights)
    for name, value in single_weights.items():
        torch.testing.assert_close(double_weights[name], value, rtol=1e-4, atol=1e-5, msg=name)
