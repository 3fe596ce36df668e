"""The training package on a tiny model: each stage's step, the zero-initialised track channels, the
DMD gradient on a Gaussian toy, EMA, augmentations, the rollout against the streaming session, and
checkpoints through `load_dit`."""

import copy
import dataclasses
import json

import pytest
import torch

from motionstream_core.streaming.causal_model import CausalWanModel
from motionstream_core.streaming.session import StreamConditions, StreamingConfig, StreamingSession
from motionstream_core.sampling.noise import SeededNoise
from motionstream_core.training import (
    ClipAugmentation,
    ClipBatch,
    ExponentialMovingAverage,
    OdeInitConfig,
    OdeInitTrainer,
    SelfForcingDMDConfig,
    SelfForcingDMDTrainer,
    TeacherTrainer,
    TeacherTrainingConfig,
    TrackConditionedDiT,
    add_track_channels,
    block_causal_mask,
    build_teacher,
    dmd_loss,
    drop_conditions,
    load_training_state,
    load_weights,
    mask_track_spans,
    save_training_state,
    save_weights,
    subsample_tracks,
    subsample_tracks_per_group,
)
from motionstream_core.training.cli import build_dataclass, RunConfig
from motionstream_core.training.self_forcing_dmd import RolloutPlan, plan_rollout, self_forcing_rollout
from motionstream_core.training.self_forcing_regression import (
    SelfForcingRegressionConfig, SelfForcingRegressionTrainer, changed_cells, weighted_regression_loss,
)
from motionstream_core.training.seeding import PerSampleNoise, sample_generators
from motionstream_core.model.weights import load_dit, read_config_file
from tiny_models import random_dit, tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")

TRACK_CHANNELS = 4
H = W = 4
STREAMING = StreamingConfig(
    sink_frames=1, window_frames=4, block_frames=(3,), rope_policy="relative", denoising_steps=(1000, 750, 500)
)
NO_AUGMENTATION = ClipAugmentation(max_tracks=1000, randomize_track_ids=False, temporal_mask_probability=0.0,
                                   text_dropout=0.0, motion_dropout=0.0)


def make_batch(batch=2, frames=6, tracks=12, seed=0, image_to_video=False, channels=8):
    g = torch.Generator().manual_seed(seed)
    pixel_frames = (frames - 1) * 4 + 1
    fields = {}
    if image_to_video:
        fields["first_frame_latents"] = torch.randn(batch, channels, 2, H, W, generator=g)
    return ClipBatch(
        latents=torch.randn(batch, channels, frames, H, W, generator=g),
        text=torch.randn(batch, 5, 24, generator=g),
        null_text=torch.zeros(1, 5, 24),
        track_coords=torch.rand(batch, pixel_frames, tracks, 2, generator=g),
        track_visibility=torch.ones(batch, pixel_frames, tracks),
        track_ids=torch.randint(0, 1000, (batch, tracks), generator=g),
        **fields,
    )


def new_teacher(seed=0, **config):
    return build_teacher(random_dit(tiny_config(**config), seed=seed), TRACK_CHANNELS, id_dim=8)


