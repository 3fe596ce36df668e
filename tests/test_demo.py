"""The embedded demo: the shipped model, image and tracks load; the codec round-trips; the main job
writes an animated PNG; the demo recipe runs end to end on a tiny budget."""

import dataclasses
import json
import os
import re

import numpy as np
import pytest
import torch

from PIL import Image

from motionstream_core.demo import (
    MODEL_FILE, asset_path, load_demo_image, load_demo_model, load_demo_tracks, write_animated_png,
)
from motionstream_core.demo.__main__ import main
from motionstream_core.codecs.patch_codec import PatchCodec
from motionstream_core.synthetic import SyntheticMotionConfig, generate_clip
from motionstream_core.model.weights import load_dit, read_metadata

pytestmark = pytest.mark.usefixtures("single_thread")

# Every stage of the demo recipe for one step on a 1-layer, 32-wide model.
TINY_RECIPE = dict(teacher_steps=1, ode_steps=1, dmd_steps=1, ode_batches=1, pool_clips=2, batch_size=2, codec_fit_clips=1,
                   ode_teacher_steps=2, clip_frames=4, track_id_dim=8, wan=dict(dim=32, ffn_dim=48, num_heads=2, num_layers=1))


def test_shipped_model_loads_through_load_dit_and_the_demo_loader():
    path = asset_path(MODEL_FILE)
    assert path.stat().st_size < 10 * 2**20  # "a few MB" in the repository: 4.5M parameters in fp16
    transformer, track_weights = load_dit(path)
    assert transformer.config.in_channels == 16 + 4 + 16 + 16  # noisy + mask + first frame + tracks
    assert transformer.config.out_channels == 16
    assert track_weights  # the track head travels with it
    metadata = read_metadata(path)
    assert {"config", "streaming_config", "codec"} <= set(metadata)
    demo = load_demo_model()
    assert demo.size == 128 and demo.latent_size == 32 and demo.codec.channels == 16
    assert demo.model.track_encoder.temporal_compression == 1
    assert demo.streaming.sink_frames >= 1 and demo.model.transformer.dtype == torch.float32


def test_shipped_image_and_tracks():
    image = load_demo_image()
    assert image.shape == (3, 128, 128) and 0 <= float(image.min()) and float(image.max()) <= 1
    tracks = load_demo_tracks()
    assert (tracks.width, tracks.height) == (128, 128) and tracks.num_frames >= 16 and tracks.num_tracks >= 1


def test_codec_round_trips_synthetic_frames():
    clip = generate_clip(SyntheticMotionConfig(num_frames=5), seed=123)
    shipped = load_demo_model().codec
    fitted = PatchCodec.fit(generate_clip(SyntheticMotionConfig(num_frames=5), seed=7).frames, channels=16, factor=4)
    for codec in (shipped, fitted, PatchCodec.from_json(fitted.to_json())):
        latents = codec.encode_images(clip.frames)
        assert latents.shape == (1, 16, 5, 32, 32)
        error = (codec.decode_images(latents) - clip.frames).abs()
        assert float(error.mean()) < 0.01 and float(error.max()) < 0.5
    # The basis is orthonormal, and decoding what is in its span is exact.
    torch.testing.assert_close(fitted.basis @ fitted.basis.T, torch.eye(16), atol=1e-5, rtol=0)
    latents = torch.randn(1, 16, 2, 4, 4) * 0.1
    torch.testing.assert_close(fitted.encode(fitted.decode(latents)), latents, atol=1e-4, rtol=0)


def test_codec_without_whitening_shares_one_scale_and_round_trips_alike():
    frames = generate_clip(SyntheticMotionConfig(num_frames=5), seed=7).frames
    whitened = PatchCodec.fit(frames, channels=16, factor=4)
    shared = PatchCodec.fit(frames, channels=16, factor=4, whiten=False)
    assert torch.allclose(shared.scale, shared.scale[:1].expand(16))
    torch.testing.assert_close(shared.scale[0].square(), whitened.scale.square().mean())
    torch.testing.assert_close(shared.encode_images(frames).square().mean(), torch.tensor(1.0), atol=0.05, rtol=0)
    torch.testing.assert_close(shared.decode_images(shared.encode_images(frames)),
                               whitened.decode_images(whitened.encode_images(frames)), atol=1e-4, rtol=0)


