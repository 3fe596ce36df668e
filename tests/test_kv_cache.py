"""Fixed-capacity sink + rolling cache: slot arithmetic, eviction, no reallocation, flat memory."""

import gc

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from motionstream_core.streaming.block_schedule import BlockSchedule
from motionstream_core.model.config import WanConfig
from motionstream_core.streaming.kv_cache import GrowingKVCache, RollingKVCache
from motionstream_core.testing.random_model import random_wan_dit
from motionstream_core.streaming.session import StreamConditions, StreamingConfig, StreamingSession


pytestmark = pytest.mark.usefixtures("single_thread")


def frame_tokens(frames, tokens_per_frame=2):
    """Keys whose every entry is the frame index, [1, len(frames) * T, 1, 1]."""
    return torch.tensor(frames, dtype=torch.float64).repeat_interleave(tokens_per_frame)[None, :, None, None]


def expected_visible(end, sink, window):
    sink_part = [f for f in range(end) if f < sink]
    rolling = [f for f in range(end) if f >= sink]
    return sink_part + rolling[max(0, len(rolling) - (window - sink)):]


@settings(max_examples=60, deadline=None)
@given(
    sink=st.integers(0, 4),
    extra=st.integers(1, 8),
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    num_blocks=st.integers(1, 25),
)
def test_chunks_see_exactly_the_sink_and_the_newest_frames(sink, extra, sizes, num_blocks):
    window = sink + max(extra, max(sizes))
    cache = RollingKVCache(1, 1, 2, 1, 1, sink_frames=sink, window_frames=window, dtype=torch.float64)
    pointers = [t.data_ptr() for t in cache.tensors()]
    blocks = BlockSchedule(sizes)
    for block in range(num_blocks):
        start, size = blocks.start(block), blocks.size(block)
        slots = cache.plan(start, size)
        frames = list(range(start, start + size))
        # Several passes of the same chunk (denoising steps) land in the same slots.
        for pass_value in (-1.0, 0.0):
            cache.write(0, slots.write_slots, frame_tokens(frames) + pass_value, frame_tokens(frames))
        keys, values = cache.visible(0, slots)
        held = keys[0, ::2, 0, 0].tolist()
        visible = expected_visible(start + size, sink, window)
        assert sorted(held) == visible
        assert values[0, ::2, 0, 0].tolist() == held
        assert list(slots.slot_frames) == [int(f) for f in held]
        # Sink frames never move.
        assert held[: min(sink, start + size)] == list(range(min(sink, start + size)))
        # Relative positions: frame order, sink first, the chunk last.
        positions = slots.relative_key_positions()
        assert [f for _, f in sorted(zip(positions, held))] == visible
        assert slots.relative_query_positions() == list(range(len(visible) - size, len(visible)))
        assert cache.held_frames(start + size) == visible
    assert [t.data_ptr() for t in cache.tensors()] == pointers


def test_brief_example_positions():
    """Sink 1, window 6 including a chunk of 3: once full, sink 0, rolling 1-2, current 3-5."""
    cache = RollingKVCache(1, 1, 1, 1, 1, sink_frames=1, window_frames=6)
    slots = cache.plan(10, 3)  # frames 10..12: sees 0, 8, 9, 10, 11, 12
    by_position = dict(zip(slots.relative_key_positions(), slots.slot_frames))
    assert [by_position[p] for p in range(6)] == [0, 8, 9, 10, 11, 12]
    assert slots.relative_query_positions() == [3, 4, 5]


def test_chunk_larger_than_rolling_part_is_refused():
    cache = RollingKVCache(1, 1, 1, 1, 1, sink_frames=3, window_frames=5)
    with pytest.raises(ValueError, match="rolling frames"):
        cache.plan(3, 3)
    cache.plan(0, 5)  # a chunk made only of sink frames and 2 rolling frames fits


@pytest.mark.parametrize("sink, window", [(3, 3), (-1, 4), (2, 1)])
def test_bad_geometry_is_refused(sink, window):
    with pytest.raises(ValueError):
        RollingKVCache(1, 1, 1, 1, 1, sink_frames=sink, window_frames=window)


def test_growing_cache_keeps_everything():
    cache = GrowingKVCache(1, 1, 2, 1, 1, dtype=torch.float64)
    for start in range(0, 12, 3):
        slots = cache.plan(start, 3)
        frames = list(range(start, start + 3))
        cache.write(0, slots.write_slots, frame_tokens(frames), frame_tokens(frames))
    keys, _ = cache.visible(0, cache.plan(9, 3))
    assert keys[0, ::2, 0, 0].tolist() == list(range(12))


def _rss_bytes():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


@pytest.mark.parametrize("rope_policy", ["relative", "absolute"])
def test_200_chunks_never_reallocate_and_memory_stays_flat(rope_policy):
    config = WanConfig(dim=32, ffn_dim=64, num_heads=1, num_layers=2, text_dim=16, freq_dim=32, text_len=4, rope_max_len=4096)
    model = random_wan_dit(config, seed=0)
    streaming = StreamingConfig(
        rope_policy=rope_policy, sink_frames=1, window_frames=5, block_frames=(1, 2), denoising_steps=(1000, 500)
    )
    session = StreamingSession(model, streaming, latent_height=4, latent_width=4, seed=0)
    session.start(StreamConditions(text=torch.randn(1, 4, 16)))
    pointers = [t.data_ptr() for t in session.cache.tensors()]
    cache_bytes = session.cache.nbytes()
    rss = {}
    for chunk in session.stream(200):
        if chunk.index in (50, 199):
            gc.collect()
            rss[chunk.index] = _rss_bytes()
        assert [t.data_ptr() for t in session.cache.tensors()] == pointers
    assert session.cache.nbytes() == cache_bytes
    assert session.next_frame == 1 + 2 * 199
    # Chunks 50..199 allocate nothing that lives on; allow for allocator noise only.
    assert rss[199] - rss[50] < 4 * 2**20, f"RSS grew by {(rss[199] - rss[50]) / 2**20:.1f} MiB"
