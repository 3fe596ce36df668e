"""Tiny VAE (TAEHV, Wan 2.1 layout) against the golden fixtures, plus streaming, loading and dtype checks."""

import gc
import re
import signal
import tracemalloc

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from motionstream_core.codecs.taehv import TinyVAE

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def weights_path(fixtures_dir):
    return fixtures_dir / "taehv_random_weights.safetensors"


@pytest.fixture(scope="module")
def vae(weights_path):
    return TinyVAE.from_file(weights_path)


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return load_file(fixtures_dir / "taehv_random_io.safetensors")


@pytest.fixture(scope="module")
def small_vae():
    """Random weights with the full taew2_1 geometry, for tests that only need consistency."""
    torch.manual_seed(0)
    return TinyVAE().eval()


def max_error(actual, expected):
    assert actual.shape == expected.shape
    return (actual.float() - expected.float()).abs().max().item()


# -- golden fixtures ------------------------------------------------------------------


def test_architecture_read_from_checkpoint(vae):
    assert vae.latent_channels == 16
    assert vae.patch_size == 1
    assert vae.encoder_time_downscale == (True, True, False)
    assert vae.decoder_time_upscale == (False, True, True)
    assert (vae.time_downscale, vae.time_upscale, vae.frames_to_trim) == (4, 4, 3)


def test_decode_matches_reference(vae, golden):
    decoded = vae.decode_video(golden["latents"])
    assert decoded.shape == (1, 17, 3, 48, 80)
    assert decoded.dtype == torch.float32
    assert decoded.is_contiguous()
    assert max_error(decoded, golden["decoded"]) < TOLERANCE
    # Long videos are decoded in chunks internally; the chunk size must not matter.
    assert max_error(vae.decode_video(golden["latents"], latents_per_chunk=2), golden["decoded"]) < TOLERANCE


def test_encode_matches_reference(vae, golden):
    encoded = vae.encode_video(golden["frames"])
    assert encoded.shape == (1, 2, 16, 6, 10)
    assert max_error(encoded, golden["encoded"]) < TOLERANCE
    assert max_error(vae.encode_video(golden["frames"], latents_per_chunk=1), golden["encoded"]) < TOLERANCE


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_streaming_decode_matches_reference(vae, golden, chunk):
    decoder = vae.stream_decoder()
    latents = golden["latents"]
    pieces = []
    for start in range(0, latents.shape[1], chunk):
        piece = latents[:, start : start + chunk]
        frames = decoder.push(piece)
        # Causal decoder: every latent's frames come out with it, minus the 3 start-up frames.
        expected_count = 4 * piece.shape[1] - (3 if start == 0 else 0)
        assert frames.shape == (1, expected_count, 3, 48, 80)
        pieces.append(frames)
    tail = decoder.flush()
    assert tail.shape == (1, 0, 3, 48, 80)
    assert max_error(torch.cat(pieces + [tail], 1), golden["decoded"]) < TOLERANCE


def test_streaming_decoder_is_reusable_after_flush(vae, golden):
    decoder = vae.stream_decoder()
    first = torch.cat([decoder.push(latent) for latent in golden["latents"].split(1, 1)], 1)
    decoder.flush()
    second = torch.cat([decoder.push(latent) for latent in golden["latents"].split(2, 1)], 1)
    assert max_error(first, golden["decoded"]) < TOLERANCE
    assert max_error(second, golden["decoded"]) < TOLERANCE


def test_streaming_encoder_matches_encode_video(vae, golden):
    frames = golden["frames"][:, :7]  # not a multiple of 4: the last group is padded
    whole = vae.encode_video(frames)
    assert whole.shape == (1, 2, 16, 6, 10)
    assert max_error(whole[:, :1], golden["encoded"][:, :1]) < TOLERANCE
    encoder = vae.stream_encoder()
    pieces = [encoder.push(piece) for piece in frames.split(3, 1)]
    assert [p.shape[1] for p in pieces] == [0, 1, 0]
    pieces.append(encoder.flush())
    assert max_error(torch.cat(pieces, 1), whole) < TOLERANCE


@settings(max_examples=8, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=4),
    preview=st.booleans(),
)
def test_any_chunking_equals_whole_sequence(small_vae, lengths, preview):
    generator = torch.Generator().manual_seed(sum(lengths))
    latents = torch.randn(2, sum(lengths) + 1, 16, 2, 3, generator=generator)
    whole = small_vae.decode_video(latents, preview=preview)
    decoder = small_vae.stream_decoder(preview=preview)
    pieces, start = [], 0
    for length in lengths + [1]:
        pieces.append(decoder.push(latents[:, start : start + length]))
        start += length
    pieces.append(decoder.flush())
    assert max_error(torch.cat(pieces, 1), whole) < 1e-5


def test_stream_rejects_a_new_resolution_until_reset(small_vae):
    decoder = small_vae.stream_decoder()
    decoder.push(torch.randn(1, 1, 16, 2, 2))
    with pytest.raises(ValueError, match="reset"):
        decoder.push(torch.randn(1, 1, 16, 2, 3))
    decoder.reset()
    assert decoder.push(torch.randn(1, 1, 16, 2, 3)).shape == (1, 1, 3, 16, 24)


