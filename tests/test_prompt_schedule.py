"""Prompt schedules and live prompt switches: the core timeline (which prompt each chunk gets), the Prompt
Schedule node, the Streaming Sampler on a tiny random text-to-video model, and POST /motionstream/live_prompt."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch

from motionstream_core.codecs.taehv import TinyVAE
from motionstream_core.streaming.prompt_schedule import (
    MAX_LIVE_PROMPT_CHARS,
    MAX_PROMPT_ENTRIES,
    PromptSchedule,
    PromptTimeline,
    ScheduledPrompt,
    first_pixel_frame,
)
from motionstream_core.streaming.session import StreamingConfig
from live_streams import add_latents_then, stream_token
from tiny_models import random_dit, tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")

# 33 video frames = 9 latent frames = 3 chunks of 3 (Self-Forcing blocks), starting at latent frames 0, 3, 6,
# i.e. video frames 0, 9 and 21: at 16 fps, 0 s, 0.5625 s and 1.3125 s.
WIDTH, HEIGHT, FRAMES, FPS = 32, 32, 33, 16.0
TEXT_DIM = 24
CHUNK_STARTS = (0, 3, 6)  # latent frames


def _text(seed: int, tokens: int = 5) -> torch.Tensor:
    return torch.randn(1, tokens, TEXT_DIM, generator=torch.Generator().manual_seed(seed))


PROMPT_A, PROMPT_B, PROMPT_C = _text(1), _text(2, tokens=7), _text(3)


def _conditioning(text: torch.Tensor) -> list:
    return [[text, {}]]


def _schedule(*prompts, prompt_change="recache") -> PromptSchedule:
    return PromptSchedule([ScheduledPrompt(start, text, prompt_change) for start, text in prompts])


# ---------------------------------------------------------------------------------------------
# The core timeline
# ---------------------------------------------------------------------------------------------


def test_first_pixel_frames_of_latent_frames():
    assert [first_pixel_frame(k, 4) for k in range(4)] == [0, 1, 5, 9]  # Wan: frame 0 alone, then 4 a latent
    assert [first_pixel_frame(k, 1) for k in range(4)] == [0, 1, 2, 3]


def test_each_prompt_lands_on_the_first_chunk_at_or_after_its_time():
    # Wan latents at 16 fps: chunks at latent 0, 3, 6, 9 start at video frames 0, 9, 21, 33.
    schedule = _schedule((0.0, PROMPT_A), (0.5625, PROMPT_B), (0.57, PROMPT_C))
    timeline = PromptTimeline(schedule, FPS, temporal_compression=4)
    assert timeline.starting_text is PROMPT_A
    switches = [timeline.switch_for_chunk(start) for start in (0, 3, 6, 9)]
    assert switches[0] is None
    assert switches[1].index == 1 and switches[1].text is PROMPT_B  # 0.5625 s is frame 9 exactly: "at"
    assert switches[2].index == 2  # 0.57 s is frame 9.12, so the chunk from frame 21
    assert switches[3] is None, "a prompt applies once"


def test_prompts_within_one_chunk_leave_the_last():
    timeline = PromptTimeline(_schedule((0.0, PROMPT_A), (0.1, PROMPT_B), (0.2, PROMPT_C)), FPS, 4)
    switch = timeline.switch_for_chunk(3)
    assert switch.index == 2 and switch.text is PROMPT_C
    assert timeline.switch_for_chunk(6) is None


def test_a_live_switch_applies_next_and_takes_over():
    schedule = _schedule((0.0, PROMPT_A), (0.5, PROMPT_B), (1.0, PROMPT_C), prompt_change="keep")
    timeline = PromptTimeline(schedule, FPS, 4)
    assert timeline.switch_live(2, "recache") == 1
    assert timeline.switch_live(0) == 2, "a later request before the chunk replaces the first"
    switch = timeline.switch_for_chunk(0)
    assert (switch.index, switch.prompt_change, switch.version) == (0, "keep", 2)
    later = [timeline.switch_for_chunk(start) for start in (3, 6, 9)]
    assert later == [None] * 3, "the schedule's later prompts are dropped"
    encoded = []
    timeline.switch_live(lambda: encoded.append(1) or PROMPT_C)
    assert encoded == [], "new text is encoded when its chunk starts, on the generating thread"
    switch = timeline.switch_for_chunk(12)
    assert encoded == [1] and switch.text is PROMPT_C and switch.index is None and switch.prompt_change == "keep"


def test_live_switches_are_checked_when_asked_for():
    timeline = PromptTimeline(_schedule((0.0, PROMPT_A), (1.0, PROMPT_B)), FPS, 4)
    for bad, message in ((2, "out of range"), (-1, "out of range"), (True, "index into the schedule"),
                         ("1", "index into the schedule"),
                         (torch.randn(1, 5, 7), "text embeddings \\[1, tokens, 24\\]")):
        with pytest.raises(ValueError, match=message):
            timeline.switch_live(bad)
    with pytest.raises(ValueError, match="unknown prompt change"):
        timeline.switch_live(1, "sometimes")
    growing = PromptTimeline(_schedule((0.0, PROMPT_A), (1.0, PROMPT_B), prompt_change="keep"), FPS, 4, "growing")
    with pytest.raises(ValueError, match="rolling"):
        growing.switch_live(1, "recache")
    assert timeline.version == 0 and growing.version == 0
    # new text that turns out wrong when encoded is dropped: the stream keeps its prompt and its schedule
    timeline.switch_live(lambda: torch.randn(1, 5, 7))
    with pytest.raises(ValueError, match="text embeddings"):
        timeline.switch_for_chunk(0)
    assert timeline.switch_for_chunk(3) is None and timeline.switch_for_chunk(15).index == 1


@pytest.mark.parametrize("prompts, message", [
    ([], "at least one prompt"),
    ([(0.0, PROMPT_A), (2.0, PROMPT_B), (1.0, PROMPT_C)], "prompt 3 starts at 1 s, not after prompt 2 at 2 s"),
    ([(0.0, PROMPT_A), (0.0, PROMPT_B)], "start times must increase"),
    ([(-1.0, PROMPT_A)], "prompt 1 must start at a finite number of seconds of at least 0, got -1.0"),
    ([(0.0, PROMPT_A), (float("nan"), PROMPT_B)], "prompt 2 must start at a finite number"),
    ([(0.0, PROMPT_A), (1.0, torch.randn(5, TEXT_DIM))], "prompt 2 needs text embeddings \\[batch, tokens, dim\\]"),
    ([(0.0, PROMPT_A), (1.0, torch.randn(1, 5, 8))], "the same batch and embedding size"),
    ([(float(i), PROMPT_A) for i in range(MAX_PROMPT_ENTRIES + 1)], f"at most {MAX_PROMPT_ENTRIES} prompts"),
])
def test_schedule_errors_are_clear(prompts, message):
    with pytest.raises(ValueError, match=message):
        _schedule(*prompts)


def test_timeline_errors_are_clear():
    with pytest.raises(ValueError, match="unknown prompt change policy"):
        _schedule((0.0, PROMPT_A), prompt_change="always")
    with pytest.raises(ValueError, match="needs a prompt from 0 s; the schedule starts at 2 s"):
        PromptTimeline(_schedule((2.0, PROMPT_A)), FPS)
    with pytest.raises(ValueError, match="prompt 1: the .recache. prompt change needs a cache that can be re-cached"):
        PromptTimeline(_schedule((0.0, PROMPT_A), (1.0, PROMPT_B)), FPS, 4, cache_policy="growing")
    with pytest.raises(ValueError, match="fps"):
        PromptTimeline(_schedule((0.0, PROMPT_A)), 0.0)


# ---------------------------------------------------------------------------------------------
# The Prompt Schedule node
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def schedule_node(pack):
    return pack.NODE_CLASS_MAPPINGS["MotionStreamPromptSchedule"]()


def _build(node, prompt_change="recache", **inputs):
    inputs.setdefault("prompt_1", _conditioning(PROMPT_A))
    inputs.setdefault("start_1", 0.0)
    return node.build(prompt_change=prompt_change, **inputs)[0]


def test_node_skips_unconnected_prompts_and_chains(pack, schedule_node):
    value = _build(schedule_node, prompt_3=_conditioning(PROMPT_B), start_3=2.0, start_2=1.0)
    assert [(p.start_seconds, p.text is PROMPT_B) for p in value.schedule.prompts] == [(0.0, False), (2.0, True)]
    chained = _build(schedule_node, previous=value, prompt_1=_conditioning(PROMPT_C), start_1=4.0, prompt_change="keep")
    assert [p.start_seconds for p in chained.schedule.prompts] == [0.0, 2.0, 4.0]
    assert [p.prompt_change for p in chained.schedule.prompts] == ["recache", "recache", "keep"]
    spec = type(schedule_node).INPUT_TYPES()
    assert spec["required"]["prompt_change"][0] == ["keep", "recache"]
    assert "prompt_schedule" in pack.NODE_CLASS_MAPPINGS["MotionStreamStreamingSampler"].INPUT_TYPES()["optional"]


def test_node_errors_name_the_inputs(schedule_node):
    with pytest.raises(ValueError, match=r"start_3 \(1 s\) must come after start_2 \(2 s\)"):
        _build(schedule_node, prompt_2=_conditioning(PROMPT_B), start_2=2.0,
               prompt_3=_conditioning(PROMPT_C), start_3=1.0)
    first = _build(schedule_node, prompt_2=_conditioning(PROMPT_B), start_2=3.0)
    with pytest.raises(ValueError, match=r"start_1 \(3 s\) must come after the last prompt of previous \(3 s\)"):
        _build(schedule_node, previous=first, start_1=3.0)
    with pytest.raises(ValueError, match="prompt_2: the CONDITIONING holds no"):
        _build(schedule_node, prompt_2="a cat", start_2=1.0)
    with pytest.raises(ValueError, match="prompt 1 must start at a finite number of seconds of at least 0"):
        _build(schedule_node, start_1=-1.0)
    value = None
    with pytest.raises(ValueError, match=f"at most {MAX_PROMPT_ENTRIES} prompts"):
        for node_index in range(MAX_PROMPT_ENTRIES // 4 + 1):  # chained nodes of 4 prompts each
            starts = {f"start_{slot}": 4.0 * node_index + slot for slot in range(1, 5)}
            prompts = {f"prompt_{slot}": _conditioning(PROMPT_A) for slot in range(1, 5)}
            value = _build(schedule_node, previous=value, **starts, **prompts)


# ---------------------------------------------------------------------------------------------
# The Streaming Sampler on a tiny text-to-video model
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vae(fixtures_dir):
    return TinyVAE.from_file(fixtures_dir / "taehv_random_weights.safetensors", dtype=torch.float32)


@pytest.fixture(scope="module")
def model(pack):
    dit = random_dit(tiny_config(in_channels=16, out_channels=16, text_dim=TEXT_DIM))
    return pack.nodes.model_loaders.MotionStreamModel(dit, None, StreamingConfig.self_forcing(), "tiny text-to-video")


def _sampler_inputs(model, tiny_vae, **overrides) -> dict:
    inputs = dict(model=model, width=WIDTH, height=HEIGHT, num_frames=FRAMES, seed=5, fps=FPS, sink_frames=-1,
                  window_frames=-1, denoising_steps="", shift=0.0, tiny_vae=tiny_vae, unique_id="21")
    inputs.update(overrides)
    return inputs


def _latents(pack, model, tiny_vae, **overrides) -> torch.Tensor:
    node = pack.NODE_CLASS_MAPPINGS["MotionStreamStreamingSampler"]()
    latent = node.generate(**_sampler_inputs(model, tiny_vae, **overrides))["result"][1]
    return latent["samples"]


def _scheduled(pack, *prompts, prompt_change="recache"):
    node = pack.NODE_CLASS_MAPPINGS["MotionStreamPromptSchedule"]()
    inputs = {}
    for slot, (start, text) in enumerate(prompts, start=1):
        inputs[f"prompt_{slot}"], inputs[f"start_{slot}"] = _conditioning(text), start
    return node.build(prompt_change=prompt_change, **inputs)[0]


@pytest.fixture(scope="module")
def baseline(pack, model, tiny_vae):
    return _latents(pack, model, tiny_vae, positive=_conditioning(PROMPT_A))


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    # Latents are O(1); a new prompt moves them by ~0.4 here and re-caching vs keeping by ~0.01, while float
    # rounding of the same computation would stay near 1e-6.
    return (a - b).abs().max().item() > 1e-3


@pytest.fixture(scope="module")
def switched(pack, model, tiny_vae):
    """The stream switched to prompt B at 0.5 s (the chunk from latent frame 3), each way."""
    return {change: _latents(pack, model, tiny_vae, prompt_schedule=_scheduled(
        pack, (0.0, PROMPT_A), (0.5, PROMPT_B), prompt_change=change)) for change in ("keep", "recache")}


@pytest.mark.parametrize("prompt_change", ["keep", "recache"])
def test_a_switch_changes_only_the_chunks_after_it(baseline, switched, prompt_change):
    latents = switched[prompt_change]
    assert latents.shape == baseline.shape == (1, 16, 9, 4, 4)
    # Same process, device and seed: the chunk before the switch is computed exactly as without it.
    assert torch.equal(latents[:, :, :3], baseline[:, :, :3])
    for start in CHUNK_STARTS[1:]:
        assert _differs(latents[:, :, start:start + 3], baseline[:, :, start:start + 3]), start


def test_recache_and_keep_differ_after_the_switch(switched):
    keep, recache = switched["keep"], switched["recache"]
    assert torch.equal(keep[:, :, :3], recache[:, :, :3])
    assert _differs(keep[:, :, 3:6], recache[:, :, 3:6]), "re-cached context changes the very next chunk"


def test_a_later_switch_time_moves_to_a_later_chunk(pack, model, tiny_vae, baseline):
    # 0.57 s is video frame 9.12: the chunk from frame 9 (latent 3) starts before it, so the switch waits.
    latents = _latents(pack, model, tiny_vae, prompt_schedule=_scheduled(pack, (0.0, PROMPT_A), (0.57, PROMPT_B)))
    assert torch.equal(latents[:, :, :6], baseline[:, :, :6])
    assert _differs(latents[:, :, 6:], baseline[:, :, 6:])


def test_positive_runs_until_a_schedule_that_starts_later(pack, model, tiny_vae, switched):
    latents = _latents(pack, model, tiny_vae, positive=_conditioning(PROMPT_A),
                       prompt_schedule=_scheduled(pack, (0.5, PROMPT_B)))
    assert torch.equal(latents, switched["recache"])


def test_sampler_errors_with_a_schedule(pack, model, tiny_vae):
    schedule = _scheduled(pack, (0.0, PROMPT_A), (0.5, PROMPT_B))
    with pytest.raises(ValueError, match="both positive and prompt_schedule"):
        _latents(pack, model, tiny_vae, positive=_conditioning(PROMPT_A), prompt_schedule=schedule)
    with pytest.raises(ValueError, match="prompt_schedule starts at 0.5 s: connect positive"):
        _latents(pack, model, tiny_vae, prompt_schedule=_scheduled(pack, (0.5, PROMPT_B)))
    with pytest.raises(ValueError, match="needs positive"):
        _latents(pack, model, tiny_vae)
    wrong_encoder = _scheduled(pack, (0.0, torch.randn(1, 5, 8)))
    with pytest.raises(ValueError, match="8-dim embeddings; tiny text-to-video takes 24"):
        _latents(pack, model, tiny_vae, prompt_schedule=wrong_encoder)


def test_the_embedded_demo_refuses_a_schedule(pack):
    loaders = pack.nodes.model_loaders
    demo = loaders.load_embedded_demo(None)
    (image,) = loaders.MotionStreamDemoImage().load()["result"]
    text_dim = demo.dit.config.text_dim
    schedule = _scheduled(pack, (0.0, torch.randn(1, 5, text_dim)), (1.0, torch.randn(1, 5, text_dim)))
    node = pack.NODE_CLASS_MAPPINGS["MotionStreamStreamingSampler"]()
    size = demo.native_size
    with pytest.raises(ValueError, match="embedded MotionStream demo model was trained with one fixed text and takes "
                                         "no prompts: disconnect prompt_schedule"):
        node.generate(model=demo, width=size[0], height=size[1], num_frames=9, seed=0, fps=FPS, sink_frames=-1,
                      window_frames=-1, denoising_steps="", shift=0.0, start_image=image, prompt_schedule=schedule)


# ---------------------------------------------------------------------------------------------
# Live prompt switches: POST /motionstream/live_prompt
# ---------------------------------------------------------------------------------------------


class FakeCLIP:
    """ComfyUI's CLIP interface as CLIPTextEncode uses it: tokenize, then encode_from_tokens_scheduled."""

    def __init__(self, embeddings: dict[str, torch.Tensor]):
        self.embeddings = embeddings
        self.encoded: list[str] = []

    def tokenize(self, text):
        return {"tokens": text}

    def encode_from_tokens_scheduled(self, tokens):
        self.encoded.append(tokens["tokens"])
        return _conditioning(self.embeddings[tokens["tokens"]])


