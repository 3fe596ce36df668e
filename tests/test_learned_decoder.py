"""The demo model's learned decoder: the PCA decode plus a learned residual, tied to the codec it was trained for."""

import json

import pytest
import torch

from motionstream_core.codecs.learned_decoder import (
    LatentRefiner, RefinedPatchCodec, RefinerConfig, codec_fingerprint, load_refined_codec, save_refiner,
)
from motionstream_core.codecs.patch_codec import PatchCodec
from motionstream_core.demo import DECODER_FILE, asset_path, load_demo_image, load_demo_model, load_demo_tracks
from motionstream_core.model.weights import read_metadata
from motionstream_core.synthetic import SyntheticMotionConfig, generate_clip

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def frames():
    return generate_clip(SyntheticMotionConfig(width=32, height=32, num_frames=3), seed=5).frames


@pytest.fixture(scope="module")
def codec(frames):
    return PatchCodec.fit(frames, channels=8, factor=4)


def trained_refiner(codec, seed=0):
    """A refiner whose zero-initialised last layer has been moved, as training would."""
    refiner = LatentRefiner(RefinerConfig(channels=codec.channels, factor=codec.factor, width=8, blocks=1, token=2))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in refiner.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return refiner


def test_an_untrained_decoder_decodes_as_the_pca_does(codec, frames):
    refined = RefinedPatchCodec(codec, LatentRefiner(RefinerConfig(channels=8, factor=4, width=8, blocks=1, token=2)))
    latents = codec.encode_images(frames) + 0.3 * torch.randn(1, 8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    # The residual is a convolution with all-zero weights and bias: exactly zero, so the sum is the PCA decode.
    torch.testing.assert_close(refined.decode(latents), codec.decode(latents), atol=0, rtol=0)
    torch.testing.assert_close(refined.decode_images(latents), codec.decode_images(latents), atol=0, rtol=0)


def test_encoding_is_the_codecs_and_decoding_keeps_shapes_and_range(codec, frames):
    refined = RefinedPatchCodec(codec, trained_refiner(codec))
    assert (refined.factor, refined.channels) == (codec.factor, codec.channels)
    video = frames.permute(1, 0, 2, 3)[None] * 2 - 1
    assert torch.equal(refined.encode(video), codec.encode(video))
    assert torch.equal(refined.encode_images(frames), codec.encode_images(frames))
    latents = refined.encode_images(frames)
    decoded = refined.decode(latents)
    assert decoded.shape == (1, 3, 3, 32, 32) and decoded.dtype == torch.float32
    assert float(decoded.min()) >= -1 and float(decoded.max()) <= 1
    images = refined.decode_images(latents)
    assert images.shape == frames.shape and float(images.min()) >= 0 and float(images.max()) <= 1
    assert not torch.equal(images, codec.decode_images(latents))  # the residual is used
    # Frames are decoded one by one: a chunk decodes as the same frames of the whole video. Only the batch of the
    # convolutions differs, which can change float32 rounding (~1e-7 on values in [0, 1]), hence atol 1e-6.
    torch.testing.assert_close(refined.decode_images(latents[:, :, 1:]), images[1:], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="latents must be"):
        refined.decode(latents[:, :4])


def test_a_refiner_for_another_latent_shape_is_refused(codec):
    with pytest.raises(ValueError, match="16-channel"):
        RefinedPatchCodec(codec, LatentRefiner(RefinerConfig(channels=16, factor=4)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_weights_round_trip_through_safetensors(codec, frames, tmp_path, dtype):
    refiner = trained_refiner(codec)
    path = save_refiner(tmp_path / "decoder.safetensors", refiner, codec, dtype=dtype)
    assert read_metadata(path)["codec_sha256"] == codec_fingerprint(codec)
    loaded = load_refined_codec(path, codec)
    assert loaded.refiner.config == refiner.config
    for name, value in refiner.state_dict().items():
        assert torch.equal(loaded.refiner.state_dict()[name], value.to(dtype).float())
    rounded = trained_refiner(codec)
    rounded.load_state_dict({name: value.to(dtype).float() for name, value in refiner.state_dict().items()})
    latents = codec.encode_images(frames)
    # The same weights and arithmetic; only the evaluation order of the convolutions may differ.
    torch.testing.assert_close(loaded.decode(latents), RefinedPatchCodec(codec, rounded).decode(latents), atol=1e-5, rtol=0)


def test_a_decoder_for_another_codec_or_no_decoder_is_refused_naming_the_file(codec, frames, tmp_path):
    other = PatchCodec.fit(frames[:1].flip(-1), channels=8, factor=4)
    assert codec_fingerprint(other) != codec_fingerprint(codec)
    assert codec_fingerprint(PatchCodec.from_json(codec.to_json())) == codec_fingerprint(codec)
    path = save_refiner(tmp_path / "for_other.safetensors", trained_refiner(other), other)
    with pytest.raises(ValueError, match="for_other.safetensors.*another codec"):
        load_refined_codec(path, codec)
    with pytest.raises(ValueError, match="demo_model.safetensors is not a patch-codec decoder"):
        load_refined_codec(asset_path("demo_model.safetensors"), codec)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read decoder broken.safetensors"):
        load_refined_codec(broken, codec)
    with pytest.raises(FileNotFoundError):
        load_refined_codec(tmp_path / "missing.safetensors", codec)


def test_the_demo_model_decodes_with_the_shipped_decoder_and_pca_on_request(tmp_path):
    demo = load_demo_model()
    assert asset_path(DECODER_FILE).stat().st_size < 1 * 2**20
    assert isinstance(demo.codec, RefinedPatchCodec) and isinstance(demo.codec.codec, PatchCodec)
    pca = load_demo_model(decoder="pca")
    assert isinstance(pca.codec, PatchCodec)
    image, tracks = load_demo_image(), load_demo_tracks()
    refined = demo.stream(image, tracks, 4, seed=3, keep_latents=True)
    plain = pca.stream(image, tracks, 4, seed=3, keep_latents=True)
    assert refined.latents.shape == (1, 16, 4, 32, 32)
    # The same model and noise: the same latents (one process, one thread), decoded two ways.
    torch.testing.assert_close(plain.latents, refined.latents, atol=1e-5, rtol=0)
    # Decoding the kept latents again repeats the stream's decode on other chunk boundaries: float32 rounding only.
    torch.testing.assert_close(plain.frames, pca.codec.decode_images(plain.latents), atol=1e-6, rtol=0)
    torch.testing.assert_close(refined.frames, demo.codec.decode_images(refined.latents), atol=1e-6, rtol=0)
    assert float((refined.frames - plain.frames).abs().mean()) > 1e-3
    # An explicit decoder file for another codec is refused, naming the file.
    other = PatchCodec.fit(image[None], channels=16, factor=4)
    path = save_refiner(tmp_path / "elsewhere.safetensors", LatentRefiner(RefinerConfig()), other)
    with pytest.raises(ValueError, match="elsewhere.safetensors"):
        load_demo_model(decoder=path)


def test_the_demo_nodes_decode_chunks_with_the_refined_codec(pack, codec, frames):
    codecs = pack.nodes.latent_codecs
    refined = RefinedPatchCodec(codec, trained_refiner(codec))
    latent_codec = codecs.PatchCodecLatents(refined)
    start = frames[:1].permute(0, 2, 3, 1)  # IMAGE [1, H, W, 3]
    # The node resizes the start image (here to its own size), which may round in float32: latents of unit scale.
    torch.testing.assert_close(latent_codec.encode_start(start, 32, 32)[:, :, :1], codec.encode_images(frames[:1]),
                               atol=1e-4, rtol=0)
    latents = codec.encode_images(frames)
    pushed = latent_codec.decoder().push(latents)
    torch.testing.assert_close(pushed, refined.decode_images(latents).movedim(1, -1), atol=0, rtol=0)


def test_the_demo_cli_compares_with_the_pca_decode(tmp_path, capsys):
    from motionstream_core.demo.__main__ import main

    assert main(["--output", str(tmp_path / "learned.png"), "--frames", "4", "--scale", "1"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["decoder"] == "learned"
    assert main(["--output", str(tmp_path / "pca.png"), "--frames", "4", "--scale", "1", "--pca-decoder"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["decoder"] == "pca"
