"""Wan 2.2 TI2V-5B: its checkpoint layouts, the taew2_2 Tiny VAE, the 48-channel latent space, and streaming with
the start image as a clean first latent frame."""


import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from motionstream_core import StreamConditions, StreamingConfig, StreamingSession, TinyVAE, WanConfig, WanDiT, load_dit
from motionstream_core.codecs.latent_space import (
    LATENT_STATS, WAN22_LATENT_MEAN, WAN22_LATENT_STD, latent_stats, to_model_space, to_vae_space,
)
from motionstream_core.model.key_schemes import diffusers_to_wan, wan_to_diffusers
from motionstream_core.model.weights import read_state_dict, save_state_dict, write_safetensors_atomically
from tiny_models import random_dit, tiny_config

# The published TI2V-5B transformer: Wan2.2's wan_ti2v_5B config, and the two config.json files it ships with.
TI2V_5B = WanConfig(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_channels=48, out_channels=48)
ORIGINAL_CONFIG_JSON = {
    "_class_name": "WanModel", "model_type": "ti2v", "dim": 3072, "eps": 1e-06, "ffn_dim": 14336, "freq_dim": 256,
    "in_dim": 48, "num_heads": 24, "num_layers": 30, "out_dim": 48, "text_len": 512,
}
DIFFUSERS_CONFIG_JSON = {
    "_class_name": "WanTransformer3DModel", "added_kv_proj_dim": None, "attention_head_dim": 128,
    "cross_attn_norm": True, "eps": 1e-06, "ffn_dim": 14336, "freq_dim": 256, "image_dim": None, "in_channels": 48,
    "num_attention_heads": 24, "num_layers": 30, "out_channels": 48, "patch_size": [1, 2, 2],
    "pos_embed_seq_len": None, "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 1024, "text_dim": 4096,
}

# Same bound as test_wan_dit_parity: two float32 implementations of the same math over a 2-layer model whose
# outputs are O(1-10); their reduction orders differ, which costs ~1e-6 relative, far below 1e-4.
PARITY_TOLERANCE = 1e-4


# -- the transformer: layouts and parity with diffusers --------------------------------------------------------


def test_the_published_5b_architecture_is_read_off_weight_shapes_and_configs():
    with torch.device("meta"):
        shapes = WanDiT(TI2V_5B).state_dict()
    assert WanConfig.from_state_dict(shapes) == TI2V_5B
    assert WanConfig.from_state_dict(diffusers_to_wan(wan_to_diffusers(shapes))) == TI2V_5B
    assert WanConfig.from_dict(ORIGINAL_CONFIG_JSON) == TI2V_5B
    assert WanConfig.from_dict(DIFFUSERS_CONFIG_JSON) == TI2V_5B
    assert TI2V_5B.head_dim == 128 and TI2V_5B.patch_size == (1, 2, 2) and not TI2V_5B.is_image_to_video
    # 1280x704 video: 80x44 latents (16x VAE), 40x22 tokens a frame (2x2 patches).
    assert TI2V_5B.tokens_per_frame(44, 80) == 880


