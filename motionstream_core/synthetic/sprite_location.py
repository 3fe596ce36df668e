"""Where each sprite of a synthetic clip is in a video, found by its colour (:mod:`.colour_membership`).

Each sprite is fitted with a model of the membership it should produce
(:mod:`.sprite_model`): its anti-aliased shape at a candidate centre, with
pixels that a sprite in front may cover (as located; within 0.8 px) or that
lie outside the frame left out of the comparison, and its outline mixed with
the colours of the located sprites behind it. Sprites are located front to
back (so the ones in front are known), then sprites with a sprite behind them
nearby are refitted once all are known. One sprite:

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
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from .clips import ClipMetadata, SyntheticClip
from .colour_membership import ChromaFrames, membership_from_score
from .scoring_inputs import checked_frames, clip_metadata
from .sprite_model import MembershipWindow, SpriteModel, Surroundings
from .sprites import SpriteAppearance

_NEWTON_STEPS = 6
_NEWTON_PROBE_PX = 0.5
_MAX_NEWTON_STEP_PX = 3.0
_MIN_PREDICTED_MASS = 1.0  # pixels of visible sprite below which a centre is not refined
# Below these shares of a sprite on usable pixels, a least-squares fit backs up
# centroid matching, and below the second one a grid search starts it.
_WELL_SHOWN_FRACTION = 0.9
_HALF_SHOWN_FRACTION = 0.5


@dataclasses.dataclass(frozen=True, eq=False)
class SpriteLocations:
    positions: torch.Tensor  # float64 [T, S, 2] located sprite centres, pixels
    confidence: torch.Tensor  # float32 [T, S] in [0, 1]


def locate_sprites(frames: torch.Tensor, clip: SyntheticClip | ClipMetadata) -> SpriteLocations:
    """Where each of the clip's sprites is on every frame, with a confidence."""
    metadata = clip_metadata(clip)
    frames = checked_frames(frames, metadata.width, metadata.height)
    num_frames = int(frames.shape[0])
    positions = torch.zeros(num_frames, metadata.num_sprites, 2, dtype=torch.float64)
    confidence = torch.zeros(num_frames, metadata.num_sprites)
    chroma = ChromaFrames(frames)
    memberships = [chroma.membership(sprite.colour) for sprite in metadata.sprites]
    centres: list[torch.Tensor | None] = [None] * metadata.num_sprites
    # Front to back, so that the sprites in front of each are already located.
    for index in reversed(range(metadata.num_sprites)):
        sprite = metadata.sprites[index]
        in_front = [(metadata.sprites[j], centres[j]) for j in range(index + 1, metadata.num_sprites)]
        centres[index], confidence[:, index] = _locate_one(memberships[index], sprite, Surroundings(in_front))
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
        surroundings = Surroundings(in_front, behind).subset(frames_near)
        refit, refit_confidence = _refine_one(
            memberships[index][frames_near], sprite, surroundings, centres[index][frames_near]
        )
        centres[index][frames_near] = refit
        confidence[frames_near, index] = refit_confidence
    for index, centre in enumerate(centres):
        positions[:, index] = centre.to(torch.float64)
    return SpriteLocations(positions, confidence)


def _locate_one(
    membership: torch.Tensor, sprite: SpriteAppearance, surroundings: Surroundings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 centres ``[T, 2]`` and confidences ``[T]`` of one sprite, searched over the whole frame."""
    radius = _window_radius(sprite)
    peak = _box_peak(membership, max(1, int(round(0.6 * sprite.size))))
    window = MembershipWindow(membership, peak, radius)
    mass, centroid = window.centroid(window.values)
    rough = torch.where(mass[:, None] > 0, centroid, peak)

    model = SpriteModel(MembershipWindow(membership, rough, radius), sprite, surroundings)
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
    membership: torch.Tensor, sprite: SpriteAppearance, surroundings: Surroundings, start: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres ``[T, 2]`` and confidences ``[T]`` refined by least squares from nearby ``start`` centres."""
    model = SpriteModel(MembershipWindow(membership, start, _window_radius(sprite)), sprite, surroundings)
    centre, _ = _least_squares(model, start, model.squared_error(start[:, None, :])[:, 0])
    return centre, _confidence(model, centre)


def _window_radius(sprite: SpriteAppearance) -> int:
    return int(math.ceil(1.5 * sprite.bounding_radius + 2))


def _confidence(model: SpriteModel, centre: torch.Tensor) -> torch.Tensor:
    """``[T]`` soft intersection over union of predicted and observed membership."""
    predicted = model.predict(centre[:, None, :])[:, 0]
    union = torch.maximum(predicted, model.observed).sum(dim=(1, 2))
    overlap = torch.minimum(predicted, model.observed).sum(dim=(1, 2))
    return torch.where(union > 0, overlap / union.clamp(min=1e-12), 0.0)


def _match_centroid(model: SpriteModel, target: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
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
    surroundings: Surroundings,
    visible_centroid: torch.Tensor,
    matched: torch.Tensor,
) -> torch.Tensor:
    """Least-squares centres ``[F, 2]``: a 1 px grid search within the sprite's reach of its visible part, then Gauss-Newton.

    The centroid-matched centre ``matched`` is kept where it fits better. Only
    for surroundings without sprites behind (the grid search assumes the
    predicted membership just shifts with the centre).
    """
    reach = sprite.bounding_radius + 1.0
    window = MembershipWindow(membership, visible_centroid, int(math.ceil(2 * reach + 2)))
    model = SpriteModel(window, sprite, surroundings)
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
    template = membership_from_score(sprite.alpha(template_offsets - subpixel[:, None, None, :]))  # [F, k, k]
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
    model: SpriteModel, centre: torch.Tensor, error: torch.Tensor
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
