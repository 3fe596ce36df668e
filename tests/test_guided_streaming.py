"""Joint guidance inside the causal engine: each branch its own keys/values; one forward per branch, or one
batched forward for all of them."""

import pytest
import torch

from motionstream_core import StreamConditions, StreamingConfig, StreamingSession
from motionstream_core.sampling.guidance import Branch
from tiny_models import random_dit, tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")

MOTION_CHANNELS = 4


def _session(text_scale, motion_scale, dtype=torch.float32, text_tokens=6, **session_args):
    model = random_dit(tiny_config(in_channels=8 + MOTION_CHANNELS, out_channels=8), dtype=dtype)
    config = StreamingConfig.track_v0(text_scale=text_scale, motion_scale=motion_scale)
    session = StreamingSession(model, config, latent_height=4, latent_width=4, seed=3, **session_args)
    generator = torch.Generator().manual_seed(0)
    motion = torch.randn(1, MOTION_CHANNELS, 64, 4, 4, generator=generator, dtype=dtype)
    session.start(StreamConditions(
        text=torch.randn(1, text_tokens, 24, generator=generator, dtype=dtype),
        null_text=torch.zeros(1, 6, 24, dtype=dtype),
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
    session = _session(3.0, 1.5, batch_guidance=False)
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
    session = _session(3.0, 1.5, batch_guidance=False)
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


@pytest.mark.parametrize("batch_guidance", [True, False])
def test_branch_caches_hold_different_keys_after_a_chunk(batch_guidance):
    session = _session(3.0, 1.5, batch_guidance=batch_guidance)
    session.next_chunk()
    # The last layer: the first one's keys come before any cross-attention, so the text cannot reach them.
    keys = {branch: cache.keys[-1][:, :1].clone() for branch, cache in session.caches.items()}
    assert (keys[Branch.CONDITIONAL] - keys[Branch.NULL_TEXT]).abs().max() > 1e-6
    assert (keys[Branch.CONDITIONAL] - keys[Branch.NULL_MOTION]).abs().max() > 1e-6


@pytest.mark.parametrize("batch_guidance", [True, False])
def test_no_guidance_is_one_branch(batch_guidance):
    session = _session(0.0, 0.0, batch_guidance=batch_guidance)
    assert list(session.caches) == [Branch.CONDITIONAL]
    calls = _spy(session)
    session.next_chunk()
    assert len(calls) == len(session.config.denoising_steps) + 1


def test_batched_guidance_is_one_forward_per_step_over_one_shared_cache():
    session = _session(3.0, 1.5)
    shared = session._groups[0].cache
    assert shared.keys[0].shape[0] == 3, "the three branches are three batch rows of one cache"
    assert len({t.data_ptr() for cache in session.caches.values() for t in cache.tensors()}) == 3 * len(shared.tensors())
    calls = []
    forward = session.model.forward_chunk
    session.model.forward_chunk = lambda latents, *args: calls.append(latents.clone()) or forward(latents, *args)
    session.next_chunk()
    assert len(calls) == len(session.config.denoising_steps) + 1, "one batched forward per step, one commit"
    conditional, null_text, null_motion = calls[0].split(1)
    torch.testing.assert_close(null_text, conditional)
    assert null_motion[:, 8:].abs().max() == 0 and conditional[:, 8:].abs().max() > 0


# Float64 sessions: a batched forward computes each row with the same operations as a serial one, in
# GEMMs of another shape, so results agree to float64 rounding accumulated over a few chunks.
BATCHED_TOLERANCE = dict(rtol=0, atol=1e-10)


@pytest.mark.parametrize("text_tokens", [6, 20], ids=["same-length-prompts", "null-prompt-padded-and-masked"])
def test_batched_guidance_equals_serial_guidance(text_tokens):
    # text_len is 16: 6-token prompts are both padded to 16, but a 20-token prompt stays 20 tokens, so
    # the second case stacks contexts of different lengths (the null prompt's padded and masked).
    serial = _session(3.0, 1.5, torch.float64, text_tokens, batch_guidance=False)
    batched = _session(3.0, 1.5, torch.float64, text_tokens, batch_guidance=True)
    assert (batched._groups[0].context[0].mask is None) == (text_tokens == 6)
    for _ in range(4):  # past the first eviction of the 6-frame window
        torch.testing.assert_close(batched.next_chunk().latents, serial.next_chunk().latents, **BATCHED_TOLERANCE)
    for branch in serial.caches:
        torch.testing.assert_close(batched.caches[branch].keys[-1], serial.caches[branch].keys[-1], **BATCHED_TOLERANCE)


def test_batched_guidance_recaches_every_branch_on_a_prompt_change():
    sessions = [_session(3.0, 1.5, torch.float64, batch_guidance=batched) for batched in (False, True)]
    new_text = torch.randn(1, 6, 24, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    for session in sessions:
        list(session.stream(3))
        session.update(text=new_text, prompt_change="recache")
    serial, batched = (session.next_chunk().latents for session in sessions)
    torch.testing.assert_close(batched, serial, **BATCHED_TOLERANCE)


def test_guidance_without_its_null_condition_is_a_clear_error():
    model = random_dit(tiny_config())
    session = StreamingSession(model, StreamingConfig.track_v0(text_scale=3.0), latent_height=4, latent_width=4)
    with pytest.raises(ValueError, match="null_text"):
        session.start(StreamConditions(text=torch.randn(1, 6, 24)))
    session = StreamingSession(model, StreamingConfig.track_v0(motion_scale=1.5), latent_height=4, latent_width=4)
    with pytest.raises(ValueError, match="motion_providers"):
        session.start(StreamConditions(text=torch.randn(1, 6, 24)))
