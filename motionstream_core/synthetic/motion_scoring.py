"""Scores for videos generated from synthetic clips: do sprites follow their tracks, and does the video drift?

Frames are float ``[T, 3, H, W]`` RGB in ``[0, 1]`` at the clip's size.

**Finding sprites** (:func:`locate_sprites`). A pixel's *chroma* is its RGB
vector minus its grey component (the channel mean). A pixel's *membership* in
sprite ``s`` is its chroma projected on the direction of the sprite colour's
chroma, divided by that chroma's length, less 1.5 times the part of its chroma
off that direction beyond a 0.08 tolerance; then mapped from
``[MEMBERSHIP_THRESHOLD, 1]`` to ``[0, 1]`` and clamped. Backgrounds (chroma at
most 0.06) and the other sprites (hues at least 48 degrees away) score 0, the
sprite's own pixels 1 whatever its texture; the map is blind to brightness.

Each sprite is then fitted with a model of the membership it should produce:
its anti-aliased shape at a candidate centre, with pixels that a sprite in
front may cover (as located; within 0.8 px) or that lie outside the frame left
out of the comparison, and its outline mixed with the colours of the located
sprites behind it. Sprites are located front to back (so the ones in front are
known), then sprites with a sprite behind them nearby are refitted once all
are known. One sprite:

1. the peak of membership summed over a box a bit smaller than the sprite,
   then the membership centroid in a window around it;
2. the centre at which the model's membership centroid equals the observed
   one, by a few Newton steps (this removes the bias of hidden parts and of
   pixel sampling that a plain centroid has);
3. where less than 90% of the sprite shows (more centres then give about the
   same centroid), Gauss-Newton steps on the squared difference between
   model and observed membership; where less than 50% shows, first a search
   over every whole-pixel shift within the sprite's reach of its visible
   part. Refitting over sprites behind uses the Gauss-Newton steps alone.

On rendered 128x128 clips (150 seeds each of 1-3 and of 4-6 sprites) the
clip-level EPE stays below 0.03 px and sprites that are at least 20% visible
are located within about 0.2 px; after a Gaussian blur of sigma 1 px plus
noise of sigma 0.03, EPE stays below about 0.15 px. Confidence is the soft
intersection over union of observed and model membership on the compared
pixels: above 0.97 on rendered frames, 0.7-0.9 after that blur, near 0 where
the sprite is missing. A sprite that is entirely hidden or missing keeps the
peak of step 1 as its position, with confidence 0.

**Track following** (:func:`score_track_following`). A requested track point
is predicted at its sprite's located centre plus the point's fixed offset
(sprites translate only). EPE is the Euclidean distance in pixels between that
and the requested position, averaged over the *scored* points: the requested
points that are visible and whose sprite shows at least 20% of its area in
the requested layout (a sliver does not pin down a centre). ``lost_fraction``
is the share of scored (frame, sprite) pairs whose confidence is below 0.5.

**Drift** over long rollouts, against a reference frame (default: the first):

- :func:`colour_drift`, frame ``t``: ``|mean_t - mean_ref| + |std_t - std_ref|``,
  the Euclidean norms (in ``[0, 1]`` intensity units) of the changes in the
  per-channel mean RGB and in the per-channel standard deviation. A uniform
  tint of +0.1 on one channel scores 0.1.
- :func:`content_drift`, frame ``t``: one minus the mean SSIM *structure* term
  ``(cov + C3) / (std_t * std_ref + C3)`` of luma (Rec. 601) in 11x11 Gaussian
  windows (sigma 1.5, ``C3 = 0.03**2 / 2``), over window centres at least 5
  pixels from the border. It ignores brightness and contrast (colour drift
  measures those) and is 0 for unchanged content, up to 2 for inverted content.

Given the clip, both drift scores leave out pixels near the *requested* sprite
positions on the reference frame and on frame ``t`` (and, for content drift,
SSIM windows touching them), so they measure the background only and are 0
on the ground-truth clip (up to float rounding, below 1e-6); a sprite
generated far off its track then counts as content drift too. Content drift
sees structure only: on a noise background a 1 px shift scores about 0.01 and
4 px about 0.13, while a smooth gradient has almost no structure to lose, so
there it mostly reacts to structure that appears (noise, artefacts). Each
returns a per-frame curve and its mean over the last quarter of the frames;
a frame on which sprites leave no background pixel to compare scores nan, and
the mean skips it.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from .synthetic_motion import ClipMetadata, SpriteAppearance, SyntheticClip, render_frames
from ..motion.tracks import TrackSet

MEMBERSHIP_THRESHOLD = 0.15
_OFF_HUE_TOLERANCE = 0.08
_OFF_HUE_WEIGHT = 1.5
_NEWTON_STEPS = 6
_NEWTON_PROBE_PX = 0.5
_MAX_NEWTON_STEP_PX = 3.0
_MIN_PREDICTED_MASS = 1.0  # pixels of visible sprite below which a centre is not refined
# Pixels this close to a located front sprite (which covers up to 0.5 px outside its outline) are not used.
_FRONT_SPRITE_MARGIN_PX = 0.8
# Below these shares of a sprite on usable pixels, a least-squares fit backs up
# centroid matching, and below the second one a grid search starts it.
_WELL_SHOWN_FRACTION = 0.9
_HALF_SHOWN_FRACTION = 0.5
_DRIFT_EXCLUSION_MARGIN_PX = 1.5
_SSIM_RADIUS = 5
_SSIM_SIGMA = 1.5
_SSIM_C3 = 0.03**2 / 2
_LUMA = (0.299, 0.587, 0.114)
_DRIFT_FRAME_CHUNK = 64


@dataclasses.dataclass(frozen=True, eq=False)
class SpriteLocations:
    positions: torch.Tensor  # float64 [T, S, 2] located sprite centres, pixels
    confidence: torch.Tensor  # float32 [T, S] in [0, 1]


@dataclasses.dataclass(frozen=True, eq=False)
class TrackFollowingScore:
    epe: float  # mean end-point error over scored requested points, pixels (nan if none)
    per_frame_epe: torch.Tensor  # float64 [T]; nan on frames without scored points
    per_track_epe: torch.Tensor  # float64 [N]; nan for tracks never scored
    lost_fraction: float  # share of scored (frame, sprite) pairs with confidence < min_confidence
    locations: SpriteLocations


@dataclasses.dataclass(frozen=True, eq=False)
class DriftCurve:
    per_frame: torch.Tensor  # float64 [T]; 0 on the reference itself, nan where no pixel is compared
    summary: float  # mean over the last ceil(T / 4) frames, ignoring nan


def colour_membership(frames: torch.Tensor, colour: tuple[float, float, float]) -> torch.Tensor:
    """Float32 ``[T, H, W]`` membership of every pixel in the sprite of ``colour`` (see the module docstring)."""
    return _ChromaFrames(frames).membership(colour)


class _ChromaFrames:
    """Per-pixel chroma of ``[T, 3, H, W]`` frames, computed once for all sprites."""

    def __init__(self, frames: torch.Tensor):
        grey = frames.mean(dim=1)
        self.channels = [frames[:, channel] - grey for channel in range(3)]
        self.squared_norm = sum(channel.square() for channel in self.channels)

    def membership(self, colour: tuple[float, float, float]) -> torch.Tensor:
        target = torch.tensor(colour, dtype=torch.float64)
        target = target - target.mean()
        length = float(target.norm())
        direction = (target / length).tolist()
        along = sum(weight * channel for weight, channel in zip(direction, self.channels))
        off = (self.squared_norm - along.square()).clamp(min=0).sqrt()
        score = (along - _OFF_HUE_WEIGHT * (off - _OFF_HUE_TOLERANCE).clamp(min=0)) / length
        return _threshold(score)


def locate_sprites(frames: torch.Tensor, clip: SyntheticClip | ClipMetadata) -> SpriteLocations:
    """Where each of the clip's sprites is on every frame, with a confidence."""
    metadata = _metadata(clip)
    frames = _checked_frames(frames, metadata.width, metadata.height)
    num_frames = int(frames.shape[0])
    positions = torch.zeros(num_frames, metadata.num_sprites, 2, dtype=torch.float64)
    confidence = torch.zeros(num_frames, metadata.num_sprites)
    chroma = _ChromaFrames(frames)
    memberships = [chroma.membership(sprite.colour) for sprite in metadata.sprites]
    centres: list[torch.Tensor | None] = [None] * metadata.num_sprites
    # Front to back, so that the sprites in front of each are already located.
    for index in reversed(range(metadata.num_sprites)):
        sprite = metadata.sprites[index]
        in_front = [(metadata.sprites[j], centres[j]) for j in range(index + 1, metadata.num_sprites)]
        centres[index], confidence[:, index] = _locate_one(memberships[index], sprite, _Surroundings(in_front))
    # A sprite's outline over a sprite behind it mixes the two colours; refit
    # those frames with the located sprites behind in the membership model.
    for index in range(1, metadata.num_sprites):
        sprite = metadata.sprites[index]
        behind = [(metadata.sprites[j], centres[j]) for j in range(index)]
        near = torch.zeros(num_frames, dtype=torch.bool)
        for other, other_centres in behind:
            gap = (centres[index] - other_centres).norm(dim=-1)
            near |= gap < sprite.bounding_radius + other.bounding_radius + 1.0
        if not bool(near.any()):
            continue
        frames_near = near.nonzero()[:, 0]
        in_front = [(metadata.sprites[j], centres[j]) for j in range(index + 1, metadata.num_sprites)]
        surroundings = _Surroundings(in_front, behind).subset(frames_near)
        refit, refit_confidence = _refine_one(
            memberships[index][frames_near], sprite, surroundings, centres[index][frames_near]
        )
        centres[index][frames_near] = refit
        confidence[frames_near, index] = refit_confidence
    for index, centre in enumerate(centres):
        positions[:, index] = centre.to(torch.float64)
    return SpriteLocations(positions, confidence)


