"""LoRA files in every layout read merge into the weights as W + strength * (alpha / rank) * up @ down, and files
that do not fit the model fail with errors that name what does not fit."""

import json

import pytest
import torch
from safetensors.torch import save_file

from motionstream_core import WeightsError
from motionstream_core.model.key_schemes import wan_to_diffusers
from motionstream_core.model.lora import merge_into_state_dict, merged_copy, read_lora, LoraFile
from tiny_models import random_dit, tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = tiny_config(image_dim=40)  # image-to-video: the cross-attention's k_img/v_img take LoRAs too
RANK = 4
# Linear layers of every kind: attention, feed-forward, embeddings, the output head, the image projection.
MODULES = (
    "blocks.0.self_attn.q", "blocks.1.self_attn.o", "blocks.0.cross_attn.k_img", "blocks.1.cross_attn.v",
    "blocks.0.ffn.0", "blocks.1.ffn.2", "text_embedding.0", "time_projection.1", "head.head", "img_emb.proj.1",
)
# The merge and the expected weights both compute in float32, but not in the same order (the scalar factors are
# applied before or after the rank-4 matmul): a few roundings of eps = 1.2e-7 on values of order 0.1.
WEIGHT_TOLERANCE = dict(rtol=1e-6, atol=1e-6)
# Weights that differ by that much change the tiny model's output by at most ~1e-6 through its two blocks.
OUTPUT_TOLERANCE = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture
def model():
    return random_dit(CONFIG)


def _factors(model, seed=1):
    """{module: (down [rank, in], up [out, rank])} for MODULES."""
    generator = torch.Generator().manual_seed(seed)
    weights = model.state_dict()
    factors = {}
    for module in MODULES:
        out_features, in_features = weights[f"{module}.weight"].shape
        factors[module] = (
            torch.randn(RANK, in_features, generator=generator) * 0.1,
            torch.randn(out_features, RANK, generator=generator) * 0.1,
        )
    return factors


def _expected(model, factors, strength, alpha):
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    for module, (down, up) in factors.items():
        weights[f"{module}.weight"] = weights[f"{module}.weight"] + strength * (alpha / RANK) * (up @ down)
    return weights


def _diffusers_module(module):
    return next(iter(wan_to_diffusers({f"{module}.weight": None})))[: -len(".weight")]


# layout -> (LoRA key of a module's (down, up, alpha), alpha stored in the file or None).
LAYOUTS = {
    "peft, Wan naming": (lambda m: (f"{m}.lora_A.weight", f"{m}.lora_B.weight", None), None),
    "peft, Wan naming, alpha": (lambda m: (f"{m}.lora_A.weight", f"{m}.lora_B.weight", f"{m}.alpha"), 2.0),
    "peft, diffusers naming": (
        lambda m: tuple(f"transformer.{_diffusers_module(m)}.{part}" for part in ("lora_A.weight", "lora_B.weight", "alpha")),
        8.0,
    ),
    "kohya": (
        lambda m: tuple(f"lora_unet_{m.replace('.', '_')}.{part}" for part in ("lora_down.weight", "lora_up.weight", "alpha")),
        1.0,
    ),
    "comfyui dotted": (
        lambda m: tuple(f"diffusion_model.{m}.{part}" for part in ("lora_down.weight", "lora_up.weight", "alpha")),
        16.0,
    ),
}


def _lora_tensors(factors, keys, alpha):
    tensors = {}
    for module, (down, up) in factors.items():
        down_key, up_key, alpha_key = keys(module)
        tensors[down_key], tensors[up_key] = down, up
        if alpha is not None:
            tensors[alpha_key] = torch.tensor(alpha)
    return tensors


def _assert_weights(actual, expected):
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], **WEIGHT_TOLERANCE, msg=key)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_merges_into_the_weights(model, tmp_path, layout):
    keys, alpha = LAYOUTS[layout]
    factors = _factors(model)
    path = tmp_path / "lora.safetensors"
    save_file(_lora_tensors(factors, keys, alpha), path)
    merged = merge_into_state_dict(model.state_dict(), read_lora(path), strength=0.7)
    _assert_weights(merged, _expected(model, factors, 0.7, RANK if alpha is None else alpha))