def parameters_of(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(before, model):
    return {name for name, p in model.named_parameters() if not torch.equal(before[name], p)}


# --- stage 1 ---


@pytest.mark.parametrize("zero_track_head_output", [False, True])
def test_zero_initialised_track_channels_reproduce_the_base_model(zero_track_head_output):
    base = random_dit(tiny_config(), seed=1)
    reference = copy.deepcopy(base)
    teacher = build_teacher(base, TRACK_CHANNELS, id_dim=8, zero_track_head_output=zero_track_head_output)
    assert teacher.config.in_channels == reference.config.in_channels + TRACK_CHANNELS
    batch = make_batch()
    noisy, timesteps = torch.randn_like(batch.latents), torch.tensor([900.0, 120.0])
    tracks = teacher.track_channels(batch)
    assert tracks.abs().sum() > 0 or zero_track_head_output
    with torch.no_grad():
        expected = reference(noisy, timesteps, batch.text)
        got = teacher.velocity(noisy, timesteps, batch.text, track_channels=tracks)
    # The teacher's patch embedding also sums the track channels times zero weights: the same non-zero terms,
    # possibly blocked differently, so only float32 rounding of those sums differs (a few ulp of values of
    # order 1, carried through two tiny blocks): far below 1e-6; any real leak of the tracks would be O(0.1).
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_add_track_channels_keeps_existing_columns():
    model = random_dit(tiny_config(), seed=2)
    old = model.patch_embedding.weight.detach().clone()
    add_track_channels(model, 3)
    assert model.config.in_channels == 11 and model.patch_embedding.in_channels == 11
    assert torch.equal(model.patch_embedding.weight[:, :8], old)
    assert torch.count_nonzero(model.patch_embedding.weight[:, 8:]) == 0


def test_teacher_step_changes_the_weights_and_the_track_path_learns():
    teacher = new_teacher()
    before = parameters_of(teacher)
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=1e-3)
    trainer = TeacherTrainer(teacher, optimizer, TeacherTrainingConfig(augmentation=ClipAugmentation(max_tracks=8)))
    metrics = trainer.train_step(make_batch())
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    assert "transformer.blocks.0.self_attn.q.weight" in changed(before, teacher)
    trainer.train_step(make_batch(seed=1))
    # Both sides of the zero-initialised product move: the gradient is not stuck at zero.
    moved = changed(before, teacher)
    assert {"transformer.patch_embedding.weight", "track_encoder.proj.weight", "track_encoder.temporal_conv.weight"} <= moved
    assert trainer.step == 2


def test_teacher_supports_image_to_video_conditioning():
    # A base with 8 noisy + 12 condition channels (4 mask + 8 first-frame latent), then the tracks.
    teacher = build_teacher(random_dit(tiny_config(in_channels=20), seed=3), TRACK_CHANNELS, id_dim=8)
    trainer = TeacherTrainer(teacher, torch.optim.AdamW(teacher.parameters(), lr=1e-3))
    metrics = trainer.train_step(make_batch(image_to_video=True))
    assert torch.isfinite(torch.tensor(metrics["loss"]))


def test_teacher_loss_does_not_depend_on_how_the_batch_is_split():
    teacher = new_teacher()
    config = TeacherTrainingConfig()
    batch = dataclasses.replace(make_batch(batch=4), sample_ids=torch.tensor([10, 11, 12, 13]))
    from motionstream_core.training import teacher_loss

    with torch.no_grad():
        whole = teacher_loss(teacher, config.augmentation(batch, seed=5), config, seed=5)
        halves = [teacher_loss(teacher, config.augmentation(batch.select(s), seed=5), config, seed=5)
                  for s in (slice(0, 2), slice(2, 4))]
    torch.testing.assert_close(whole, sum(halves) / 2)


# --- augmentations ---


def test_subsample_tracks_keeps_between_min_and_max_visible_tracks():
    batch = make_batch(batch=4, tracks=50)
    generators = sample_generators(0, torch.arange(4), 1)
    coords, visibility, ids = subsample_tracks(
        batch.track_coords, batch.track_visibility, batch.track_ids, generators, min_tracks=3, max_tracks=20
    )
    counts = (visibility.amax(dim=1) > 0).sum(dim=1)
    assert ((counts >= 3) & (counts <= 20)).all()
    assert coords.shape[2] == visibility.shape[2] == ids.shape[1] == int(counts.max())
    for row in ids:
        assert len(set(row.tolist())) == len(row)  # fresh, distinct ids
    # Kept tracks are tracks of the clip, not new points.
    for b in range(4):
        original = {tuple(p) for p in batch.track_coords[b, 0].tolist()}
        assert {tuple(p) for p in coords[b, 0, : int(counts[b])].tolist()} <= original


