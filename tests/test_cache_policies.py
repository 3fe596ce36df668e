"""Cache policies and prompt change policies: chosen by name, one interface, old configs still load."""

import dataclasses
import json

import pytest
import torch

from motionstream_core.model.config import WanConfig
from motionstream_core.streaming import (
    CACHE_POLICIES,
    PROMPT_CHANGE_POLICIES,
    CacheGeometry,
    CachePolicy,
    CausalWanModel,
    GrowingBaseline,
    GrowingKVCache,
    KeepCache,
    RecacheWindow,
    RollingKVCache,
    RollingWithSinks,
    StreamConditions,
    StreamingConfig,
    StreamingSession,
    cache_policy_named,
    prompt_change_named,
)
from motionstream_core.testing.random_model import random_wan_dit

pytestmark = pytest.mark.usefixtures("single_thread")

GEOMETRY = CacheGeometry(num_layers=2, batch_size=1, tokens_per_frame=3, num_heads=1, head_dim=2, dtype=torch.float64)
TINY = WanConfig(dim=32, ffn_dim=64, num_heads=1, num_layers=2, text_dim=16, freq_dim=32, text_len=4)


def frame_tokens(start, count, geometry=GEOMETRY):
    shape = (geometry.batch_size, count * geometry.tokens_per_frame, geometry.num_heads, geometry.head_dim)
    frames = torch.arange(start, start + count, dtype=geometry.dtype).repeat_interleave(geometry.tokens_per_frame)
    return frames[None, :, None, None].expand(shape).clone()


def fill(cache, num_chunks, chunk=2):
    for index in range(num_chunks):
        slots = cache.plan(index * chunk, chunk)
        for layer in range(GEOMETRY.num_layers):
            cache.write(layer, slots.write_slots, frame_tokens(index * chunk, chunk), frame_tokens(index * chunk, chunk))
    return slots


def test_registries_map_names_to_policies():
    assert isinstance(CACHE_POLICIES["rolling"], RollingWithSinks)
    assert isinstance(CACHE_POLICIES["growing"], GrowingBaseline)
    assert isinstance(PROMPT_CHANGE_POLICIES["keep"], KeepCache)
    assert isinstance(PROMPT_CHANGE_POLICIES["recache"], RecacheWindow)
    for name, policy in {**CACHE_POLICIES, **PROMPT_CHANGE_POLICIES}.items():
        assert policy.name == name
    assert cache_policy_named("growing") is CACHE_POLICIES["growing"]
    assert prompt_change_named("recache") is PROMPT_CHANGE_POLICIES["recache"]


def test_rolling_policy_allocates_the_window_once_and_keeps_sink_and_newest_frames():
    policy = cache_policy_named("rolling")
    assert policy.attention_span(sink_frames=1, window_frames=5) == 5
    cache = policy.allocate(GEOMETRY, sink_frames=1, window_frames=5)
    assert isinstance(cache, RollingKVCache)
    nbytes, pointers = cache.nbytes(), [t.data_ptr() for t in cache.tensors()]
    assert nbytes == 2 * GEOMETRY.num_layers * 5 * 3 * 2 * 8  # keys + values, 5 frames of 3 tokens, float64
    slots = fill(cache, 10)  # frames 0..19
    assert cache.held_frames(20) == [0, 16, 17, 18, 19]
    keys, _ = cache.visible(1, slots)
    assert sorted(keys[0, ::3, 0, 0].tolist()) == [0, 16, 17, 18, 19]
    cache.restart()
    assert (cache.nbytes(), [t.data_ptr() for t in cache.tensors()]) == (nbytes, pointers)


def test_growing_policy_keeps_every_frame_and_frees_it_on_restart():
    policy = cache_policy_named("growing")
    assert policy.attention_span(sink_frames=1, window_frames=5) is None
    cache = policy.allocate(GEOMETRY, sink_frames=1, window_frames=5)
    assert isinstance(cache, GrowingKVCache)
    assert cache.nbytes() == 0
    slots = fill(cache, 10)
    assert cache.window_frames == 20 and cache.held_frames(20) == list(range(20))
    keys, _ = cache.visible(0, slots)
    assert keys[0, ::3, 0, 0].tolist() == list(range(20))
    cache.restart()
    assert cache.window_frames == 0 and cache.nbytes() == 0


def test_rolling_commit_inputs_follow_the_cache_slots():
    cache = cache_policy_named("rolling").allocate(GEOMETRY, sink_frames=1, window_frames=4)
    inputs = cache_policy_named("rolling").commit_inputs(cache)
    for start, count in ((0, 1), (1, 3), (4, 3)):  # frames 0..6; the cache holds 0, 4, 5, 6
        frames = torch.arange(start, start + count, dtype=torch.float64)
        inputs.remember(frames[None, None, :, None, None].expand(1, 2, count, 1, 1), start)
    held = cache.held_frames(7)
    assert inputs.of_frames(held)[0, 0, :, 0, 0].tolist() == held == [0, 4, 5, 6]