def test_codec_variance_weights_make_the_regression_loss_the_pixel_error():
    from motionstream_core.training.self_forcing_regression import weighted_regression_loss

    codec = PatchCodec.fit(generate_clip(SyntheticMotionConfig(num_frames=5), seed=7).frames, channels=16, factor=4)
    weights = codec.scale.square()
    target = codec.encode_images(torch.full((3, 3, 128, 128), 0.5))  # mid-grey: small errors are never clamped
    ratios = []
    for seed in range(3):
        generated = target + 0.01 * torch.randn(target.shape, generator=torch.Generator().manual_seed(seed))
        pixel_error = (codec.decode_images(generated) - codec.decode_images(target)).square().mean()
        ratios.append(float(pixel_error / weighted_regression_loss(generated, target, weights)))
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-3)


def test_recipe_learning_rate_warms_up_then_decays_over_the_stage():
    from motionstream_core.training.demo_recipe import RecipeConfig, _schedule_lr

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    config = RecipeConfig(warmup_steps=10, final_lr_fraction=0.1)
    rates = []
    for step in range(100):
        _schedule_lr(optimizer, config, 2.0, step, 100, 0.0, 1.0)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[0] == pytest.approx(0.2, rel=0.01) and max(rates) == pytest.approx(rates[9], rel=1e-6)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:])) and rates[-1] == pytest.approx(0.2, rel=0.01)


def test_recipe_refuses_a_dmd_rollout_it_cannot_run_before_training(tmp_path):
    from motionstream_core.training.demo_recipe import RecipeConfig, run_recipe

    for frames in (3, 14):  # shorter than the 4-frame clips; not whole blocks of 1 + 3k
        with pytest.raises(ValueError, match="dmd_rollout_frames"):
            run_recipe(RecipeConfig(out=str(tmp_path), clip_frames=4, dmd_rollout_frames=frames, pool_clips=1), log=lambda m: None)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_recipe_refuses_a_teacher_trained_with_another_codec(tmp_path):
    from motionstream_core.training.demo_recipe import RecipeConfig, run_recipe

    tiny = dict(teacher_steps=0, ode_steps=0, dmd_steps=0, ode_batches=0, pool_clips=1, batch_size=1, codec_fit_clips=1,
                ode_teacher_steps=1, clip_frames=4, track_id_dim=8, wan=dict(dim=32, ffn_dim=48, num_heads=2, num_layers=1))
    run_recipe(RecipeConfig(out=str(tmp_path / "a"), whiten_codec=False, **tiny), log=lambda message: None)
    with pytest.raises(ValueError, match="another latent codec"):
        run_recipe(RecipeConfig(out=str(tmp_path / "b"), teacher_init=str(tmp_path / "a" / "teacher.safetensors"),
                                **tiny), log=lambda message: None)