def score_track_following(
    frames: torch.Tensor,
    clip: SyntheticClip | ClipMetadata,
    tracks: TrackSet | None = None,
    *,
    min_visible_fraction: float = 0.2,
    min_confidence: float = 0.5,
) -> TrackFollowingScore:
    """End-point error between the sprites in ``frames`` and the requested ``tracks``.

    ``tracks`` default to the clip's own; other requested tracks must use the
    clip's track ids (any subset) and have one frame per video frame (resample
    them with :func:`.track_geometry.resample_tracks` first).

    A visible requested point is scored unless less than ``min_visible_fraction``
    of its sprite would show in the requested layout (the clip's sprites at the
    centres the requested points imply): a sliver of a sprite does not pin down
    its centre.
    """
    metadata = _metadata(clip)
    if tracks is None:
        if not isinstance(clip, SyntheticClip):
            raise ValueError("pass the requested tracks, or the SyntheticClip that carries them")
        tracks = clip.tracks
    frames = _checked_frames(frames, metadata.width, metadata.height)
    if tracks.num_frames != frames.shape[0]:
        raise ValueError(f"{tracks.num_frames} track frames for {frames.shape[0]} video frames; resample the tracks")
    if (tracks.width, tracks.height) != (metadata.width, metadata.height):
        raise ValueError(f"tracks are for {tracks.width}x{tracks.height}, the clip is {metadata.width}x{metadata.height}")
    clip_track = _clip_track_indices(tracks.track_ids, metadata.track_ids)
    sprite_of_track = metadata.track_sprite[clip_track]
    offsets = metadata.track_offsets[clip_track]

    shown = _requested_visible_fraction(metadata, tracks, sprite_of_track, offsets)
    scored = tracks.visibility & (shown[:, sprite_of_track] >= min_visible_fraction)  # [T, N]
    locations = locate_sprites(frames, metadata)
    predicted = locations.positions[:, sprite_of_track] + offsets
    error = (predicted - tracks.points.to(torch.float64)).norm(dim=-1)
    masked = torch.where(scored, error, 0.0)
    count = scored.sum()
    epe = float(masked.sum() / count) if int(count) else math.nan
    per_frame = masked.sum(dim=1) / scored.sum(dim=1)  # nan where nothing is scored
    per_track = masked.sum(dim=0) / scored.sum(dim=0)

    scored_sprites = torch.zeros(frames.shape[0], metadata.num_sprites, dtype=torch.bool)
    frame_of_point = torch.arange(frames.shape[0])[:, None].expand_as(scored)
    scored_sprites[frame_of_point[scored], sprite_of_track.expand_as(scored)[scored]] = True
    lost = (locations.confidence < min_confidence) & scored_sprites
    lost_fraction = float(lost.sum() / scored_sprites.sum()) if bool(scored_sprites.any()) else 0.0
    return TrackFollowingScore(epe, per_frame, per_track, lost_fraction, locations)