def _run_with_live_prompt(pack, body_fields: dict, after_chunk: int = 0, **sampler_inputs):
    """The stream's owner posts `body_fields` to the live prompt route once chunk `after_chunk` is made."""
    host, live_control = pack.nodes.host, pack.nodes.live_control
    replies, outputs_class = [], pack.nodes.output_memory.StreamOutputs
    original = outputs_class.add_latents

    def post():
        node_id = str(sampler_inputs["unique_id"])
        body = {"prompt_id": host.current_prompt_id(), "node_id": node_id, "token": stream_token(host, node_id),
                **body_fields}
        replies.append(live_control.handle_live_prompt_request(json.dumps(body).encode()))

    outputs_class.add_latents = add_latents_then(outputs_class, after_chunk, post)
    try:
        latent = pack.NODE_CLASS_MAPPINGS["MotionStreamStreamingSampler"]().generate(**sampler_inputs)["result"][1]
    finally:
        outputs_class.add_latents = original
    return latent["samples"], replies


def test_a_live_switch_by_index_matches_the_scheduled_switch(pack, model, tiny_vae, switched):
    # B is in the schedule for far later; the owner switches to it once chunk 0 is made.
    schedule = _scheduled(pack, (0.0, PROMPT_A), (100.0, PROMPT_B), prompt_change="recache")
    latents, replies = _run_with_live_prompt(pack, {"index": 1},
                                             **_sampler_inputs(model, tiny_vae, prompt_schedule=schedule))
    assert replies == [(200, {"ok": True, "version": 1})]
    assert torch.equal(latents, switched["recache"])