def read_animated_png(path):
    """Size, frame count, loop count, frame durations and the decoded frames [T, H, W, 3] of an APNG."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        frames, durations = [], []
        for index in range(image.n_frames):
            image.seek(index)
            frames.append(np.asarray(image.convert("RGB")))
            durations.append(image.info["duration"])
        return dict(width=image.width, height=image.height, num_frames=image.n_frames, loop=image.info.get("loop"),
                    durations=durations, frames=np.stack(frames))


def test_animated_png_writer(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 5, 7, 3), dtype=np.uint8)
    info = read_animated_png(write_animated_png(tmp_path / "x.png", frames, fps=16))
    assert (info["width"], info["height"], info["num_frames"], info["loop"]) == (7, 5, 3, 0)
    assert info["durations"] == pytest.approx([62.5] * 3, abs=1)
    assert np.array_equal(info["frames"], frames)  # lossless
    assert [path.name for path in tmp_path.iterdir()] == ["x.png"]  # no partial file left behind


def test_main_job_writes_an_animated_png(tmp_path, capsys):
    output = tmp_path / "demo.png"
    assert main(["--output", str(output), "--frames", "7", "--scale", "1"]) == 0
    info = read_animated_png(output)
    assert (info["width"], info["height"], info["num_frames"]) == (128, 128, 7)
    report = json.loads(capsys.readouterr().out.splitlines()[0])
    assert report["frames"] == 7 and report["frames_per_second"] > 0
    assert main(["--output", str(tmp_path / "free.png"), "--frames", "4", "--no-sinks", "--no-tracks", "--motion-scale", "0"]) == 0
    assert read_animated_png(tmp_path / "free.png")["width"] == 256  # default 2x pixel repeat
    assert json.loads(capsys.readouterr().out.splitlines()[0])["motion_scale"] == 0


def test_streaming_is_deterministic_and_follows_the_track_head():
    demo = load_demo_model()
    image, tracks = load_demo_image(), load_demo_tracks()
    first = demo.stream(image, tracks, 4, seed=3).frames
    assert first.shape == (4, 3, 128, 128)
    assert torch.equal(first, demo.stream(image, tracks, 4, seed=3).frames)
    assert not torch.equal(first, demo.stream(image, None, 4, seed=3).frames)


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")),
])
def test_tiny_recipe_runs_all_three_stages(tmp_path, device):
    from motionstream_core.training.demo_recipe import RecipeConfig, run_recipe

    config = RecipeConfig(
        out=str(tmp_path), device=device, teacher_steps=1, ode_steps=1, dmd_steps=1, ode_batches=1, pool_clips=2, batch_size=2,
        codec_fit_clips=1, ode_teacher_steps=2, clip_frames=4, track_id_dim=8, dmd_rollout_frames=7, dmd_pool_clips=2,
        wan=dict(dim=32, ffn_dim=48, num_heads=2, num_layers=1),
    )
    final = run_recipe(config, log=lambda message: None)
    stages = [json.loads(line)["stage"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert stages == ["teacher", "ode_init", "dmd"]
    for name in ("teacher", "ode_init", "dmd", "dmd_ema"):
        assert (tmp_path / f"{name}.safetensors").is_file()
    demo = load_demo_model(final)
    assert demo.model.config.dim == 32
    assert demo.stream(load_demo_image(), load_demo_tracks(), 4).frames.shape == (4, 3, 128, 128)


def test_recipe_resumes_dmd_from_a_given_student_without_ode_initialisation(tmp_path):
    from motionstream_core.training.checkpoints import load_weights
    from motionstream_core.training.demo_recipe import RecipeConfig, run_recipe

    tiny = {**TINY_RECIPE, "dmd_rollout_frames": 4}
    first = run_recipe(RecipeConfig(out=str(tmp_path / "a"), **tiny), log=lambda message: None)
    resumed = RecipeConfig(out=str(tmp_path / "b"), teacher_init=str(tmp_path / "a" / "teacher.safetensors"),
                           student_init=str(first), dmd_snapshot_every=2, streaming=dict(commit_step=200, commit_renoise=True),
                           **{**tiny, "teacher_steps": 0, "dmd_steps": 3})
    final = run_recipe(resumed, log=lambda message: None)
    # The rollouts' streaming settings travel with the weights the run writes.
    streaming = load_weights(final)[1]
    assert (streaming.commit_step, streaming.commit_renoise, streaming.window_frames) == (200, True, 6)
    stages = {json.loads(line)["stage"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()}
    assert stages == {"dmd"} and not (tmp_path / "b" / "ode_init.safetensors").exists()
    start, after = load_weights(first)[0].state_dict(), load_weights(tmp_path / "b" / "dmd.safetensors")[0].state_dict()
    assert any(not torch.equal(start[name], after[name]) for name in start)
    assert final == tmp_path / "b" / "demo_model.safetensors"
    assert sorted(p.name for p in (tmp_path / "b").glob("dmd_ema_step*")) == ["dmd_ema_step2.safetensors"]


def test_recipe_regresses_a_given_student_on_the_clips(tmp_path, monkeypatch):
    from motionstream_core.training import demo_recipe
    from motionstream_core.training.checkpoints import load_weights
    from motionstream_core.training.demo_recipe import RecipeConfig, run_recipe

    tiny = {**TINY_RECIPE, "dmd_steps": 0, "dmd_rollout_frames": 7}
    first = run_recipe(RecipeConfig(out=str(tmp_path / "a"), **tiny), log=lambda message: None)
    pool_seeds = []
    make_pool = demo_recipe.make_pool

    def recording_make_pool(codec, count, frames, seed, **kwargs):
        pool_seeds.append(seed)
        return make_pool(codec, count, frames, seed, **kwargs)

    monkeypatch.setattr(demo_recipe, "make_pool", recording_make_pool)
    refined = RecipeConfig(out=str(tmp_path / "b"), student_init=str(tmp_path / "a" / "ode_init.safetensors"),
                           regression_steps=2, regression_pool_clips=2, regression_snapshot_every=1,
                           regression_pool_seed=99, **{**tiny, "teacher_steps": 0})
    final = run_recipe(refined, log=lambda message: None)
    assert pool_seeds[-1] == 99  # the regression clips come from the given dataset seed
    stages = {json.loads(line)["stage"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()}
    assert stages == {"regression"}
    start = load_weights(first)[0].state_dict()
    after = load_weights(tmp_path / "b" / "regression.safetensors")[0].state_dict()
    assert any(not torch.equal(start[name], after[name]) for name in start)
    assert final == tmp_path / "b" / "demo_model.safetensors"
    shipped, ema = load_weights(final)[0].state_dict(), load_weights(tmp_path / "b" / "regression_ema.safetensors")[0].state_dict()
    assert all(torch.equal(shipped[name], ema[name]) for name in ema)
    assert sorted(p.name for p in (tmp_path / "b").glob("regression_ema_step*")) == [
        "regression_ema_step1.safetensors", "regression_ema_step2.safetensors"]


def test_export_writes_fp16_weights_and_can_override_the_streaming_settings(tmp_path):
    from motionstream_core.training.checkpoints import read_streaming_config
    from motionstream_core.training.demo_recipe import export_demo_assets

    sizes = export_demo_assets(asset_path(MODEL_FILE), tmp_path, streaming=dict(commit_step=100, window_frames=7))
    exported = tmp_path / MODEL_FILE
    assert set(sizes) == {MODEL_FILE, "demo_image.npy", "demo_tracks.json"}
    shipped, streaming = read_streaming_config(asset_path(MODEL_FILE)), read_streaming_config(exported)
    assert shipped.commit_step != 100 and shipped.window_frames != 7  # both overrides are visible
    assert (streaming.commit_step, streaming.window_frames) == (100, 7)
    assert streaming.shift == shipped.shift and streaming.block_frames == shipped.block_frames
    assert read_metadata(exported)["codec"] == read_metadata(asset_path(MODEL_FILE))["codec"]
    original, rewritten = load_dit(asset_path(MODEL_FILE))[0], load_dit(exported)[0]
    assert rewritten.dtype == torch.float16
    assert all(torch.equal(a.half(), b) for a, b in zip(original.state_dict().values(), rewritten.state_dict().values()))


# ---------------------------------------------------------------------------
# The CLI checks its arguments and inputs first, and reports problems in one line (issue #19)
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _StubStreaming:
    motion_scale: float = 1.0


class _StubDemo:
    """Stands in for the demo model, so the CLI's checks and plumbing run in milliseconds."""

    size, fps, codec = 128, 16.0, None

    def __init__(self):
        self.streaming, self.calls = _StubStreaming(), []

    def stream(self, image, tracks, num_frames, seed=0, sinks=True):
        from motionstream_core.demo import StreamResult

        self.calls.append(dict(image=image, tracks=tracks, num_frames=num_frames))
        ramp = torch.linspace(0, 1, num_frames)[:, None, None, None]  # distinct frames (APNG merges equal ones)
        return StreamResult(ramp.expand(num_frames, 3, self.size, self.size).clone(), 1.0, 0.1)


