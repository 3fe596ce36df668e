"""The Streaming Sampler's outputs end to end (issue #20, items 2, 5 and 6): every chunk goes to a video file
as it comes, IMAGE/LATENT only when they fit in memory, Stop ends an endless stream cleanly and keeps the file,
Cancel keeps the frames written, the preview gets a final status, live streams are paced to playback, and the
frames messages carry what measures drag-to-screen latency. The embedded demo model, called as ComfyUI calls it."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch

from live_streams import add_latents_then, stream_token
from motionstream_core.demo import load_demo_image, load_demo_tracks
from motionstream_core.motion.formats.widget_json import tracks_to_widget_dict

av = pytest.importorskip("av")
pytestmark = pytest.mark.usefixtures("single_thread")

EMBEDDED = "embedded: MotionStream demo (128x128, no download)"
NODE = "5"
FEW_FRAMES = 13  # chunks of 1, 3, 3, 3, 3 frames


@pytest.fixture(scope="module")
def demo(pack):
    (model,) = pack.NODE_CLASS_MAPPINGS["MotionStreamModelLoader"]().load(EMBEDDED, "auto")
    return model


@pytest.fixture(scope="module")
def modules(pack):
    return {name: importlib.import_module(f"{pack.__name__}.nodes.{name}")
            for name in ("host", "live_control", "output_memory", "pacing", "streaming_sampler", "video_file")}


@pytest.fixture()
def output_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTIONSTREAM_OUTPUT_DIR", str(tmp_path / "output"))
    return tmp_path / "output"


@pytest.fixture(autouse=True)
def fresh_messages(pack):
    pack.nodes.host.sent_messages.clear()
    yield
    pack.nodes.host.request_interrupt(False)


def generate(pack, model, **inputs):
    (tracks,) = pack.NODE_CLASS_MAPPINGS["MotionStreamTrackEditor"]().build(
        json.dumps(tracks_to_widget_dict(load_demo_tracks())))
    args = dict(model=model, width=128, height=128, num_frames=FEW_FRAMES, seed=0, fps=16.0, sink_frames=-1,
                window_frames=-1, denoising_steps="", shift=0.0, start_image=load_demo_image().movedim(0, -1)[None],
                tracks=tracks, unique_id=NODE)
    args.update(inputs)
    return pack.NODE_CLASS_MAPPINGS["MotionStreamStreamingSampler"]().generate(**args)["result"]


def decoded(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def messages(host, event):
    return [data for name, data in host.sent_messages if name == event]


def lossless_writer(monkeypatch, modules):
    """The sampler writes H.264 at qp 0 (lossless on the yuv420p planes) instead of the default crf 18."""
    video_file, sampler = modules["video_file"], modules["streaming_sampler"]
    lossless = video_file.VideoFormat("h264", "libx264", "mp4", "mp4", {"qp": "0"}, video_file.FRAGMENTED_MP4)
    if not video_file.can_encode(lossless):
        pytest.skip("this PyAV has no libx264")
    monkeypatch.setattr(sampler, "open_output_video",
                        lambda *args, **kwargs: video_file.open_output_video(*args, video_format=lossless, **kwargs))


def yuv420p_round_trip(frames: np.ndarray) -> np.ndarray:
    return np.stack([av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p").to_ndarray(format="rgb24")
                     for frame in frames])


# ---------------------------------------------------------------------------------------------
# The video file
# ---------------------------------------------------------------------------------------------


def test_the_video_output_holds_exactly_the_frames_the_node_returned(pack, demo, modules, output_dir, monkeypatch):
    lossless_writer(monkeypatch, modules)
    images, latent, video = generate(pack, demo, filename_prefix="runs/clip",
                                     prompt={"5": {"class_type": "MotionStreamStreamingSampler"}},
                                     extra_pnginfo={"workflow": {"nodes": []}})
    assert images.shape == (FEW_FRAMES, 128, 128, 3) and latent["samples"].shape[2] == FEW_FRAMES
    path = video.get_stream_source()
    assert path == str(output_dir / "runs" / "clip_00001_.mp4")
    frames = decoded(path)
    assert frames.shape == (FEW_FRAMES, 128, 128, 3)
    expected = yuv420p_round_trip(modules["video_file"].to_rgb24(images))
    for index, (frame, wanted) in enumerate(zip(frames, expected)):  # lossless: exact after yuv420p itself
        assert np.array_equal(frame, wanted), f"frame {index} differs"
    with av.open(path) as container:  # like ComfyUI's SaveVideo: dropping the file on ComfyUI loads the workflow
        assert json.loads(container.metadata["workflow"]) == {"nodes": []}
        assert json.loads(container.metadata["prompt"])["5"]["class_type"] == "MotionStreamStreamingSampler"
        assert container.streams.video[0].average_rate == 16


def test_the_default_file_is_within_the_loss_of_yuv420p_and_crf_18(pack, demo, output_dir):
    images, _, video = generate(pack, demo, filename_prefix="")  # empty: the default prefix
    assert video.get_stream_source().endswith("MotionStream_00001_.mp4")
    frames = decoded(video.get_stream_source()).astype(np.float32)
    assert frames.shape[0] == FEW_FRAMES
    # Mean absolute error per frame in 0..255 levels: yuv420p chroma ~1.6, H.264 crf 18 ~1-1.5 more.
    errors = np.abs(frames - images.numpy() * 255).mean(axis=(1, 2, 3))
    assert errors.max() <= 4.0, errors


# ---------------------------------------------------------------------------------------------
# Until Stop, and the final status
# ---------------------------------------------------------------------------------------------


def stop_after_chunk(pack, monkeypatch, chunk: int, **stop_body):
    """Once chunk `chunk` is generated, the stream's owner POSTs Stop with the token of its first status message
    (before the next chunk starts). Returns the chunks sent ([t, H, W, 3] each) and the route's replies."""
    host, live_control = pack.nodes.host, pack.nodes.live_control
    sent, replies = [], []
    original = host.send_frames

    def send(node_id, frames, fps, chunk_index, done):
        original(node_id, frames, fps, chunk_index, done)
        sent.append(frames.clone())

    def stop():
        body = {"prompt_id": None, "node_id": NODE, "token": stream_token(host, NODE), **stop_body}
        replies.append(live_control.handle_stop_request(json.dumps(body).encode()))

    monkeypatch.setattr(host, "send_frames", send)
    outputs_class = pack.nodes.output_memory.StreamOutputs
    monkeypatch.setattr(outputs_class, "add_latents", add_latents_then(outputs_class, chunk, stop))
    return sent, replies