def test_live_text_is_encoded_with_the_schedules_clip_before_the_next_chunk(pack, model, tiny_vae, switched):
    clip = FakeCLIP({"a red kite over the sea": PROMPT_B})
    schedule = pack.NODE_CLASS_MAPPINGS["MotionStreamPromptSchedule"]().build(
        prompt_1=_conditioning(PROMPT_A), start_1=0.0, prompt_change="keep", clip=clip)[0]
    latents, replies = _run_with_live_prompt(
        pack, {"text": "a red kite over the sea", "prompt_change": "recache"},
        **_sampler_inputs(model, tiny_vae, prompt_schedule=schedule))
    assert replies == [(200, {"ok": True, "version": 1})]
    assert clip.encoded == ["a red kite over the sea"]
    assert torch.equal(latents, switched["recache"])


def test_live_text_the_model_cannot_take_is_dropped_with_a_warning(pack, model, tiny_vae, baseline, caplog):
    clip = FakeCLIP({"wrong encoder": torch.randn(1, 5, 8)})
    schedule = pack.NODE_CLASS_MAPPINGS["MotionStreamPromptSchedule"]().build(
        prompt_1=_conditioning(PROMPT_A), start_1=0.0, prompt_change="recache", clip=clip)[0]
    with caplog.at_level(logging.WARNING):
        latents, replies = _run_with_live_prompt(pack, {"text": "wrong encoder"},
                                                 **_sampler_inputs(model, tiny_vae, prompt_schedule=schedule))
    assert replies[0][0] == 200
    assert "a live prompt was not used" in caplog.text
    assert torch.equal(latents, baseline), "the stream went on with its prompt"