def test_longlive_lora_checkpoint(model, tmp_path):
    """LongLive saves PEFT's state dict of its causal Wan model under "generator_lora", beside the critic's."""
    factors = _factors(model)
    generator_lora = {}
    for module, (down, up) in factors.items():
        generator_lora[f"base_model.model.{module}.lora_A.weight"] = down
        generator_lora[f"base_model.model.{module}.lora_B.weight"] = up
    critic_lora = {"base_model.model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(RANK, 5120)}
    torch.save({"generator_lora": generator_lora, "critic_lora": critic_lora, "step": 600}, tmp_path / "lora.pt")
    merged = merge_into_state_dict(model.state_dict(), read_lora(tmp_path / "lora.pt"))
    _assert_weights(merged, _expected(model, factors, 1.0, RANK))


def test_a_plain_pickled_peft_state_dict(model, tmp_path):
    factors = _factors(model)
    torch.save(_lora_tensors(factors, LAYOUTS["peft, Wan naming"][0], None), tmp_path / "lora.pth")
    merged = merge_into_state_dict(model.state_dict(), read_lora(tmp_path / "lora.pth"), strength=-1.5)
    _assert_weights(merged, _expected(model, factors, -1.5, RANK))


def test_diffusers_alpha_from_the_metadata(model, tmp_path):
    factors = _factors(model)
    tensors = {
        f"transformer.{_diffusers_module(m)}.lora_{part}.weight": tensor
        for m, (down, up) in factors.items() for part, tensor in (("A", down), ("B", up))
    }
    metadata = {"lora_adapter_metadata": json.dumps({"transformer.r": RANK, "transformer.lora_alpha": 12})}
    save_file(tensors, tmp_path / "lora.safetensors", metadata=metadata)
    merged = merge_into_state_dict(model.state_dict(), read_lora(tmp_path / "lora.safetensors"))
    _assert_weights(merged, _expected(model, factors, 1.0, 12.0))


def test_difference_keys_change_norms_biases_and_bare_parameters(model, tmp_path):
    weights = model.state_dict()
    generator = torch.Generator().manual_seed(2)
    diffs = {
        "blocks.0.norm3.diff": ("blocks.0.norm3.weight",),
        "blocks.1.self_attn.norm_k.diff": ("blocks.1.self_attn.norm_k.weight",),
        "head.head.diff_b": ("head.head.bias",),
        "blocks.0.modulation.diff": ("blocks.0.modulation",),
        "patch_embedding.diff": ("patch_embedding.weight",),  # a convolution: a difference has its full shape
    }
    tensors = {f"diffusion_model.{key}": torch.randn(weights[target].shape, generator=generator)
               for key, (target,) in diffs.items()}
    save_file(tensors, tmp_path / "diff.safetensors")
    merged = merge_into_state_dict(weights, read_lora(tmp_path / "diff.safetensors"), strength=0.5)
    expected = dict(weights)
    for key, (target,) in diffs.items():
        expected[target] = weights[target] + 0.5 * tensors[f"diffusion_model.{key}"]
    _assert_weights(merged, expected)


def test_the_merged_model_runs_like_one_with_the_weights_set_by_hand(model, tmp_path):
    keys, alpha = LAYOUTS["kohya"]
    factors = _factors(model)
    save_file(_lora_tensors(factors, keys, alpha), tmp_path / "lora.safetensors")
    merged = merged_copy(model, read_lora(tmp_path / "lora.safetensors"), strength=1.3)
    by_hand = random_dit(CONFIG, seed=5)
    by_hand.load_state_dict(_expected(model, factors, 1.3, alpha))
    torch.testing.assert_close(_forward(merged), _forward(by_hand), **OUTPUT_TOLERANCE)
    assert not torch.allclose(_forward(merged), _forward(model), rtol=1e-3, atol=1e-3)  # the LoRA did something


def _forward(model):
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(1, CONFIG.in_channels, 2, 4, 4, generator=generator)
    context = torch.randn(1, CONFIG.text_len, CONFIG.text_dim, generator=generator)
    image = torch.randn(1, 3, CONFIG.image_dim, generator=generator)
    with torch.no_grad():
        return model(latents, torch.tensor([500.0]), context, image_context=image)


def test_merged_copy_leaves_the_model_alone_and_shares_what_it_does_not_change(model, tmp_path):
    factors = _factors(model)
    save_file(_lora_tensors(factors, LAYOUTS["kohya"][0], 1.0), tmp_path / "lora.safetensors")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merged = merged_copy(model, read_lora(tmp_path / "lora.safetensors"))
    _assert_same(model.state_dict(), before)
    original, copied = dict(model.named_parameters()), dict(merged.named_parameters())
    assert copied["blocks.0.self_attn.q.weight"].data_ptr() != original["blocks.0.self_attn.q.weight"].data_ptr()
    assert copied["blocks.0.self_attn.k.weight"].data_ptr() == original["blocks.0.self_attn.k.weight"].data_ptr()
    merged.to(torch.float64)  # casting (or moving) the copy leaves the model's own parameters where they were
    assert all(p.dtype == torch.float32 for p in model.parameters())


def _assert_same(actual, expected):
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)


