"""The session API: determinism, condition updates between chunks, re-cache, interrupts, channel providers."""

import dataclasses

import pytest
import torch

from motionstream_core.streaming.block_schedule import BlockSchedule
from motionstream_core.model.config import WanConfig
from motionstream_core.streaming.image_conditioning import FirstFrameCondition
from motionstream_core.testing.random_model import random_wan_dit
from motionstream_core.streaming.session import (
    StreamConditions,
    StreamingConfig,
    StreamingSession,
    StreamInterrupted,
)

TINY = WanConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, freq_dim=32, text_len=8)
H, W = 4, 6
STREAMING = StreamingConfig(rope_policy="relative", sink_frames=1, window_frames=6, block_frames=(1, 3), shift=6.0)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model():
    return random_wan_dit(TINY, seed=7, dtype=torch.float64)


def prompt(seed):
    return torch.randn(1, 8, TINY.text_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def run(model, num_chunks, seed=0, config=STREAMING, text_seed=1, **session_args):
    session = StreamingSession(model, config, latent_height=H, latent_width=W, seed=seed, **session_args)
    session.start(StreamConditions(text=prompt(text_seed)))
    return session, [chunk.latents for chunk in session.stream(num_chunks)]


def test_same_seed_same_video_other_seed_other_video(model):
    _, first = run(model, 4, seed=3)
    _, again = run(model, 4, seed=3)
    _, other = run(model, 4, seed=4)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert not torch.allclose(first[0], other[0])


def test_chunks_follow_the_block_schedule(model):
    session, chunks = run(model, 4)
    assert [c.shape[2] for c in chunks] == [1, 3, 3, 3]
    assert session.next_frame == 10 and session.chunk_index == 4
    assert chunks[0].shape == (1, TINY.out_channels, 1, H, W)


def test_block_schedule_arithmetic():
    blocks = BlockSchedule((1, 2, 3))
    assert [blocks.size(b) for b in range(5)] == [1, 2, 3, 3, 3]
    assert [blocks.start(b) for b in range(5)] == [0, 1, 3, 6, 9]
    assert [blocks.block_of(f) for f in range(10)] == [0, 1, 1, 2, 2, 2, 3, 3, 3, 4]
    with pytest.raises(ValueError):
        BlockSchedule((0, 3))


def test_on_chunk_receives_every_chunk(model):
    received = []
    _, chunks = run(model, 3, on_chunk=received.append)
    assert [c.index for c in received] == [0, 1, 2]
    assert [c.start_frame for c in received] == [0, 1, 4]
    assert all(torch.equal(c.latents, x) for c, x in zip(received, chunks))


def test_prompt_update_affects_only_chunks_not_yet_started(model):
    _, baseline = run(model, 5)
    updates = []

    def update_mid_chunk(chunk, step, x0):
        # Arrives while chunk 2 is being denoised, as from another thread: chunk 2 must not change.
        if chunk == 2 and step == 1:
            session.update(text=prompt(99))
            updates.append(chunk)

    session = StreamingSession(model, STREAMING, latent_height=H, latent_width=W, seed=0, on_step=update_mid_chunk)
    session.start(StreamConditions(text=prompt(1)))
    switched = [chunk.latents for chunk in session.stream(5)]
    assert updates == [2]
    for index in range(3):
        assert torch.equal(switched[index], baseline[index])
    assert not torch.allclose(switched[3], baseline[3], atol=1e-6)


def test_cross_attention_is_encoded_once_per_prompt(model, monkeypatch):
    calls = []
    original = model.encode_context

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "encode_context", counting)
    session = StreamingSession(model, STREAMING, latent_height=H, latent_width=W)
    session.start(StreamConditions(text=prompt(1)))
    list(session.stream(3))
    assert len(calls) == 1
    session.update(text=prompt(2))
    list(session.stream(3))
    assert len(calls) == 2