def _streaming_status(host, node_id) -> dict:
    return next(data for event, data in host.sent_messages
                if event == host.MESSAGE_STATUS and data["node"] == str(node_id) and data["state"] == "streaming")


def test_the_streaming_status_offers_the_schedules_prompts_to_the_live_preview(pack, model, tiny_vae):
    host = pack.nodes.host
    schedule = _scheduled(pack, (0.5, PROMPT_B))  # positive runs until 0.5 s: prompt 0 is positive
    host.sent_messages.clear()
    _latents(pack, model, tiny_vae, positive=_conditioning(PROMPT_A), prompt_schedule=schedule)
    inputs = _sampler_inputs(model, tiny_vae)
    offer = _streaming_status(host, inputs["unique_id"])["live_prompts"]
    assert offer == {"prompts": [{"index": 0, "start": 0.0}, {"index": 1, "start": 0.5}], "text": False}

    clip = FakeCLIP({})
    with_clip = pack.NODE_CLASS_MAPPINGS["MotionStreamPromptSchedule"]().build(
        prompt_1=_conditioning(PROMPT_A), start_1=0.0, prompt_change="keep", clip=clip)[0]
    host.sent_messages.clear()
    _latents(pack, model, tiny_vae, prompt_schedule=with_clip)
    assert _streaming_status(host, inputs["unique_id"])["live_prompts"]["text"] is True

    host.sent_messages.clear()
    _latents(pack, model, tiny_vae, positive=_conditioning(PROMPT_A))
    assert "live_prompts" not in _streaming_status(host, inputs["unique_id"]), "no schedule, nothing to switch"