def _requested_visible_fraction(
    metadata: ClipMetadata, tracks: TrackSet, sprite_of_track: torch.Tensor, offsets: torch.Tensor
) -> torch.Tensor:
    """``[T, S]`` share of each sprite showing with the sprites where the requested points put them.

    A sprite's requested centre is the mean of its visible points' centres
    (all its points' where none is visible); sprites without requested tracks
    stay on the clip's paths.
    """
    centres = metadata.centre_paths.clone()
    implied = tracks.points.to(torch.float64) - offsets  # [T, N, 2]
    for sprite in sprite_of_track.unique().tolist():
        own = sprite_of_track == sprite
        weights = tracks.visibility[:, own].to(torch.float64)  # [T, n]
        weights = torch.where(weights.sum(dim=1, keepdim=True) > 0, weights, torch.ones_like(weights))
        centres[:, sprite] = (implied[:, own] * weights[..., None]).sum(dim=1) / weights.sum(dim=1)[:, None]
    return render_frames(metadata.background, metadata.sprites, centres).visible_fraction


def track_following_epe(
    frames: torch.Tensor, clip: SyntheticClip | ClipMetadata, tracks: TrackSet | None = None
) -> float:
    """Mean end-point error in pixels over the scored requested points; see :func:`score_track_following`."""
    return score_track_following(frames, clip, tracks).epe