@pytest.fixture
def stub_demo(monkeypatch):
    import motionstream_core.demo.__main__ as cli

    demo = _StubDemo()
    monkeypatch.setattr(cli, "load_demo_model", lambda path=None, decoder=None: demo)
    return demo


def _one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--frames", "0"], r"--frames must be in \[1, 1000\], got 0"),  # used to make 64 frames silently
        (["--frames", "-5"], r"--frames must be in \[1, 1000\], got -5"),  # used to fail with an array-shape error
        (["--frames", "many"], "argument --frames: invalid int value"),
        (["--scale", "0"], "--scale must be in"),
        (["--threads", "-1"], "--threads must be in"),
        (["--motion-scale", "nan"], "--motion-scale must be a finite number"),
        (["--tracks", "x.json", "--no-tracks"], "exclude each other"),
        (["--image", "frame.gif"], r"--image frame.gif: expected a PNG \(.png\), JPEG \(.jpg, .jpeg\) or .npy file"),
        (["--image", "missing.png"], "--image missing.png: image not found"),
        (["--tracks", "missing.json"], "--tracks missing.json: track file not found"),
        (["--output", "video.gif"], "--output video.gif: the demo writes an animated PNG"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_cli_rejects_bad_arguments_before_generating(tmp_path, monkeypatch, capsys, stub_demo, arguments, message):
    monkeypatch.chdir(tmp_path)
    assert main(arguments) == 2
    assert re.search(message, _one_line_error(capsys))
    assert stub_demo.calls == [] and not (tmp_path / "out").exists()


def test_cli_checks_the_output_before_generating(tmp_path, capsys, stub_demo):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "file").write_text("")
    for output, message in ((tmp_path / "folder.png", "is a folder"),
                            (tmp_path / "file" / "video.png", "is not a folder"),
                            (tmp_path / "video.apng", "give a file name ending in .png")):
        assert main(["--output", str(output), "--frames", "2"]) == 2
        assert message in _one_line_error(capsys)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main(["--output", str(locked / "video.png")]) == 2
        assert "cannot write there" in _one_line_error(capsys)
    assert stub_demo.calls == []
    assert main(["--output", str(tmp_path / "new" / "dirs" / "video.png"), "--frames", "2", "--scale", "1"]) == 0
    assert read_animated_png(tmp_path / "new" / "dirs" / "video.png")["num_frames"] == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file", "folder.png", "new"]  # no probe left