@pytest.fixture
def live_control(pack):
    return pack.nodes.live_control


@pytest.fixture
def prompt_stream(pack, live_control):
    """A registered stream (prompt "p", node "8") with a two-prompt schedule and no text encoder."""
    timeline = PromptTimeline(_schedule((0.0, PROMPT_A), (1.0, PROMPT_B)), FPS, 4)
    prompts = pack.nodes.prompt_schedule.LivePrompts(timeline)
    registration = live_control.running_stream("p", "8", live_control.LiveTracks(None, lambda t: t, FPS), prompts)
    with registration:
        yield registration


def _body(registration, **changes) -> dict:
    body = {"prompt_id": "p", "node_id": "8", "token": registration.token, "index": 1}
    body.update(changes)
    return body


def test_the_route_refuses_other_clients(live_control, prompt_stream, pack, monkeypatch):
    for token in ("x" * len(prompt_stream.token), prompt_stream.token[:-1], "", None):
        status, reply = live_control.apply_live_prompt(_body(prompt_stream, token=token))
        assert status == 403 and "queued this prompt" in reply["error"], token
    tracks = live_control.LiveTracks(None, lambda t: t, FPS)
    other = live_control.running_stream("p", "9", tracks, prompt_stream.prompts)
    with other:
        assert live_control.apply_live_prompt(_body(prompt_stream, token=other.token))[0] == 403
    assert live_control.apply_live_prompt(_body(prompt_stream, node_id="7"))[0] == 404
    assert prompt_stream.prompts.timeline.version == 0, "no refused request was applied"
    # With a ComfyUI client id, it must match too.
    host = pack.nodes.host
    monkeypatch.setattr(host, "has_server", lambda: True)
    monkeypatch.setattr(host, "current_client_id", lambda: "client-a")
    owned = live_control.running_stream("p", "10", tracks, prompt_stream.prompts)
    with owned:
        body = _body(owned, node_id="10")
        assert live_control.apply_live_prompt({**body, "client_id": "client-b"})[0] == 403
        assert live_control.apply_live_prompt(body)[0] == 403
        assert live_control.apply_live_prompt({**body, "client_id": "client-a"}) == (200, {"ok": True, "version": 1})