def test_until_stopped_streams_until_the_stop_route_and_the_file_keeps_every_frame(pack, demo, modules, output_dir,
                                                                                   monkeypatch, caplog):
    lossless_writer(monkeypatch, modules)
    host = pack.nodes.host
    sent, replies = stop_after_chunk(pack, monkeypatch, chunk=9)
    with caplog.at_level("WARNING", logger="MotionStream"):
        images, latent, video = generate(pack, demo, num_frames=5, until_stopped=True)
    assert replies == [(200, {"ok": True, "stopping": True})]
    assert [chunk.shape[0] for chunk in sent] == [1] + [3] * 9, "num_frames is ignored; it ends after chunk 9"
    everything = torch.cat(sent)
    frames = decoded(video.get_stream_source())
    assert frames.shape == (28, 128, 128, 3)
    assert np.array_equal(frames, yuv420p_round_trip(modules["video_file"].to_rgb24(everything)))
    # endless: IMAGE and LATENT hold the last frame only, and the log says so
    assert images.shape == (1, 128, 128, 3) and torch.equal(images[0], everything[-1])
    assert latent["samples"].shape == (1, 16, 1, 32, 32)
    assert "endless stream" in caplog.text
    frames_messages = messages(host, host.MESSAGE_FRAMES)
    assert [m["chunk_index"] for m in frames_messages] == list(range(10)), "Stop after chunk 9: no chunk more"
    assert [m["done"] for m in frames_messages] == [False] * 9 + [True], "it came as chunk 9 was made: its last"
    statuses = messages(host, host.MESSAGE_STATUS)
    assert [s["state"] for s in statuses] == ["streaming", "stopped"]
    assert statuses[0]["num_frames"] is None and statuses[0]["live_token"]
    assert statuses[1]["frames"] == 28 and statuses[1]["file"]["filename"] == "MotionStream_00001_.mp4"
    assert "live_token" not in statuses[1], "the stream is over: no token"
    assert not pack.nodes.live_control._running


