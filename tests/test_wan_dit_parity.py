"""The DiT computes what diffusers' independent WanTransformer3DModel computes, on random weights."""

import pytest
import torch

from motionstream_core import WanConfig, build_dit
from motionstream_core.model.key_schemes import diffusers_to_wan, wan_to_diffusers
from tiny_models import random_dit, tiny_config

diffusers = pytest.importorskip("diffusers")

TOLERANCE = 1e-4


def _reference(image_dim=None, head_dim=32, seed=0):
    torch.manual_seed(seed)
    kwargs = dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=head_dim, in_channels=12,
        out_channels=8, text_dim=24, freq_dim=32, ffn_dim=40, num_layers=2,
    )
    if image_dim:
        kwargs.update(image_dim=image_dim, added_kv_proj_dim=2 * head_dim)
    reference = diffusers.WanTransformer3DModel(**kwargs).eval()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.normal_(0.0, 0.1)
    return reference


def _ours_from(reference):
    config = WanConfig.from_diffusers_config(reference.config)
    state_dict = diffusers_to_wan({k: v.clone() for k, v in reference.state_dict().items()})
    model, track = build_dit(state_dict, config=config, dtype=torch.float32)
    assert track == {}
    return model.eval()


def _inputs(text_tokens=512, image_tokens=0, batch=2, frames=5):
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(batch, 12, frames, 6, 8, generator=generator)
    text = torch.randn(batch, text_tokens, 24, generator=generator)
    image = torch.randn(batch, image_tokens, 20, generator=generator) if image_tokens else None
    return latents, text, image


@pytest.mark.parametrize("head_dim", [32, 128])
def test_text_to_video_matches_diffusers(head_dim):
    reference = _reference(head_dim=head_dim)
    model = _ours_from(reference)
    latents, text, _ = _inputs()
    timesteps = torch.tensor([999.0, 250.0])
    with torch.no_grad():
        expected = reference(latents, timesteps, text, return_dict=False)[0]
        actual = model(latents, timesteps, text)
    assert actual.shape == expected.shape == (2, 8, 5, 6, 8)
    assert (actual - expected).abs().max() <= TOLERANCE


def test_image_to_video_matches_diffusers():
    reference = _reference(image_dim=20)
    model = _ours_from(reference)
    assert model.config.is_image_to_video
    latents, text, image = _inputs(image_tokens=7)
    timesteps = torch.tensor([500.0, 10.0])
    with torch.no_grad():
        expected = reference(latents, timesteps, text, encoder_hidden_states_image=image, return_dict=False)[0]
        actual = model(latents, timesteps, text, image_context=image)
    assert (actual - expected).abs().max() <= TOLERANCE


def test_per_frame_timesteps_match_diffusers_per_token_timesteps():
    reference = _reference(image_dim=20)
    model = _ours_from(reference)
    latents, text, image = _inputs(image_tokens=7)
    per_frame = torch.tensor([[1000.0, 750.0, 500.0, 250.0, 0.0], [0.0, 0.0, 937.5, 937.5, 937.5]])
    tokens_per_frame = (6 // 2) * (8 // 2)
    with torch.no_grad():
        expected = reference(
            latents, per_frame.repeat_interleave(tokens_per_frame, dim=1), text,
            encoder_hidden_states_image=image, return_dict=False,
        )[0]
        actual = model(latents, per_frame, text, image_context=image)
    assert (actual - expected).abs().max() <= TOLERANCE


def test_explicit_frame_positions_shift_only_the_time_axis():
    model = random_dit(tiny_config())
    latents = torch.randn(1, 8, 2, 4, 4)
    text = torch.randn(1, 16, 24)
    with torch.no_grad():
        default = model(latents, torch.tensor([500.0]), text)
        explicit = model(latents, torch.tensor([500.0]), text, frame_positions=torch.tensor([0, 1]))
        shifted = model(latents, torch.tensor([500.0]), text, frame_positions=torch.tensor([7, 8]))
        far = model(latents, torch.tensor([500.0]), text, frame_positions=torch.tensor([3, 9]))
    torch.testing.assert_close(default, explicit)
    # Attention depends only on relative positions: a uniform shift changes nothing, a different gap does.
    torch.testing.assert_close(default, shifted, atol=1e-5, rtol=1e-5)
    assert (default - far).abs().max() > 1e-4


def test_attention_mask_blocks_information_flow():
    model = random_dit(tiny_config())
    text = torch.randn(1, 16, 24)
    latents = torch.randn(1, 8, 2, 4, 4)
    tokens_per_frame = 4
    causal = torch.ones(8, 8, dtype=torch.bool).tril()
    frame_of = torch.arange(8) // tokens_per_frame
    block_causal = frame_of[:, None] >= frame_of[None, :]
    assert not torch.equal(causal, block_causal)
    changed = latents.clone()
    changed[:, :, 1] += 1.0
    with torch.no_grad():
        before = model(latents, torch.tensor([500.0]), text, attention_mask=block_causal)
        after = model(changed, torch.tensor([500.0]), text, attention_mask=block_causal)
    # Frame 0 cannot see frame 1, so its output is unchanged; frame 1's output changes.
    torch.testing.assert_close(before[:, :, 0], after[:, :, 0])
    assert (before[:, :, 1] - after[:, :, 1]).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_forward_is_close_to_float32(dtype):
    config = tiny_config()
    reference = random_dit(config)
    half = random_dit(config, dtype=dtype)
    latents = torch.randn(1, 8, 3, 4, 6)
    text = torch.randn(1, 16, 24)
    with torch.no_grad():
        expected = reference(latents, torch.tensor([700.0]), text)
        actual = half(latents, torch.tensor([700.0]), text)
    assert actual.dtype == dtype
    assert torch.isfinite(actual).all()
    error = (actual.float() - expected).abs().max() / expected.abs().max()
    assert error < 0.05


def test_wan_to_diffusers_loads_into_diffusers():
    model = random_dit(tiny_config(in_channels=12, ffn_dim=40))
    config = {k: v for k, v in model.config.to_diffusers_config().items() if not k.startswith("_")}
    reference = diffusers.WanTransformer3DModel(**config)
    result = reference.load_state_dict(wan_to_diffusers(model.state_dict()), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_rope_split_for_128_dim_heads():
    assert WanConfig().rope_dims() == (44, 42, 42)
    assert WanConfig().head_dim == 128