@pytest.mark.parametrize("changes, status, message", [
    ({"index": None}, 400, "either text"),
    ({"text": "a dog"}, 400, "either text"),  # and index
    ({"index": True}, 400, "index must be an integer"),
    ({"index": "1"}, 400, "index must be an integer"),
    ({"index": 1.0}, 400, "index must be an integer"),
    ({"index": 2}, 400, "index 2 is out of range: the schedule has 2 prompt\\(s\\), 0 to 1"),
    ({"index": None, "text": 12}, 400, "text must be a non-empty string"),
    ({"index": None, "text": "  "}, 400, "text must be a non-empty string"),
    ({"index": None, "text": "a" * (MAX_LIVE_PROMPT_CHARS + 1)}, 413, f"longer than {MAX_LIVE_PROMPT_CHARS}"),
    ({"index": None, "text": "a dog"}, 400, "cannot encode text: connect a CLIP"),
    ({"prompt_change": "often"}, 400, "unknown prompt change policy"),
    ({"prompt_change": ["keep"]}, 400, "prompt_change must be a string"),
    ({"prompt_id": ["p"]}, 400, "prompt_id must be a string"),
])
def test_the_route_answers_bad_bodies_with_a_message(live_control, prompt_stream, changes, status, message):
    got_status, reply = live_control.apply_live_prompt(_body(prompt_stream, **changes))
    assert got_status == status and re.search(message, reply["error"]), reply
    assert prompt_stream.prompts.timeline.version == 0


def test_the_route_bounds_and_parses_raw_bodies(live_control, prompt_stream):
    assert live_control.handle_live_prompt_request(b"[1, 2")[0] == 400
    assert live_control.handle_live_prompt_request(b"[1, 2]")[0] == 400
    assert live_control.handle_live_prompt_request(b"\xff")[0] == 400
    huge = json.dumps(_body(prompt_stream, index=None, text="a" * live_control.MAX_PROMPT_REQUEST_BYTES)).encode()
    status, reply = live_control.handle_live_prompt_request(huge)
    assert status == 413 and "larger than the limit" in reply["error"]
    ok = live_control.handle_live_prompt_request(json.dumps(_body(prompt_stream)).encode())
    assert ok == (200, {"ok": True, "version": 1})


def test_a_stream_without_a_schedule_takes_no_prompt_switches(live_control):
    with live_control.running_stream("p", "8", live_control.LiveTracks(None, lambda t: t, FPS)) as _:
        registration = live_control._running[("p", "8")][0]
        status, reply = live_control.apply_live_prompt({"prompt_id": "p", "node_id": "8", "token": registration.token,
                                                        "index": 0})
    assert status == 409 and "no prompt schedule" in reply["error"]