def test_per_group_subsampling_keeps_a_few_tracks_of_each_object_and_lets_still_ones_go():
    # clip 0: three objects of 5 tracks, object 2 never moves; clip 1: two objects and padding
    coords = torch.rand(2, 9, 15, 2)
    coords[0, :, 10:] = coords[0, :1, 10:]
    visibility = torch.ones(2, 9, 15)
    groups = torch.tensor([[0] * 5 + [1] * 5 + [2] * 5, [0] * 5 + [1] * 5 + [-1] * 5])
    ids = torch.arange(15).expand(2, 15)

    def kept_groups(draws, counts, dropout):
        c, v, i = subsample_tracks_per_group(coords, visibility, ids, groups, sample_generators(draws, torch.arange(2), 1),
                                             counts, dropout, randomize_ids=False)
        assert torch.equal(i, torch.arange(c.shape[2]).expand(2, -1)), "numbered 0, 1, ... as inference numbers them"
        result = []
        for b in range(2):
            visible = int((v[b].amax(dim=0) > 0).sum())
            assert (v[b, :, visible:] == 0).all(), "kept tracks come first"
            origin = [int((coords[b, 0] == point).all(dim=-1).nonzero()[0]) for point in c[b, 0, :visible]]
            assert origin == sorted(origin), "in their original order"
            result.append([int(groups[b, n]) for n in origin])
        return result

    for draws in range(5):
        one = kept_groups(draws, (1,), 0.0)
        assert one == [[0, 1, 2], [0, 1]], "one track of every object, never of the padding"
        two = kept_groups(draws, (2,), 0.0)
        assert [sorted(set(g)) for g in two] == [[0, 1, 2], [0, 1]] and [len(g) for g in two] == [6, 4]
        assert kept_groups(draws, (1,), 1.0) == [[0, 1], [0, 1]], "the still object lost its tracks"
        assert kept_groups(draws, (9,), 0.0)[0] == [0] * 5 + [1] * 5 + [2] * 5, "all of a smaller group"
    with pytest.raises(ValueError):
        subsample_tracks_per_group(coords, visibility, ids, groups, sample_generators(0, torch.arange(2), 1), (0,))


def test_temporal_masking_hides_one_contiguous_span_per_hit_track():
    visibility = torch.ones(3, 40, 30)
    generators = sample_generators(1, torch.arange(3), 1)
    untouched = mask_track_spans(visibility, generators, probability=0.0)
    assert torch.equal(untouched, visibility)
    masked = mask_track_spans(visibility, sample_generators(1, torch.arange(3), 1), probability=1.0, max_fraction=0.5)
    for b in range(3):
        for n in range(30):
            hidden = (masked[b, :, n] == 0).nonzero().flatten()
            assert 1 <= len(hidden) <= 20
            assert hidden[-1] - hidden[0] + 1 == len(hidden)


def test_condition_dropout_uses_the_null_prompt_and_zero_motion():
    batch = make_batch(batch=3)
    generators = sample_generators(0, batch.sample_ids, 1)
    dropped = drop_conditions(batch, generators, text_dropout=1.0, motion_dropout=1.0)
    assert torch.equal(dropped.text, batch.null_text)
    assert torch.equal(dropped.motion_keep, torch.zeros(3))
    kept = drop_conditions(batch, generators, text_dropout=0.0, motion_dropout=0.0)
    assert torch.equal(kept.text, batch.text) and torch.equal(kept.motion_keep, torch.ones(3))
    teacher = new_teacher()
    assert teacher.track_channels(dropped).abs().sum() == 0


def test_augmentation_of_a_clip_does_not_depend_on_its_batch():
    augment = ClipAugmentation(min_tracks=2, max_tracks=6, text_dropout=0.5, motion_dropout=0.5)
    batch = make_batch(batch=4, tracks=12)
    whole = augment(batch, seed=3)
    part = augment(batch.select([2, 3]), seed=3)
    for b in range(2):
        keep = int((part.track_visibility[b].amax(dim=0) > 0).sum())
        assert torch.equal(part.track_coords[b, :, :keep], whole.track_coords[b + 2, :, :keep])
        assert torch.equal(part.text[b], whole.text[b + 2])
        assert part.motion_keep[b] == whole.motion_keep[b + 2]


# --- stage 2 ---


