"""Every public key scheme loads into the same model, and bad files fail with errors that say why."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from motionstream_core import WanConfig, WeightsError, build_dit, load_dit, read_state_dict, save_state_dict
from motionstream_core.model.key_schemes import detect_scheme, diffusers_to_wan, to_canonical, wan_to_diffusers
from case_time_limit import time_limit
from tiny_models import random_dit, tiny_config

# Head count cannot be read off weights; Wan uses 128-dim heads, so tiny test models do too.
CONFIG = tiny_config(dim=256, num_heads=2, ffn_dim=64)
I2V_CONFIG = tiny_config(dim=256, num_heads=2, ffn_dim=64, image_dim=40)


@pytest.fixture(params=["t2v", "i2v"])
def model(request):
    return random_dit(CONFIG if request.param == "t2v" else I2V_CONFIG)


def _cloned(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


def test_config_is_read_off_the_weights(model):
    derived = WanConfig.from_state_dict(model.state_dict())
    assert derived.dim == 256 and derived.num_heads == 2 and derived.num_layers == 2
    assert derived.ffn_dim == 64 and derived.in_channels == 8 and derived.text_dim == 24
    assert derived.image_dim == model.config.image_dim
    assert derived.is_image_to_video == model.config.is_image_to_video


def test_diffusers_round_trip(model):
    original = _cloned(model)
    diffusers_keys = wan_to_diffusers(original)
    assert detect_scheme(diffusers_keys) == "diffusers"
    assert any(".attn1.to_q." in k for k in diffusers_keys)
    if model.config.is_image_to_video:
        assert "blocks.0.attn2.add_k_proj.weight" in diffusers_keys
    # Wan's cross-attention norm3 is diffusers' norm2.
    assert torch.equal(diffusers_keys["blocks.0.norm2.weight"], original["blocks.0.norm3.weight"])
    back = diffusers_to_wan(diffusers_keys)
    assert back.keys() == original.keys()
    for key in original:
        assert back[key] is original[key]


@pytest.mark.parametrize("prefix", ["", "model.", "model.diffusion_model.", "diffusion_model.", "model._orig_mod."])
@pytest.mark.parametrize("scheme", ["wan", "diffusers"])
def test_every_scheme_and_prefix_loads_the_same_model(model, tmp_path, prefix, scheme):
    path = tmp_path / "weights.safetensors"
    save_state_dict(_cloned(model), path, scheme=scheme)
    prefixed = {prefix + k: v for k, v in read_state_dict(path).items()}
    loaded, track = build_dit(prefixed, dtype=torch.float32)
    assert track == {}
    _same_weights(model, loaded)


def test_pt_checkpoint_prefers_generator_ema(tmp_path):
    model = random_dit(CONFIG, seed=1)
    other = random_dit(CONFIG, seed=2)
    path = tmp_path / "self_forcing.pt"
    torch.save(
        {
            "generator": {"model." + k: v for k, v in other.state_dict().items()},
            "generator_ema": {"model." + k: v for k, v in model.state_dict().items()},
            "step": 1200,
        },
        path,
    )
    loaded, _ = load_dit(path, dtype=torch.float32)
    _same_weights(model, loaded)
    torch.save({"generator": {"model." + k: v for k, v in other.state_dict().items()}}, path)
    _same_weights(other, load_dit(path, dtype=torch.float32)[0])


def test_sharded_diffusers_directory_with_config(tmp_path):
    model = random_dit(I2V_CONFIG)
    diffusers_keys = wan_to_diffusers(_cloned(model))
    directory = tmp_path / "transformer"
    directory.mkdir()
    keys = sorted(diffusers_keys)
    shards = {"shard-1.safetensors": keys[: len(keys) // 2], "shard-2.safetensors": keys[len(keys) // 2 :]}
    for name, shard_keys in shards.items():
        save_file({k: diffusers_keys[k].contiguous() for k in shard_keys}, directory / name)
    weight_map = {k: name for name, shard_keys in shards.items() for k in shard_keys}
    (directory / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (directory / "config.json").write_text(json.dumps(model.config.to_diffusers_config()))
    loaded, _ = load_dit(tmp_path, dtype=torch.float32)  # the pipeline folder above transformer/
    _same_weights(model, loaded)
    assert loaded.config.image_dim == 40


def test_a_fastvideo_export_with_its_unused_image_query_norm_loads(tmp_path):
    """FastVideo writes attn2.norm_added_q (a norm its image-to-video cross-attention never applies), as in
    Track-v0's layout; it is dropped as diffusers drops it, and every other key is used."""
    model = random_dit(I2V_CONFIG)
    state = wan_to_diffusers(_cloned(model))
    for block in range(model.config.num_layers):
        state[f"blocks.{block}.attn2.norm_added_q.weight"] = torch.randn(model.config.dim)
    save_file(state, str(tmp_path / "model.safetensors"))
    loaded, _ = load_dit(tmp_path / "model.safetensors", dtype=torch.float32)
    _same_weights(model, loaded)
    state["blocks.0.attn2.norm_added_v.weight"] = torch.randn(model.config.dim)  # not a key any exporter writes
    with pytest.raises((ValueError, WeightsError), match="norm_added_v"):
        build_dit(state, dtype=torch.float32)


