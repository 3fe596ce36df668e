"""The streaming sampler node on a tiny random Track-v0-shaped model, called as ComfyUI calls it."""

import json
from types import SimpleNamespace

import pytest
import torch

from motionstream_core.streaming.session import StreamingConfig
from motionstream_core.codecs.taehv import TinyVAE
from motionstream_core.motion.track_head import TrackEncoder
from live_streams import run_with_live_edit
from tiny_models import random_dit, tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")

WIDTH, HEIGHT, FRAMES = 80, 48, 17  # latent 10x6, 5 latent frames: blocks of 1, 3 and 1 of 3


def _widget(x_end):
    return {"format": "motionstream-tracks", "version": 1, "width": WIDTH, "height": HEIGHT, "fps": 16, "duration": 1.0,
            "tracks": [{"id": 1, "keyframes": [{"t": 0.0, "x": 0.2, "y": 0.5}, {"t": 1.0, "x": x_end, "y": 0.5}]}]}


@pytest.fixture(scope="module")
def tiny_vae(fixtures_dir):
    return TinyVAE.from_file(fixtures_dir / "taehv_random_weights.safetensors", dtype=torch.float32)


@pytest.fixture(scope="module")
def model(pack):
    loaders = pack.nodes.model_loaders
    dit = random_dit(tiny_config(in_channels=52, out_channels=16, image_dim=40))
    torch.manual_seed(3)
    encoder = TrackEncoder(id_dim=32, channels=16)
    return loaders.MotionStreamModel(dit, encoder, StreamingConfig.track_v0(), "tiny")


def _run(pack, model, tiny_vae, tracks_json=None, **overrides):
    node = pack.NODE_CLASS_MAPPINGS["MotionStreamStreamingSampler"]()
    tracks = None
    if tracks_json is not None:
        (tracks,) = pack.NODE_CLASS_MAPPINGS["MotionStreamTrackEditor"]().build(json.dumps(tracks_json))
    torch.manual_seed(0)
    args = dict(
        model=model, positive=[[torch.randn(1, 5, 24), {}]], width=WIDTH, height=HEIGHT, num_frames=FRAMES,
        seed=7, fps=16.0, sink_frames=-1, window_frames=-1, denoising_steps="", shift=0.0, tiny_vae=tiny_vae,
        start_image=torch.rand(1, HEIGHT, WIDTH, 3),
        clip_vision_output=SimpleNamespace(penultimate_hidden_states=torch.randn(1, 9, 40)),
        tracks=tracks, unique_id="12",
    )
    args.update(overrides)
    return node.generate(**args)["result"]


def test_outputs_frames_and_latents(pack, model, tiny_vae):
    pack.nodes.host.sent_messages.clear()
    images, latent, _ = _run(pack, model, tiny_vae, _widget(0.8))
    assert images.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert 0 <= images.min() and images.max() <= 1
    assert latent["samples"].shape == (1, 16, 5, 6, 10)
    frames_events = [data for event, data in pack.nodes.host.sent_messages if event == "motionstream.frames"]
    assert [e["chunk_index"] for e in frames_events] == [0, 1, 2]
    assert [e["frame_count"] for e in frames_events] == [1, 12, 4]
    assert [e["done"] for e in frames_events] == [False, False, True]
    assert all(e["node"] == "12" for e in frames_events)


def test_same_seed_same_video_and_tracks_steer_it(pack, model, tiny_vae):
    first, _, _ = _run(pack, model, tiny_vae, _widget(0.8))
    again, _, _ = _run(pack, model, tiny_vae, _widget(0.8))
    torch.testing.assert_close(first, again)
    other, _, _ = _run(pack, model, tiny_vae, _widget(0.3))
    assert (first - other).abs().max() > 1e-3


def test_every_acceleration_choice_reaches_the_session(pack, model, tiny_vae, monkeypatch):
    sampler = pack.nodes.streaming_sampler
    assert list(sampler.ACCELERATIONS) == sampler.MotionStreamStreamingSampler.INPUT_TYPES()["optional"]["acceleration"][0]
    made = []
    session_class = sampler.StreamingSession
    monkeypatch.setattr(sampler, "StreamingSession", lambda *args, **kwargs: made.append(kwargs) or session_class(*args, **kwargs))
    plain, _, _ = _run(pack, model, tiny_vae, _widget(0.8))
    graphs, _, _ = _run(pack, model, tiny_vae, _widget(0.8), acceleration="CUDA graphs")
    assert made[0].get("cuda_graphs", False) is False and made[1]["cuda_graphs"] is True
    assert torch.equal(plain, graphs), "on a CPU, CUDA graphs leave the chunk step as it is"


