"""Joint guidance inside the causal engine: one KV cache per branch, one forward per branch."""

import pytest
import torch

from motionstream_core import StreamConditions, StreamingConfig, StreamingSession
from motionstream_core.sampling.guidance import Branch
from tiny_models import random_dit, tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")

MOTION_CHANNELS = 4


def _session(text_scale, motion_scale):
    model = random_dit(tiny_config(in_channels=8 + MOTION_CHANNELS, out_channels=8))
    config = StreamingConfig.track_v0(text_scale=text_scale, motion_scale=motion_scale)
    session = StreamingSession(model, config, latent_height=4, latent_width=4, seed=3)
    generator = torch.Generator().manual_seed(0)
    motion = torch.randn(1, MOTION_CHANNELS, 64, 4, 4, generator=generator)
    session.start(StreamConditions(
        text=torch.randn(1, 6, 24, generator=generator),
        null_text=torch.zeros(1, 6, 24),
        motion_providers=[lambda first, n: motion[:, :, first:first + n]],
    ))
    return session


def _spy(session):
    calls = []
    original = session.model.forward_chunk
    branch_of_cache = {id(cache): branch for branch, cache in session.caches.items()}

    def forward_chunk(latents, timestep, context, cache, start_frame):
        velocity = original(latents, timestep, context, cache, start_frame)
        calls.append((branch_of_cache[id(cache)], latents.clone(), float(timestep), velocity.clone()))
        return velocity

    session.model.forward_chunk = forward_chunk
    return calls


def test_three_branches_three_caches_three_forwards_per_step():
    session = _session(3.0, 1.5)
    assert set(session.caches) == set(Branch)
    pointers = {t.data_ptr() for cache in session.caches.values() for t in cache.tensors()}
    assert len(pointers) == 3 * len(session.cache.tensors()), "every branch has its own cache tensors"
    calls = _spy(session)
    session.next_chunk()
    steps = len(session.config.denoising_steps)
    assert len(calls) == 3 * steps + 3, "three forwards per step, then each branch commits the clean chunk"
    for branch in Branch:
        assert sum(1 for c in calls if c[0] is branch) == steps + 1


def test_guided_step_is_the_joint_formula_and_null_motion_sees_zero_tracks():
    session = _session(3.0, 1.5)
    calls = _spy(session)
    x0s = []
    session.on_step = lambda chunk, step, x0: x0s.append(x0.clone())
    session.next_chunk()
    wt, wm = 3.0, 1.5
    a = wt / (wt + wm)
    first_step = {branch: (inp, v) for branch, inp, t, v in calls[:3]}
    v_tm, v_0m, v_t0 = (first_step[b][1] for b in (Branch.CONDITIONAL, Branch.NULL_TEXT, Branch.NULL_MOTION))
    guided = a * v_0m + (1 - a) * v_t0 + wt * (v_tm - v_0m) + wm * (v_tm - v_t0)
    x = first_step[Branch.CONDITIONAL][0][:, :8]
    sigma = session._sigmas[0]
    torch.testing.assert_close(x0s[0], x - sigma * guided)
    assert first_step[Branch.NULL_MOTION][0][:, 8:].abs().max() == 0
    assert first_step[Branch.NULL_TEXT][0][:, 8:].abs().max() > 0
    torch.testing.assert_close(first_step[Branch.NULL_TEXT][0], first_step[Branch.CONDITIONAL][0])


def test_branch_caches_hold_different_keys_after_a_chunk():
    session = _session(3.0, 1.5)
    session.next_chunk()
    # The last layer: the first one's keys come before any cross-attention, so the text cannot reach them.
    keys = {branch: cache.keys[-1][:, :1].clone() for branch, cache in session.caches.items()}
    assert (keys[Branch.CONDITIONAL] - keys[Branch.NULL_TEXT]).abs().max() > 1e-6
    assert (keys[Branch.CONDITIONAL] - keys[Branch.NULL_MOTION]).abs().max() > 1e-6


def test_no_guidance_is_one_branch():
    session = _session(0.0, 0.0)
    assert list(session.caches) == [Branch.CONDITIONAL]
    calls = _spy(session)
    session.next_chunk()
    assert len(calls) == len(session.config.denoising_steps) + 1


def test_guidance_without_its_null_condition_is_a_clear_error():
    model = random_dit(tiny_config())
    session = StreamingSession(model, StreamingConfig.track_v0(text_scale=3.0), latent_height=4, latent_width=4)
    with pytest.raises(ValueError, match="null_text"):
        session.start(StreamConditions(text=torch.randn(1, 6, 24)))
    session = StreamingSession(model, StreamingConfig.track_v0(motion_scale=1.5), latent_height=4, latent_width=4)
    with pytest.raises(ValueError, match="motion_providers"):
        session.start(StreamConditions(text=torch.randn(1, 6, 24)))
