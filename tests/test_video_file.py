"""The progressive video file: a stream written chunk by chunk decodes to the frames the session produced, a
stopped or killed run never leaves a half-written file under the final name, odd sizes and the fps are kept;
and the rule that decides whether IMAGE/LATENT outputs fit in memory."""

from __future__ import annotations

import importlib
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from motionstream_core import rescale_tracks
from motionstream_core.demo import load_demo_image, load_demo_model, load_demo_tracks

av = pytest.importorskip("av")

REPO_ROOT = Path(__file__).resolve().parents[1]
FRAMES = 30  # ten chunks of the demo model


@pytest.fixture(scope="module")
def video_file(pack):
    return importlib.import_module(f"{pack.__name__}.nodes.video_file")


@pytest.fixture(scope="module")
def output_memory(pack):
    return importlib.import_module(f"{pack.__name__}.nodes.output_memory")


@pytest.fixture()
def output_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTIONSTREAM_OUTPUT_DIR", str(tmp_path / "output"))
    return tmp_path / "output"


def decoded(path) -> tuple[np.ndarray, Fraction]:
    """Every frame of a file as rgb24 [T, H, W, 3], and the stream's frame rate."""
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        rate = container.streams.video[0].average_rate
    return np.stack(frames), Fraction(rate)


def yuv420p_round_trip(frames: np.ndarray) -> np.ndarray:
    """What yuv420p itself makes of rgb24 frames (chroma at half resolution), without any codec loss."""
    return np.stack([av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p").to_ndarray(format="rgb24")
                     for frame in frames])


def stream_to_file(video_file, path, video_format=None):
    """Streams FRAMES frames of the demo model, writing each decoded chunk as it comes; returns the session's
    frames as uint8 [T, H, W, 3] and the writer."""
    demo = load_demo_model()
    tracks = rescale_tracks(load_demo_tracks(), demo.size, demo.size)
    writer = video_file.VideoFileWriter(path, demo.fps, video_format)
    chunks = []

    def on_frames(frames):  # [t, 3, H, W] in [0, 1]
        chunks.append(frames.shape[0])
        writer.write(frames.permute(0, 2, 3, 1))

    with writer:
        result = demo.stream(load_demo_image(), tracks, FRAMES, on_frames=on_frames)
    assert len(chunks) > 1, "written chunk by chunk"
    return video_file.to_rgb24(result.frames.permute(0, 2, 3, 1)), writer


def test_a_lossless_file_holds_exactly_the_frames_of_the_session(video_file, tmp_path, single_thread):
    # H.264 at qp 0 is lossless on the yuv420p planes, so each decoded frame must equal its session frame
    # after yuv420p's own conversion exactly: this checks the count, the order and every pixel.
    lossless = video_file.VideoFormat("h264", "libx264", "mp4", "mp4", {"qp": "0"}, video_file.FRAGMENTED_MP4)
    if not video_file.can_encode(lossless):
        pytest.skip("this PyAV has no libx264")
    produced, writer = stream_to_file(video_file, tmp_path / "lossless.mp4", lossless)
    frames, rate = decoded(writer.path)
    assert frames.shape == produced.shape == (FRAMES, 128, 128, 3)
    assert writer.frames_written == FRAMES
    assert rate == 16
    for index, (frame, expected) in enumerate(zip(frames, yuv420p_round_trip(produced))):
        assert np.array_equal(frame, expected), f"frame {index} differs"


def test_the_default_file_has_every_frame_within_the_loss_of_yuv420p_and_the_codec(video_file, tmp_path, single_thread):
    # Bound on the mean absolute error per frame, in 0..255 levels: yuv420p's half-resolution chroma costs the
    # demo's frames ~1.6 levels, H.264 at crf 18 ~1-1.5 more (measured: at most 3.0 with libx264, 3.4 with VP9).
    video_format = video_file.choose_video_format()
    produced, writer = stream_to_file(video_file, tmp_path / f"default.{video_format.extension}")
    frames, rate = decoded(writer.path)
    assert frames.shape == produced.shape
    errors = np.abs(frames.astype(np.float32) - produced.astype(np.float32)).mean(axis=(1, 2, 3))
    assert errors.max() <= 4.0, errors


@pytest.mark.parametrize("name", ["h264", "vp9", "mpeg4"])
def test_each_available_format_keeps_the_frame_count_and_fps(video_file, tmp_path, name):
    if name not in {video_format.name for video_format in video_file.available_video_formats()}:
        pytest.skip(f"this PyAV cannot encode {name}")
    video_format = video_file.choose_video_format(name)
    path = tmp_path / f"clip.{video_format.extension}"
    with video_file.VideoFileWriter(path, 16, name) as writer:
        for _ in range(4):
            writer.write(torch.rand(3, 64, 96, 3))
    frames, rate = decoded(path)
    assert frames.shape == (12, 64, 96, 3) and rate == 16