def test_block_causal_mask_matches_what_the_rolling_cache_holds():
    mask = block_causal_mask(10, 1, (1, 3), sink_frames=1, window_frames=5)
    cache = CausalWanModel(random_dit(tiny_config()), "relative").new_cache(1, 2, 2, 1, 5)
    for query in range(10):
        block_end = 1 if query == 0 else 1 + 3 * ((query - 1) // 3 + 1)
        assert set(mask[query].nonzero().flatten().tolist()) == set(cache.held_frames(block_end))
    unlimited = block_causal_mask(7, 2, (3,))
    assert unlimited.shape == (14, 14)
    assert unlimited[0].sum() == 6 and unlimited[-1].all()


def test_ode_init_step_changes_the_student_and_not_the_teacher():
    teacher = new_teacher()
    student = teacher.clone()
    teacher_before, student_before = parameters_of(teacher), parameters_of(student)
    trainer = OdeInitTrainer(student, teacher, torch.optim.AdamW(student.parameters(), lr=1e-3), STREAMING,
                             OdeInitConfig(teacher_steps=4))
    metrics = trainer.train_step(make_batch())
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    assert not changed(teacher_before, teacher)
    assert "transformer.blocks.1.ffn.0.weight" in changed(student_before, student)


def test_ode_trajectory_starts_at_the_noise_and_ends_at_the_teacher_sample():
    from motionstream_core.sampling.teacher_sampler import TeacherConditions, TeacherSampler
    from motionstream_core.training import teacher_ode_trajectory

    teacher = new_teacher()
    batch = make_batch(batch=1)
    noise = torch.randn_like(batch.latents)
    config = dataclasses.replace(STREAMING, shift=5.0)
    trajectory = teacher_ode_trajectory(teacher, batch, noise, config, teacher_steps=6, text_scale=2.0, motion_scale=1.0)
    assert torch.equal(trajectory.states[0], noise)  # the first student step is 1000 (sigma 1)
    assert trajectory.states.shape[0] == len(config.denoising_steps)
    # With no student level off the teacher grid, the end point is the teacher sampler's sample.
    on_grid = dataclasses.replace(config, denoising_steps=(1000,))
    end = teacher_ode_trajectory(teacher, batch, noise, on_grid, teacher_steps=6, text_scale=2.0, motion_scale=1.0).clean
    sampler = TeacherSampler(teacher.transformer, steps=6, shift=5.0, text_scale=2.0, motion_scale=1.0)
    conditions = TeacherConditions(text=batch.text, null_text=batch.null_text, track_channels=teacher.track_channels(batch))
    torch.testing.assert_close(end, sampler.sample(noise, conditions), rtol=1e-5, atol=1e-5)


# --- stage 3 ---


def test_grad_chunk_forward_equals_the_inference_forward_and_leaves_the_cache_alone():
    model = random_dit(tiny_config(), seed=4)
    causal = CausalWanModel(model, "relative")
    context = causal.encode_context(torch.randn(1, 5, 24))
    cache = causal.new_cache(1, H, W, sink_frames=1, window_frames=4)
    for start in (0, 3):
        causal.forward_chunk(torch.randn(1, 8, 3, H, W), 500.0, context, cache, start)
    chunk = torch.randn(1, 8, 3, H, W, requires_grad=True)
    snapshot = [k.clone() for k in cache.keys]
    with_grad = causal.forward_chunk_with_grad(chunk, 250.0, context, cache, 6)
    assert all(torch.equal(a, b) for a, b in zip(snapshot, cache.keys))
    inference = causal.forward_chunk(chunk.detach(), 250.0, context, cache, 6)
    torch.testing.assert_close(with_grad, inference, rtol=1e-5, atol=1e-6)
    causal.forward_chunk(torch.randn(1, 8, 3, H, W), 0.0, context, cache, 6)  # later in-place writes
    with_grad.square().sum().backward()
    assert chunk.grad is not None and chunk.grad.abs().sum() > 0
    assert model.blocks[0].self_attn.q.weight.grad.abs().sum() > 0


def test_rollout_is_the_streaming_session_when_every_block_runs_all_steps():
    student = new_teacher(seed=5)
    batch = make_batch(batch=1, frames=9)
    steps = len(STREAMING.denoising_steps)
    plan = RolloutPlan(exit_steps=(steps - 1,) * 3, window_start=0, grad_blocks=frozenset())
    with torch.no_grad():
        rollout = self_forcing_rollout(student, batch, STREAMING, plan, SeededNoise(11))

    session = StreamingSession(student.transformer, STREAMING, latent_height=H, latent_width=W, noise=SeededNoise(11))
    tracks = lambda start, frames: student.track_channels(batch, start, frames).detach()  # noqa: E731
    session.start(StreamConditions(text=batch.text, motion_providers=[tracks]))
    streamed = torch.cat([chunk.latents for chunk in session.stream(3)], dim=2)
    torch.testing.assert_close(rollout, streamed, rtol=1e-5, atol=1e-5)


def test_rollout_plan_scores_the_teacher_window_and_only_its_blocks_carry_gradient():
    config = SelfForcingDMDConfig(teacher_frames=6, rollout_frames=12, same_exit_step_across_blocks=False)
    plan = plan_rollout(STREAMING, config, torch.Generator().manual_seed(0), with_grad=True)
    assert plan.window_start == 6 and plan.grad_blocks == {2, 3}
    assert len(plan.exit_steps) == 4 and all(0 <= s < 3 for s in plan.exit_steps)
    random_window = dataclasses.replace(config, score_window="random")
    starts = {plan_rollout(STREAMING, random_window, torch.Generator().manual_seed(s), True).window_start
              for s in range(20)}
    assert starts == {0, 3, 6}
    with pytest.raises(ValueError):
        plan_rollout(STREAMING, dataclasses.replace(config, rollout_frames=10), torch.Generator(), True)


def test_dmd_step_updates_generator_critic_and_ema_on_schedule():
    teacher = new_teacher(seed=6)
    generator, critic = teacher.clone(), teacher.clone()
    config = SelfForcingDMDConfig(teacher_frames=6, rollout_frames=9, generator_update_every=2, ema_decay=0.5)
    trainer = SelfForcingDMDTrainer(
        generator, critic, teacher,
        torch.optim.AdamW(generator.parameters(), lr=1e-3), torch.optim.AdamW(critic.parameters(), lr=1e-3),
        STREAMING, config,
    )
    teacher_before, generator_before, critic_before = parameters_of(teacher), parameters_of(generator), parameters_of(critic)
    metrics = trainer.train_step(make_batch(frames=9))
    assert set(metrics) == {"generator_loss", "critic_loss"}
    assert not changed(teacher_before, teacher)
    generator_moved = changed(generator_before, generator)
    assert "transformer.blocks.0.self_attn.q.weight" in generator_moved
    assert "track_encoder.temporal_conv.weight" in generator_moved
    assert "transformer.blocks.0.cross_attn.k.weight" in changed(critic_before, critic)
    name = "transformer.blocks.0.self_attn.q.weight"
    expected_ema = 0.5 * generator_before[name] + 0.5 * dict(generator.named_parameters())[name].detach()
    torch.testing.assert_close(trainer.ema.shadow[name], expected_ema)

    generator_after_first = parameters_of(generator)
    critic_after_first = parameters_of(critic)
    metrics = trainer.train_step(make_batch(frames=9, seed=1))
    assert set(metrics) == {"critic_loss"}  # the generator waits for every second step
    assert not changed(generator_after_first, generator)
    assert changed(critic_after_first, critic)


def test_dmd_loss_gradient_is_the_normalised_score_difference():
    generated = torch.randn(2, 3, 4, requires_grad=True)
    real, fake = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    dmd_loss(generated, real, fake).backward()
    normalizer = (generated.detach() - real).abs().mean(dim=(1, 2), keepdim=True)
    expected = (fake - real) / normalizer / generated.numel()
    torch.testing.assert_close(generated.grad, expected.to(generated.grad))


def _gaussian_denoiser(noisy, sigma, mean, std):
    """E[x0 | x_sigma] for x0 ~ N(mean, std^2) and x_sigma = (1 - sigma) x0 + sigma eps, per dimension."""
    alpha = 1 - sigma
    variance = alpha**2 * std**2 + sigma**2
    return mean + alpha * std**2 / variance * (noisy - alpha * mean)


def test_dmd_moves_a_generator_to_the_teacher_distribution():
    """Teacher N([2, -1], diag([0.5, 1.5])^2) with its exact denoiser; the critic is the exact denoiser of the
    generator's current distribution. DMD alone must move x = mu + s * z there."""
    torch.manual_seed(0)
    teacher_mean, teacher_std = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.5])
    mean = torch.zeros(2, requires_grad=True)
    log_std = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.Adam([mean, log_std], lr=0.03)
    for _ in range(400):
        z = torch.randn(512, 2)
        x = mean + log_std.exp() * z
        sigma = torch.rand(512, 1) * 0.96 + 0.02
        with torch.no_grad():
            noisy = (1 - sigma) * x + sigma * torch.randn_like(x)
            real = _gaussian_denoiser(noisy, sigma, teacher_mean, teacher_std)
            fake = _gaussian_denoiser(noisy, sigma, mean.detach(), log_std.detach().exp())
        optimizer.zero_grad()
        dmd_loss(x, real, fake).backward()
        optimizer.step()
    torch.testing.assert_close(mean.detach(), teacher_mean, atol=0.1, rtol=0)
    torch.testing.assert_close(log_std.detach().exp(), teacher_std, atol=0.1, rtol=0)