def colour_drift(
    frames: torch.Tensor,
    reference_frame: torch.Tensor | None = None,
    *,
    clip: SyntheticClip | ClipMetadata | None = None,
) -> DriftCurve:
    """Change of global colour statistics from the reference (see the module docstring).

    With ``clip``, statistics cover background pixels only, and the reference
    is taken to show the clip's first-frame layout.
    """
    frames, reference = _frames_and_reference(frames, reference_frame)
    num_frames, _, height, width = frames.shape
    included = _background_pixels(clip, num_frames, width, height, _DRIFT_EXCLUSION_MARGIN_PX)
    flat_reference = reference.reshape(3, -1).to(torch.float64).T  # [HW, 3]
    per_frame = torch.zeros(num_frames, dtype=torch.float64)
    for start in range(0, num_frames, _DRIFT_FRAME_CHUNK):
        stop = min(num_frames, start + _DRIFT_FRAME_CHUNK)
        chunk = frames[start:stop].reshape(stop - start, 3, -1).to(torch.float64)
        weights = included[start:stop].reshape(stop - start, -1).to(torch.float64)  # [t, HW]
        count = weights.sum(dim=1, keepdim=True)  # frames without included pixels give nan
        mean = (chunk * weights[:, None]).sum(-1) / count
        square = (chunk.square() * weights[:, None]).sum(-1) / count
        reference_mean = weights @ flat_reference / count
        reference_square = weights @ flat_reference.square() / count
        std = (square - mean.square()).clamp(min=0).sqrt()
        reference_std = (reference_square - reference_mean.square()).clamp(min=0).sqrt()
        per_frame[start:stop] = (mean - reference_mean).norm(dim=1) + (std - reference_std).norm(dim=1)
    return _curve(per_frame)


def content_drift(
    frames: torch.Tensor,
    reference_frame: torch.Tensor | None = None,
    *,
    clip: SyntheticClip | ClipMetadata | None = None,
) -> DriftCurve:
    """Loss of local luma structure relative to the reference (see the module docstring).

    With ``clip``, only windows on the background count, and the reference is
    taken to show the clip's first-frame layout.
    """
    frames, reference = _frames_and_reference(frames, reference_frame)
    num_frames, _, height, width = frames.shape
    if min(width, height) <= 2 * _SSIM_RADIUS:
        raise ValueError(f"frames must be larger than {2 * _SSIM_RADIUS} pixels for content drift")
    included = _background_pixels(clip, num_frames, width, height, _DRIFT_EXCLUSION_MARGIN_PX + _SSIM_RADIUS)
    included = included[:, _SSIM_RADIUS:height - _SSIM_RADIUS, _SSIM_RADIUS:width - _SSIM_RADIUS]
    luma_weights = torch.tensor(_LUMA).view(1, 3, 1, 1)
    reference_luma = (reference.unsqueeze(0) * luma_weights).sum(1, keepdim=True)
    reference_mean = _gaussian_blur(reference_luma)
    reference_var = (_gaussian_blur(reference_luma.square()) - reference_mean.square()).clamp(min=0)
    per_frame = torch.zeros(num_frames, dtype=torch.float64)
    for start in range(0, num_frames, _DRIFT_FRAME_CHUNK):
        stop = min(num_frames, start + _DRIFT_FRAME_CHUNK)
        # Statistics of the change from the reference rather than of the frame:
        # local variances of flat backgrounds are ~1e-7, and float32 cancellation
        # in E[x^2] - E[x]^2 would otherwise make even unchanged frames drift.
        change = (frames[start:stop] * luma_weights).sum(1, keepdim=True) - reference_luma
        change_mean = _gaussian_blur(change)
        change_var = (_gaussian_blur(change.square()) - change_mean.square()).clamp(min=0)
        cross = _gaussian_blur(change * reference_luma) - change_mean * reference_mean
        var = (reference_var + 2 * cross + change_var).clamp(min=0)
        covariance = reference_var + cross
        structure = ((covariance + _SSIM_C3) / ((var * reference_var).sqrt() + _SSIM_C3))[:, 0]
        weights = included[start:stop].to(torch.float64)
        count = weights.sum(dim=(1, 2))  # frames without included pixels give nan
        per_frame[start:stop] = 1.0 - (structure.to(torch.float64) * weights).sum(dim=(1, 2)) / count
    return _curve(per_frame)