@pytest.fixture(scope="module")
def reference():
    """diffusers' Wan 2.2 TI2V transformer at a reduced width: 48 latent channels, 2 heads of 128 (so that the
    head count follows from the shapes, as for the released model), random weights."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=48, out_channels=48,
        text_dim=24, freq_dim=32, ffn_dim=64, num_layers=2,
    ).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.1)
    return model


def _layouts(reference, folder):
    """The reduced checkpoint written in every public layout: name -> path to load."""
    canonical = diffusers_to_wan({k: v.clone() for k, v in reference.state_dict().items()})
    original = folder / "wan2.2_ti2v_5B_original.safetensors"  # Wan-Video/Wan2.2's naming
    save_state_dict(canonical, original)
    comfy = folder / "wan2.2_ti2v_5B_fp16.safetensors"  # Comfy-Org repackaged, as ComfyUI saves it
    write_safetensors_atomically({f"model.diffusion_model.{k}": v for k, v in canonical.items()}, comfy)
    diffusers_folder = folder / "Wan2.2-TI2V-5B-Diffusers"
    reference.save_pretrained(diffusers_folder / "transformer")
    return {
        "original": original,
        "comfy": comfy,
        "diffusers folder with config.json": diffusers_folder,
        "diffusers file without config": diffusers_folder / "transformer" / "diffusion_pytorch_model.safetensors",
    }


def _inputs(frames=3):
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 48, frames, 4, 6, generator=generator)
    # 512 tokens: diffusers attends to the text as given, Wan to text zero-padded to 512.
    text = torch.randn(2, 512, 24, generator=generator)
    return latents, text


@pytest.mark.parametrize("layout", [
    "original", "comfy", "diffusers folder with config.json", "diffusers file without config",
])
def test_every_layout_loads_with_every_key_consumed_and_matches_diffusers(reference, tmp_path, layout, single_thread):
    path = _layouts(reference, tmp_path)[layout]
    model, track_weights = load_dit(path, dtype=torch.float32)
    assert track_weights == {}
    assert model.config.in_channels == model.config.out_channels == 48
    assert (model.config.dim, model.config.num_heads, model.config.num_layers) == (256, 2, 2)
    assert model.config.ffn_dim == 64 and model.config.patch_size == (1, 2, 2)
    # load_dit refuses unexpected keys, so equal counts mean every tensor of the file went into the model.
    assert len(read_state_dict(path)) == len(model.state_dict()) == len(reference.state_dict())

    latents, text = _inputs()
    timesteps = torch.tensor([999.0, 250.0])
    with torch.no_grad():
        expected = reference(latents, timesteps, text, return_dict=False)[0]
        actual = model.eval()(latents, timesteps, text)
    assert actual.shape == expected.shape == (2, 48, 3, 4, 6)
    assert (actual - expected).abs().max() <= PARITY_TOLERANCE


def test_clean_first_frame_timesteps_match_diffusers_per_token_timesteps(reference, tmp_path, single_thread):
    # Wan 2.2 TI2V image-to-video: every token of latent frame 0 (the clean image) at timestep 0.
    model, _ = load_dit(_layouts(reference, tmp_path)["original"], dtype=torch.float32)
    latents, text = _inputs()
    per_frame = torch.tensor([[0.0, 700.0, 700.0], [0.0, 300.0, 300.0]])
    tokens_per_frame = (4 // 2) * (6 // 2)
    with torch.no_grad():
        expected = reference(latents, per_frame.repeat_interleave(tokens_per_frame, dim=1), text, return_dict=False)[0]
        actual = model.eval()(latents, per_frame, text)
    assert (actual - expected).abs().max() <= PARITY_TOLERANCE


# -- taew2_2: the Tiny VAE for Wan 2.2 ------------------------------------------------------------------------


def _conv(weights, name, x, stride=1):
    weight = weights[f"{name}.weight"]
    return F.conv2d(x, weight, weights.get(f"{name}.bias"), stride=stride, padding=weight.shape[-1] // 2)


class ReferenceTAEHV:
    """TAEHV written from its published description, one frame at a time, for parity checks.

    Every layer is 2D and applied per frame, except: a memory block adds its conv stack, run on the frame
    concatenated with the block's input one frame earlier (zeros before the first), to a skip of the frame;
    a time pool concatenates `stride` consecutive frames along channels and mixes them with a 1x1 conv; a
    time grow 1x1-convs a frame to `stride` channel groups, group k becoming sub-frame k. Around the
    network, frames are pixel-unshuffled before encoding and pixel-shuffled after decoding by the patch
    size; decoding clamps latents with 3 tanh(x / 3), and drops the first (time upscale - 1) frames.
    Layer indices are the published checkpoints' key indices.
    """

    def __init__(self, weights, patch_size):
        self.w = weights
        self.patch_size = patch_size

    def _memory_block(self, name, frames):
        outputs, previous = [], torch.zeros_like(frames[0])
        for frame in frames:
            h = F.relu(_conv(self.w, f"{name}.conv.0", torch.cat([frame, previous], 1)))
            h = F.relu(_conv(self.w, f"{name}.conv.2", h))
            outputs.append(F.relu(_conv(self.w, f"{name}.conv.4", h) + frame))  # equal widths: identity skip
            previous = frame
        return outputs

    def _grow(self, name, frames):
        grown = []
        for frame in frames:
            mixed = F.conv2d(frame, self.w[f"{name}.conv.weight"])
            grown += list(mixed.chunk(mixed.shape[1] // frame.shape[1], dim=1))
        return grown

    def _pool(self, name, frames):
        weight = self.w[f"{name}.conv.weight"]
        stride = weight.shape[1] // frames[0].shape[1]
        return [F.conv2d(torch.cat(frames[i : i + stride], 1), weight) for i in range(0, len(frames), stride)]

    def decode(self, latents):  # NTCHW
        frames = [F.relu(_conv(self.w, "decoder.1", torch.tanh(x / 3) * 3)) for x in latents.unbind(1)]
        for stage in range(3):
            base = 3 + 6 * stage
            for block in range(3):
                frames = self._memory_block(f"decoder.{base + block}", frames)
            frames = [F.interpolate(x, scale_factor=2, mode="nearest") for x in frames]
            frames = self._grow(f"decoder.{base + 4}", frames)
            frames = [_conv(self.w, f"decoder.{base + 5}", x) for x in frames]
        frames = [F.pixel_shuffle(_conv(self.w, "decoder.22", F.relu(x)), self.patch_size).clamp(0, 1) for x in frames]
        time_upscale = len(frames) // latents.shape[1]
        return torch.stack(frames[time_upscale - 1 :], 1)

    def encode(self, video):  # NTCHW in [0, 1]
        frames = list(video.unbind(1))
        frames += frames[-1:] * (-len(frames) % 4)
        frames = [F.relu(_conv(self.w, "encoder.0", F.pixel_unshuffle(x, self.patch_size))) for x in frames]
        for stage in range(3):
            base = 2 + 5 * stage
            frames = self._pool(f"encoder.{base}", frames)
            frames = [_conv(self.w, f"encoder.{base + 1}", x, stride=2) for x in frames]
            for block in range(2, 5):
                frames = self._memory_block(f"encoder.{base + block}", frames)
        return torch.stack([_conv(self.w, "encoder.17", x) for x in frames], 1)


# Two float32 implementations of the same convolutions in a different batching (whole chunks vs one frame);
# with outputs in [0, 1] and latents O(1), their rounding differs by ~1e-6.
TAEHV_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def taew2_2_file(tmp_path_factory):
    """Random weights in the taew2_2 layout, stored in fp16 as published. Variance-keeping convolutions and a
    mid-gray output bias keep the decoded values mostly inside (0, 1), where the clamp hides nothing."""
    torch.manual_seed(3)
    vae = TinyVAE(latent_channels=48, patch_size=2, channels_last=False)
    with torch.no_grad():
        for parameter in vae.parameters():
            if parameter.ndim == 4:
                parameter.normal_(0.0, parameter[0].numel() ** -0.5)
            else:
                parameter.zero_()
        vae.decoder[22].bias.fill_(0.5)
    weights = {k: v.half() for k, v in vae.state_dict().items()}
    path = tmp_path_factory.mktemp("taehv") / "taew2_2.safetensors"
    save_file(weights, path)
    return path


@pytest.fixture(scope="module")
def taew2_2(taew2_2_file):
    return TinyVAE.from_file(taew2_2_file)


@pytest.fixture(scope="module")
def taew2_2_reference(taew2_2_file):
    return ReferenceTAEHV({k: v.float() for k, v in load_file(taew2_2_file).items()}, patch_size=2)


def test_taew2_2_geometry_is_read_off_the_weights(taew2_2, taew2_2_file, tmp_path):
    assert (taew2_2.latent_channels, taew2_2.patch_size, taew2_2.spatial_scale) == (48, 2, 16)
    assert (taew2_2.time_downscale, taew2_2.time_upscale, taew2_2.frames_to_trim) == (4, 4, 3)
    # The shapes decide, not the file name or format.
    renamed = tmp_path / "my_tiny_vae.pth"
    torch.save(load_file(taew2_2_file), renamed)
    assert TinyVAE.from_file(renamed).latent_channels == 48


def test_taew2_2_decode_matches_the_reference(taew2_2, taew2_2_reference, single_thread):
    latents = torch.randn(2, 3, 48, 2, 3, generator=torch.Generator().manual_seed(4))
    expected = taew2_2_reference.decode(latents)
    # Not all clamped: the comparison sees the network's values, not just 0s and 1s.
    assert ((expected > 0.01) & (expected < 0.99)).float().mean() > 0.5
    decoded = taew2_2.decode_video(latents)
    assert decoded.shape == expected.shape == (2, 9, 3, 32, 48)
    assert (decoded - expected).abs().max() < TAEHV_TOLERANCE


@pytest.mark.parametrize("chunk", [1, 2])
def test_taew2_2_streaming_decode_matches_the_reference(taew2_2, taew2_2_reference, chunk, single_thread):
    latents = torch.randn(1, 3, 48, 2, 3, generator=torch.Generator().manual_seed(5))
    decoder = taew2_2.stream_decoder()
    pieces = []
    for start in range(0, latents.shape[1], chunk):
        frames = decoder.push(latents[:, start : start + chunk])
        # Causal: a chunk's frames come out with it, 16x the latent size, minus the 3 start-up frames.
        assert frames.shape == (1, 4 * min(chunk, latents.shape[1] - start) - (3 if start == 0 else 0), 3, 32, 48)
        pieces.append(frames)
    assert decoder.flush().shape[1] == 0
    assert (torch.cat(pieces, 1) - taew2_2_reference.decode(latents)).abs().max() < TAEHV_TOLERANCE


def test_taew2_2_encode_matches_the_reference(taew2_2, taew2_2_reference, single_thread):
    video = torch.rand(1, 6, 3, 32, 48, generator=torch.Generator().manual_seed(6))  # padded to 8 frames
    expected = taew2_2_reference.encode(video)
    encoded = taew2_2.encode_video(video)
    assert encoded.shape == expected.shape == (1, 2, 48, 2, 3)
    assert (encoded - expected).abs().max() < TAEHV_TOLERANCE


def test_taew2_2_refuses_frames_that_are_not_multiples_of_16(taew2_2):
    with pytest.raises(ValueError, match="multiples of 16"):
        taew2_2.encode_video(torch.rand(1, 1, 3, 24, 48))


# -- latent normalisation -----------------------------------------------------------------------------------


def test_the_family_is_read_off_the_channel_count():
    assert latent_stats(16).family == "Wan 2.1"
    assert latent_stats(48).family == "Wan 2.2"
    assert sorted(LATENT_STATS) == [16, 48]
    with pytest.raises(ValueError, match=r"32 channels; known channel counts: 16 \(Wan 2\.1\), 48 \(Wan 2\.2\)"):
        to_model_space(torch.zeros(1, 32, 1, 2, 2))


def test_wan22_statistics_are_the_published_ones():
    assert len(WAN22_LATENT_MEAN) == len(WAN22_LATENT_STD) == 48
    assert (WAN22_LATENT_MEAN[0], WAN22_LATENT_MEAN[19], WAN22_LATENT_MEAN[-1]) == (-0.2289, 0.5109, -0.0667)
    assert (WAN22_LATENT_STD[0], WAN22_LATENT_STD[39], WAN22_LATENT_STD[-1]) == (0.4765, 1.6887, 0.7744)
    mean = torch.tensor(WAN22_LATENT_MEAN, dtype=torch.float64).view(1, 48, 1, 1, 1)
    std = torch.tensor(WAN22_LATENT_STD, dtype=torch.float64).view(1, 48, 1, 1, 1)
    # (latent - mean) / std, which is also what ComfyUI's Wan22 latent format's process_in computes.
    torch.testing.assert_close(to_model_space(mean + 2 * std), torch.full_like(mean, 2.0))
    torch.testing.assert_close(to_vae_space(torch.zeros_like(mean)), mean)


@pytest.mark.parametrize("channels", [16, 48])
def test_normalisation_round_trips(channels):
    raw = torch.randn(2, channels, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    # float64: the round trip (x - m) / s * s + m loses only a few ulps of O(1) values.
    torch.testing.assert_close(to_vae_space(to_model_space(raw)), raw, rtol=0, atol=1e-12)
    ntchw = raw.movedim(1, 2)
    torch.testing.assert_close(to_model_space(ntchw, channel_dim=2), to_model_space(raw).movedim(1, 2))


# -- streaming with the start image as a clean first latent frame -------------------------------------------


LATENT_HEIGHT, LATENT_WIDTH = 4, 4


def _text(seed=1):
    return torch.randn(1, 6, 24, generator=torch.Generator().manual_seed(seed))


def _first_frame(seed=2):
    return torch.randn(1, 48, 1, LATENT_HEIGHT, LATENT_WIDTH, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def ti2v_student():
    return random_dit(tiny_config(in_channels=48, out_channels=48))


def _session(model, **config):
    return StreamingSession(model, StreamingConfig.wan22_ti2v_5b(**config), latent_height=LATENT_HEIGHT,
                            latent_width=LATENT_WIDTH, seed=3)


def _record_forwards(session):
    calls = []
    forward = session.model.forward_chunk

    def recording(latents, timestep, context, cache, start_frame):
        velocity = forward(latents, timestep, context, cache, start_frame)
        calls.append((start_frame, latents.clone(), torch.as_tensor(timestep).clone(), velocity))
        return velocity

    session.model.forward_chunk = recording
    return calls


def test_the_preset_pins_the_start_image():
    config = StreamingConfig.wan22_ti2v_5b()
    assert config.image_conditioning == "clean_latent"
    assert StreamingConfig.from_dict(vars(config)) == config
    assert StreamingConfig().image_conditioning == "channels"
    with pytest.raises(ValueError, match="unknown image_conditioning 'mask'"):
        StreamingConfig(image_conditioning="mask")


def test_first_latent_frame_stays_the_clean_image_latent(ti2v_student, single_thread):
    session = _session(ti2v_student)
    calls = _record_forwards(session)
    steps = []
    session.on_step = lambda chunk, step, x0: steps.append((chunk, x0.clone()))
    first = _first_frame()
    session.start(StreamConditions(text=_text(), first_frame_latents=first))
    chunks = list(session.stream(4))

    assert torch.equal(chunks[0].latents[:, :, :1], first)
    assert all(torch.equal(x0[:, :, :1], first) for chunk, x0 in steps if chunk == 0)
    first_chunk_calls = [call for call in calls if call[0] == 0]
    assert len(first_chunk_calls) == len(session.config.denoising_steps) + 1  # the steps, then the commit
    for _, latents, timestep, _ in first_chunk_calls:
        assert torch.equal(latents[:, :, :1], first)
        assert timestep.shape == (1, 3) and timestep[0, 0] == 0 and (timestep[0, 1:] == timestep[0, 1]).all()
    assert first_chunk_calls[0][2][0, 1] > 900  # the other frames start from noise

    # Later chunks run past the window (sink 3 + rolling), with one timestep for all their frames.
    assert [chunk.start_frame for chunk in chunks] == [0, 3, 6, 9]
    assert all(timestep.ndim == 0 for start, _, timestep, _ in calls if start > 0)
    assert all(torch.isfinite(chunk.latents).all() for chunk in chunks)


def test_the_first_block_is_the_bidirectional_model_with_frame_0_at_timestep_0(ti2v_student, single_thread):
    session = _session(ti2v_student)
    calls = _record_forwards(session)
    session.start(StreamConditions(text=_text(), first_frame_latents=_first_frame()))
    session.next_chunk()
    _, latents, timestep, velocity = calls[0]
    with torch.no_grad():
        expected = ti2v_student(latents, timestep, _text())
    # Chunk 0 attends only to itself, at positions 0..2: the plain model's forward, up to float32 rounding.
    torch.testing.assert_close(velocity, expected, rtol=1e-5, atol=1e-5)


def test_later_chunks_see_the_first_frame_through_the_cache(ti2v_student, single_thread):
    def second_chunk(first):
        session = _session(ti2v_student)
        session.start(StreamConditions(text=_text(), first_frame_latents=first))
        session.next_chunk()
        return session.next_chunk().latents

    same = second_chunk(_first_frame(2))
    assert torch.equal(second_chunk(_first_frame(2)), same)
    assert (second_chunk(_first_frame(9)) - same).abs().max() > 1e-3


def test_without_a_start_image_nothing_is_pinned(ti2v_student, single_thread):
    session = _session(ti2v_student)
    calls = _record_forwards(session)
    session.start(StreamConditions(text=_text()))
    session.next_chunk()
    assert all(timestep.ndim == 0 for _, _, timestep, _ in calls)


def test_the_decoded_first_frame_is_the_start_image_decoded(ti2v_student, taew2_2, single_thread):
    session = _session(ti2v_student)
    first = _first_frame()
    session.start(StreamConditions(text=_text(), first_frame_latents=first))
    decoded = taew2_2.stream_decoder().push(session.next_chunk().latents.movedim(1, 2))
    alone = taew2_2.decode_video(first.movedim(1, 2))
    assert decoded.shape == (1, 9, 3, 16 * LATENT_HEIGHT, 16 * LATENT_WIDTH) and alone.shape[1] == 1
    # The decoder is causal: frame 0 depends on latent 0 alone. Same convolutions, other batch sizes: ~1e-7.
    assert (decoded[:, :1] - alone).abs().max() < 1e-5


def test_a_first_frame_that_does_not_fit_is_refused_at_start(ti2v_student):
    session = _session(ti2v_student)
    with pytest.raises(ValueError, match=r"first_frame_latents frame 0 has shape \(1, 16, 1, 4, 4\).*\[1, 48, 1, 4, 4\]"):
        session.start(StreamConditions(text=_text(), first_frame_latents=torch.zeros(1, 16, 1, 4, 4)))


def test_channel_conditioning_on_a_ti2v_model_names_the_clean_latent_mode(ti2v_student):
    session = StreamingSession(ti2v_student, StreamingConfig.motionstream_paper(), latent_height=LATENT_HEIGHT,
                               latent_width=LATENT_WIDTH)
    session.start(StreamConditions(text=_text(), first_frame_latents=_first_frame()))
    with pytest.raises(ValueError, match="image_conditioning='clean_latent'"):
        session.next_chunk()


# -- the nodes: a 48-channel checkpoint is routed to Wan 2.2 latents ----------------------------------------------


def test_a_48_channel_checkpoint_gets_wan22_latents_and_the_ti2v_preset(pack):
    codecs = pack.nodes.latent_codecs
    codec, defaults = codecs.wan_codec_and_defaults(48, has_track_head=False, is_image_to_video=False)
    assert isinstance(codec, codecs.Wan22Latents) and defaults == StreamingConfig.wan22_ti2v_5b()
    assert codec.geometry(1280, 704, 121) == (31, 44, 80)
    with pytest.raises(ValueError, match="multiples of 32"):
        codec.geometry(848, 480, 81)
    with pytest.raises(ValueError, match="load taew2_2"):
        codec.connect(tiny_vae=TinyVAE())
    wan21, _ = codecs.wan_codec_and_defaults(16, has_track_head=True, is_image_to_video=True)
    assert isinstance(wan21, codecs.WanLatents)


def test_the_streaming_sampler_node_runs_a_ti2v_student(pack, ti2v_student, taew2_2, single_thread):
    loaders, codecs = pack.nodes.model_loaders, pack.nodes.latent_codecs
    codec, defaults = codecs.wan_codec_and_defaults(48, has_track_head=False, is_image_to_video=False)
    model = loaders.MotionStreamModel(ti2v_student, None, defaults, "tiny_ti2v", codec=codec)
    width, height, frames = 64, 64, 13  # latent 4x4, 4 latent frames
    start = torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(8))
    images, latent, _ = pack.NODE_CLASS_MAPPINGS["MotionStreamStreamingSampler"]().generate(
        model=model, positive=[[_text(), {}]], width=width, height=height, num_frames=frames, seed=7, fps=16.0,
        sink_frames=-1, window_frames=-1, denoising_steps="", shift=0.0, tiny_vae=taew2_2, start_image=start,
        unique_id="24",
    )["result"]
    assert images.shape == (frames, height, width, 3)
    assert latent["samples"].shape == (1, 48, 4, 4, 4)
    # The LATENT is in the VAE's space: its first frame is the start image's encoding, un-normalised.
    encoded = taew2_2.encode_video(start.movedim(-1, 1)[None]).movedim(1, 2)
    torch.testing.assert_close(to_model_space(latent["samples"][:, :, :1]), encoded, rtol=1e-5, atol=1e-5)