# -- bounded streaming state ----------------------------------------------------------


def carried_bytes(decoder):
    # Storage size, not view size: a small view into a chunk-sized buffer would still hold the buffer.
    return sum(t.untyped_storage().nbytes() for t in decoder.state_tensors())


def resident_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_streaming_memory_stays_flat(small_vae):
    decoder = small_vae.stream_decoder()
    generator = torch.Generator().manual_seed(1)
    latent_shape = (1, 1, 16, 4, 6)
    # One frame per memory block: 3 blocks each at 256 ch (4x6), 128 ch (8x12), 64 ch (16x24).
    expected_state = 4 * 3 * (256 * 4 * 6 + 128 * 8 * 12 + 64 * 16 * 24)
    sizes = []
    for step in range(100):
        frames = decoder.push(torch.randn(latent_shape, generator=generator))
        assert frames.shape[1] == (1 if step == 0 else 4)
        del frames
        sizes.append(carried_bytes(decoder))
        if step == 9:
            gc.collect()
            tracemalloc.start()
            rss_after_warmup = resident_bytes()
        if step == 29:
            python_after_warmup = tracemalloc.get_traced_memory()[0]
    python_growth = tracemalloc.get_traced_memory()[0] - python_after_warmup
    tracemalloc.stop()
    rss_growth = resident_bytes() - rss_after_warmup

    assert len(decoder.state_tensors()) == 9
    assert set(sizes) == {expected_state}
    assert python_growth < 64 * 1024, f"Python heap grew by {python_growth} bytes over 70 chunks"
    # Every chunk allocates ~4 MB of activations; keeping any of them would add hundreds of MB.
    assert rss_growth < 48 * 2**20, f"RSS grew by {rss_growth / 2**20:.1f} MiB over 90 chunks"


# -- preview mode ---------------------------------------------------------------------


def test_preview_returns_one_frame_per_latent(vae, golden):
    preview = vae.decode_video(golden["latents"], preview=True)
    assert preview.shape == (1, 5, 3, 48, 80)
    assert preview.dtype == torch.float32
    assert 0 <= preview.min() and preview.max() <= 1
    decoder = vae.stream_decoder(preview=True)
    streamed = [decoder.push(latent) for latent in golden["latents"].split(1, 1)]
    assert [frames.shape[1] for frames in streamed] == [1] * 5
    assert max_error(torch.cat(streamed, 1), preview) < TOLERANCE


def test_preview_equals_checkpoint_with_sliced_grow_layers(vae, weights_path, golden):
    # Preview keeps the last sub-frame's output channels of every temporal grow layer;
    # a checkpoint sliced that way is read as a model without temporal upscaling.
    state_dict = load_file(weights_path)
    for index, width in ((13, 128), (19, 64)):
        key = f"decoder.{index}.conv.weight"
        state_dict[key] = state_dict[key][-width:].clone()
    sliced = TinyVAE.from_state_dict(state_dict)
    assert sliced.decoder_time_upscale == (False, False, False)
    assert sliced.time_upscale == 1 and sliced.frames_to_trim == 0
    expected = sliced.decode_video(golden["latents"])
    assert expected.shape == (1, 5, 3, 48, 80)
    assert max_error(vae.decode_video(golden["latents"], preview=True), expected) < 1e-6


# -- loading --------------------------------------------------------------------------


side_effects = []


class SmuggledCall:
    """Pickles to a call; a loader that honours it would run code while loading."""

    def __reduce__(self):
        return (side_effects.append, ("unpickled",))


def test_pth_round_trip(vae, weights_path, golden, tmp_path):
    path = tmp_path / "taew2_1.pth"
    torch.save(load_file(weights_path), path)
    from_pth = TinyVAE.from_file(path)
    assert max_error(from_pth.decode_video(golden["latents"]), golden["decoded"]) < TOLERANCE