def test_cli_names_a_missing_or_foreign_model(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "missing.safetensors"), "--output", str(tmp_path / "v.png")]) == 2
    assert "demo model not found" in _one_line_error(capsys)
    np.save(tmp_path / "weights.npy", np.zeros(3))
    assert main(["--model", str(tmp_path / "weights.npy"), "--output", str(tmp_path / "v.png")]) == 2
    assert "weights.npy is not a demo model" in _one_line_error(capsys)
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 64)
    assert main(["--model", str(tmp_path / "bad.safetensors"), "--output", str(tmp_path / "v.png")]) == 2
    assert "bad.safetensors" in _one_line_error(capsys)
    assert not (tmp_path / "v.png").exists()


def test_cli_reports_a_failed_write_in_one_line(tmp_path, monkeypatch, capsys, stub_demo):
    import errno

    import motionstream_core.demo.__main__ as cli

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "write_animated_png", full_disk)
    assert main(["--output", str(tmp_path / "video.png"), "--frames", "2"]) == 1
    assert "No space left on device" in _one_line_error(capsys)


def _write_images(tmp_path):
    rows, columns = np.meshgrid(np.arange(40), np.arange(60), indexing="ij")
    pixels = np.stack([rows * 6, columns * 4, (rows + columns) * 2], axis=-1).astype(np.uint8)  # smooth: JPEG keeps it
    Image.fromarray(pixels).save(tmp_path / "frame.png")
    Image.fromarray(pixels).save(tmp_path / "frame.JPG", quality=95)
    Image.fromarray(pixels).convert("RGBA").save(tmp_path / "alpha.png")
    np.save(tmp_path / "frame.npy", pixels)
    np.save(tmp_path / "float.npy", pixels.astype(np.float32) / 255)
    return pixels


def test_images_are_read_from_png_jpeg_and_npy(tmp_path, capsys, stub_demo):
    pixels = _write_images(tmp_path)
    expected = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    for name in ("frame.png", "alpha.png", "frame.npy", "float.npy"):
        torch.testing.assert_close(load_demo_image(tmp_path / name), expected)
    assert (load_demo_image(tmp_path / "frame.JPG") - expected).abs().mean() < 0.05  # lossy
    assert main(["--image", str(tmp_path / "frame.png"), "--output", str(tmp_path / "v.png"), "--frames", "3"]) == 0
    assert stub_demo.calls[0]["image"].shape == (3, 128, 128) and stub_demo.calls[0]["num_frames"] == 3


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: np.save(p / "x.npy", np.full((4, 4, 3), np.nan, dtype=np.float32)), "NaN"),
        (lambda p: np.save(p / "x.npy", np.full((4, 4, 3), 2.0)), r"must lie in \[0, 1\]"),
        (lambda p: np.save(p / "x.npy", np.zeros((4, 4, 3), dtype=np.int16)), "uint8, or float"),
        (lambda p: np.save(p / "x.npy", np.zeros((4, 4))), r"\[H, W, 3\]"),
        (lambda p: np.save(p / "x.npy", np.zeros((0, 4, 3), dtype=np.uint8)), "empty"),
        (lambda p: (p / "x.npy").write_bytes(_npy_header_bytes((100_000, 100_000, 3))), r"declares shape \[100000, 100000"),
        (lambda p: np.save(p / "x.npy", np.zeros((5000, 1, 3), dtype=np.uint8)), "sides are limited to 4096"),
        (lambda p: (p / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30)), "cannot read x.png as a PNG"),
        (lambda p: (p / "x.jpg").write_bytes(b"GIF89a" + bytes(30)), "cannot read x.jpg as a JPEG"),
        (lambda p: Image.new("RGB", (5000, 10)).save(p / "x.png"), "5000x10; sides are limited to 4096"),
    ],
)
def test_bad_images_are_named(tmp_path, make, message):
    make(tmp_path)
    (path,) = [path for path in tmp_path.iterdir() if path.name.startswith("x.")]
    with pytest.raises(ValueError, match=message):
        load_demo_image(path)


def _npy_header_bytes(shape):
    import io

    from numpy.lib import format as npy_format

    header = io.BytesIO()
    npy_format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return header.getvalue()