def test_stop_ends_a_fixed_length_stream_early_with_its_frames(pack, demo, output_dir, monkeypatch):
    sent, _ = stop_after_chunk(pack, monkeypatch, chunk=1)
    images, latent, video = generate(pack, demo, num_frames=31)
    assert images.shape[0] == 4 == sum(chunk.shape[0] for chunk in sent), "it fits: all frames made so far"
    assert latent["samples"].shape[2] == 4
    assert decoded(video.get_stream_source()).shape[0] == 4


def test_a_stop_during_a_chunk_ends_the_stream_with_that_chunk_marked_done(pack, demo, output_dir, monkeypatch):
    host, live_control = pack.nodes.host, pack.nodes.live_control
    original = live_control.LiveTracks.window

    def window_and_stop(live, start, stop):  # Stop arrives while chunk 2 (frames 4..6) is being made
        if start >= 4:
            token = messages(host, host.MESSAGE_STATUS)[0]["live_token"]
            live_control.apply_stop({"prompt_id": None, "node_id": NODE, "token": token})
        return original(live, start, stop)

    monkeypatch.setattr(live_control.LiveTracks, "window", window_and_stop)
    images, _, video = generate(pack, demo, until_stopped=True)
    frames_messages = messages(host, host.MESSAGE_FRAMES)
    assert [(m["chunk_index"], m["done"]) for m in frames_messages] == [(0, False), (1, False), (2, True)]
    assert decoded(video.get_stream_source()).shape[0] == 7 and images.shape[0] == 1
    assert messages(host, host.MESSAGE_STATUS)[-1]["state"] == "stopped"


def test_stop_needs_the_streams_token_and_client(pack, demo, output_dir, monkeypatch):
    live_control = pack.nodes.live_control
    _, replies = stop_after_chunk(pack, monkeypatch, chunk=0, token="guessed")
    images, _, _ = generate(pack, demo)
    assert replies[0][0] == 403 and "queued this prompt" in replies[0][1]["error"]
    assert images.shape[0] == FEW_FRAMES, "a refused Stop stops nothing"
    assert live_control.handle_stop_request(b'{"prompt_id": null, "node_id": "5", "token": "x"}')[0] == 404
    assert live_control.handle_stop_request(b"[1, 2]")[0] == 400
    assert live_control.handle_stop_request(b"{not json")[0] == 400
    assert live_control.handle_stop_request(b" " * (live_control.MAX_STOP_REQUEST_BYTES + 1))[0] == 413


def test_cancel_raises_keeps_the_frames_written_and_says_cancelled(pack, demo, output_dir, monkeypatch):
    host = pack.nodes.host
    outputs_class = pack.nodes.output_memory.StreamOutputs
    # Cancel once chunk 2 is made: it still reaches the file, no chunk after it does.
    monkeypatch.setattr(outputs_class, "add_latents", add_latents_then(outputs_class, 2, host.request_interrupt))
    with pytest.raises(host.Interrupted):
        generate(pack, demo, until_stopped=True)
    final = messages(host, host.MESSAGE_STATUS)[-1]
    assert final["state"] == "cancelled" and final["frames"] == 7
    assert decoded(output_dir / final["file"]["filename"]).shape[0] == 7
    assert not list(output_dir.glob("*.partial"))


