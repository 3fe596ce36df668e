"""The track head reproduces the published MotionStream-style encoder and streams by window."""

import math

import mpmath
import numpy as np
import pytest
import torch
from safetensors import safe_open

from motionstream_core.motion import track_head
from motionstream_core.motion.track_head import (
    TrackEncoder,
    rasterize_tracks,
    track_head_inputs,
    track_id_embedding,
)
from motionstream_core.motion.tracks import TrackSet

WINDOWS = [(0, 1), (1, 4), (4, 6)]


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    with safe_open(str(fixtures_dir / "track_encoder_random.safetensors"), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        meta = handle.metadata()
    return tensors, {key: int(value) for key, value in meta.items()}


@pytest.fixture(scope="module")
def golden_bound(golden):
    """How far the float32 reference that wrote the fixture may lie from this track head, per element.

    The reference computed ``exp`` and ``cos``/``sin`` in float32 on some CPU. Its ``exp`` is within one
    ulp (``freq * 2**-23``), which moves the phase of id ``n`` by up to ``n * freq * 2**-23`` (3e-3 rad at
    id 99,999 for the highest frequency), and its ``cos``/``sin`` add at most 4 ulps (``2**-22``). Each
    embedding entry can therefore differ by ``n * freq * 2**-23 + 2**-22``; the head is linear in the
    embeddings, so the bound of an output is the head with absolute weights and no biases applied to
    those per-entry bounds (the fixture's visibility is 0/1). This head differs from the fixture by 4.3e-4 where the bound
    is 3.8e-2: the fixture's CPU rounded one frequency (index 3) an ulp away from the exact value.
    """
    tensors, meta = golden
    half = meta["id_dim"] // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)

    def entry_bounds(track_ids, dim):
        phase_bound = track_ids.to(torch.float64).unsqueeze(-1) * frequencies * 2.0**-23 + 2.0**-22
        return torch.cat([phase_bound, phase_bound], dim=-1).clamp(max=2.0).to(torch.float32)

    magnitude = TrackEncoder.from_state_dict(
        {key: value.abs() for key, value in tensors.items() if key.endswith(".weight")}, strict=False
    ).eval()
    with torch.no_grad(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(track_head, "track_id_embedding", entry_bounds)
        bound = magnitude(
            tensors["io.coords"], tensors["io.visibility"], tensors["io.track_ids"],
            latent_height=meta["latent_h"], latent_width=meta["latent_w"],
        )
    return bound * (1 + 1e-3) + 1e-6  # float32 rounding inside the head itself


def assert_within(actual, expected, bound):
    excess = (actual - expected).abs() - bound
    assert excess.max() <= 0, f"differs from the reference by {excess.max().item():.3g} beyond the stated bound"


@pytest.fixture(scope="module")
def golden_encoder(golden):
    tensors, _ = golden
    return TrackEncoder.from_state_dict(tensors, prefix="track_encoder.").eval()


def test_loading_derives_the_architecture_from_weight_shapes(golden, golden_encoder):
    _, meta = golden
    assert golden_encoder.id_dim == meta["id_dim"] == 64
    assert golden_encoder.channels == meta["track_channels"] == 16
    assert golden_encoder.temporal_compression == 4
    assert golden_encoder.temporal_conv.bias is not None and golden_encoder.proj.bias is not None


@torch.no_grad()
def test_full_encoding_matches_reference(golden, golden_encoder, golden_bound):
    tensors, meta = golden
    encoded = golden_encoder(
        tensors["io.coords"], tensors["io.visibility"], tensors["io.track_ids"],
        latent_height=meta["latent_h"], latent_width=meta["latent_w"],
    )
    assert encoded.shape[2] == meta["latent_t"]
    assert_within(encoded, tensors["io.encoded_full"], golden_bound)
    # The bound is far below the size of the outputs: a structural error would not hide in it.
    assert golden_bound.median() < 0.01 * tensors["io.encoded_full"].abs().median()


@torch.no_grad()
@pytest.mark.parametrize("start, stop", WINDOWS)
def test_windows_read_only_the_pixel_frames_they_need(golden, golden_encoder, golden_bound, start, stop):
    tensors, meta = golden
    first, last = golden_encoder.pixel_frame_range(start, stop - start)
    window = golden_encoder.encode_window(
        tensors["io.coords"][:, first:last], tensors["io.visibility"][:, first:last], tensors["io.track_ids"],
        latent_start=start, latent_frames=stop - start,
        latent_height=meta["latent_h"], latent_width=meta["latent_w"], pixel_start=first,
    )
    assert_within(window, tensors[f"io.window_{start}_{stop}"], golden_bound[:, :, start:stop])
    # Windows and the full encoding run the same float32 code here: they agree to float32 rounding.
    full = golden_encoder(
        tensors["io.coords"], tensors["io.visibility"], tensors["io.track_ids"],
        latent_height=meta["latent_h"], latent_width=meta["latent_w"],
    )
    torch.testing.assert_close(window, full[:, :, start:stop], atol=1e-6, rtol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("start, stop", WINDOWS)
def test_windows_from_the_full_tracks(golden, golden_encoder, golden_bound, start, stop):
    tensors, meta = golden
    window = golden_encoder.encode_window(
        tensors["io.coords"], tensors["io.visibility"], tensors["io.track_ids"],
        latent_start=start, latent_frames=stop - start,
        latent_height=meta["latent_h"], latent_width=meta["latent_w"],
    )
    assert_within(window, tensors[f"io.window_{start}_{stop}"], golden_bound[:, :, start:stop])


def test_pixel_frame_ranges():
    encoder = TrackEncoder(id_dim=8, channels=4)
    assert encoder.pixel_frame_range(0, 1) == (0, 1)
    assert encoder.pixel_frame_range(1, 3) == (1, 13)
    assert encoder.pixel_frame_range(4, 2) == (13, 21)
    assert [encoder.latent_frame_count(t) for t in (1, 4, 5, 21, 81)] == [1, 1, 2, 6, 21]


def _random_inputs(batch=2, frames=33, tracks=9, seed=0):
    generator = torch.Generator().manual_seed(seed)
    coords = torch.rand(batch, frames, tracks, 2, generator=generator) * 1.4 - 0.2
    visibility = (torch.rand(batch, frames, tracks, generator=generator) > 0.3).float()
    ids = torch.randint(0, 100_000, (batch, tracks), generator=generator)
    return coords, visibility, ids


def _random_encoder(seed=0, **kwargs):
    torch.manual_seed(seed)
    encoder = TrackEncoder(**({"id_dim": 32, "channels": 8} | kwargs)).eval()
    for parameter in encoder.parameters():
        torch.nn.init.normal_(parameter)
    return encoder


@torch.no_grad()
def test_every_window_equals_the_slice_of_the_full_encoding():
    encoder = _random_encoder()
    coords, visibility, ids = _random_inputs()
    full = encoder(coords, visibility, ids, latent_height=5, latent_width=7)
    assert full.shape == (2, 8, 9, 5, 7)
    for start in range(9):
        for count in range(1, 9 - start + 1):
            first, last = encoder.pixel_frame_range(start, count)
            window = encoder.encode_window(
                coords[:, first:last], visibility[:, first:last], ids,
                latent_start=start, latent_frames=count, latent_height=5, latent_width=7, pixel_start=first,
            )
            torch.testing.assert_close(window, full[:, :, start:start + count], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_live_edits_only_change_future_latent_frames():
    encoder = _random_encoder(seed=1)
    coords, visibility, ids = _random_inputs(seed=1)
    before = encoder(coords, visibility, ids, latent_height=5, latent_width=7)
    edited_coords, edited_visibility = coords.clone(), visibility.clone()
    # Pixel frame 4k + 1 is the first one read by latent frame k + 1 (k = 3).
    edited_coords[:, 13:] = torch.rand_like(edited_coords[:, 13:])
    edited_visibility[:, 13:] = 1.0
    after = encoder(edited_coords, edited_visibility, ids, latent_height=5, latent_width=7)
    assert torch.equal(after[:, :, :4], before[:, :, :4])
    assert not torch.allclose(after[:, :, 4:], before[:, :, 4:])


@torch.no_grad()
def test_pixel_frames_not_drawn_yet_count_as_invisible():
    encoder = _random_encoder(seed=2)
    coords, visibility, ids = _random_inputs(frames=10, seed=2)
    short = encoder(coords, visibility, ids, latent_height=4, latent_width=4, latent_frames=5)
    padded_coords = torch.cat([coords, torch.rand(2, 7, 9, 2)], dim=1)
    padded_visibility = torch.cat([visibility, torch.zeros(2, 7, 9)], dim=1)
    full = encoder(padded_coords, padded_visibility, ids, latent_height=4, latent_width=4)
    assert full.shape[2] == 5
    # The padded frames add zero maps: the same products, in a conv over a longer input whose kernel may block
    # the sums differently, so only float32 rounding differs (ulps of values of order 1); a drawn point that
    # leaked in would change the output by O(1).
    torch.testing.assert_close(short, full, atol=1e-6, rtol=0)


@torch.no_grad()
def test_window_needs_its_history():
    encoder = _random_encoder()
    coords, visibility, ids = _random_inputs()
    with pytest.raises(ValueError, match="need pixel frames from 5"):
        encoder.encode_window(coords, visibility, ids, latent_start=2, latent_frames=1,
                              latent_height=4, latent_width=4, pixel_start=6)


def test_id_embedding_is_cosines_then_sines():
    ids = torch.tensor([0, 1, 17, 99_999])
    embedding = track_id_embedding(ids, 8)
    assert embedding.dtype == torch.float32 and embedding.shape == (4, 8)
    assert embedding[0].tolist() == [1.0] * 4 + [0.0] * 4
    for row, track_id in enumerate(ids.tolist()[:3]):
        for i in range(4):
            phase = track_id * math.exp(-math.log(10000.0) * i / 4)
            assert embedding[row, i].item() == pytest.approx(math.cos(phase), abs=1e-5)
            assert embedding[row, 4 + i].item() == pytest.approx(math.sin(phase), abs=1e-5)
    with pytest.raises(ValueError):
        track_id_embedding(ids, 7)


def _exact_embedding(track_id, dim, max_period=10000.0):
    """The id embedding from the reference's float32 phases, with exp/cos/sin evaluated exactly (mpmath)."""
    half = dim // 2
    log_scale = np.float32(-math.log(max_period))
    row = []
    for function in (mpmath.cos, mpmath.sin):
        for i in range(half):
            argument = np.float32(np.float32(i) * log_scale) / np.float32(half)
            exact_frequency = mpmath.exp(mpmath.mpf(float(argument)))
            frequency = np.float32(float(exact_frequency))
            # float64 exp rounds to the same float32 unless it lies within 2**-50 of a rounding midpoint.
            neighbours = np.nextafter(frequency, np.float32([0, 2]))
            midpoints = [(mpmath.mpf(float(frequency)) + mpmath.mpf(float(n))) / 2 for n in neighbours]
            assert min(abs(exact_frequency - m) for m in midpoints) > exact_frequency * 2.0**-50
            phase = np.float32(np.float32(track_id) * frequency)
            row.append(float(function(mpmath.mpf(float(phase)))))
    return torch.tensor(row, dtype=torch.float64)


@pytest.mark.parametrize("dim", [8, 64, 128, 96])
def test_id_embedding_is_the_correctly_rounded_reference_on_every_device(dim):
    mpmath.mp.prec = 100
    ids = torch.tensor([0, 1, 17, 4242, 77_777, 99_999, 16_777_216])
    embedding = track_id_embedding(ids, dim)
    expected = torch.stack([_exact_embedding(track_id, dim) for track_id in ids.tolist()])
    # One float32 rounding of a value in [-1, 1] (half an ulp, <= 2**-25) plus float64 error far below it.
    torch.testing.assert_close(embedding.to(torch.float64), expected, atol=2.0**-24, rtol=0)


def test_rasterization_snaps_clamps_sums_and_weights_by_visibility():
    coords = torch.tensor([[[[0.5, 0.5], [0.49, 0.51], [1.7, -3.0], [0.0, 0.0]]]])  # [1, 1, 4, 2]
    visibility = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]])
    ids = torch.tensor([[3, 5, 8, 13]])
    grid = rasterize_tracks(coords, visibility, ids, id_dim=6, latent_height=3, latent_width=5)
    assert grid.shape == (1, 6, 1, 3, 5)
    embedding = track_id_embedding(ids[0], 6)
    # x = 0.5 * 4 = 2, y = 0.5 * 2 = 1: both first tracks land in cell (2, 1) and add up.
    torch.testing.assert_close(grid[0, :, 0, 1, 2], embedding[0] + embedding[1])
    # (1.7, -3.0) clamps to (1, 0) -> cell x = 4, y = 0.
    torch.testing.assert_close(grid[0, :, 0, 0, 4], embedding[2])
    # The invisible track adds nothing to cell (0, 0).
    assert torch.count_nonzero(grid[0, :, 0, 0, 0]) == 0
    assert torch.count_nonzero(grid) == 2 * 6


@torch.no_grad()
def test_loading_without_biases_and_with_other_prefixes():
    source = TrackEncoder(id_dim=10, channels=6, temporal_bias=False, proj_bias=False)
    state = {f"model.track_encoder.{key}": value for key, value in source.state_dict().items()}
    state["model.blocks.0.weight"] = torch.zeros(1)
    loaded = TrackEncoder.from_state_dict(state, prefix="model.track_encoder.")
    assert (loaded.id_dim, loaded.channels) == (10, 6)
    assert loaded.temporal_conv.bias is None and loaded.proj.bias is None
    coords, visibility, ids = _random_inputs(batch=1, frames=9, tracks=3)
    torch.testing.assert_close(loaded(coords, visibility, ids, 4, 4), source(coords, visibility, ids, 4, 4))


def test_loading_keeps_the_weight_dtype():
    state = {f"track_encoder.{k}": v.to(torch.float16) for k, v in TrackEncoder(8, 4).state_dict().items()}
    loaded = TrackEncoder.from_state_dict(state)
    assert loaded.proj.weight.dtype == torch.float16


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("track_encoder.proj.weight"), "proj.weight"),
        (lambda s: s.pop("track_encoder.temporal_conv.weight"), "temporal_conv.weight"),
        (lambda s: s.__setitem__("track_encoder.proj.weight", torch.zeros(4, 5, 1, 1, 1)), "proj.weight"),
        (lambda s: s.__setitem__("track_encoder.temporal_conv.weight", torch.zeros(4, 8, 4)), "temporal_conv"),
        (lambda s: s.__setitem__("track_encoder.proj.bias", torch.zeros(3)), "proj.bias"),
        (lambda s: s.__setitem__("track_encoder.extra", torch.zeros(3)), "unexpected"),
    ],
)
def test_bad_state_dicts_raise_value_error(edit, message):
    state = {f"track_encoder.{k}": v for k, v in TrackEncoder(8, 4).state_dict().items()}
    edit(state)
    with pytest.raises(ValueError, match=message):
        TrackEncoder.from_state_dict(state)


