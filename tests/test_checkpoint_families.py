"""Causal Wan 2.1 checkpoints as other projects write them: each layout loads with every key used, computes
what its source model computes, gets its family's streaming preset (named in the loader's info), and streams
through the sampler node.

The layouts, from the projects' own code:
- FastVideo export (Track-v0): a diffusers folder, sharded with an index, with `attn2.norm_added_q` weights its
  image-to-video cross-attention never applies, and the track head under `track_encoder.`.
- Causal Forcing (thu-ml/Causal-Forcing trainer/distillation.py): a .pt holding `generator_ema` (or
  `generator`) of `model.`-prefixed Wan weights, `model._fsdp_wrapped_module.` in front in some.
- ComfyUI-repackaged Causal Forcing: one safetensors of `model.diffusion_model.` weights, metadata
  config {"transformer": {"causal_ar": true}}.
- LongLive base (NVlabs/LongLive trainer/distillation.py): `generator`, `critic`, optimizer states and `step`;
  an EMA copy keeps FSDP's `_fsdp_wrapped_module.` inside names.
- CausVid and Self-Forcing: `generator` (and `generator_ema`) beside `critic`.
"""

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from motionstream_core.codecs.taehv import TinyVAE
from motionstream_core.model.config import WanConfig
from motionstream_core.model.key_schemes import wan_to_diffusers
from motionstream_core.model.weights import WeightsError, load_dit
from motionstream_core.motion.track_head import TrackEncoder
from motionstream_core.streaming.block_schedule import BlockSchedule
from motionstream_core.streaming.presets import FAMILIES, PRESETS, CheckpointFacts, choose_preset
from motionstream_core.streaming.session import StreamingConfig
from motionstream_core.testing.random_model import random_wan_dit

pytestmark = pytest.mark.usefixtures("single_thread")

# 128-wide heads: the head count is read off the weights, as for the released 1.3B and 14B models.
T2V = WanConfig(dim=128, ffn_dim=64, num_heads=1, num_layers=2, in_channels=16, out_channels=16, text_dim=24,
                freq_dim=32)
# Track-v0's input layout: 16 noisy + 4 mask + 16 first-frame + 16 track channels; CLIP tokens 40 wide.
TRACK = WanConfig(dim=128, ffn_dim=64, num_heads=1, num_layers=2, in_channels=52, out_channels=16, text_dim=24,
                  freq_dim=32, image_dim=40)
WIDTH, HEIGHT, FRAMES = 80, 48, 13  # latent 10x6, 4 latent frames: at least two chunks in every preset
COMFY_CAUSAL_AR = {"config": json.dumps({"transformer": {"causal_ar": True}})}


def _prefixed(model, prefix):
    return {prefix + key: value.clone() for key, value in model.state_dict().items()}


def _fsdp_named(model):
    """Names as FSDP's named_parameters gives them with every block wrapped (LongLive's EMA copy)."""
    names = {}
    for key, value in model.state_dict().items():
        if key.startswith("blocks."):
            index, rest = key[len("blocks."):].split(".", 1)
            key = f"blocks.{index}._fsdp_wrapped_module.{rest}"
        names["model." + key] = value.clone()
    return names


def _track_encoder():
    torch.manual_seed(5)
    return TrackEncoder(id_dim=32, channels=16)


def write_fastvideo_export(root, model, track_encoder):
    """A diffusers folder as FastVideo exports it, sharded like Track-v0 on the Hub."""
    tensors = wan_to_diffusers(_prefixed(model, ""))
    for block in range(model.config.num_layers):
        tensors[f"blocks.{block}.attn2.norm_added_q.weight"] = torch.randn(model.config.dim)
    tensors.update({"track_encoder." + k: v.clone() for k, v in track_encoder.state_dict().items()})
    folder = root / "Track-v0" / "transformer"
    folder.mkdir(parents=True)
    keys = sorted(tensors)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for shard, shard_keys in shards.items():
        save_file({k: tensors[k].contiguous() for k in shard_keys}, folder / shard)
    weight_map = {k: shard for shard, shard_keys in shards.items() for k in shard_keys}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(model.config.to_diffusers_config()))
    return "Track-v0"