def test_live_edit_changes_only_later_chunks(pack, model, tiny_vae):
    live_control = pack.nodes.live_control
    baseline, base_latent, _ = _run(pack, model, tiny_vae, _widget(0.8))
    tracks = pack.NODE_CLASS_MAPPINGS["MotionStreamTrackEditor"]().build(json.dumps(_widget(0.8)))[0]
    torch.manual_seed(0)  # the inputs _run draws
    inputs = dict(positive=[[torch.randn(1, 5, 24), {}]], start_image=torch.rand(1, HEIGHT, WIDTH, 3),
                  clip_vision_output=SimpleNamespace(penultimate_hidden_states=torch.randn(1, 9, 40)))
    # the user drags once chunk 1 is made
    run = run_with_live_edit(pack, _widget(0.3), after_chunk=1, model=model, width=WIDTH, height=HEIGHT,
                             num_frames=FRAMES, seed=7, fps=16.0, sink_frames=-1, window_frames=-1,
                             denoising_steps="", shift=0.0, tiny_vae=tiny_vae, tracks=tracks, unique_id="12", **inputs)
    edited_latent = run.outputs[1]
    assert [reply for _, reply in run.posted] == [(200, {"ok": True, "version": 1})]
    torch.testing.assert_close(edited_latent["samples"][:, :, :4], base_latent["samples"][:, :, :4])
    assert (edited_latent["samples"][:, :, 4] - base_latent["samples"][:, :, 4]).abs().max() > 1e-4
    # Nothing is running now, so the route answers 404; bad documents answer 400.
    assert live_control.apply_live_tracks({"prompt_id": None, "node_id": "12", "tracks": _widget(0.3)})[0] == 404
    assert live_control.apply_live_tracks("nonsense")[0] == 400


def test_interrupt_between_chunks_stops_cleanly_and_the_next_run_works(pack, model, tiny_vae, monkeypatch):
    host = pack.nodes.host
    calls = {"n": 0}

    def interrupt_on_tenth_check(*_):
        calls["n"] += 1
        if calls["n"] == 10:
            raise host.Interrupted("user pressed cancel")

    monkeypatch.setattr(host, "throw_if_interrupted", interrupt_on_tenth_check)
    with pytest.raises(host.Interrupted):
        _run(pack, model, tiny_vae, _widget(0.8))
    assert not pack.nodes.live_control._running, "the stream is unregistered after an interrupt"
    monkeypatch.undo()
    images, _, _ = _run(pack, model, tiny_vae, _widget(0.8))
    assert images.shape[0] == FRAMES


def test_clear_errors(pack, model, tiny_vae):
    with pytest.raises(ValueError, match="4k \\+ 1"):
        _run(pack, model, tiny_vae, num_frames=16)
    with pytest.raises(ValueError, match="start_image"):
        _run(pack, model, tiny_vae, start_image=None)
    with pytest.raises(ValueError, match="Tiny VAE"):
        _run(pack, model, None)
    with pytest.raises(ValueError, match="denoising_steps"):
        _run(pack, model, tiny_vae, denoising_steps="1000,abc")


class FakeComfyVAE:
    """ComfyUI's VAE interface: encode(IMAGE [T, H, W, 3]) -> raw latents [1, 16, F, h, w]."""

    def encode(self, frames):
        latent_frames = (frames.shape[0] - 1) // 4 + 1
        pooled = torch.nn.functional.avg_pool2d(frames[::4].movedim(-1, 1), 8)  # [F, 3, h, w]
        return pooled.mean(1, keepdim=True).expand(-1, 16, -1, -1).movedim(0, 1)[None][:, :, :latent_frames]


def test_teacher_node_with_joint_guidance(pack, model):
    node = pack.NODE_CLASS_MAPPINGS["MotionStreamTeacherSampler"]()
    (tracks,) = pack.NODE_CLASS_MAPPINGS["MotionStreamTrackEditor"]().build(json.dumps(_widget(0.8)))
    torch.manual_seed(0)
    args = dict(
        model=model, positive=[[torch.randn(1, 5, 24), {}]], negative=[[torch.zeros(1, 5, 24), {}]],
        width=WIDTH, height=HEIGHT, num_frames=9, seed=1, steps=2, shift=5.0, solver="euler",
        text_scale=3.0, motion_scale=1.5, fps=16.0, vae=FakeComfyVAE(), start_image=torch.rand(1, HEIGHT, WIDTH, 3),
        clip_vision_output=SimpleNamespace(penultimate_hidden_states=torch.randn(1, 9, 40)), tracks=tracks,
    )
    (latent,) = node.sample(**args)
    assert latent["samples"].shape == (1, 16, 3, 6, 10)
    assert torch.isfinite(latent["samples"]).all()
    (again,) = node.sample(**args)
    torch.testing.assert_close(again["samples"], latent["samples"])
