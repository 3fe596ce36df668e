"""The engine reproduces the Self-Forcing reference rollout (absolute RoPE, sink + rolling cache)."""

import json

import pytest
import torch
from safetensors import safe_open

from motionstream_core.testing import replay
from motionstream_core.streaming.causal_model import CausalWanModel, RopeRangeError
from motionstream_core.model.config import WanConfig
from motionstream_core.testing.random_model import random_wan_dit
from motionstream_core.sampling.schedule import FlowMatchSchedule
from motionstream_core.streaming.session import StreamConditions, StreamingConfig, StreamingSession


pytestmark = pytest.mark.usefixtures("single_thread")

FIXTURE = "causal_rollout_absolute.safetensors"


@pytest.fixture(scope="module")
def fixture_path(fixtures_dir):
    return fixtures_dir / FIXTURE


@pytest.fixture(scope="module")
def expected(fixture_path):
    with safe_open(str(fixture_path), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys() if key.startswith("io.")}


@pytest.fixture(scope="module")
def replayed(fixture_path):
    return replay.replay(fixture_path)


def test_schedule_reproduces_fixture_timesteps_and_sigmas(expected):
    timesteps, sigmas = FlowMatchSchedule(shift=5.0).warp([1000, 750, 500, 250])
    assert torch.equal(timesteps, expected["io.timesteps"])
    assert torch.equal(sigmas, expected["io.sigmas"])


# The fixture and its replay run in float64 (metadata "dtype_used"): values up to ~6, replayed within ~4e-15 here.
# Libm and vector-width differences between CPUs change float64 results at ~1e-16 relative per operation, so
# atol 1e-6 leaves many orders of magnitude for them while still catching any change of the computation.


def test_replay_reproduces_every_step(replayed, expected):
    assert replayed["step_x0"].shape == expected["io.step_x0"].shape
    torch.testing.assert_close(replayed["step_x0"], expected["io.step_x0"], rtol=0, atol=1e-6)


def test_replay_reproduces_output_latents(replayed, expected):
    assert replayed["output_latents"].shape == expected["io.output_latents"].shape
    torch.testing.assert_close(replayed["output_latents"], expected["io.output_latents"], rtol=0, atol=1e-6)


def test_replay_command_line_writes_atomically(fixture_path, expected, tmp_path):
    out = tmp_path / "replayed.safetensors"
    assert replay.main([str(fixture_path), str(out)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no partial file left behind
    with safe_open(str(out), "pt") as handle:
        assert set(handle.keys()) == {"output_latents", "step_x0"}
        torch.testing.assert_close(handle.get_tensor("output_latents"), expected["io.output_latents"], rtol=0, atol=1e-6)


def test_metadata_maps_to_engine_settings(fixture_path):
    with safe_open(str(fixture_path), "pt") as handle:
        metadata = handle.metadata()
    config, blocks = replay.streaming_config_from_metadata(metadata)
    assert (config.sink_frames, config.window_frames, config.rope_policy, config.shift) == (3, 9, "absolute", 5.0)
    assert config.block_frames == (3,) and blocks == 6
    assert WanConfig.from_dict(json.loads(metadata["config"])).num_layers == 2


def test_absolute_policy_refuses_positions_past_rope_max_len():
    config = WanConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=1, text_dim=16, freq_dim=32, text_len=4, rope_max_len=7)
    model = random_wan_dit(config, seed=0)
    session = StreamingSession(
        CausalWanModel(model, "absolute"),
        StreamingConfig(rope_policy="absolute", sink_frames=1, window_frames=4, block_frames=(3,), denoising_steps=(1000,)),
        latent_height=2,
        latent_width=2,
    )
    session.start(StreamConditions(text=torch.randn(1, 4, 16)))
    session.next_chunk()
    session.next_chunk()  # frames 3..5
    with pytest.raises(RopeRangeError, match="rope_max_len|positions"):
        session.next_chunk()  # frames 6..8: frame 7 has no position
    assert session.next_frame == 6