def write_causal_forcing_framewise(root, model, _):
    path = root / "causal_forcing" / "framewise" / "causal_forcing.pt"
    path.parent.mkdir(parents=True)
    torch.save({"generator_ema": _prefixed(model, "model.")}, path)
    return "causal_forcing/framewise/causal_forcing.pt"


def write_causal_forcing_chunkwise(root, model, _):
    path = root / "causal_forcing" / "chunkwise" / "causal_forcing.pt"
    path.parent.mkdir(parents=True)
    torch.save({"generator": _prefixed(model, "model._fsdp_wrapped_module.")}, path)
    return "causal_forcing/chunkwise/causal_forcing.pt"


def write_comfyui_repackaged(root, model, _, name="causal_forcing-framewise.safetensors"):
    save_file(_prefixed(model, "model.diffusion_model."), root / name, metadata=COMFY_CAUSAL_AR)
    return name


def write_longlive_base(root, model, _):
    critic = random_wan_dit(T2V, seed=11)
    path = root / "longlive_models" / "longlive_base.pt"
    path.parent.mkdir(parents=True)
    torch.save({
        "generator": _fsdp_named(random_wan_dit(T2V, seed=12)),  # the live weights; the EMA copy is the one used
        "critic": _prefixed(critic, "model."),
        "generator_ema": _fsdp_named(model),
        "generator_optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 2e-6}]},
        "step": 3000,
    }, path)
    return "longlive_models/longlive_base.pt"


def write_causvid(root, model, _):
    path = root / "causvid" / "autoregressive_checkpoint" / "model.pt"
    path.parent.mkdir(parents=True)
    torch.save({"generator": _prefixed(model, "model."), "critic": _prefixed(random_wan_dit(T2V, seed=13), "model.")},
               path)
    return "causvid/autoregressive_checkpoint/model.pt"


def write_self_forcing(root, model, _):
    torch.save({"generator": _prefixed(random_wan_dit(T2V, seed=14), "model."),
                "generator_ema": _prefixed(model, "model.")}, root / "self_forcing_dmd.pt")
    return "self_forcing_dmd.pt"


# layout: (writer, source config, family, preset)
LAYOUTS = {
    "fastvideo_export": (write_fastvideo_export, TRACK, "motion_student", "track_v0"),
    "causal_forcing_framewise": (write_causal_forcing_framewise, T2V, "causal_forcing", "causal_forcing_framewise"),
    "causal_forcing_chunkwise": (write_causal_forcing_chunkwise, T2V, "causal_forcing", "causal_forcing_chunkwise"),
    "comfyui_repackaged": (write_comfyui_repackaged, T2V, "causal_forcing_comfyui", "causal_forcing_framewise"),
    "longlive_base": (write_longlive_base, T2V, "longlive", "longlive"),
    "causvid": (write_causvid, T2V, "causvid", "causvid"),
    "self_forcing": (write_self_forcing, T2V, "self_forcing", "self_forcing"),
}


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTIONSTREAM_MODELS_DIR", str(tmp_path))
    root = tmp_path / "diffusion_models"
    root.mkdir()
    return root


def _write(layout, models_dir):
    writer, config, _, _ = LAYOUTS[layout]
    source = random_wan_dit(config, seed=1)
    track_encoder = _track_encoder() if config.in_channels == TRACK.in_channels else None
    return source, track_encoder, writer(models_dir, source, track_encoder)


def _load(pack, name):
    loader = pack.NODE_CLASS_MAPPINGS["MotionStreamModelLoader"]()
    output = loader.load_with_info(name, "fp32")
    model, info = output["result"]
    assert output["ui"]["text"] == [info]
    return model, info