def test_pth_with_pickled_object_is_refused(weights_path, tmp_path):
    path = tmp_path / "taew2_1.pth"
    state_dict = load_file(weights_path)
    state_dict["payload"] = SmuggledCall()
    torch.save(state_dict, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        TinyVAE.from_file(path)
    assert side_effects == []


def test_pth_with_non_tensor_values_is_refused(tmp_path):
    path = tmp_path / "not_weights.pt"
    torch.save({"decoder.1.weight": 3}, path)
    with pytest.raises(ValueError, match="no weights"):
        TinyVAE.from_file(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "taew2_1.onnx"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported weights file type"):
        TinyVAE.from_file(path)


def test_missing_and_unexpected_keys_are_named(weights_path):
    state_dict = load_file(weights_path)
    del state_dict["decoder.8.weight"]
    del state_dict["encoder.4.conv.2.bias"]
    state_dict["decoder.99.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as error:
        TinyVAE.from_state_dict(state_dict)
    message = str(error.value)
    assert "missing keys: decoder.8.weight, encoder.4.conv.2.bias" in message
    assert "unexpected keys: decoder.99.weight" in message


def test_wrong_shapes_are_named(weights_path, tmp_path):
    state_dict = load_file(weights_path)
    state_dict["decoder.14.weight"] = torch.zeros(64, 128, 1, 1, dtype=torch.float16)
    path = tmp_path / "broken.safetensors"
    save_file(state_dict, path)
    with pytest.raises(ValueError, match=r"wrongly shaped keys: decoder\.14\.weight \(file \(64, 128, 1, 1\), model \(64, 128, 3, 3\)\)"):
        TinyVAE.from_file(path)


def test_latent_channels_read_from_checkpoint():
    state_dict = TinyVAE(latent_channels=8).state_dict()
    vae = TinyVAE.from_state_dict(state_dict)
    assert vae.latent_channels == 8
    assert vae.decode_video(torch.randn(1, 2, 8, 2, 2)).shape == (1, 5, 3, 16, 16)
    with pytest.raises(ValueError, match="8 channels"):
        vae.decode_video(torch.randn(1, 2, 16, 2, 2))


# -- dtypes and devices ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(weights_path, golden, dtype):
    vae = TinyVAE.from_file(weights_path, dtype=dtype)
    assert vae.dtype == dtype
    # Half convolutions are slow on CPU; the decoder is causal, so 2 latents give the first 5 frames.
    decoded = vae.decode_video(golden["latents"][:, :2])  # float32 input is cast to the module dtype
    assert decoded.dtype == torch.float32
    assert 0 <= decoded.min() and decoded.max() <= 1
    assert max_error(decoded, golden["decoded"][:, :5]) < 0.05
    encoded = vae.encode_video(golden["frames"])
    assert encoded.dtype == torch.float32
    assert max_error(encoded, golden["encoded"]) < 0.05


def test_device_argument(weights_path):
    vae = TinyVAE.from_file(weights_path, device="cpu")
    assert vae.device == torch.device("cpu")
    assert not any(p.requires_grad for p in vae.parameters())


# -- hostile files ----------------------------------------------------------------------


def peak_rss_since_reset():
    """Peak resident memory (bytes) since the last call; None where the kernel cannot reset the peak."""
    try:
        with open("/proc/self/status") as status:
            peak = int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1)) * 1024
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return peak
    except (OSError, AttributeError):
        return None


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_small_file_describing_a_huge_model_is_refused_before_allocating(tmp_path, suffix):
    # decoder.1.weight's input channels give the latent channels; 400,000 of them once made the loader
    # build a 4.6 GB model from an 0.8 MB file before it checked a single shape.
    state_dict = {"decoder.1.weight": torch.zeros(1, 400_000, 1, 1, dtype=torch.float16)}
    path = tmp_path / f"huge{suffix}"
    save_file(state_dict, path) if suffix == ".safetensors" else torch.save(state_dict, path)
    gc.collect()
    if peak_rss_since_reset() is None:
        pytest.skip("the peak RSS cannot be reset on this kernel")
    start = resident_bytes()
    with pytest.raises(ValueError, match=rf"huge{suffix}: .*wrongly shaped keys: decoder\.1\.weight"):
        TinyVAE.from_file(path)
    growth = peak_rss_since_reset() - start
    assert growth < 64 * 2**20, f"loading a refused 0.8 MB file used {growth / 2**20:.0f} MiB"


def test_safetensors_are_checked_from_the_header_before_the_data_is_read(tmp_path, monkeypatch):
    from motionstream_core.codecs import taehv

    state_dict = {k: (v.to(torch.int16) if k == "decoder.14.weight" else v.half()).contiguous() for k, v in TinyVAE().state_dict().items()}
    path = tmp_path / "ints.safetensors"
    save_file(state_dict, path)
    monkeypatch.setattr(taehv, "read_state_dict", lambda _: pytest.fail("tensor data was read before the checks"))
    with pytest.raises(ValueError, match=r"ints\.safetensors: .*decoder\.14\.weight \(dtype int16\)"):
        TinyVAE.from_file(path)
    with pytest.raises(ValueError, match=r"decoder\.14\.weight \(dtype int16\)"):
        TinyVAE.from_state_dict(state_dict)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
def test_integer_weights_are_refused_by_name(weights_path, tmp_path, dtype):
    state_dict = load_file(weights_path)
    state_dict["encoder.0.bias"] = state_dict["encoder.0.bias"].to(dtype)
    path = tmp_path / "taew2_1.pth"
    torch.save(state_dict, path)
    name = str(dtype).replace("torch.", "")
    with pytest.raises(ValueError, match=rf"taew2_1\.pth: .*encoder\.0\.bias \(dtype {name}\)"):
        TinyVAE.from_file(path)


def test_a_checkpoint_that_contains_itself_is_refused(tmp_path):
    looped = {}
    looped["state_dict"] = looped
    path = tmp_path / "taew2_1.pth"
    torch.save(looped, path)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("the loader hangs")))
    signal.alarm(10)
    try:
        with pytest.raises(ValueError, match=r"taew2_1\.pth is not a checkpoint: its dicts contain themselves"):
            TinyVAE.from_file(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