def test_recache_with_unchanged_prompt_before_eviction_changes_nothing(model):
    """Before any eviction, one block-causal pass over the cached frames equals their chunk-by-chunk commits."""
    config = StreamingConfig(rope_policy="relative", sink_frames=1, window_frames=12, block_frames=(1, 3))
    session, _ = run(model, 3, config=config)  # frames 0..6, nothing evicted yet
    before = [t[:, :7].clone() for t in session.cache.tensors()]
    recached = []
    recache = session.model.recache
    session.model.recache = lambda *args: recached.append(args[4]) or recache(*args)
    session.update(text=prompt(1), prompt_change="recache")
    session.next_chunk()  # re-caches frames 0..6 first, then writes frames 7..9 into other slots
    assert recached == [[0, 1, 2, 3, 4, 5, 6]]
    for old, new in zip(before, session.cache.tensors()):
        torch.testing.assert_close(new[:, :7], old, rtol=0, atol=1e-10)


def test_recache_on_prompt_change_rewrites_the_window(model):
    config = StreamingConfig(rope_policy="relative", sink_frames=1, window_frames=6, block_frames=(1, 3))
    plain, _ = run(model, 4, config=config)
    recached, _ = run(model, 4, config=dataclasses.replace(config, prompt_change="recache"))
    pointers = [t.data_ptr() for t in recached.cache.tensors()]
    for session in (plain, recached):
        session.update(text=prompt(50))
    after_plain = plain.next_chunk().latents
    after_recache = recached.next_chunk().latents
    assert [t.data_ptr() for t in recached.cache.tensors()] == pointers
    assert not torch.allclose(after_plain, after_recache, atol=1e-6)


def test_interrupted_chunk_is_generated_again_identically(model):
    _, baseline = run(model, 4)
    calls = {"n": 0}

    def interrupt():
        calls["n"] += 1
        return calls["n"] == 13  # chunk 2, second denoising step (5 checks per chunk)

    session = StreamingSession(model, STREAMING, latent_height=H, latent_width=W, seed=0, interrupt=interrupt)
    session.start(StreamConditions(text=prompt(1)))
    produced = [session.next_chunk().latents, session.next_chunk().latents]
    with pytest.raises(StreamInterrupted):
        session.next_chunk()
    assert session.chunk_index == 2
    produced += [session.next_chunk().latents, session.next_chunk().latents]
    for a, b in zip(produced, baseline):
        assert torch.equal(a, b)