def _forward(dit, seed=0):
    generator = torch.Generator().manual_seed(seed)
    config = dit.config
    latents = torch.randn(1, config.in_channels, 2, 4, 6, generator=generator)
    text = torch.randn(1, 7, config.text_dim, generator=generator)
    image = torch.randn(1, 9, config.image_dim, generator=generator) if config.is_image_to_video else None
    with torch.no_grad():
        return dit(latents, torch.tensor([700.0]), text, image_context=image)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_loads_with_every_key_used_and_computes_what_its_source_computes(pack, models_dir, layout):
    source, track_encoder, name = _write(layout, models_dir)
    model, _ = _load(pack, name)
    assert model.dit.config == source.config
    # Loading checks every key of the file against the model (strictly, on the meta device): a key left unused
    # would have failed it. What was kept is bit for bit the source's weights.
    loaded = model.dit.state_dict()
    assert loaded.keys() == source.state_dict().keys()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key
    assert (model.track_encoder is None) == (track_encoder is None)
    if track_encoder is not None:
        for key, value in track_encoder.state_dict().items():
            assert torch.equal(model.track_encoder.state_dict()[key], value), key
    # Same weights, same code, same inputs, one process: the outputs agree to float32 rounding (they are in
    # fact equal; 1e-6 on outputs of order 1 leaves room for nothing but a different kernel order).
    torch.testing.assert_close(_forward(model.dit), _forward(source), rtol=0, atol=1e-6)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_family_gets_its_preset_and_the_info_names_both(pack, models_dir, layout):
    _, _, family, preset = LAYOUTS[layout]
    _, _, name = _write(layout, models_dir)
    model, info = _load(pack, name)
    assert model.streaming_defaults == StreamingConfig.from_preset(preset)
    title = next(f.title for f in FAMILIES if f.name == family)
    lines = dict(line.split(": ", 1) for line in info.splitlines())
    assert lines["family"].startswith(title)
    assert lines["preset"].startswith(preset + ": ")
    assert lines["source"] == PRESETS[preset].source
    assert lines["track head"] == ("yes" if layout == "fastvideo_export" else "no")
    assert lines["task"].startswith("image-to-video" if layout == "fastvideo_export" else "text-to-video")
    assert lines["size"].startswith("2 layers, dim 128")


def test_the_comfyui_marker_beats_a_name_that_says_nothing(pack, models_dir):
    source = random_wan_dit(T2V, seed=1)
    name = write_comfyui_repackaged(models_dir, source, None, name="my_model.safetensors")
    model, info = _load(pack, name)
    assert model.streaming_defaults == StreamingConfig.from_preset("causal_forcing_framewise")
    assert "causal_ar" in info


def test_causal_forcing_named_without_frame_or_chunk_says_what_it_assumed():
    choice = choose_preset(CheckpointFacts(name="diffusion_models/causal_forcing.pt"))
    assert choice.preset.name == "causal_forcing_chunkwise"
    assert "chunk-wise is assumed" in choice.evidence
    framewise = choose_preset(CheckpointFacts(name="models/diffusion_models/causal-forcing_frame-wise_2step.pt"))
    assert framewise.preset.name == "causal_forcing_framewise"


def test_markers_in_the_file_come_before_the_name():
    # A track head or image-to-video weights are Track-v0's, whatever the file is called.
    assert choose_preset(CheckpointFacts(has_track_head=True, name="longlive.pt")).preset.name == "track_v0"
    assert choose_preset(CheckpointFacts(is_image_to_video=True, name="causvid.pt")).preset.name == "track_v0"
    # Nothing to go on: a Self-Forcing-style student (or a teacher), as before.
    plain = choose_preset(CheckpointFacts(name="wan2.1_t2v_1.3B_fp16.safetensors"))
    assert plain.family.name == "text_to_video" and plain.preset.name == "self_forcing"