# --- stage 3 against the data ---


def test_regression_step_updates_the_student_and_its_ema_with_no_teacher():
    student = new_teacher(seed=8)
    config = SelfForcingRegressionConfig(rollout_frames=9, ema_decay=0.5, augmentation=NO_AUGMENTATION)
    trainer = SelfForcingRegressionTrainer(student, torch.optim.AdamW(student.parameters(), lr=1e-3), STREAMING, config)
    before = parameters_of(student)
    metrics = trainer.train_step(make_batch(frames=9))
    assert set(metrics) == {"loss"} and metrics["loss"] > 0
    moved = changed(before, student)
    assert {"transformer.blocks.0.self_attn.q.weight", "track_encoder.temporal_conv.weight"} <= moved
    name = "transformer.blocks.0.self_attn.q.weight"
    expected_ema = 0.5 * before[name] + 0.5 * dict(student.named_parameters())[name].detach()
    torch.testing.assert_close(trainer.ema.shadow[name], expected_ema)
    with pytest.raises(ValueError, match="shorter than the 9-frame rollout"):
        trainer.train_step(make_batch(frames=6))
    with pytest.raises(ValueError, match="channel_weights"):
        SelfForcingRegressionTrainer(student, trainer.optimizer, STREAMING,
                                     dataclasses.replace(config, channel_weights=(1.0, 2.0)))