def test_reset_restarts_the_same_video(model):
    session, first = run(model, 3)
    session.reset()
    assert session.next_frame == 0
    again = [c.latents for c in session.stream(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    session.reset(seed=123)
    assert not torch.allclose(session.next_chunk().latents, first[0])
    # A pending prompt change is kept across a reset: the new video starts with it.
    session.update(text=prompt(2))
    session.reset(seed=0)
    _, other_prompt = run(model, 1, text_seed=2)
    assert torch.equal(session.next_chunk().latents, other_prompt[0])


def test_next_chunk_needs_start(model):
    session = StreamingSession(model, STREAMING, latent_height=H, latent_width=W)
    with pytest.raises(RuntimeError, match="start"):
        session.next_chunk()


def test_growing_cache_equals_rolling_cache_before_anything_is_evicted(model):
    config = StreamingConfig(rope_policy="relative", sink_frames=1, window_frames=12, block_frames=(1, 3))
    growing = dataclasses.replace(config, cache_policy="growing")
    _, rolling_chunks = run(model, 3, config=config)
    session, growing_chunks = run(model, 3, config=growing)
    for a, b in zip(rolling_chunks, growing_chunks):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert session.cache.window_frames == 7


# --- condition channels ---

TRACK_CHANNELS = 3
I2V_TRACKS = WanConfig(**{**TINY.to_dict(), "in_channels": 16 + 4 + 16 + TRACK_CHANNELS})


class RecordingTracks:
    def __init__(self):
        self.calls = []

    def __call__(self, first_latent_frame, num_latent_frames):
        self.calls.append((first_latent_frame, num_latent_frames))
        frames = torch.arange(first_latent_frame, first_latent_frame + num_latent_frames, dtype=torch.float64)
        return frames[None, None, :, None, None].expand(1, TRACK_CHANNELS, -1, H, W) + 100


def test_condition_channels_follow_the_noisy_latent_in_order():
    model = random_wan_dit(I2V_TRACKS, seed=2, dtype=torch.float64)
    encoded = torch.randn(1, 16, 2, H, W, dtype=torch.float64)
    tracks = RecordingTracks()
    session = StreamingSession(model, STREAMING, latent_height=H, latent_width=W)
    inputs = []
    forward = session.model.forward_chunk
    session.model.forward_chunk = lambda latents, *args: inputs.append(latents) or forward(latents, *args)
    session.start(StreamConditions(text=prompt(1), first_frame_latents=encoded, channel_providers=[tracks]))
    list(session.stream(3))
    assert tracks.calls == [(0, 1), (1, 3), (4, 3)]
    first_chunk, last_chunk = inputs[0], inputs[-1]  # frame 0; frames 4..6
    assert first_chunk.shape[1] == I2V_TRACKS.in_channels
    assert torch.all(first_chunk[:, 16:20] == 1) and torch.all(last_chunk[:, 16:20] == 0)
    assert torch.equal(first_chunk[:, 20:36, 0], encoded[:, :, 0])
    # Past the encoded horizon (2 latent frames) the last encoded latent repeats.
    assert all(torch.equal(last_chunk[:, 20:36, i], encoded[:, :, 1]) for i in range(3))
    assert torch.equal(last_chunk[:, 36:, :, 0, 0], torch.tensor([[[104.0, 105.0, 106.0]] * TRACK_CHANNELS], dtype=torch.float64))


def test_first_frame_condition_windows():
    encoded = torch.randn(2, 16, 3, H, W)
    condition = FirstFrameCondition(encoded)
    window = condition(2, 4)
    assert window.shape == (2, 20, 4, H, W) and condition.num_channels == 20
    assert torch.all(window[:, :4] == 0)
    assert torch.equal(window[:, 4:, 0], encoded[:, :, 2]) and torch.equal(window[:, 4:, 3], encoded[:, :, 2])
    assert torch.all(condition(0, 2)[:, :4, 0] == 1) and torch.all(condition(0, 2)[:, :4, 1] == 0)


def test_wrong_channel_count_is_a_clear_error():
    model = random_wan_dit(I2V_TRACKS, seed=2, dtype=torch.float64)
    session = StreamingSession(model, STREAMING, latent_height=H, latent_width=W)
    session.start(StreamConditions(text=prompt(1), channel_providers=[RecordingTracks()]))
    with pytest.raises(ValueError, match=f"{I2V_TRACKS.in_channels} input channels"):
        session.next_chunk()


def test_provider_with_wrong_shape_is_a_clear_error(model):
    session = StreamingSession(model, STREAMING, latent_height=H, latent_width=W)
    session.start(StreamConditions(text=prompt(1), channel_providers=[lambda first, n: torch.zeros(1, 2, n + 1, H, W)]))
    with pytest.raises(ValueError, match="provider 0"):
        session.next_chunk()


def test_image_to_video_uses_clip_tokens():
    config = WanConfig(**{**TINY.to_dict(), "in_channels": 36, "image_dim": 24})
    model = random_wan_dit(config, seed=4, dtype=torch.float64)
    encoded = torch.randn(1, 16, 2, H, W, dtype=torch.float64)
    session = StreamingSession(model, STREAMING, latent_height=H, latent_width=W)
    with pytest.raises(ValueError, match="image tokens"):
        session.start(StreamConditions(text=prompt(1), first_frame_latents=encoded))
    clip = torch.randn(1, 5, 24, dtype=torch.float64)
    session.start(StreamConditions(text=prompt(1), image_tokens=clip, first_frame_latents=encoded))
    first = session.next_chunk().latents
    session.reset(StreamConditions(text=prompt(1), image_tokens=torch.randn_like(clip), first_frame_latents=encoded))
    assert not torch.allclose(first, session.next_chunk().latents)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(rope_policy="rotary"), "rope_policy"),
        (dict(denoising_steps=(1000, 1200)), "denoising step"),
        (dict(denoising_steps=(500, 750)), "decreasing"),
        (dict(block_frames=(0,)), "block sizes"),
        (dict(commit_step=-1), "commit_step"),
    ],
)
def test_bad_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        StreamingConfig(**overrides)


def test_blocks_wider_than_the_window_are_refused(model):
    with pytest.raises(ValueError, match="rolling frames"):
        StreamingSession(
            model, StreamingConfig(sink_frames=3, window_frames=5, block_frames=(3,)), latent_height=H, latent_width=W
        )