def test_the_old_preset_constructors_read_the_table():
    assert StreamingConfig.track_v0() == StreamingConfig(rope_policy="relative", shift=6.0, sink_frames=1,
                                                         window_frames=6, block_frames=(1, 3))
    assert StreamingConfig.motionstream_paper() == StreamingConfig(rope_policy="relative", shift=6.0, sink_frames=3,
                                                                   window_frames=9, block_frames=(3,))
    assert StreamingConfig.self_forcing() == StreamingConfig(rope_policy="absolute", shift=5.0, sink_frames=3,
                                                             window_frames=9, block_frames=(3,))
    assert StreamingConfig.for_checkpoint(True, True) == StreamingConfig.track_v0()
    assert StreamingConfig.for_checkpoint(False, False, shift=7.0) == StreamingConfig.self_forcing(shift=7.0)
    assert all(preset.source for preset in PRESETS.values())
    for preset in PRESETS.values():
        StreamingConfig.from_preset(preset.name)  # every row is a valid config
    with pytest.raises(ValueError, match="unknown streaming preset 'nope'"):
        StreamingConfig.from_preset("nope")


def test_causvid_steps_are_the_timesteps_its_config_feeds():
    """CausVid feeds 1000/757/522 as timesteps at shift 8; the preset's warped steps land within 0.3 of them."""
    from motionstream_core.sampling.schedule import FlowMatchSchedule

    preset = PRESETS["causvid"]
    timesteps, _ = FlowMatchSchedule(preset.shift).warp(preset.denoising_steps)
    assert (timesteps - torch.tensor([1000.0, 757.0, 522.0])).abs().max() < 0.3


def test_an_unknown_extra_key_is_still_refused_by_name(models_dir):
    source = random_wan_dit(T2V, seed=1)
    weights = _prefixed(source, "model.")
    weights["model._cls_pred_branch.0.weight"] = torch.randn(4, 4)  # a GAN head that is no part of the generator
    path = models_dir / "causal_forcing_with_extra.pt"
    torch.save({"generator_ema": weights}, path)
    with pytest.raises(WeightsError, match=r"unexpected keys.*_cls_pred_branch\.0\.weight") as error:
        load_dit(path)
    assert str(path) in str(error.value)


def test_two_names_for_one_weight_are_refused(models_dir):
    source = random_wan_dit(T2V, seed=1)
    weights = _prefixed(source, "model.")
    weights["model.blocks.0._fsdp_wrapped_module.self_attn.q.weight"] = torch.randn(128, 128)
    path = models_dir / "twice.pt"
    torch.save({"generator": weights}, path)
    with pytest.raises(WeightsError, match=r"'model\.blocks\.0\.self_attn\.q\.weight' and "
                                           r"'model\.blocks\.0\._fsdp_wrapped_module\.self_attn\.q\.weight'"):
        load_dit(path)


@pytest.fixture(scope="module")
def tiny_vae(fixtures_dir):
    return TinyVAE.from_file(fixtures_dir / "taehv_random_weights.safetensors", dtype=torch.float32)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_family_streams_through_the_sampler_node(pack, models_dir, tiny_vae, layout):
    _, _, name = _write(layout, models_dir)
    model, _ = _load(pack, name)
    host = pack.nodes.host
    host.sent_messages.clear()
    torch.manual_seed(0)
    inputs = dict(positive=[[torch.randn(1, 5, 24), {}]])
    if model.dit.config.is_image_to_video:
        inputs.update(start_image=torch.rand(1, HEIGHT, WIDTH, 3),
                      clip_vision_output=SimpleNamespace(penultimate_hidden_states=torch.randn(1, 9, 40)))
    images, latent, _ = pack.NODE_CLASS_MAPPINGS["MotionStreamStreamingSampler"]().generate(
        model=model, width=WIDTH, height=HEIGHT, num_frames=FRAMES, seed=7, fps=16.0, sink_frames=-1,
        window_frames=-1, denoising_steps="", shift=0.0, tiny_vae=tiny_vae, unique_id="3", **inputs)["result"]
    assert images.shape == (FRAMES, HEIGHT, WIDTH, 3) and torch.isfinite(images).all()
    assert latent["samples"].shape == (1, 16, 4, 6, 10) and torch.isfinite(latent["samples"]).all()
    chunks = [data["chunk_index"] for event, data in host.sent_messages if event == "motionstream.frames"]
    blocks = BlockSchedule(model.streaming_defaults.block_frames)
    expected = next(n for n in range(1, 5) if blocks.start(n) >= 4)  # blocks until the 4 latent frames are made
    assert chunks == list(range(expected)) and expected >= 2