def test_a_failure_says_failed(pack, demo, output_dir, monkeypatch):
    host = pack.nodes.host

    def broken(*_):
        raise RuntimeError("the preview broke")

    monkeypatch.setattr(host, "send_frames", broken)
    with pytest.raises(RuntimeError, match="preview broke"):
        generate(pack, demo)
    final = messages(host, host.MESSAGE_STATUS)[-1]
    assert final["state"] == "failed" and final["frames"] == 1


def test_until_stopped_needs_a_decoder_that_decodes_each_chunk(pack, modules):
    from motionstream_core.streaming.session import StreamingConfig
    from tiny_models import random_dit, tiny_config

    loaders = pack.nodes.model_loaders
    model = loaders.MotionStreamModel(random_dit(tiny_config()), None, StreamingConfig.self_forcing(), "t2v.pt")
    with pytest.raises(ValueError, match="until_stopped needs every chunk decoded as it comes: connect the Tiny VAE"):
        generate(pack, model, width=80, height=48, positive=[[torch.randn(1, 5, 24), {}]], vae=object(),
                 start_image=None, tracks=None, until_stopped=True)


# ---------------------------------------------------------------------------------------------
# What stays in memory
# ---------------------------------------------------------------------------------------------


def test_beyond_the_budget_image_and_latent_hold_the_last_frame_and_a_warning_is_logged(pack, demo, modules,
                                                                                      output_dir, monkeypatch, caplog):
    frame_bytes = 128 * 128 * 3 * 4
    monkeypatch.setattr(modules["output_memory"], "in_memory_budget_bytes", lambda: 10 * frame_bytes)
    host = pack.nodes.host
    kept = []
    original = host.send_frames
    monkeypatch.setattr(host, "send_frames", lambda node, frames, *rest: (kept.append(frames.clone()),
                                                                          original(node, frames, *rest)))
    with caplog.at_level("WARNING", logger="MotionStream"):
        images, latent, video = generate(pack, demo)
    assert "video file only" in caplog.text and "13 frames of 128x128" in caplog.text
    assert images.shape == (1, 128, 128, 3) and torch.equal(images[0], kept[-1][-1])
    assert latent["samples"].shape == (1, 16, 1, 32, 32)
    assert decoded(video.get_stream_source()).shape[0] == FEW_FRAMES
    caplog.clear()
    with caplog.at_level("WARNING", logger="MotionStream"):
        images, _, _ = generate(pack, demo, num_frames=7)  # 7 frames + latents fit in 10 frames' bytes
    assert images.shape[0] == 7 and not caplog.text


def test_stream_outputs_keep_nothing_per_frame_when_told_not_to(modules, tmp_path):
    video_file, output_memory = modules["video_file"], modules["output_memory"]
    writer = video_file.VideoFileWriter(tmp_path / "long.mp4", 16)
    outputs = output_memory.StreamOutputs(writer, keep=False, num_frames=None)
    for index in range(50):
        outputs.add_latents(torch.full((1, 16, 3, 4, 4), float(index)))
        outputs.add_frames(torch.full((3, 32, 32, 3), index / 50))
    assert len(outputs.frames) == 1 and len(outputs.latents) == 1
    assert outputs.images().shape == (1, 32, 32, 3) and outputs.latent().shape == (1, 16, 1, 4, 4)
    assert outputs.frame_count == 150 and writer.frames_written == 150
    writer.close()
    capped = output_memory.StreamOutputs(video_file.VideoFileWriter(tmp_path / "capped.mp4", 16), True, num_frames=5)
    assert capped.add_frames(torch.zeros(4, 32, 32, 3)).shape[0] == 4
    assert capped.add_frames(torch.zeros(4, 32, 32, 3)).shape[0] == 1, "frames past num_frames are cut"
    assert capped.add_frames(torch.zeros(4, 32, 32, 3)).shape[0] == 0 and capped.images().shape[0] == 5
    capped.writer.close()