@pytest.mark.parametrize("fps, expected", [(16, Fraction(16)), (24.0, Fraction(24)), (29.97, Fraction(2997, 100)),
                                           (Fraction(30000, 1001), Fraction(30000, 1001)), (7.5, Fraction(15, 2))])
def test_the_fps_is_kept_as_a_rational(video_file, tmp_path, fps, expected):
    path = tmp_path / "rate.mp4"
    with video_file.VideoFileWriter(path, fps) as writer:
        writer.write(np.zeros((20, 32, 32, 3), np.uint8))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert Fraction(stream.average_rate) == expected
        assert container.duration / av.time_base == pytest.approx(20 / expected, abs=1e-3)


@pytest.mark.parametrize("height, width", [(128, 128), (127, 129), (65, 64), (1, 1)])
def test_odd_sizes_are_padded_to_even_keeping_every_pixel(video_file, tmp_path, height, width):
    rng = np.random.default_rng(0)
    frames = np.repeat(np.repeat(rng.integers(0, 256, (6, (height + 7) // 8, (width + 7) // 8, 3), dtype=np.uint8),
                                 8, axis=1), 8, axis=2)[:, :height, :width]  # 8x8 blocks: smooth enough for yuv420p
    path = tmp_path / "odd.mp4"
    with video_file.VideoFileWriter(path, 16) as writer:
        writer.write(frames)
    decoded_frames, _ = decoded(path)
    assert decoded_frames.shape == (6, *video_file.even_size(height, width), 3)
    assert video_file.even_size(height, width) == (height + height % 2, width + width % 2)
    error = np.abs(decoded_frames[:, :height, :width].astype(np.float32) - frames).mean()
    assert error <= 12.0  # random 8x8 colour blocks: chroma subsampling at block edges plus crf 18


def test_padding_repeats_the_last_row_and_column(video_file):
    frames = np.arange(2 * 3 * 5 * 3, dtype=np.uint8).reshape(2, 3, 5, 3)
    padded = video_file.pad_to_even(frames)
    assert padded.shape == (2, 4, 6, 3)
    assert np.array_equal(padded[:, :3, :5], frames)
    assert np.array_equal(padded[:, 3, :5], frames[:, 2]) and np.array_equal(padded[:, :3, 5], frames[:, :, 4])


def test_a_stop_finalises_the_frames_written_so_far(video_file, tmp_path):
    path = tmp_path / "stopped.mp4"
    with pytest.raises(KeyboardInterrupt):
        with video_file.VideoFileWriter(path, 16) as writer:
            writer.write(np.full((3, 32, 32, 3), 100, np.uint8))
            assert not path.exists(), "written under the .partial name until closed"
            writer.write(np.full((3, 32, 32, 3), 200, np.uint8))
            raise KeyboardInterrupt  # Stop / interrupt in the middle of the stream
    assert writer.result == path and not video_file.partial_path(path).exists()
    assert decoded(path)[0].shape[0] == 6
    assert writer.close() == path, "closing again is harmless"
    with pytest.raises(RuntimeError):
        writer.write(np.zeros((1, 32, 32, 3), np.uint8))


def test_a_killed_run_leaves_no_file_under_the_final_name(tmp_path):
    path = tmp_path / "killed.mp4"
    script = f"""
import importlib, os, signal, sys
import numpy as np
sys.path.insert(0, {str(REPO_ROOT / "tests")!r})
from conftest import load_pack
video_file = importlib.import_module(load_pack().__name__ + ".nodes.video_file")
writer = video_file.VideoFileWriter({str(path)!r}, 16)
for _ in range(100):
    writer.write(np.zeros((3, 32, 32, 3), np.uint8))
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert not path.exists()
    assert (tmp_path / "killed.mp4.partial").exists()


def test_no_frames_leave_no_file_and_discard_drops_it(video_file, tmp_path):
    path = tmp_path / "empty.mp4"
    with video_file.VideoFileWriter(path, 16) as writer:
        pass
    assert writer.result is None and list(tmp_path.iterdir()) == []
    writer = video_file.VideoFileWriter(path, 16)
    writer.write(np.zeros((2, 32, 32, 3), np.uint8))
    writer.discard()
    assert list(tmp_path.iterdir()) == [] and writer.close() is None


def test_frames_must_keep_one_size_and_be_channels_last(video_file, tmp_path):
    with video_file.VideoFileWriter(tmp_path / "sizes.mp4", 16) as writer:
        writer.write(torch.zeros(2, 32, 32, 3))
        with pytest.raises(ValueError, match="in a video of"):
            writer.write(torch.zeros(2, 32, 48, 3))
        with pytest.raises(ValueError, match="channels last"):
            writer.write(torch.zeros(2, 3, 32, 32))
        with pytest.raises(TypeError):
            writer.write(torch.zeros(2, 32, 32, 3, dtype=torch.int32))
        writer.write(torch.zeros(32, 32, 3))  # one frame
    assert writer.frames_written == 3
    with pytest.raises(ValueError, match="must end in"):
        video_file.VideoFileWriter(tmp_path / "clip.webm", 16, "h264")
    with pytest.raises(ValueError, match="unknown video format"):
        video_file.choose_video_format("gif")
    with pytest.raises(ValueError, match="fps"):
        video_file.VideoFileWriter(tmp_path / "clip.mp4", 0)


def test_output_files_follow_comfyuis_counter_and_become_a_video_value(video_file, output_dir):
    first = video_file.open_output_video("motionstream/clip", 16, metadata={"prompt": {"1": {"class_type": "X"}}})
    second = video_file.open_output_video("motionstream/clip", 16)  # before the first writes anything
    assert [Path(first.path).name, Path(second.path).name] == ["clip_00001_.mp4", "clip_00002_.mp4"]
    assert first.output_file.ui_entry() == {"filename": "clip_00001_.mp4", "subfolder": "motionstream", "type": "output"}
    assert video_file.preview_ui(first.output_file)["images"] == [first.output_file.ui_entry()]
    first.write(np.zeros((4, 32, 48, 3), np.uint8))
    assert first.close() == output_dir / "motionstream" / "clip_00001_.mp4"
    second.close()
    third = video_file.open_output_video("motionstream/clip", 16)
    assert Path(third.path).name == "clip_00002_.mp4", "a run that wrote nothing leaves its number free"
    third.discard()
    video = video_file.video_value(first.result)
    assert video.get_stream_source() == str(first.result) and video.get_dimensions() == (48, 32)
    with av.open(str(first.result)) as container:
        assert container.metadata["prompt"] == '{"1": {"class_type": "X"}}'
    with pytest.raises(ValueError, match="outside the output folder"):
        video_file.open_output_video("../escape", 16)


def test_in_memory_outputs_are_kept_only_for_a_known_length_within_the_budget(output_memory):
    decide = output_memory.decide_in_memory_outputs
    frame_bytes = 480 * 832 * 3 * 4
    kept = decide(81, 480, 832, budget_bytes=81 * frame_bytes)
    assert kept.keep and kept.needed_bytes == 81 * frame_bytes and kept.warning is None
    dropped = decide(82, 480, 832, budget_bytes=81 * frame_bytes)
    assert not dropped.keep and "video file only" in dropped.warning
    assert not decide(81, 480, 832, latent_bytes_per_frame=16 * 60 * 104, budget_bytes=81 * frame_bytes).keep
    endless = decide(None, 128, 128)
    assert not endless.keep and endless.needed_bytes is None and "endless" in endless.warning


def test_the_budget_is_two_gib_at_most_and_a_quarter_of_the_available_ram(output_memory, monkeypatch):
    assert output_memory.in_memory_budget_bytes(available=64 * 2**30) == 2 * 2**30
    assert output_memory.in_memory_budget_bytes(available=4 * 2**30) == 2**30
    monkeypatch.setattr(output_memory, "available_ram_bytes", lambda: None)
    assert output_memory.in_memory_budget_bytes() == 2 * 2**30
    assert output_memory.decide_in_memory_outputs(10, 128, 128).budget_bytes == 2 * 2**30


def test_the_fallback_counter_follows_comfyuis_convention(pack, output_dir):
    host = pack.nodes.host
    output_dir.mkdir(parents=True)
    for name in ["clip_00007_.png", "clip_00003_.mp4", "clip_00012.mp4", "clipx_00020_.mp4", "clip_00009_.mp4.partial"]:
        (output_dir / name).touch()
    output = host.new_output_file("clip", "mp4")
    assert (output.filename, output.subfolder, output.path) == ("clip_00010_.mp4", "", str(output_dir / "clip_00010_.mp4"))


def test_warnings_go_to_the_log(pack, caplog):
    with caplog.at_level("WARNING", logger="MotionStream"):
        pack.nodes.host.warn("frames go to the video file only")
    assert "frames go to the video file only" in caplog.text