def test_growing_policy_cannot_recache():
    inputs = cache_policy_named("growing").commit_inputs(cache_policy_named("growing").allocate(GEOMETRY, 0, 1))
    inputs.remember(torch.zeros(1, 2, 3, 1, 1), 0)
    with pytest.raises(ValueError, match="'growing'"):
        inputs.of_frames([0, 1, 2])
    with pytest.raises(ValueError, match="'recache'.*'growing'"):
        StreamingConfig(cache_policy="growing", prompt_change="recache")


@pytest.mark.parametrize("field, lookup", [("cache_policy", cache_policy_named), ("prompt_change", prompt_change_named)])
def test_unknown_policy_names_are_refused_by_name(field, lookup):
    with pytest.raises(ValueError, match="'ring_buffer'"):
        lookup("ring_buffer")
    with pytest.raises(ValueError, match="'ring_buffer'"):
        StreamingConfig(**{field: "ring_buffer"})


def test_the_causal_model_allocates_through_the_policy():
    causal = CausalWanModel(random_wan_dit(TINY, seed=0), "relative")
    calls = []

    class Recording(RollingWithSinks):
        def allocate(self, geometry, sink_frames, window_frames):
            calls.append((geometry, sink_frames, window_frames))
            return super().allocate(geometry, sink_frames, window_frames)

    cache = causal.new_cache(1, 4, 4, 1, 5, Recording())
    assert isinstance(cache, RollingKVCache)
    assert calls == [(causal.cache_geometry(1, 4, 4), 1, 5)]
    assert isinstance(causal.new_cache(1, 4, 4, 1, 5, "growing"), GrowingKVCache)
    with pytest.raises(ValueError, match="rope_max_len"):
        causal.new_cache(1, 4, 4, 1, TINY.rope_max_len + 1)
    causal.new_cache(1, 4, 4, 1, TINY.rope_max_len + 1, "growing")  # unbounded: nothing to check up front


def test_a_new_policy_needs_only_the_interface():
    class NoSink(CachePolicy):
        """A rolling window without sink frames, whatever the config says."""

        name = "no_sink"
        can_recache = True

        def attention_span(self, sink_frames, window_frames):
            return window_frames

        def allocate(self, geometry, sink_frames, window_frames):
            return RollingWithSinks().allocate(geometry, 0, window_frames)

        def commit_inputs(self, cache):
            return RollingWithSinks().commit_inputs(cache)

    CACHE_POLICIES["no_sink"] = NoSink()
    try:
        model = random_wan_dit(TINY, seed=0)
        config = StreamingConfig(cache_policy="no_sink", sink_frames=1, window_frames=4, block_frames=(2,),
                                 denoising_steps=(1000,), prompt_change="recache")
        session = StreamingSession(model, config, latent_height=2, latent_width=2)
        session.start(StreamConditions(text=torch.randn(1, 4, 16)))
        list(session.stream(3))
        assert session.cache.sink_frames == 0 and session.cache.held_frames(6) == [2, 3, 4, 5]
        session.update(text=torch.randn(1, 4, 16))
        session.next_chunk()  # re-caches through the policy's commit inputs
    finally:
        del CACHE_POLICIES["no_sink"]


def test_update_refuses_a_recache_the_cache_policy_cannot_do():
    session = StreamingSession(random_wan_dit(TINY, seed=0), StreamingConfig(cache_policy="growing"),
                               latent_height=2, latent_width=2)
    with pytest.raises(ValueError, match="'growing'"):
        session.update(text=torch.randn(1, 4, 16), prompt_change="recache")
    with pytest.raises(ValueError, match="'sometimes'"):
        session.update(text=torch.randn(1, 4, 16), prompt_change="sometimes")


@pytest.mark.parametrize(
    "growing, recache, cache_policy, prompt_change",
    [(False, False, "rolling", "keep"), (True, False, "growing", "keep"), (False, True, "rolling", "recache")],
)
def test_configs_stored_with_the_old_boolean_keys_still_load(growing, recache, cache_policy, prompt_change):
    stored = {"block_frames": [1, 3], "commit_renoise": False, "commit_step": 0, "denoising_steps": [1000, 750, 500, 250],
              "growing_cache": growing, "motion_scale": 0.0, "num_train_timesteps": 1000,
              "recache_on_prompt_change": recache, "rope_policy": "relative", "shift": 6.0, "sink_frames": 1,
              "text_scale": 0.0, "window_frames": 6}
    config = StreamingConfig.from_dict(json.loads(json.dumps(stored)))
    assert (config.cache_policy, config.prompt_change) == (cache_policy, prompt_change)
    assert config == StreamingConfig.track_v0(cache_policy=cache_policy, prompt_change=prompt_change)
    # Written back, it uses the names, and reads back the same.
    written = json.loads(json.dumps(dataclasses.asdict(config)))
    assert "growing_cache" not in written and written["cache_policy"] == cache_policy
    assert StreamingConfig.from_dict(written) == config


def test_the_shipped_demo_model_config_still_loads():
    from motionstream_core.demo.model import MODEL_FILE, asset_path
    from motionstream_core.training.checkpoints import read_streaming_config

    config = read_streaming_config(asset_path(MODEL_FILE))
    assert (config.cache_policy, config.prompt_change) == ("rolling", "keep")