# ---------------------------------------------------------------------------------------------
# Pacing to playback
# ---------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def simulate(pacing, fps, chunk_frames, generate_seconds, chunks, edits=(), lead_chunks=1):
    """A stream that takes `generate_seconds` per chunk of `chunk_frames` frames, paced by a fake clock. Returns
    the frames queued on screen when each chunk lands, and for each edit time (before the last chunk starts)
    the drag-to-screen latency: the edit is read by the next chunk started after it, and is on screen when the
    player shows that chunk's first frame. The player starts with the first chunk, shows `fps` frames a second
    and waits when it runs out."""
    clock = FakeClock()
    pacer = pacing.PlaybackPacer(fps, lead_chunks, clock=clock, sleep=clock.sleep)
    queued_at_landing, starts, arrivals = [], [], []
    for _ in range(chunks):
        starts.append(clock.now)
        clock.now += generate_seconds
        queued_at_landing.append(pacer.queued())
        arrivals += [clock.now] * chunk_frames
        pacer.sent(chunk_frames)
        pacer.wait()
    shown = []
    for arrival in arrivals:
        shown.append(arrival if not shown else max(shown[-1] + 1 / fps, arrival))
    latencies = []
    for edit in edits:
        chunk = next((index for index, start in enumerate(starts) if start >= edit), None)
        if chunk is not None:
            latencies.append(shown[chunk * chunk_frames] - edit)
    return queued_at_landing, latencies, pacer


def test_the_pacer_keeps_a_fast_stream_within_two_chunks_of_the_screen(modules):
    pacing = modules["pacing"]
    fps, chunk = 16.0, 12  # Wan: 3 latent frames a chunk, 0.75 s of video
    edits = [1.0 + 0.37 * k for k in range(60)]
    queued, latencies, pacer = simulate(pacing, fps, chunk, generate_seconds=0.2, chunks=60, edits=edits)
    assert max(queued) <= 2 * chunk, queued
    assert pacer.waited_seconds > 0
    # one chunk of lead (0.75 s) + the chunk being made (0.2 s) + its own 0.75 s at most before its first frame
    assert max(latencies) <= 2 * chunk / fps + 0.2 + 1e-9, max(latencies)
    unpaced_queued, unpaced, _ = simulate(pacing, fps, chunk, generate_seconds=0.2, chunks=60, edits=edits,
                                          lead_chunks=10**6)
    assert max(unpaced_queued) > 30 * chunk and max(unpaced) > 20, "without pacing, edits show up tens of seconds late"


def test_the_pacer_never_waits_for_a_stream_slower_than_real_time(modules):
    queued, _, pacer = simulate(modules["pacing"], 16.0, 12, generate_seconds=1.0, chunks=20)
    assert pacer.waited_seconds == 0 and max(queued) == 0


def test_the_pacer_follows_a_player_that_waited(modules):
    """The player stalls while a slow chunk is made; it is not counted as having played frames it never had."""
    pacing = modules["pacing"]
    clock = FakeClock()
    pacer = pacing.PlaybackPacer(10.0, clock=clock, sleep=clock.sleep)
    pacer.sent(10)
    clock.now += 5.0  # a slow chunk: the player shows its 10 frames in 1 s, then waits 4 s
    pacer.sent(10)
    assert pacer.queued() == 10
    assert pacer.wait() == 0.0, "one chunk queued is the lead"
    pacer.sent(10)  # made instantly
    assert pacer.queued() == 20 and pacer.wait() == pytest.approx(1.0) and pacer.queued() == pytest.approx(10)
    with pytest.raises(ValueError):
        pacing.PlaybackPacer(0)


