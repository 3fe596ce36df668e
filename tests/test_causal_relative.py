"""The streaming engine against a slow, direct rollout written from the definitions.

The reference keeps every committed key/value of the whole video (no ring buffer, no slots),
picks for each chunk the frames its queries may see as an explicit set, gives them explicit
positions, and attends with a hand-written softmax, using only the plain WanDiT pieces.
"""

import math

import pytest
import torch

from motionstream_core.streaming.block_schedule import BlockSchedule
from motionstream_core.model.config import WanConfig
from motionstream_core.sampling.noise import SeededNoise
from motionstream_core.testing.random_model import random_wan_dit
from motionstream_core.model.rope import grid_rotary_embedding
from motionstream_core.sampling.schedule import FlowMatchSchedule
from motionstream_core.streaming.session import StreamConditions, StreamingConfig, StreamingSession


pytestmark = pytest.mark.usefixtures("single_thread")

TINY = WanConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, freq_dim=32, text_len=8)
LATENT_H, LATENT_W = 4, 6


def visible_frames(chunk_start, chunk_end, sink, window):
    """The sink frames plus the newest non-sink frames, `window` frames in all, up to the chunk's end."""
    frames = [f for f in range(chunk_end) if f < sink]
    rolling = [f for f in range(chunk_end) if f >= sink]
    return frames + rolling[len(rolling) - min(len(rolling), window - sink):]


def softmax_attention(q, k, v):
    """[B, L, H, D] tensors, written out: softmax(q k^T / sqrt(D)) v -> [B, Lq, H * D]."""
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v).flatten(2)


def reference_rollout(model, text, config: StreamingConfig, num_chunks, noise, image_tokens=None):
    schedule = FlowMatchSchedule(config.shift, config.num_train_timesteps)
    timesteps, sigmas = schedule.warp(config.denoising_steps)
    blocks = BlockSchedule(config.block_frames)
    context = model.encode_context(text, image_tokens)
    committed_keys = [{} for _ in range(model.config.num_layers)]  # layer -> frame -> [B, T, H, D]
    committed_values = [{} for _ in range(model.config.num_layers)]
    batch, channels = text.shape[0], model.config.out_channels
    outputs = []

    def velocity(x, timestep, start, commit):
        tokens, grid = model.patchify(x)
        frames = grid.frames
        frame_embedding, frame_modulation = model.embed_timesteps(torch.as_tensor(timestep), batch, frames)
        chunk = list(range(start, start + frames))
        seen = visible_frames(start, start + frames, config.sink_frames, config.window_frames)
        past = [f for f in seen if f < start]
        assert seen == past + chunk
        if config.rope_policy == "absolute":
            key_positions = seen
        else:
            key_positions = list(range(len(seen)))
        query_positions = key_positions[len(past):]
        key_rope = grid_rotary_embedding(model.config, torch.tensor(key_positions), grid.height, grid.width)
        query_rope = grid_rotary_embedding(model.config, torch.tensor(query_positions), grid.height, grid.width)

        def self_attention(layer, q, k, v):
            k_frames = k.unflatten(1, (frames, -1))
            v_frames = v.unflatten(1, (frames, -1))
            keys = torch.cat([committed_keys[layer][f] for f in past] + [k_frames[:, i] for i in range(frames)], dim=1)
            values = torch.cat([committed_values[layer][f] for f in past] + [v_frames[:, i] for i in range(frames)], dim=1)
            if commit:
                for i, frame in enumerate(chunk):
                    committed_keys[layer][frame] = k_frames[:, i].clone()
                    committed_values[layer][frame] = v_frames[:, i].clone()
            return softmax_attention(query_rope.apply(q), key_rope.apply(keys), values)

        out = model.run_blocks(tokens, frame_embedding, frame_modulation, context, self_attention)
        return model.unpatchify(out, grid)

    with torch.no_grad():
        for index in range(num_chunks):
            start, frames = blocks.start(index), blocks.size(index)
            shape = (batch, channels, frames, LATENT_H, LATENT_W)
            x = noise.initial(index, shape).double()
            for step in range(len(timesteps)):
                if step:
                    sigma = float(sigmas[step])
                    x = (1 - sigma) * x0 + sigma * noise.renoise(index, step, shape).double()
                x0 = x - float(sigmas[step]) * velocity(x, timesteps[step], start, commit=False)
            commit_input = x0
            if config.commit_renoise:
                sigma = config.commit_step / config.num_train_timesteps
                commit_input = (1 - sigma) * x0 + sigma * noise.commit(index, shape).double()
            velocity(commit_input, float(config.commit_step), start, commit=True)
            outputs.append(x0)
    return torch.cat(outputs, dim=2)