def test_regression_moves_the_students_own_rollouts_toward_the_clip():
    torch.manual_seed(0)
    student = new_teacher(seed=9)
    batch = make_batch(batch=2, frames=9, seed=4)
    config = SelfForcingRegressionConfig(rollout_frames=9, augmentation=NO_AUGMENTATION)
    trainer = SelfForcingRegressionTrainer(student, torch.optim.AdamW(student.parameters(), lr=3e-3), STREAMING, config)
    last_step = len(STREAMING.denoising_steps) - 1
    plan = RolloutPlan(exit_steps=(last_step,) * 3, window_start=0, grad_blocks=frozenset())

    def inference_error():
        with torch.no_grad():
            rollout = self_forcing_rollout(student, batch, STREAMING, plan, PerSampleNoise(5, batch.sample_ids, 4))
        return float((rollout - batch.latents).square().mean())

    start = inference_error()
    for _ in range(40):
        trainer.train_step(batch)
    assert inference_error() < 0.5 * start


def test_weighted_regression_loss_scales_each_channel():
    generated, target = torch.zeros(1, 2, 1, 1, 1), torch.tensor([1.0, 2.0]).view(1, 2, 1, 1, 1)
    assert float(weighted_regression_loss(generated, target, None)) == pytest.approx(2.5)
    # weights (1, 3) normalised to mean 1: (0.5 * 1 + 1.5 * 4) / 2
    assert float(weighted_regression_loss(generated, target, torch.tensor([1.0, 3.0]))) == pytest.approx(3.25)
    assert float(weighted_regression_loss(generated, target, torch.tensor([0.0, 1.0]))) == pytest.approx(4.0)