def test_track_encoder_weights_are_kept_aside(tmp_path):
    model = random_dit(CONFIG)
    state = wan_to_diffusers(_cloned(model))
    state["track_encoder.temporal_conv.weight"] = torch.randn(16, 64, 4, 1, 1)
    state["track_encoder.proj.weight"] = torch.randn(16, 16, 1, 1, 1)
    loaded, track = build_dit(state, dtype=torch.float32)
    _same_weights(model, loaded)
    assert sorted(track) == ["track_encoder.proj.weight", "track_encoder.temporal_conv.weight"]


def test_loading_assigns_tensors_instead_of_copying():
    state = _cloned(random_dit(CONFIG))
    pointers = {k: v.data_ptr() for k, v in state.items()}
    loaded, _ = build_dit(state, dtype=torch.float32)
    assert state == {}, "the caller's dict is consumed so no second reference keeps memory alive"
    for key, parameter in loaded.state_dict().items():
        assert parameter.data_ptr() == pointers[key], key


def test_dtype_is_taken_from_the_file_or_chosen(tmp_path):
    model = random_dit(CONFIG)
    path = tmp_path / "half.safetensors"
    save_state_dict({k: v.half() for k, v in model.state_dict().items()}, path)
    assert load_dit(path)[0].dtype == torch.float16
    assert load_dit(path, dtype=torch.bfloat16)[0].dtype == torch.bfloat16


def test_scaled_fp8_is_dequantised(tmp_path):
    model = random_dit(CONFIG)
    state = _cloned(model)
    quantised = {}
    for key, value in state.items():
        if key.endswith(".weight") and value.ndim == 2:
            scale = value.abs().max() / 448.0
            quantised[key] = (value / scale).to(torch.float8_e4m3fn)
            quantised[key[: -len("weight")] + "scale_weight"] = scale.reshape(1)
        else:
            quantised[key] = value
    quantised["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    path = tmp_path / "fp8.safetensors"
    save_file(quantised, path)
    loaded, _ = load_dit(path, dtype=torch.float32)
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0.07, atol=1e-3, msg=key)