def engine_rollout(model, text, config, num_chunks, seed):
    session = StreamingSession(model, config, latent_height=LATENT_H, latent_width=LATENT_W, seed=seed)
    session.start(StreamConditions(text=text))
    return torch.cat([chunk.latents for chunk in session.stream(num_chunks)], dim=2)


@pytest.fixture(scope="module")
def tiny_model():
    return random_wan_dit(TINY, seed=3, dtype=torch.float64)


@pytest.fixture(scope="module")
def text():
    return torch.randn(1, 8, TINY.text_dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


CASES = {
    # MotionStream geometry of the brief: sink 1, window 6, a one-frame first block, then 3s.
    "relative-sink1-window6": StreamingConfig(rope_policy="relative", sink_frames=1, window_frames=6, block_frames=(1, 3), shift=6.0),
    # Blocks that do not divide the rolling part, so chunks wrap around the ring buffer.
    "relative-wrapping": StreamingConfig(rope_policy="relative", sink_frames=2, window_frames=7, block_frames=(2, 3)),
    "relative-context-noise": StreamingConfig(
        rope_policy="relative", sink_frames=3, window_frames=9, block_frames=(3,), commit_step=100, commit_renoise=True
    ),
    "absolute-sink1-window6": StreamingConfig(rope_policy="absolute", sink_frames=1, window_frames=6, block_frames=(1, 3), shift=6.0),
    "relative-no-sink": StreamingConfig(rope_policy="relative", sink_frames=0, window_frames=5, block_frames=(2,)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_engine_matches_direct_rollout(tiny_model, text, name):
    config = CASES[name]
    num_chunks = 8
    # The rolling part of the cache is overwritten at least twice over.
    rolling = config.window_frames - config.sink_frames
    assert BlockSchedule(config.block_frames).start(num_chunks) - config.window_frames >= 2 * rolling
    expected = reference_rollout(tiny_model, text, config, num_chunks, SeededNoise(11))
    actual = engine_rollout(tiny_model, text, config, num_chunks, seed=11)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_positions_matter_after_eviction(tiny_model, text):
    """The comparison above is sensitive: the two RoPE policies disagree once frames are evicted."""
    relative = engine_rollout(tiny_model, text, CASES["relative-sink1-window6"], 4, seed=11)
    absolute = engine_rollout(tiny_model, text, CASES["absolute-sink1-window6"], 4, seed=11)
    # Until the window is full (frames 0..5) both policies give the same positions.
    torch.testing.assert_close(relative[:, :, :4], absolute[:, :, :4], rtol=0, atol=1e-10)
    assert (relative[:, :, 7:] - absolute[:, :, 7:]).abs().max() > 1e-3


def test_relative_policy_runs_past_rope_max_len(text):
    config = WanConfig(**{**TINY.to_dict(), "rope_max_len": 8})
    model = random_wan_dit(config, seed=1, dtype=torch.float64)
    streaming = StreamingConfig(rope_policy="relative", sink_frames=1, window_frames=4, block_frames=(1, 3))
    session = StreamingSession(model, streaming, latent_height=LATENT_H, latent_width=LATENT_W)
    session.start(StreamConditions(text=text))
    last = None
    for last in session.stream(6):
        assert torch.isfinite(last.latents).all()
    assert last.end_frame > 8