def test_cells_that_move_weigh_more_in_the_regression_loss():
    # a still background, one cell that changes after frame 0 (a sprite arriving)
    target = torch.zeros(1, 2, 3, 2, 2)
    target[0, :, 1:, 0, 1] = 1.0
    changed = changed_cells(target, torch.tensor([1.0, 3.0]), threshold=1e-3)
    assert changed.shape == (1, 1, 3, 2, 2)
    assert changed.sum() == 2 and bool(changed[0, 0, 1:, 0, 1].all()), "the cell on frames 1 and 2, never frame 0"
    generated = torch.zeros_like(target)
    generated[0, :, 0, 1, 1] = 1.0  # the same error once on a still cell
    uniform = float(weighted_regression_loss(generated, target, None))
    # errors: 2 moving cells of 1 each (per channel), 1 still cell of 1; weights 5 / 1 over 12 cells
    weighted = float(weighted_regression_loss(generated, target, None, 1 + 4 * changed))
    assert uniform == pytest.approx(3 / 12)
    assert weighted == pytest.approx((2 * 5 + 1) / 12 / ((2 * 5 + 10) / 12))
    with pytest.raises(ValueError, match="motion_weight"):
        SelfForcingRegressionConfig(motion_weight=-1.0)


def test_ema_math():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = ExponentialMovingAverage(model, decay=0.9, start_step=2)
    values = [3.0, 5.0, 7.0, 11.0]
    expected = 1.0
    for step, value in enumerate(values):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model, step)
        expected = value if step < 2 else 0.9 * expected + 0.1 * value
        torch.testing.assert_close(ema.shadow["weight"], torch.full((1, 2), expected))
    target = torch.nn.Linear(2, 1, bias=False)
    ema.copy_to(target)
    assert torch.allclose(target.weight, torch.full((1, 2), expected))


# --- checkpoints and config ---


def test_final_weights_load_through_load_dit(tmp_path):
    model = new_teacher(seed=7)
    path = tmp_path / "student.safetensors"
    save_weights(path, model, STREAMING)
    transformer, track_weights = load_dit(path)
    assert read_config_file(path) == model.config
    assert set(track_weights) == {f"track_encoder.{k}" for k in model.track_encoder.state_dict()}
    for name, value in model.transformer.state_dict().items():
        assert torch.equal(transformer.state_dict()[name], value), name
    loaded, streaming = load_weights(path)
    assert streaming == STREAMING
    batch = make_batch(batch=1)
    with torch.no_grad():
        expected = model.velocity(batch.latents, torch.tensor([500.0]), batch.text, track_channels=model.track_channels(batch))
        got = loaded.velocity(batch.latents, torch.tensor([500.0]), batch.text, track_channels=loaded.track_channels(batch))
    assert torch.equal(got, expected)


def test_training_state_round_trip(tmp_path):
    teacher = new_teacher(seed=8)
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=1e-3)
    trainer = TeacherTrainer(teacher, optimizer)
    ema = ExponentialMovingAverage(teacher, 0.9)
    trainer.train_step(make_batch())
    ema.update(teacher, 0)
    path = tmp_path / "state.safetensors"
    save_training_state(path, trainer.step, {"teacher": teacher}, {"teacher": (teacher, optimizer)}, {"teacher": ema})

    restored = new_teacher(seed=9)
    restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=1e-3)
    restored_ema = ExponentialMovingAverage(restored, 0.9)
    step = load_training_state(path, {"teacher": restored}, {"teacher": (restored, restored_optimizer)},
                               {"teacher": restored_ema})
    assert step == 1
    assert not changed(parameters_of(teacher), restored)
    assert all(torch.equal(restored_ema.shadow[k], v) for k, v in ema.shadow.items())
    # The next step is the same from the original and from the restored state.
    resumed = TeacherTrainer(restored, restored_optimizer)
    resumed.step = step
    batch = make_batch(seed=3)
    assert trainer.train_step(batch) == resumed.train_step(batch)
    assert not changed(parameters_of(teacher), restored)