def test_unknown_quantisation_is_refused_with_a_clear_message():
    state = _cloned(random_dit(CONFIG))
    state["blocks.0.ffn.0.weight_scale_2"] = torch.ones(1)
    with pytest.raises(WeightsError, match="quantisation format"):
        build_dit(state)


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_state_dict(_cloned(random_dit(CONFIG)), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_dit(path)
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{nonsense")
    with pytest.raises(WeightsError, match="cut.safetensors"):
        load_dit(path)


def test_wrong_shapes_are_named():
    state = _cloned(random_dit(CONFIG))
    state["blocks.1.ffn.2.weight"] = torch.zeros(256, 65)
    with pytest.raises(WeightsError, match=r"wrongly shaped keys: blocks\.1\.ffn\.2\.weight \(file \(256, 65\), model \(256, 64\)\)"):
        build_dit(state, config=CONFIG)


def test_missing_and_unexpected_keys_are_named():
    state = _cloned(random_dit(CONFIG))
    del state["blocks.1.self_attn.q.bias"]
    state["blocks.1.self_attn.extra"] = torch.zeros(1)
    with pytest.raises(WeightsError) as error:
        build_dit(state, config=CONFIG)
    assert "missing keys: blocks.1.self_attn.q.bias" in str(error.value)


def test_a_pickle_with_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    raw = tmp_path / "evil.pt"
    with open(raw, "wb") as handle:
        pickle.dump({"generator": Payload()}, handle, protocol=2)
    zipped = tmp_path / "evil.pth"
    torch.save({"generator": Payload()}, zipped)
    for path in (raw, zipped):
        with pytest.raises(WeightsError, match="weights_only=True"):
            load_dit(path)


def test_not_a_wan_model():
    with pytest.raises(WeightsError, match="not a Wan 2.1 transformer"):
        build_dit({"encoder.layer.0.weight": torch.zeros(2, 2)})


def test_atomic_save_leaves_no_partial_file(tmp_path):
    path = tmp_path / "out.safetensors"
    with pytest.raises(Exception):
        save_state_dict({"a": torch.zeros(2), "b": "not a tensor"}, path)
    assert list(tmp_path.iterdir()) == []


def test_to_canonical_is_idempotent(model):
    state = _cloned(model)
    assert to_canonical(to_canonical(state)).keys() == state.keys()


# -- hostile and malformed files: clear errors naming the file, in bounded time ----------------------


def test_a_checkpoint_that_contains_itself_is_refused(tmp_path):
    weights = {"model." + k: v for k, v in _cloned(random_dit(CONFIG)).items()}
    looped = {"step": 3}
    looped["model"] = looped
    first, second = {"note": "a"}, {"note": "b"}
    first["generator"], second["model"] = second, first
    for name, checkpoint in (("self.pt", looped), ("pair.pt", first)):
        path = tmp_path / name
        torch.save(checkpoint, path)
        with time_limit(10), pytest.raises(WeightsError, match=rf"{name}.*contain themselves"):
            load_dit(path)
    deep = weights
    for _ in range(20):
        deep = {"model": deep}
    torch.save(deep, tmp_path / "deep.pt")
    with time_limit(10), pytest.raises(WeightsError, match=r"deep\.pt nests dicts more than 8 deep"):
        load_dit(tmp_path / "deep.pt")


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_integer_weights_are_refused_by_name(tmp_path, dtype, suffix):
    state = _cloned(random_dit(CONFIG))
    state["blocks.1.ffn.0.weight"] = (state["blocks.1.ffn.0.weight"] * 100).to(dtype)
    path = tmp_path / f"ints{suffix}"
    if suffix == ".pt":
        torch.save({"generator": state, "step": torch.tensor(1200)}, path)
    else:
        save_file(state, path)
    name = str(dtype).replace("torch.", "")
    with pytest.raises(WeightsError, match=rf"ints{suffix}: .*blocks\.1\.ffn\.0\.weight \(dtype {name}\)"):
        load_dit(path, dtype=torch.float32)


def test_integer_entries_that_are_not_weights_still_load(tmp_path):
    model = random_dit(CONFIG)
    path = tmp_path / "with_counters.pt"
    # A step counter beside the weights, and integer training state in the outer dict, are not weights.
    torch.save({"generator_ema": _cloned(model), "step": torch.tensor(7), "optimizer": {"step": torch.tensor(7)}}, path)
    _same_weights(model, load_dit(path, dtype=torch.float32)[0])


def test_integer_track_encoder_weights_are_refused():
    state = _cloned(random_dit(CONFIG))
    state["track_encoder.temporal_conv.weight"] = torch.zeros(16, 64, 4, 1, 1, dtype=torch.int64)
    state["track_encoder.proj.weight"] = torch.randn(16, 16, 1, 1, 1)
    with pytest.raises(WeightsError, match=r"track_encoder\.temporal_conv\.weight \(dtype int64\)"):
        build_dit(state, dtype=torch.float32)


def test_meta_and_sparse_tensors_are_refused(tmp_path):
    state = _cloned(random_dit(CONFIG))
    state["blocks.0.norm3.weight"] = torch.empty(256, device="meta")
    state["blocks.0.ffn.2.bias"] = state["blocks.0.ffn.2.bias"].to_sparse()
    with pytest.raises(WeightsError, match=r"blocks\.0\.ffn\.2\.bias \(layout sparse_coo\), blocks\.0\.norm3\.weight \(no data"):
        build_dit(state, dtype=torch.float32)


def _model_folder(tmp_path, model, config_text):
    folder = tmp_path / "model"
    folder.mkdir()
    save_state_dict(_cloned(model), folder / "weights.safetensors")
    (folder / "config.json").write_bytes(config_text)
    return folder


@pytest.mark.parametrize(
    "config_text, problem",
    [
        (b"{not json", "bad JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"dim"', "must be a JSON object"),
        (b'{"dim": "256", "num_heads": 2}', "dim must be a positive integer, got '256'"),
        (b'{"dim": 256, "num_heads": 0}', "num_heads must be a positive integer, got 0"),
        (b'{"num_attention_heads": null}', "num_attention_heads must be a positive integer, got None"),
        (b'{"num_attention_heads": 2, "attention_head_dim": 128, "patch_size": 5}', "patch_size must be 3 positive"),
        (b'{"num_attention_heads": 2, "attention_head_dim": 128, "eps": "small"}', "eps must be a positive finite"),
        (b'{"dim": 256, "num_heads": 2, "num_layers": 1000000000}', "describes 1000000000 transformer blocks"),
        (b"[" * 100000, "not valid a model config"),
    ],
)
def test_a_malformed_config_json_is_named(tmp_path, config_text, problem):
    folder = _model_folder(tmp_path, random_dit(CONFIG), config_text)
    with time_limit(20), pytest.raises(WeightsError) as error:
        load_dit(folder)
    assert str(folder) in str(error.value) and problem in str(error.value), str(error.value)


@pytest.mark.parametrize(
    "config_text, problem", [("{oops", "bad JSON"), ("[]", "must be a JSON object"), ('{"dim": 1.5}', "dim must be")]
)
def test_a_malformed_config_in_the_metadata_is_named(tmp_path, config_text, problem):
    path = tmp_path / "weights.safetensors"
    save_state_dict(_cloned(random_dit(CONFIG)), path, metadata={"config": config_text})
    with pytest.raises(WeightsError, match=rf"'config' entry in the metadata of .*weights\.safetensors.*{problem}"):
        load_dit(path)


def _sharded_folder(tmp_path, model):
    folder = tmp_path / "model"
    folder.mkdir()
    tensors = _cloned(model)
    keys = sorted(tensors)
    shards = {"shard-1.safetensors": keys[: len(keys) // 2], "shard-2.safetensors": keys[len(keys) // 2 :]}
    for name, shard_keys in shards.items():
        save_file({k: tensors[k] for k in shard_keys}, folder / name)
    return folder, {k: name for name, shard_keys in shards.items() for k in shard_keys}


@pytest.mark.parametrize(
    "index_text, problem",
    [
        (b"{nope", "bad JSON"),
        (b"\xc3\x28", "not UTF-8"),
        (b"[]", "weight_map"),
        (b'{"weight_map": ["shard-1.safetensors"]}', "weight_map"),
        (b'{"weight_map": {"blocks.0.norm3.weight": 5}}', "weight_map"),
        (b'{"weight_map": {}}', "weight_map"),
    ],
)
def test_a_malformed_shard_index_is_named(tmp_path, index_text, problem):
    folder, _ = _sharded_folder(tmp_path, random_dit(CONFIG))
    (folder / "model.safetensors.index.json").write_bytes(index_text)
    with pytest.raises(WeightsError) as error:
        load_dit(folder)
    assert "model.safetensors.index.json" in str(error.value) and problem in str(error.value), str(error.value)


@pytest.mark.parametrize(
    "hostile", ["../outside.safetensors", "{outside}", "sub/../../outside.safetensors", "..\\outside.safetensors",
                "C:/outside.safetensors", "shard-1.safetensors/../../outside.safetensors"],
)
def test_a_shard_index_cannot_read_outside_the_model_folder(tmp_path, hostile):
    model = random_dit(CONFIG)
    folder, weight_map = _sharded_folder(tmp_path, model)
    outside = tmp_path / "outside.safetensors"  # a loadable file, so only the name check stands in the way
    save_file({k: v for k, v in _cloned(model).items() if weight_map[k] == "shard-2.safetensors"}, outside)
    hostile = hostile.format(outside=outside)
    weight_map = {k: (hostile if shard == "shard-2.safetensors" else shard) for k, shard in weight_map.items()}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(WeightsError, match="shard names must be relative paths without '..'"):
        load_dit(folder)


def test_a_tensor_in_two_shards_is_refused(tmp_path):
    folder, weight_map = _sharded_folder(tmp_path, random_dit(CONFIG))
    save_file({"blocks.0.norm3.weight": torch.zeros(256)}, folder / "shard-3.safetensors")
    weight_map["blocks.0.norm3.weight"] = "shard-3.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(WeightsError, match=r"'blocks\.0\.norm3\.weight' is in both"):
        load_dit(folder)


def _forward(model):
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(1, 8, 2, 4, 4, generator=generator)
    context = torch.randn(1, 16, 24, generator=generator)
    with torch.no_grad():
        return model(latents, torch.tensor([500.0]), context)


def test_heads_that_are_not_128_wide_need_a_config(tmp_path):
    narrow = tiny_config(dim=192, num_heads=3, ffn_dim=64)  # 64-wide heads: 192 is no multiple of 128
    model = random_dit(narrow)
    path = tmp_path / "plain.safetensors"
    save_state_dict(_cloned(model), path)
    with pytest.raises(WeightsError) as error:
        load_dit(path)
    message = str(error.value)
    assert str(path) in message and "width 192 is not a multiple of 128" in message and "config.json" in message
    with pytest.raises(WeightsError, match="not a multiple of 128"):
        build_dit(_cloned(model))

    folder = _model_folder(tmp_path, model, json.dumps(narrow.to_dict()).encode())
    expected = _forward(model)
    for loaded in (load_dit(folder, dtype=torch.float32)[0], load_dit(path, dtype=torch.float32, config=narrow)[0]):
        assert loaded.config.num_heads == 3
        _same_weights(model, loaded)
        torch.testing.assert_close(_forward(loaded), expected, rtol=0, atol=0)
    # What loading with one 192-wide head (the old guess) would have computed instead:
    wrong = build_dit(_cloned(model), config=tiny_config(dim=192, num_heads=1, ffn_dim=64), dtype=torch.float32)[0]
    assert (_forward(wrong) - expected).abs().max() > 1e-3


def test_width_that_fits_128_wide_heads_is_still_inferred():
    # The weights cannot tell 2 heads of 128 from 4 of 64; 128-wide heads is the Wan convention (documented).
    assert WanConfig.from_state_dict(_cloned(random_dit(CONFIG))).num_heads == 2


@pytest.mark.parametrize(
    "key, shape, problem",
    [
        ("patch_embedding.weight", (256,), "expected 5 dimensions"),
        ("head.head.weight", (), "expected 2 dimensions"),
        ("head.head.weight", (33, 256), "not a multiple of the patch volume"),
    ],
)
def test_inference_from_oddly_shaped_weights_is_a_clear_error(key, shape, problem):
    state = _cloned(random_dit(CONFIG))
    state[key] = torch.zeros(shape)
    with pytest.raises(WeightsError, match=problem):
        build_dit(state)


@pytest.mark.parametrize("stored, problem", [
    ("{", "bad JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"no_such_setting": 1}', "not a valid streaming config"),
    ('{"sink_frames": "many"}', "not a valid streaming config"),
])
def test_a_malformed_streaming_config_in_the_metadata_is_named(tmp_path, stored, problem):
    from motionstream_core.training.checkpoints import read_streaming_config

    path = tmp_path / "student.safetensors"
    save_state_dict({"w": torch.zeros(1)}, path, metadata={"streaming_config": stored})
    with pytest.raises(WeightsError, match=problem) as error:
        read_streaming_config(path)
    assert str(path) in str(error.value)
