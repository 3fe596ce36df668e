"""Joint text-motion guidance: the formula, its special cases, and what it costs."""

import math

import pytest
import torch

from motionstream_core import FlowMatchSchedule, StreamingConfig, TeacherSampler
from motionstream_core.sampling.guidance import Branch, branch_weights, guided_velocity

torch.manual_seed(0)
PREDICTIONS = {branch: torch.randn(2, 16, 3, 4, 4, dtype=torch.float64) for branch in Branch}
COND, NULL_TEXT, NULL_MOTION = (PREDICTIONS[b] for b in (Branch.CONDITIONAL, Branch.NULL_TEXT, Branch.NULL_MOTION))


def _guided(wt, wm):
    calls = []

    def predict(branch):
        calls.append(branch)
        return PREDICTIONS[branch]

    return guided_velocity(predict, wt, wm), calls


def test_matches_the_published_formula():
    wt, wm = 3.0, 1.5
    a = wt / (wt + wm)
    expected = a * NULL_TEXT + (1 - a) * NULL_MOTION + wt * (COND - NULL_TEXT) + wm * (COND - NULL_MOTION)
    guided, calls = _guided(wt, wm)
    torch.testing.assert_close(guided, expected)
    assert sorted(calls, key=lambda b: b.value) == sorted(Branch, key=lambda b: b.value)
    assert len(calls) == 3, "three branches cost three forward passes"


@pytest.mark.parametrize("wt", [0.5, 1.0, 3.0, 7.5])
def test_without_motion_guidance_it_is_text_cfg(wt):
    guided, calls = _guided(wt, 0.0)
    torch.testing.assert_close(guided, NULL_TEXT + wt * (COND - NULL_TEXT))
    # At scale 1 the unconditional term cancels, so it is not computed at all.
    assert set(calls) == ({Branch.CONDITIONAL} if wt == 1 else {Branch.CONDITIONAL, Branch.NULL_TEXT})


@pytest.mark.parametrize("wm", [0.5, 1.0, 1.5, 4.0])
def test_without_text_guidance_it_is_motion_cfg(wm):
    guided, calls = _guided(0.0, wm)
    torch.testing.assert_close(guided, NULL_MOTION + wm * (COND - NULL_MOTION))
    assert set(calls) == ({Branch.CONDITIONAL} if wm == 1 else {Branch.CONDITIONAL, Branch.NULL_MOTION})


def test_no_guidance_is_the_conditional_prediction():
    guided, calls = _guided(0.0, 0.0)
    torch.testing.assert_close(guided, COND)
    assert calls == [Branch.CONDITIONAL]


def test_weights_sum_to_one():
    for wt, wm in [(3.0, 1.5), (1.0, 1.0), (0.0, 2.0), (5.0, 0.0)]:
        assert sum(branch_weights(wt, wm).values()) == pytest.approx(1.0)


def test_negative_scales_are_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        branch_weights(-1.0, 1.5)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_scales_that_are_not_finite_are_refused_where_they_are_given(bad):
    # NaN compared as neither negative nor positive, so it used to pass and make NaN video.
    with pytest.raises(ValueError, match="text_scale must be a finite"):
        branch_weights(bad, 1.5)
    with pytest.raises(ValueError, match="motion_scale must be a finite"):
        branch_weights(3.0, bad)
    with pytest.raises(ValueError, match="motion_scale must be a finite"):
        StreamingConfig(motion_scale=bad)
    with pytest.raises(ValueError, match="text_scale must be a finite"):
        TeacherSampler(torch.nn.Module(), text_scale=bad)
    with pytest.raises(ValueError, match="shift must be a finite"):
        TeacherSampler(torch.nn.Module(), shift=bad)
    with pytest.raises(ValueError, match="shift must be a finite"):
        FlowMatchSchedule(shift=bad)
