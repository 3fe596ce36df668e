"""The bidirectional teacher sampler integrates the flow ODE with joint guidance."""

from types import SimpleNamespace

import pytest
import torch

from motionstream_core.sampling.teacher_sampler import TeacherConditions, TeacherSampler, shifted_sigmas
from tiny_models import random_dit, tiny_config


class PointMassModel:
    """Exact velocity of data concentrated at `target`: v(x, sigma) = (x - target) / sigma."""

    def __init__(self, target, extra_channels=0):
        self.target = target
        self.calls = []
        self.config = SimpleNamespace(in_channels=target.shape[1] + extra_channels)

    def encode_context(self, text, image_tokens=None):
        return [text]

    def __call__(self, model_input, timestep, context):
        self.calls.append((model_input.clone(), context[0]))
        sigma = timestep[0] / 1000
        x = model_input[:, : self.target.shape[1]]
        return (x - self.target) / sigma


def test_sigmas_run_from_noise_to_data_with_shift():
    sigmas = shifted_sigmas(10, 5.0)
    assert sigmas[0] == 1 and sigmas[-1] == 0
    assert (sigmas[1:] < sigmas[:-1]).all()
    assert sigmas[5] == pytest.approx(5 * 0.5 / (1 + 4 * 0.5))


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_solvers_reach_the_data_point(solver):
    target = torch.randn(1, 4, 2, 3, 3, dtype=torch.float64)
    model = PointMassModel(target)
    sampler = TeacherSampler(model, steps=6, shift=3.0, solver=solver, text_scale=0.0, motion_scale=0.0)
    out = sampler.sample(torch.randn_like(target), TeacherConditions(text=torch.zeros(1, 1, 1)))
    torch.testing.assert_close(out, target)
    evaluations = 6 if solver == "euler" else 2 * 6 - 1  # Heun skips its correction on the final step to sigma 0
    assert len(model.calls) == evaluations


def test_branches_get_the_right_text_and_motion():
    target = torch.zeros(1, 4, 1, 2, 2, dtype=torch.float64)
    model = PointMassModel(target, extra_channels=5)
    text, null_text = torch.ones(1, 1, 1), torch.zeros(1, 1, 1)
    tracks = torch.full((1, 3, 1, 2, 2), 7.0, dtype=torch.float64)
    condition = torch.full((1, 2, 1, 2, 2), 5.0, dtype=torch.float64)
    sampler = TeacherSampler(model, steps=1, text_scale=3.0, motion_scale=1.5)
    sampler.sample(torch.randn_like(target), TeacherConditions(text, null_text, None, condition, tracks))
    assert len(model.calls) == 3
    seen = {(float(ctx.sum()), float(inp[:, 6:].abs().sum())) for inp, ctx in model.calls}
    # (text used, motion used): conditional, null text (motion kept), null motion (text kept, tracks zeroed)
    assert seen == {(1.0, 84.0), (0.0, 84.0), (1.0, 0.0)}
    for inp, _ in model.calls:
        assert torch.equal(inp[:, 4:6], condition[:, :, :1]), "image conditioning is kept in every branch"


def test_missing_conditions_are_named():
    sampler = TeacherSampler(PointMassModel(torch.zeros(1, 4, 1, 2, 2)), steps=1)
    with pytest.raises(ValueError, match="track channels"):
        sampler.sample(torch.zeros(1, 4, 1, 2, 2), TeacherConditions(text=torch.zeros(1, 1, 1), null_text=torch.zeros(1, 1, 1)))
    with pytest.raises(ValueError, match=r"takes 4 input channels, but the inputs give 4 noisy latent \+ 2 image conditioning = 6"):
        TeacherSampler(PointMassModel(torch.zeros(1, 4, 1, 2, 2)), steps=1, text_scale=0, motion_scale=0).sample(
            torch.zeros(1, 4, 1, 2, 2),
            TeacherConditions(text=torch.zeros(1, 1, 1), condition_channels=torch.zeros(1, 2, 1, 2, 2)))
    with pytest.raises(ValueError, match="unknown solver"):
        TeacherSampler(None, solver="rk45")


def test_image_to_video_with_tracks_on_a_tiny_dit():
    config = tiny_config(in_channels=16 + 4 + 16 + 16, out_channels=16, image_dim=40)
    model = random_dit(config)
    generator = torch.Generator().manual_seed(0)
    shape = (1, 16, 3, 4, 6)
    conditions = TeacherConditions(
        text=torch.randn(1, 5, 24, generator=generator),
        null_text=torch.zeros(1, 5, 24),
        image_tokens=torch.randn(1, 9, 40, generator=generator),
        condition_channels=torch.randn(1, 20, 3, 4, 6, generator=generator),
        track_channels=torch.randn(1, 16, 3, 4, 6, generator=generator),
    )
    noise = torch.randn(shape, generator=generator)
    sampler = TeacherSampler(model, steps=3, solver="heun")
    first = sampler.sample(noise, conditions)
    assert first.shape == shape and torch.isfinite(first).all()
    torch.testing.assert_close(sampler.sample(noise, conditions), first)
    conditions.track_channels = conditions.track_channels * 0
    assert (sampler.sample(noise, conditions) - first).abs().max() > 1e-4, "tracks steer the result"