def test_a_live_stream_is_paced_and_stop_cuts_the_wait_short(pack, demo, modules, output_dir, monkeypatch):
    host, sampler = pack.nodes.host, modules["streaming_sampler"]
    monkeypatch.setattr(host, "has_server", lambda: True)  # a browser that queued the prompt watches
    monkeypatch.setattr(host, "current_client_id", lambda: "client-a")
    clock = FakeClock()
    pacers, landing = [], []

    def fake_pacer(fps, sleep):
        pacer = modules["pacing"].PlaybackPacer(fps, clock=clock, sleep=clock.sleep)
        pacers.append(pacer)
        return pacer

    monkeypatch.setattr(sampler, "PlaybackPacer", fake_pacer)
    original = host.send_frames

    def send(node_id, frames, fps, chunk_index, done):
        clock.now += 0.02  # each chunk takes 20 ms: ten times faster than 3 frames at 16 fps
        landing.append(pacers[0].queued())
        original(node_id, frames, fps, chunk_index, done)

    monkeypatch.setattr(host, "send_frames", send)
    generate(pack, demo, num_frames=31)
    assert max(landing) <= 6 and pacers[0].waited_seconds > 1.0
    # the last chunk starts when 3 of the 28 frames before it are left to show: 25 frames after the first landed
    assert clock.now == pytest.approx(0.02 + 25 / 16 + 0.02, abs=0.01), "the stream takes about the playback time"
    generate(pack, demo, pace_to_playback=False, num_frames=7)
    assert len(pacers) == 1, "pacing off: no pacer"
    # the real sleep the sampler gives the pacer returns at once on Stop
    registration = pack.nodes.live_control.running_stream("p", NODE, pack.nodes.live_control.LiveTracks(None, None, 16))
    with registration:
        registration.stream.stop.set()
        assert registration.wait_for_stop(30.0) is True


# ---------------------------------------------------------------------------------------------
# Latency stamps
# ---------------------------------------------------------------------------------------------


def test_the_route_stamps_edits_and_the_first_chunk_made_with_one_carries_it(pack, demo, output_dir, monkeypatch):
    host, live_control = pack.nodes.host, pack.nodes.live_control
    document = tracks_to_widget_dict(load_demo_tracks())
    replies = []

    def edit():  # once chunk 1 is made, before chunk 2 starts
        body = {"prompt_id": None, "node_id": NODE, "token": stream_token(host, NODE), "tracks": document}
        replies.append(live_control.handle_live_tracks_request(json.dumps(body).encode()))

    outputs_class = pack.nodes.output_memory.StreamOutputs
    monkeypatch.setattr(outputs_class, "add_latents", add_latents_then(outputs_class, 1, edit))
    generate(pack, demo, num_frames=16)
    assert replies == [(200, {"ok": True, "version": 1})]
    frames_messages = messages(host, host.MESSAGE_FRAMES)
    assert [m.get("tracks_version") for m in frames_messages] == [None, None, 1, 1, 1, 1]
    first = frames_messages[2]["edit_to_frames_ms"]
    assert 0 < first < 10_000 and all(m["edit_to_frames_ms"] == first for m in frames_messages[2:])


def test_live_tracks_note_the_edit_each_chunk_reads(modules):
    live = modules["live_control"].LiveTracks(None, lambda tracks: tracks, 16)
    assert live.window(0, 4) is None and live.version_read == 0 and live.version_read_received_at is None
    assert live.apply_edit(tracks_to_widget_dict(load_demo_tracks()), received_at=123.5) == 1
    assert (live.version, live.received_at, live.version_read) == (1, 123.5, 0), "read when the next chunk starts"
    live.window(4, 8)
    assert (live.version_read, live.version_read_received_at) == (1, 123.5)


def test_a_stream_until_stop_runs_again_whenever_it_is_queued(pack):
    sampler = pack.NODE_CLASS_MAPPINGS["MotionStreamStreamingSampler"]
    changed = sampler.IS_CHANGED(until_stopped=True, seed=0, num_frames=81)
    assert changed != changed, "NaN: ComfyUI never reuses a cached result"
    assert sampler.IS_CHANGED(until_stopped=False, seed=0) == sampler.IS_CHANGED(seed=0) == ""