def test_bf16_weights_stay_bf16(tmp_path):
    model = random_dit(CONFIG, dtype=torch.bfloat16)
    factors = _factors(model)
    save_file(_lora_tensors(factors, LAYOUTS["kohya"][0], 1.0), tmp_path / "lora.safetensors")
    merged = merge_into_state_dict(model.state_dict(), read_lora(tmp_path / "lora.safetensors"))
    assert all(v.dtype == torch.bfloat16 for v in merged.values())
    weight = model.state_dict()["blocks.0.ffn.0.weight"].float()
    down, up = factors["blocks.0.ffn.0"]
    expected = (weight + (1.0 / RANK) * (up @ down)).to(torch.bfloat16)
    # One rounding to bf16 of a float32 sum that differs by ~1e-7: at most one bf16 step (2^-8 relative) apart.
    torch.testing.assert_close(merged["blocks.0.ffn.0.weight"], expected, rtol=2**-8, atol=1e-6)


def test_a_key_of_no_weight_is_named(model, tmp_path):
    tensors = _lora_tensors(_factors(model), LAYOUTS["peft, Wan naming"][0], None)
    tensors["blocks.7.self_attn.q.lora_A.weight"] = torch.zeros(RANK, CONFIG.dim)
    tensors["blocks.7.self_attn.q.lora_B.weight"] = torch.zeros(CONFIG.dim, RANK)
    save_file(tensors, tmp_path / "lora.safetensors")
    with pytest.raises(WeightsError, match=r"match no weight of the model: blocks\.7\.self_attn\.q\.lora_A\.weight.*"
                                           r"named like .*blocks\.0\.self_attn\.q\.weight"):
        merge_into_state_dict(model.state_dict(), read_lora(tmp_path / "lora.safetensors"))


def test_a_shape_mismatch_names_the_key_and_both_shapes(model, tmp_path):
    tensors = {"blocks.0.ffn.0.lora_A.weight": torch.zeros(RANK, 5120), "blocks.0.ffn.0.lora_B.weight": torch.zeros(96, RANK)}
    save_file(tensors, tmp_path / "lora.safetensors")
    with pytest.raises(WeightsError, match=r"blocks\.0\.ffn\.0\.lora_A\.weight makes a change of shape \(96, 5120\) "
                                           r"for blocks\.0\.ffn\.0\.weight, whose shape is \(96, 64\)"):
        merge_into_state_dict(model.state_dict(), read_lora(tmp_path / "lora.safetensors"))