def _locate_one(
    membership: torch.Tensor, sprite: SpriteAppearance, surroundings: _Surroundings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 centres ``[T, 2]`` and confidences ``[T]`` of one sprite, searched over the whole frame."""
    radius = _window_radius(sprite)
    peak = _box_peak(membership, max(1, int(round(0.6 * sprite.size))))
    window = _Window(membership, peak, radius)
    mass, centroid = window.centroid(window.values)
    rough = torch.where(mass[:, None] > 0, centroid, peak)

    model = _SpriteModel(_Window(membership, rough, radius), sprite, surroundings)
    observed_mass, observed_centroid = model.window.centroid(model.observed)
    centre = torch.where(observed_mass[:, None] > 0, observed_centroid, rough)
    # Match the centroid of a model of the sprite rather than take the centroid
    # itself: this removes the bias of hidden parts and of pixel sampling.
    found = (observed_mass > 0).nonzero()[:, 0]
    if found.numel():
        centre[found] = _match_centroid(model.subset(found), observed_centroid[found], centre[found])

    # The more of the sprite is hidden, the more centres give about the same
    # centroid: partly hidden sprites also get a least-squares fit of the whole
    # membership, and mostly hidden ones a grid search before it.
    shown = model.predict(centre[:, None, :])[:, 0].sum(dim=(1, 2)) / model.unhidden_mass(centre).clamp(min=1e-12)
    partly_hidden = ((observed_mass > 0) & (shown < _WELL_SHOWN_FRACTION)).nonzero()[:, 0]
    if partly_hidden.numel():
        part = model.subset(partly_hidden)
        start = centre[partly_hidden]
        centre[partly_hidden], _ = _least_squares(part, start, part.squared_error(start[:, None, :])[:, 0])
    mostly_hidden = ((observed_mass > 0) & (shown < _HALF_SHOWN_FRACTION)).nonzero()[:, 0]
    if mostly_hidden.numel():
        centre[mostly_hidden] = _fit_hidden_sprite(
            membership[mostly_hidden], sprite, surroundings.subset(mostly_hidden),
            observed_centroid[mostly_hidden], centre[mostly_hidden],
        )
    return centre, _confidence(model, centre)


def _refine_one(
    membership: torch.Tensor, sprite: SpriteAppearance, surroundings: _Surroundings, start: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres ``[T, 2]`` and confidences ``[T]`` refined by least squares from nearby ``start`` centres."""
    model = _SpriteModel(_Window(membership, start, _window_radius(sprite)), sprite, surroundings)
    centre, _ = _least_squares(model, start, model.squared_error(start[:, None, :])[:, 0])
    return centre, _confidence(model, centre)


def _window_radius(sprite: SpriteAppearance) -> int:
    return int(math.ceil(1.5 * sprite.bounding_radius + 2))


def _confidence(model: _SpriteModel, centre: torch.Tensor) -> torch.Tensor:
    """``[T]`` soft intersection over union of predicted and observed membership."""
    predicted = model.predict(centre[:, None, :])[:, 0]
    union = torch.maximum(predicted, model.observed).sum(dim=(1, 2))
    overlap = torch.minimum(predicted, model.observed).sum(dim=(1, 2))
    return torch.where(union > 0, overlap / union.clamp(min=1e-12), 0.0)


def _match_centroid(model: _SpriteModel, target: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Centres ``[F, 2]`` at which the predicted membership has centroid ``target``, by Newton steps."""
    centre = start
    probes = torch.tensor([[0.0, 0.0], [_NEWTON_PROBE_PX, 0.0], [0.0, _NEWTON_PROBE_PX]])
    for _ in range(_NEWTON_STEPS):
        mass, centroids = model.window.centroid(model.predict(centre[:, None, :] + probes))  # [F, 3], [F, 3, 2]
        residual = centroids[:, 0] - target
        jacobian = torch.stack(
            [(centroids[:, 1] - centroids[:, 0]), (centroids[:, 2] - centroids[:, 0])], dim=-1
        ) / _NEWTON_PROBE_PX
        step = torch.linalg.solve(jacobian + 1e-3 * torch.eye(2), residual.unsqueeze(-1))[..., 0]
        step = step * (_MAX_NEWTON_STEP_PX / step.norm(dim=-1, keepdim=True).clamp(min=_MAX_NEWTON_STEP_PX))
        refine = (mass >= _MIN_PREDICTED_MASS).all(dim=1) & torch.isfinite(step).all(dim=-1)
        centre = torch.where(refine[:, None], centre - step, centre)
    return centre


def _fit_hidden_sprite(
    membership: torch.Tensor,
    sprite: SpriteAppearance,
    surroundings: _Surroundings,
    visible_centroid: torch.Tensor,
    matched: torch.Tensor,
) -> torch.Tensor:
    """Least-squares centres ``[F, 2]``: a 1 px grid search within the sprite's reach of its visible part, then Gauss-Newton.

    The centroid-matched centre ``matched`` is kept where it fits better. Only
    for surroundings without sprites behind (the grid search assumes the
    predicted membership just shifts with the centre).
    """
    reach = sprite.bounding_radius + 1.0
    model = _SpriteModel(_Window(membership, visible_centroid, int(math.ceil(2 * reach + 2))), sprite, surroundings)
    pixel_centres = model.window.pixel_centres  # [F, K, K, 2]
    first = pixel_centres[:, 0, 0]  # [F, 2] centre of the window's top-left pixel

    # Candidates sit at whole-pixel steps from the visible centroid, so the
    # model's membership is one template shifted across the window, and the
    # squared errors of all of them are two correlations with that template.
    nearest = torch.round(visible_centroid - first)  # window index (col, row) of the nearest pixel
    subpixel = visible_centroid - (first + nearest)
    half = int(math.ceil(sprite.bounding_radius + 1.5))
    steps = torch.arange(-half, half + 1, dtype=torch.float32)
    template_offsets = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), dim=-1)  # [k, k, 2] as (x, y)
    template = _threshold(sprite.alpha(template_offsets - subpixel[:, None, None, :]))  # [F, k, k]
    frames = len(visible_centroid)
    images = torch.cat([model.observed, model.usable]).unsqueeze(0)  # [1, 2F, K, K]
    kernels = torch.cat([template, template.square()]).unsqueeze(1)  # [2F, 1, k, k]
    correlations = F.conv2d(images, kernels, groups=2 * frames)[0]  # [2F, K - k + 1, K - k + 1]
    errors = (
        model.observed.square().sum(dim=(1, 2))[:, None, None] - 2 * correlations[:frames] + correlations[frames:]
    )
    # Output (row, col) puts the template centre on window pixel (row + half, col + half).
    positions = torch.arange(errors.shape[1], dtype=torch.float32) + half
    grid_y, grid_x = torch.meshgrid(positions, positions, indexing="ij")
    candidates = first[:, None, None, :] + torch.stack([grid_x, grid_y], dim=-1) + subpixel[:, None, None, :]
    too_far = (candidates - visible_centroid[:, None, None, :]).norm(dim=-1) > reach
    errors = errors.masked_fill(too_far, math.inf).flatten(1)
    best = errors.argmin(dim=1)
    centre = candidates.flatten(1, 2)[torch.arange(frames), best]
    centre, best_error = _least_squares(model, centre, model.squared_error(centre[:, None, :])[:, 0])
    matched_error = model.squared_error(matched[:, None, :])[:, 0]
    return torch.where((matched_error <= best_error)[:, None], matched, centre)


def _least_squares(
    model: _SpriteModel, centre: torch.Tensor, error: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Newton steps (of at most 1 px, kept only when they lower the squared error ``error``)."""
    probes = torch.tensor(
        [[0.0, 0.0], [_NEWTON_PROBE_PX, 0.0], [-_NEWTON_PROBE_PX, 0.0], [0.0, _NEWTON_PROBE_PX], [0.0, -_NEWTON_PROBE_PX]]
    )
    for _ in range(_NEWTON_STEPS):
        predicted = model.predict(centre[:, None, :] + probes)  # [F, 5, K, K]
        jacobian = torch.stack([predicted[:, 1] - predicted[:, 2], predicted[:, 3] - predicted[:, 4]], dim=-1)
        jacobian = jacobian.flatten(1, 2) / (2 * _NEWTON_PROBE_PX)  # [F, K*K, 2]
        residual = (predicted[:, 0] - model.observed).flatten(1)
        normal = jacobian.transpose(1, 2) @ jacobian + 1e-3 * torch.eye(2)
        step = torch.linalg.solve(normal, jacobian.transpose(1, 2) @ residual.unsqueeze(-1))[..., 0]
        step = step / step.norm(dim=-1, keepdim=True).clamp(min=1.0)
        trial = centre - step
        trial_error = model.squared_error(trial[:, None, :])[:, 0]
        better = trial_error < error
        centre = torch.where(better[:, None], trial, centre)
        error = torch.where(better, trial_error, error)
    return centre, error


@dataclasses.dataclass(frozen=True)
class _Surroundings:
    """Located sprites that change how a sprite looks: those in front hide it, those behind tint its outline."""

    in_front: list[tuple[SpriteAppearance, torch.Tensor]]
    behind: list[tuple[SpriteAppearance, torch.Tensor]] = dataclasses.field(default_factory=list)  # back to front

    def subset(self, frames: torch.Tensor) -> _Surroundings:
        return _Surroundings(
            [(sprite, centres[frames]) for sprite, centres in self.in_front],
            [(sprite, centres[frames]) for sprite, centres in self.behind],
        )


class _Window:
    """A square of ``2 * radius + 1`` pixels per frame around ``centres``, of one membership map."""

    def __init__(self, membership: torch.Tensor, centres: torch.Tensor, radius: int):
        num_frames, height, width = membership.shape
        side = 2 * radius + 1
        first = torch.round(centres).long() - radius
        padded = F.pad(membership, (side, side, side, side))
        first_col = first[:, 0].clamp(-side, width)
        first_row = first[:, 1].clamp(-side, height)
        steps = torch.arange(side)
        cols = first_col[:, None] + steps  # [T, K] frame columns
        rows = first_row[:, None] + steps
        frame_index = torch.arange(num_frames)[:, None, None]
        self.values = padded[frame_index, rows[:, :, None] + side, cols[:, None, :] + side]  # [T, K, K]
        xs = (cols.to(torch.float32) + 0.5)[:, None, :].expand(-1, side, -1)
        ys = (rows.to(torch.float32) + 0.5)[:, :, None].expand(-1, -1, side)
        self.pixel_centres = torch.stack([xs, ys], dim=-1)  # [T, K, K, 2]
        self.inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]

    def subset(self, frames: torch.Tensor) -> _Window:
        part = object.__new__(_Window)
        part.values = self.values[frames]
        part.pixel_centres = self.pixel_centres[frames]
        part.inside = self.inside[frames]
        return part

    def centroid(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mass ``[T, ...]`` and centroid ``[T, ..., 2]`` of weights ``[T, ..., K, K]``."""
        mass = weights.sum(dim=(-2, -1))
        extra = weights.ndim - 3
        centres = self.pixel_centres.view(
            self.pixel_centres.shape[0], *([1] * extra), *self.pixel_centres.shape[1:]
        )
        moment = (weights.unsqueeze(-1) * centres).sum(dim=(-3, -2))
        return mass, moment / mass.clamp(min=1e-12).unsqueeze(-1)

    def offsets_from(self, centres: torch.Tensor) -> torch.Tensor:
        """``[T, K, K, 2]`` offsets of the pixel centres from ``[T, 2]`` centres."""
        return self.pixel_centres - centres[:, None, None, :]


class _SpriteModel:
    """The membership one sprite should produce in a window, given the located sprites around it.

    Pixels outside the frame, or that a sprite in front may cover even partly,
    are *unusable*: left out of both the observed and the predicted membership,
    since they mix colours and the front sprite's position is not exact. Over
    located sprites behind, the sprite's anti-aliased outline mixes with their
    colours, which the prediction includes (textures change only brightness, so
    every sprite pixel has its colour's chroma; the background counts as grey).
    """

    def __init__(self, window: _Window, sprite: SpriteAppearance, surroundings: _Surroundings):
        self.window = window
        self.sprite = sprite
        usable = window.inside.clone()
        for front, centres in surroundings.in_front:
            usable &= front.signed_distance(window.offsets_from(centres)) > _FRONT_SPRITE_MARGIN_PX
        self.usable = usable.to(torch.float32)
        self.observed = window.values * self.usable

        target = torch.tensor(sprite.colour, dtype=torch.float32)
        target = target - target.mean()
        self.chroma_length = float(target.norm())
        direction = target / self.chroma_length
        under = torch.zeros(*window.pixel_centres.shape[:3], 3)
        for other, centres in surroundings.behind:
            alpha = other.alpha(window.offsets_from(centres)).unsqueeze(-1)
            colour = torch.tensor(other.colour, dtype=torch.float32)
            under = under * (1 - alpha) + (colour - colour.mean()) * alpha
        self.under_along = (under * direction).sum(dim=-1)  # [T, K, K]
        self.under_off = (under - self.under_along.unsqueeze(-1) * direction).norm(dim=-1)

    def subset(self, frames: torch.Tensor) -> _SpriteModel:
        part = object.__new__(_SpriteModel)
        part.window = self.window.subset(frames)
        part.sprite = self.sprite
        part.chroma_length = self.chroma_length
        for name in ("usable", "observed", "under_along", "under_off"):
            setattr(part, name, getattr(self, name)[frames])
        return part

    def predict(self, candidates: torch.Tensor) -> torch.Tensor:
        """``[T, C, K, K]`` membership on usable pixels with the sprite at ``candidates`` ``[T, C, 2]``."""
        offsets = self.window.pixel_centres[:, None] - candidates[:, :, None, None, :]
        alpha = self.sprite.alpha(offsets)
        # The same score as _ChromaFrames.membership, for the mixed chroma.
        along = alpha * self.chroma_length + (1 - alpha) * self.under_along[:, None]
        off = (1 - alpha) * self.under_off[:, None]
        score = (along - _OFF_HUE_WEIGHT * (off - _OFF_HUE_TOLERANCE).clamp(min=0)) / self.chroma_length
        return _threshold(score) * self.usable[:, None]

    def unhidden_mass(self, centres: torch.Tensor) -> torch.Tensor:
        """``[T]`` predicted membership mass if nothing hid the sprite (only the frame border does)."""
        alpha = self.sprite.alpha(self.window.offsets_from(centres))
        return (_threshold(alpha) * self.window.inside).sum(dim=(1, 2))

    def squared_error(self, candidates: torch.Tensor) -> torch.Tensor:
        """``[T, C]`` sum of squared differences between predicted and observed membership."""
        return (self.predict(candidates) - self.observed[:, None]).square().sum(dim=(-2, -1))


def _threshold(score: torch.Tensor) -> torch.Tensor:
    return ((score - MEMBERSHIP_THRESHOLD) / (1 - MEMBERSHIP_THRESHOLD)).clamp(0.0, 1.0)


def _box_peak(membership: torch.Tensor, box: int) -> torch.Tensor:
    """Float32 ``[T, 2]`` centre of the ``box`` x ``box`` square with the most membership."""
    num_frames, height, width = membership.shape
    box = min(box, height, width)
    integral = F.pad(membership.to(torch.float64).cumsum(1).cumsum(2), (1, 0, 1, 0))
    sums = (
        integral[:, box:, box:] - integral[:, :-box, box:] - integral[:, box:, :-box] + integral[:, :-box, :-box]
    )  # [T, H - box + 1, W - box + 1]
    best = sums.flatten(1).argmax(dim=1)
    row, col = best // sums.shape[2], best % sums.shape[2]
    return torch.stack([col + box / 2, row + box / 2], dim=-1).to(torch.float32)


def _gaussian_blur(images: torch.Tensor) -> torch.Tensor:
    """Valid (unpadded) separable Gaussian blur of ``[B, 1, H, W]``."""
    offsets = torch.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=images.dtype)
    kernel = torch.exp(-offsets.square() / (2 * _SSIM_SIGMA**2))
    kernel = kernel / kernel.sum()
    blurred = F.conv2d(images, kernel.view(1, 1, 1, -1))
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1))


def _background_pixels(
    clip: SyntheticClip | ClipMetadata | None, num_frames: int, width: int, height: int, margin: float
) -> torch.Tensor:
    """Bool ``[T, H, W]``: pixels farther than ``margin`` from every sprite on frame 0 and on frame ``t``."""
    if clip is None:
        return torch.ones(num_frames, height, width, dtype=torch.bool)
    metadata = _metadata(clip)
    if (metadata.width, metadata.height) != (width, height):
        raise ValueError(f"frames are {width}x{height}, the clip is {metadata.width}x{metadata.height}")
    if metadata.num_frames != num_frames:
        raise ValueError(f"{num_frames} frames for a clip of {metadata.num_frames}")
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    included = torch.ones(num_frames, height, width, dtype=torch.bool)
    for index, sprite in enumerate(metadata.sprites):
        reach = sprite.bounding_radius + margin
        path = metadata.centre_paths[:, index]
        for centres in (path, path[:1].expand_as(path)):
            near_x = (xs[None, :] - centres[:, 0:1]).square()  # [T, W]
            near_y = (ys[None, :] - centres[:, 1:2]).square()  # [T, H]
            included &= near_y[:, :, None] + near_x[:, None, :] > reach**2
    return included


def _curve(per_frame: torch.Tensor) -> DriftCurve:
    tail = max(1, math.ceil(per_frame.numel() / 4))
    return DriftCurve(per_frame, float(per_frame[-tail:].nanmean()))


def _frames_and_reference(frames: torch.Tensor, reference: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be a [T, 3, H, W] tensor, got {_describe(frames)}")
    frames = frames.detach().cpu().to(torch.float32)
    if reference is None:
        return frames, frames[0]
    reference = reference.detach().cpu().to(torch.float32)
    if tuple(reference.shape) != tuple(frames.shape[1:]):
        raise ValueError(f"reference_frame must have shape {list(frames.shape[1:])}, got {list(reference.shape)}")
    return frames, reference


def _checked_frames(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    frames, _ = _frames_and_reference(frames, None)
    if tuple(frames.shape[2:]) != (height, width):
        raise ValueError(f"frames are {frames.shape[3]}x{frames.shape[2]}, the clip is {width}x{height}")
    return frames


def _clip_track_indices(requested_ids: torch.Tensor, clip_ids: torch.Tensor) -> torch.Tensor:
    matches = requested_ids[:, None] == clip_ids[None, :]
    unknown = ~matches.any(dim=1)
    if bool(unknown.any()):
        missing = requested_ids[unknown][:5].tolist()
        raise ValueError(f"requested track ids {missing} are not tracks of this clip")
    return matches.to(torch.int64).argmax(dim=1)


def _metadata(clip: SyntheticClip | ClipMetadata) -> ClipMetadata:
    if isinstance(clip, SyntheticClip):
        return clip.metadata
    if isinstance(clip, ClipMetadata):
        return clip
    raise ValueError(f"expected a SyntheticClip or ClipMetadata, got {type(clip).__name__}")


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {list(value.shape)}"
    return type(value).__name__