def test_unexpected_keys_are_allowed_when_not_strict():
    state = {f"track_encoder.{k}": v for k, v in TrackEncoder(8, 4).state_dict().items()}
    state["track_encoder.extra"] = torch.zeros(1)
    assert TrackEncoder.from_state_dict(state, strict=False).id_dim == 8


def test_input_shapes_are_checked():
    encoder = TrackEncoder(8, 4)
    coords, visibility, ids = _random_inputs(batch=1, frames=5, tracks=3)
    with pytest.raises(ValueError, match="coords"):
        encoder(coords[0], visibility, ids, 4, 4)
    with pytest.raises(ValueError, match="visibility"):
        encoder(coords, visibility[:, :4], ids, 4, 4)
    with pytest.raises(ValueError, match="track_ids"):
        encoder(coords, visibility, ids[:, :2], 4, 4)


@torch.no_grad()
def test_track_head_inputs_from_a_pixel_track_set():
    points = torch.tensor([[[0.0, 0.0], [832.0, 480.0]], [[416.0, 240.0], [900.0, 10.0]]])
    tracks = TrackSet(points, [[True, True], [True, False]], 832, 480, track_ids=[42, 7])
    inputs = track_head_inputs(tracks)
    assert inputs.coords.shape == (1, 2, 2, 2) and inputs.visibility.shape == (1, 2, 2)
    torch.testing.assert_close(inputs.coords[0, 1, 0], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(inputs.coords[0, 0, 1], torch.tensor([1.0, 1.0]))
    assert inputs.visibility.dtype == torch.float32 and inputs.visibility.tolist() == [[[1.0, 1.0], [1.0, 0.0]]]
    assert inputs.track_ids.tolist() == [[42, 7]]
    assert inputs.occluded.tolist() == [[[0.0, 0.0], [0.0, 0.0]]]  # by default only visible points are specified
    encoded = _random_encoder()(inputs.coords, inputs.visibility, inputs.track_ids, latent_height=60, latent_width=104,
                                occluded=inputs.occluded)
    assert encoded.shape == (1, 8, 1, 60, 104)