def test_a_model_file_is_no_lora(model, tmp_path):
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    with pytest.raises(WeightsError, match="is not a LoRA"):
        read_lora(tmp_path / "model.safetensors")


@pytest.mark.parametrize("tensors, message", [
    ({"patch_embedding.lora_A.weight": torch.zeros(RANK, 8), "patch_embedding.lora_B.weight": torch.zeros(64, RANK)},
     r"patch_embedding, which is no Linear layer \(shape \(64, 8, 1, 2, 2\)\)"),
    ({"blocks.0.ffn.0.lora_A.weight": torch.zeros(RANK, 64)}, r"lora_A\.weight comes without its lora_B / lora_up"),
    ({"blocks.0.ffn.0.hada_w1_a": torch.zeros(RANK, 64)}, "is a LoHa file"),
    ({"blocks.0.ffn.0.lora_A.weight": torch.zeros(RANK, 64), "blocks.0.ffn.0.lora_B.weight": torch.zeros(96, RANK),
      "blocks.0.ffn.0.alpha": torch.tensor(float("nan"))}, r"alpha must hold one finite number"),
    ({"blocks.0.ffn.0.lora_A.weight": torch.zeros(RANK, 64), "blocks.0.ffn.0.lora_B.weight": torch.zeros(96, RANK),
      "transformer.blocks.0.ffn.net.0.proj.lora_A.weight": torch.zeros(RANK, 64)}, "given twice"),
    ({"blocks.0.ffn.0.lora_A.weight": torch.zeros(RANK, 64), "blocks.0.ffn.0.lora_B.weight": torch.zeros(96, RANK),
      "blocks.0.ffn.0.something_else": torch.zeros(1)}, r"no LoRA layout read here: blocks\.0\.ffn\.0\.something_else"),
])
def test_files_that_do_not_fit_are_refused_with_the_reason(model, tensors, message):
    with pytest.raises(WeightsError, match=message):
        merge_into_state_dict(model.state_dict(), LoraFile(tensors, "test.safetensors"))


def test_underscored_names_that_fit_two_modules_are_refused():
    weights = {"a.b_c.weight": torch.zeros(2, 2), "a_b.c.weight": torch.zeros(2, 2)}
    tensors = {"lora_unet_a_b_c.lora_down.weight": torch.zeros(1, 2), "lora_unet_a_b_c.lora_up.weight": torch.zeros(2, 1)}
    lora = LoraFile(tensors, "x.safetensors")
    with pytest.raises(WeightsError, match=r"could be any of \['a\.b_c', 'a_b\.c'\]"):
        merge_into_state_dict(weights, lora)


def test_the_node_returns_a_new_model_and_leaves_its_input_alone(pack, model, tmp_path, monkeypatch):
    from motionstream_core.streaming.session import StreamingConfig

    monkeypatch.setenv("MOTIONSTREAM_MODELS_DIR", str(tmp_path))
    (tmp_path / "loras").mkdir()
    factors = _factors(model)
    save_file(_lora_tensors(factors, LAYOUTS["kohya"][0], 2.0), tmp_path / "loras" / "style.safetensors")
    node = pack.NODE_CLASS_MAPPINGS["MotionStreamLoraLoader"]
    assert node.INPUT_TYPES()["required"]["lora_name"][0] == ["style.safetensors"]
    given = pack.nodes.model_loaders.MotionStreamModel(model, None, StreamingConfig.self_forcing(), "t2v.pt")
    before = {k: v.clone() for k, v in model.state_dict().items()}

    (loaded,) = node().load(given, "style.safetensors", 0.5)
    assert loaded is not given and loaded.dit is not given.dit
    _assert_same(given.dit.state_dict(), before)
    _assert_weights(loaded.dit.state_dict(), _expected(model, factors, 0.5, 2.0))
    assert loaded.streaming_defaults is given.streaming_defaults and loaded.needs == given.needs
    assert "style.safetensors" in loaded.name

    (unchanged,) = node().load(given, "style.safetensors", 0.0)
    assert unchanged is given
