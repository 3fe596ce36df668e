"""The steady-state chunk step: no host syncs, keys rotated once per chunk, device noise, compiled and graphed
forwards equal to eager ones."""

import contextlib

import pytest
import torch

from motionstream_core import StreamConditions, StreamingConfig, StreamingSession
from motionstream_core.model.rope import RotaryTables, grid_rotary_embedding
from motionstream_core.sampling.noise import SeededNoise
from motionstream_core.streaming.kv_cache import RollingKVCache
from motionstream_core.streaming.rotated_keys import RotatedKeys
from tiny_models import random_dit, tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")

MOTION_CHANNELS = 4
H, W = 4, 4
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


def _session(rope_policy="relative", text_scale=3.0, motion_scale=1.5, dtype=torch.float32, device="cpu",
             **session_args):
    model = random_dit(tiny_config(in_channels=8 + MOTION_CHANNELS, out_channels=8), dtype=dtype).to(device)
    config = StreamingConfig.track_v0(rope_policy=rope_policy, text_scale=text_scale, motion_scale=motion_scale)
    session = StreamingSession(model, config, latent_height=H, latent_width=W, seed=3, **session_args)
    generator = torch.Generator().manual_seed(0)
    motion = torch.randn(1, MOTION_CHANNELS, 64, H, W, generator=generator, dtype=dtype).to(device)
    session.start(StreamConditions(
        text=torch.randn(1, 6, 24, generator=generator, dtype=dtype).to(device),
        null_text=torch.zeros(1, 6, 24, dtype=dtype, device=device),
        motion_providers=[lambda first, n: motion[:, :, first:first + n]],
    ))
    return session


# --- no host syncs ---

# Tensor methods that wait for the device (or copy to the host) on a GPU.
_SYNCING = ("item", "tolist", "cpu", "numpy", "__int__", "__float__", "__bool__", "__index__")


@contextlib.contextmanager
def recorded_host_syncs(monkeypatch):
    """Records every call of a syncing Tensor method, and every tensor made from Python data (a host-to-device
    copy on a GPU)."""
    calls = []

    def spying(name, original):
        def spy(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)
        return spy

    for name in _SYNCING:
        monkeypatch.setattr(torch.Tensor, name, spying(f"Tensor.{name}", getattr(torch.Tensor, name)))
    for name in ("tensor", "as_tensor"):
        original = getattr(torch, name)

        def from_data(data, *args, _name=name, _original=original, **kwargs):
            if not isinstance(data, torch.Tensor):
                calls.append(f"torch.{_name}")
            return _original(data, *args, **kwargs)

        monkeypatch.setattr(torch, name, from_data)
    try:
        yield calls
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("rope_policy", ["relative", "absolute"])
@pytest.mark.parametrize("batch_guidance", [True, False])
def test_a_steady_state_chunk_never_syncs_with_the_host(monkeypatch, rope_policy, batch_guidance):
    session = _session(rope_policy, batch_guidance=batch_guidance)
    list(session.stream(3))  # the 6-frame window is full from chunk 2 on
    with recorded_host_syncs(monkeypatch) as calls:
        session.next_chunk()
    assert calls == []


def test_the_spy_sees_a_sync():
    with pytest.MonkeyPatch.context() as monkeypatch, recorded_host_syncs(monkeypatch) as calls:
        int(torch.ones(()))
        torch.tensor([1, 2])
    assert calls == ["Tensor.__int__", "torch.tensor"]


# --- RoPE tables and keys rotated once per chunk ---


def test_tables_cut_from_rotary_tables_are_the_float64_tables_in_the_rotation_dtype():
    config = tiny_config()
    tables = RotaryTables(config, 3, 5, torch.float32, num_positions=4)
    for positions in ([0, 1, 2], [2, 0, 1, 3], [5, 9, 1500]):  # the last ones grow the tables
        expected = grid_rotary_embedding(config, torch.tensor(positions), 3, 5)
        assert torch.equal(tables.at(positions).cos, expected.cos.float())
        assert torch.equal(tables.at(positions).sin, expected.sin.float())
    with pytest.raises(ValueError, match="non-negative"):
        tables.at([0, -1])