def test_run_config_is_built_from_nested_json():
    config = build_dataclass(RunConfig, json.loads(json.dumps({
        "steps": 3,
        "streaming": {"sink_frames": 1, "window_frames": 4, "block_frames": [3]},
        "teacher": {"sigma": {"distribution": "logit_normal", "shift": 3.0}, "augmentation": {"max_tracks": 64}},
        "dmd": {"generator_update_every": 5, "score_window": "random"},
        "optimizer": {"betas": [0.0, 0.999]},
    })))
    assert config.streaming.block_frames == (3,) and config.teacher.sigma.distribution == "logit_normal"
    assert config.teacher.augmentation.max_tracks == 64 and config.optimizer.betas == (0.0, 0.999)
    with pytest.raises(ValueError, match="unknown"):
        build_dataclass(RunConfig, {"dmd": {"generator_every": 5}})


def test_per_sample_noise_is_independent_of_the_batch():
    whole = PerSampleNoise(4, [7, 8, 9], stream=2).renoise(1, 2, (3, 2, 1, 2, 2))
    part = PerSampleNoise(4, [9], stream=2).renoise(1, 2, (1, 2, 1, 2, 2))
    assert torch.equal(whole[2:], part)
    assert not torch.equal(whole[0], whole[1])


def test_model_input_channel_count_is_checked():
    model = TrackConditionedDiT(random_dit(tiny_config()))
    with pytest.raises(ValueError, match="input channels"):
        model.model_input(torch.zeros(1, 8, 3, H, W), torch.zeros(1, 2, 3, H, W), None)


def test_activation_checkpointing_gives_the_same_step():
    from motionstream_core.training.distributed import checkpoint_activations

    plain = new_teacher(seed=10)
    recomputing = checkpoint_activations(plain.clone())
    batch = make_batch()
    results = []
    for model in (plain, recomputing):
        trainer = TeacherTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1))
        results.append(trainer.train_step(batch)["loss"])
    assert results[0] == results[1]
    for (name, a), b in zip(plain.named_parameters(), recomputing.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_cli_runs_the_three_stages_in_sequence_and_resumes(tmp_path, capsys):
    from motionstream_core.training.cli import main

    config = tmp_path / "run.json"
    config.write_text(json.dumps({
        "output_dir": str(tmp_path / "out"), "steps": 2, "batch_size": 2, "save_every": 1,
        "model": {"wan_config": dataclasses.asdict(tiny_config()), "track_channels": TRACK_CHANNELS, "track_id_dim": 8},
        "data": {"kind": "random", "kwargs": {"channels": 8, "num_frames": 6, "latent_height": H, "latent_width": W,
                                              "text_len": 5, "text_dim": 24, "num_tracks": 6}},
        "streaming": dataclasses.asdict(STREAMING),
        "ode_init": {"teacher_steps": 3},
        "dmd": {"teacher_frames": 6, "generator_update_every": 2},
    }))
    out = tmp_path / "out"
    main(["teacher", "--config", str(config)])
    main(["ode_init", "--config", str(config), "--set", f"model.teacher_weights={out / 'teacher.safetensors'}"])
    dmd = ["dmd", "--config", str(config), "--set", f"model.teacher_weights={out / 'teacher.safetensors'}",
           "--set", f"model.student_weights={out / 'ode_init.safetensors'}"]
    main(dmd)
    main(dmd + ["--set", "steps=3"])
    assert "resumed from" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 0, 1, 0, 1, 2]
    assert set(records[-2]) == {"step", "critic_loss"} and "generator_loss" in records[-1]  # every 2nd step
    student, streaming = load_weights(out / "dmd_ema.safetensors")
    assert streaming == STREAMING and student.track_encoder is not None
    assert student.config.in_channels == 8 + TRACK_CHANNELS