def _per_forward_rotation(cache, layer, slots, key, value, visible_rope):
    """What the engine did before keys were rotated once per chunk: write, then rotate every visible key."""
    cache.write(layer, slots.write_slots, key, value)
    keys, values = cache.visible(layer, slots)
    return visible_rope.apply(keys), values


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_keys_rotated_once_per_chunk_are_the_keys_rotated_at_every_forward(dtype):
    """Rotation is elementwise, with the same tables and the same operations on every element either way, so the
    results are bitwise equal, in every dtype."""
    config = tiny_config()
    tables = RotaryTables(config, 2, 2, torch.promote_types(dtype, torch.float32))
    shape = dict(num_layers=1, batch_size=2, tokens_per_frame=4, num_heads=2, head_dim=32, sink_frames=1,
                 window_frames=6, dtype=dtype)
    once, every = RollingKVCache(**shape), RollingKVCache(**shape)
    rotated = RotatedKeys(num_layers=1)
    generator = torch.Generator().manual_seed(0)

    def random_tokens(frames):
        return torch.randn(2, frames * 4, 2, 32, generator=generator).to(dtype)

    for start, frames in [(0, 1), (1, 3), (4, 3), (7, 3), (10, 3)]:
        slots = once.plan(start, frames)
        chunk_rope = tables.at(slots.relative_query_positions())
        visible_rope = tables.at(slots.relative_key_positions())
        for forward in range(3):  # denoising steps and the commit pass write the chunk's slots again
            if forward == 2 and start == 7:  # a write from elsewhere (a re-cache) between two forwards
                sink_key, sink_value = random_tokens(1), random_tokens(1)
                for cache in (once, every):
                    cache.write(0, [0], sink_key, sink_value)
            key, value = random_tokens(frames), random_tokens(frames)
            keys, values = rotated.write_and_read(once, 0, slots, key, value, chunk_rope, visible_rope)
            expected_keys, expected_values = _per_forward_rotation(every, 0, slots, key, value, visible_rope)
            assert torch.equal(keys, expected_keys)
            assert torch.equal(values, expected_values)


@pytest.mark.parametrize("batch_guidance", [True, False])
def test_streams_with_keys_rotated_once_per_chunk_equal_streams_rotating_at_every_forward(monkeypatch, batch_guidance):
    reference = _session(batch_guidance=batch_guidance, dtype=torch.float64)
    session = _session(batch_guidance=batch_guidance, dtype=torch.float64)
    actual = [chunk.latents for chunk in session.stream(5)]
    monkeypatch.setattr(
        RotatedKeys, "write_and_read",
        lambda self, cache, layer, slots, k, v, chunk_rope, visible_rope: _per_forward_rotation(
            cache, layer, slots, k, v, visible_rope),
    )
    expected = [chunk.latents for chunk in reference.stream(5)]
    for a, b in zip(actual, expected):
        # Same keys bit for bit; attention then reads them from a buffer view instead of a fresh tensor.
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


# --- noise on the device ---


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_video_on_the_same_device(device):
    first, again = _session(device=device), _session(device=device)
    assert first.noise.device.type == device and first.noise.initial(0, (1, 2)).device.type == device
    for a, b in zip(first.stream(4), again.stream(4)):
        assert torch.equal(a.latents, b.latents)


def test_seeded_noise_draws_depend_only_on_seed_chunk_and_draw():
    noise = SeededNoise(5)
    later = noise.renoise(2, 1, (2, 3))
    noise.initial(0, (7,))
    assert torch.equal(noise.renoise(2, 1, (2, 3)), later)
    assert not torch.equal(SeededNoise(6).renoise(2, 1, (2, 3)), later)


# --- compiled and graphed forwards ---

# Inductor fuses the float32 upcasts, norms and residuals into fewer kernels with other summation orders:
# float32 rounding (~6e-8 relative), accumulated over 2 layers, 4 steps and 4 chunks, moves outputs of
# magnitude ~3 by ~5e-7 here, 20 times below this.
COMPILED_TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def _why_torch_compile_cannot_run() -> str | None:
    if not hasattr(torch, "compile") or not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this platform"
    if not torch.cuda.is_available():
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler
            get_cpp_compiler()
        except Exception as error:
            return f"inductor has no C++ compiler for the CPU: {error}"
    return None


@pytest.mark.skipif(_why_torch_compile_cannot_run() is not None, reason=str(_why_torch_compile_cannot_run()))
def test_compiled_blocks_equal_eager_blocks():
    # One chunk shape (blocks of 3, guidance off) compiles each half of the block once, shared by every block.
    config = StreamingConfig(rope_policy="relative", sink_frames=1, window_frames=7, block_frames=(3,))
    model = random_dit(tiny_config())
    text = torch.randn(1, 6, 24, generator=torch.Generator().manual_seed(1))
    chunks = {}
    torch._dynamo.utils.counters.clear()
    for compiled in (False, True):
        session = StreamingSession(model, config, latent_height=H, latent_width=W, seed=2, compile=compiled)
        session.start(StreamConditions(text=text))
        chunks[compiled] = [chunk.latents for chunk in session.stream(4)]
    for a, b in zip(chunks[True], chunks[False]):
        torch.testing.assert_close(a, b, **COMPILED_TOLERANCE)
    assert not torch._dynamo.utils.counters["graph_break"], "each half of a block compiles to one graph"
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 2, "one graph per half, shared by every block"


def test_cuda_graphs_off_cuda_run_eagerly():
    eager, graphed = _session(), _session(cuda_graphs=True)
    for a, b in zip(graphed.stream(4), eager.stream(4)):
        assert torch.equal(a.latents, b.latents)
    assert not graphed._graphs._captured


class _SimulatedGraph:
    """Stands in for a captured CUDA graph on the CPU. A real graph replays the kernels of the forward it captured:
    the chunk-only path of the rotated keys, for the captured write slots. The simulation checks that this is the
    path an eager forward of the current chunk would take now, then runs that forward into the static output."""

    def __init__(self, model, latents, timestep, context, cache, start_frame):
        self.model, self.context, self.cache = model, context, cache
        self.write_slots = cache.plan(start_frame, latents.shape[2]).write_slots
        self.replays = 0

    def replay(self):
        rotated = self.model._rotated_keys_of(self.cache)
        slots = rotated._current_for[0][0]
        assert slots.write_slots == self.write_slots
        for layer in range(self.cache.num_layers):
            assert rotated._current_for[layer] == (slots, self.cache.write_count(layer)), "keys not rotated for the chunk"
        out = self.model.forward_chunk(self.latents, self.timestep, self.context, self.cache, slots.start_frame)
        self.output.copy_(out)
        self.replays += 1


def test_graph_runner_replays_steady_chunks_with_their_keys_rotated(monkeypatch):
    """The graph runner's bookkeeping on the CPU, with simulated graphs: what is captured when, what is copied in,
    and that the visible keys are rotated for each chunk before its replay."""
    from motionstream_core.streaming.chunk_graphs import ChunkGraphs, _CapturedForward

    def is_steady(self, latents, cache, start_frame):  # as on CUDA, without the device check
        return cache.plan(start_frame, latents.shape[2]).visible_slots == cache.window_frames

    def simulated_capture(self, latents, timestep, context, cache, start_frame, rope_tables):
        graph = _SimulatedGraph(self.model, latents, timestep, context, cache, start_frame)
        graph.latents, graph.timestep = latents.clone(), timestep.clone()
        graph.output = self.model.forward_chunk(graph.latents, graph.timestep, context, cache, start_frame)
        return _CapturedForward(graph, graph.latents, graph.timestep, graph.output, context, rope_tables)

    monkeypatch.setattr(ChunkGraphs, "_is_steady", is_steady)
    monkeypatch.setattr(ChunkGraphs, "_capture", simulated_capture)
    eager, graphed = _session(), _session(cuda_graphs=True)
    new_prompt = torch.randn(1, 6, 24)
    for chunk in range(10):
        if chunk == 7:
            for session in (eager, graphed):
                session.update(text=new_prompt, prompt_change="recache")
        assert torch.equal(graphed.next_chunk().latents, eager.next_chunk().latents)
    captured = graphed._graphs._captured.values()
    # Chunks 7..9 under the new prompt: 3 of the 5 slot phases of the ring, 5 forwards each, every one of them a
    # replay (the first right after its capture).
    assert len(captured) == 3 and all(entry.graph.replays == 5 for entry in captured)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_replays_equal_eager_forwards():
    eager = _session(device="cuda")
    graphed = _session(device="cuda", cuda_graphs=True)
    new_prompt = torch.randn(1, 6, 24, device="cuda")
    for chunk in range(12):
        if chunk == 8:  # a new context: new graphs, after a re-cache of the window
            for session in (eager, graphed):
                session.update(text=new_prompt, prompt_change="recache")
        torch.testing.assert_close(graphed.next_chunk().latents, eager.next_chunk().latents, rtol=1e-5, atol=1e-5)
    assert graphed._graphs._captured, "steady-state chunks were replayed from graphs"
