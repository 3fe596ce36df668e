"""Training clips and the augmentations of the MotionStream recipe.

A clip is a latent video with its prompt and the point tracks that describe its motion:

- latents [B, C, F, H, W]: VAE latents of the video (or pixel frames plus an encoder, see
  `ClipBatch.from_frames`);
- text / null_text [B, L, text_dim]: prompt embedding and the negative (empty) prompt embedding;
- track_coords [B, T, N, 2] normalised (x, y), track_visibility [B, T, N], track_ids [B, N]
  over the T pixel frames (what `TrackEncoder` reads); optionally track_occluded [B, T, N], 1 where
  a point is known but hidden (what a head with an occlusion branch reads). A point that is neither
  visible nor occluded is unspecified: dropped tracks and masked spans become that;
- first_frame_latents [B, C, F_enc, H, W]: for image-to-video, the VAE encoding of the first frame
  followed by gray frames (what `FirstFrameCondition` reads), image_tokens its CLIP tokens.

Augmentations (all per clip, from generators seeded by the clip's global sample id):
track subsampling (a random number of tracks between a few and a few hundred), temporal masking
(contiguous spans of a track hidden), and condition dropout for joint text-motion guidance
(text replaced by the null prompt, track channels zeroed).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import torch

from ..streaming.image_conditioning import FirstFrameCondition
from ..motion.track_head import track_head_inputs
from ..motion.tracks import TrackSet
from .seeding import STREAM_DROPOUT, STREAM_SUBSAMPLE, STREAM_TEMPORAL_MASK, sample_generators

# Track ids are drawn from this range, as the ids of the released track heads are.
MAX_TRACK_ID = 100_000

_TRACK_FIELDS = ("track_coords", "track_visibility", "track_ids")

# `ClipBatch.track_groups` values: tracks of no object (dropped when a few tracks per object are kept), and
# tracks a user gives as a whole, such as a region drag's grid, which per-object subsampling keeps.
NO_GROUP = -1
KEEP_WHOLE = -2


@dataclasses.dataclass
class ClipBatch:
    latents: torch.Tensor
    text: torch.Tensor
    null_text: torch.Tensor | None = None
    track_coords: torch.Tensor | None = None
    track_visibility: torch.Tensor | None = None
    track_ids: torch.Tensor | None = None
    first_frame_latents: torch.Tensor | None = None
    image_tokens: torch.Tensor | None = None
    # [B] float: 0 where the clip is trained as "null motion" (its track channels are zeroed).
    motion_keep: torch.Tensor | None = None
    # [B] int64 global sample ids; they seed every per-clip random draw.
    sample_ids: torch.Tensor | None = None
    # [B, N] int64: the object each track belongs to (NO_GROUP: none; KEEP_WHOLE: always kept), so that an
    # augmentation can keep a few tracks per object, as users draw them.
    track_groups: torch.Tensor | None = None
    # [B, T, N] float: 1 where a point is specified but hidden (None: the clip tells occlusion apart from nothing).
    track_occluded: torch.Tensor | None = None

    def __post_init__(self):
        if self.latents.ndim != 5:
            raise ValueError(f"latents must be [B, C, F, H, W], got {tuple(self.latents.shape)}")
        batch = self.latents.shape[0]
        if self.text.ndim != 3 or self.text.shape[0] != batch:
            raise ValueError(f"text must be [{batch}, L, text_dim], got {tuple(self.text.shape)}")
        if self.null_text is not None and self.null_text.shape[0] == 1 and batch > 1:
            self.null_text = self.null_text.expand(batch, -1, -1)
        present = [name for name in _TRACK_FIELDS if getattr(self, name) is not None]
        if present and len(present) != len(_TRACK_FIELDS):
            raise ValueError(f"tracks need all of {_TRACK_FIELDS}, got only {present}")
        if self.has_tracks:
            expected = (batch, self.track_coords.shape[1], self.track_coords.shape[2])
            if self.track_coords.ndim != 4 or tuple(self.track_visibility.shape) != expected:
                raise ValueError(
                    f"track_coords must be [B, T, N, 2] and track_visibility [B, T, N], got "
                    f"{tuple(self.track_coords.shape)} and {tuple(self.track_visibility.shape)}"
                )
            if self.track_occluded is not None and tuple(self.track_occluded.shape) != expected:
                raise ValueError(f"track_occluded must be {list(expected)}, got {list(self.track_occluded.shape)}")
        if self.motion_keep is None:
            self.motion_keep = torch.ones(batch, device=self.latents.device)
        if self.sample_ids is None:
            self.sample_ids = torch.arange(batch)

    @property
    def batch_size(self) -> int:
        return self.latents.shape[0]

    @property
    def num_frames(self) -> int:
        return self.latents.shape[2]

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.latents.shape[3], self.latents.shape[4]

    @property
    def has_tracks(self) -> bool:
        return self.track_coords is not None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "ClipBatch":
        def move(value, name):
            if not isinstance(value, torch.Tensor):
                return value
            floating = value.is_floating_point() and name not in ("track_coords", "track_visibility", "track_occluded", "motion_keep")
            return value.to(device=device, dtype=dtype if (dtype is not None and floating) else None)

        return dataclasses.replace(
            self, **{f.name: move(getattr(self, f.name), f.name) for f in dataclasses.fields(self) if f.name != "sample_ids"}
        )

    def select(self, indices: slice | Sequence[int]) -> "ClipBatch":
        """The clips at `indices` (e.g. this rank's share of a global batch)."""
        if not isinstance(indices, slice):
            indices = torch.as_tensor(list(indices), dtype=torch.long)
        values = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            values[field.name] = value[indices] if isinstance(value, torch.Tensor) else value
        return ClipBatch(**values)

    def condition_channels(self, start_frame: int = 0, num_frames: int | None = None) -> torch.Tensor | None:
        """Image-to-video mask + first-frame latent channels for latent frames [start, start + num_frames)."""
        if self.first_frame_latents is None:
            return None
        num_frames = self.num_frames - start_frame if num_frames is None else num_frames
        return FirstFrameCondition(self.first_frame_latents)(start_frame, num_frames)

    @classmethod
    def collate(cls, samples: Sequence[Mapping[str, torch.Tensor]], sample_ids: Sequence[int] | None = None) -> "ClipBatch":
        """Stacks per-clip dicts (same field names as this class, no batch dimension) into a batch.

        Clips with different track counts are padded with invisible tracks.
        """
        if not samples:
            raise ValueError("cannot collate an empty list of clips")
        names = {f.name for f in dataclasses.fields(cls)} - {"sample_ids", "motion_keep"}
        unknown = set(samples[0]) - names
        if unknown:
            raise ValueError(f"unknown clip fields {sorted(unknown)}; expected some of {sorted(names)}")
        if samples[0].get("track_coords") is not None:
            samples = _pad_tracks(samples)
        values = {}
        for name in names:
            items = [sample.get(name) for sample in samples]
            if all(item is None for item in items):
                continue
            if any(item is None for item in items):
                raise ValueError(f"field {name!r} is missing from some clips of the batch")
            values[name] = torch.stack([torch.as_tensor(item) for item in items])
        ids = torch.arange(len(samples)) if sample_ids is None else torch.as_tensor(list(sample_ids), dtype=torch.long)
        return cls(sample_ids=ids, **values)

    @classmethod
    def from_frames(
        cls,
        frames: torch.Tensor,
        encode: Callable[[torch.Tensor], torch.Tensor],
        text: torch.Tensor,
        image_to_video: bool = False,
        **fields,
    ) -> "ClipBatch":
        """Encodes pixel frames [B, 3, T, H, W] in [-1, 1] with a VAE encoder callable.

        With `image_to_video`, the first-frame condition is the encoding of the first frame followed
        by gray (zero) frames, as Wan image-to-video builds it.
        """
        if frames.ndim != 5 or frames.shape[1] != 3:
            raise ValueError(f"frames must be [B, 3, T, H, W], got {tuple(frames.shape)}")
        with torch.no_grad():
            latents = encode(frames)
            if image_to_video:
                conditioning_video = torch.cat((frames[:, :, :1], torch.zeros_like(frames[:, :, 1:])), dim=2)
                fields["first_frame_latents"] = encode(conditioning_video)
        return cls(latents=latents, text=text, **fields)


def _pad_tracks(samples: Sequence[Mapping[str, torch.Tensor]]) -> list[dict]:
    most = max(sample["track_coords"].shape[1] for sample in samples)
    padded = []
    for sample in samples:
        sample = dict(sample)
        missing = most - sample["track_coords"].shape[1]
        if missing:
            frames = sample["track_coords"].shape[0]
            sample["track_coords"] = torch.cat((sample["track_coords"], torch.zeros(frames, missing, 2)), dim=1)
            sample["track_visibility"] = torch.cat(
                (sample["track_visibility"].float(), torch.zeros(frames, missing)), dim=1
            )
            sample["track_ids"] = torch.cat((sample["track_ids"], torch.zeros(missing, dtype=sample["track_ids"].dtype)))
            if sample.get("track_occluded") is not None:
                sample["track_occluded"] = torch.cat(
                    (sample["track_occluded"].float(), torch.zeros(frames, missing)), dim=1
                )
            if sample.get("track_groups") is not None:
                sample["track_groups"] = torch.cat((sample["track_groups"], torch.full((missing,), NO_GROUP, dtype=torch.int64)))
        padded.append(sample)
    return padded


# --- augmentations ---


def _gather_tracks(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values`` [B, T, N, ...] at the tracks ``index`` [B, kept] of each clip (a new tensor)."""
    batch, frames, kept = values.shape[0], values.shape[1], index.shape[1]
    trailing = values.shape[3:]
    expanded = index.view(batch, 1, kept, *([1] * len(trailing))).expand(batch, frames, kept, *trailing)
    return values.gather(2, expanded)


def subsample_tracks(
    coords: torch.Tensor,
    visibility: torch.Tensor,
    track_ids: torch.Tensor,
    generators: Sequence[torch.Generator],
    min_tracks: int = 1,
    max_tracks: int = 256,
    randomize_ids: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keeps a random number (uniform in [min_tracks, max_tracks]) of random tracks per clip.

    Clips keep different numbers of tracks: the batch is cut to the largest count and the unused
    places of the others become invisible. `visibility` may carry per-point flags [B, T, N, K], kept alike.
    With `randomize_ids`, kept tracks get fresh distinct ids
    in [0, MAX_TRACK_ID), so the model cannot tie meaning to particular ids.
    """
    if not 1 <= min_tracks <= max_tracks:
        raise ValueError(f"need 1 <= min_tracks <= max_tracks, got {min_tracks}, {max_tracks}")
    batch, frames, available, _ = coords.shape
    choices, counts = [], []
    for generator in generators:
        low, high = min(min_tracks, available), min(max_tracks, available)
        counts.append(int(torch.randint(low, high + 1, (), generator=generator)))
        choices.append(torch.randperm(available, generator=generator))
    kept = max(counts)
    index = torch.stack([choice[:kept] for choice in choices]).to(coords.device)  # [B, kept]
    coords, visibility = _gather_tracks(coords, index), _gather_tracks(visibility, index)
    track_ids = track_ids.gather(1, index)
    for b, count in enumerate(counts):
        visibility[b, :, count:] = 0
    if randomize_ids:
        track_ids = torch.stack(
            [torch.randperm(MAX_TRACK_ID, generator=g)[:kept] for g in generators]
        ).to(device=track_ids.device, dtype=track_ids.dtype)
    return coords, visibility, track_ids


def subsample_tracks_per_group(
    coords: torch.Tensor,
    visibility: torch.Tensor,
    track_ids: torch.Tensor,
    groups: torch.Tensor,
    generators: Sequence[torch.Generator],
    counts: Sequence[int],
    still_group_dropout: float = 0.0,
    randomize_ids: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keeps a few random tracks of each object, as users draw them: per group a count drawn uniformly
    from `counts` (repeat a count to weight it), all of a smaller group. A group that never moves loses
    all its tracks with probability `still_group_dropout`: a video in which an object without tracks
    stays where it is teaches the model to keep objects nobody dragged. Tracks of group KEEP_WHOLE are all
    kept (a region drag's grid comes whole); tracks of no group (NO_GROUP) are dropped.

    The kept tracks come first, in their original order; the rest of each clip is invisible. Without
    `randomize_ids` they are numbered 0, 1, ... in that order, as inference numbers a user's tracks.
    """
    if not counts or min(counts) < 1:
        raise ValueError(f"counts per group must be positive, got {list(counts)}")
    if not 0.0 <= still_group_dropout <= 1.0:
        raise ValueError(f"still_group_dropout must be in [0, 1], got {still_group_dropout}")
    batch, frames, available, _ = coords.shape
    choices = torch.tensor(list(counts))
    kept_per_clip = []
    for b, generator in enumerate(generators):
        keep = torch.nonzero(groups[b] == KEEP_WHOLE).flatten().tolist()
        for group in torch.unique(groups[b][groups[b] >= 0]).tolist():
            members = torch.nonzero(groups[b] == group).flatten()
            count = int(choices[torch.randint(len(choices), (), generator=generator)])
            order = members[torch.randperm(len(members), generator=generator)]
            still = bool((coords[b, :, members] - coords[b, :1, members]).abs().amax() == 0)
            dropped = float(torch.rand((), generator=generator, dtype=torch.float64)) < still_group_dropout
            if not (still and dropped):
                keep.extend(order[:count].tolist())
        kept_per_clip.append(sorted(keep))
    kept = max(1, max(len(keep) for keep in kept_per_clip))
    index = torch.zeros(batch, kept, dtype=torch.long)
    for b, keep in enumerate(kept_per_clip):
        index[b, : len(keep)] = torch.tensor(keep, dtype=torch.long)
    index = index.to(coords.device)
    coords, visibility = _gather_tracks(coords, index), _gather_tracks(visibility, index)
    for b, keep in enumerate(kept_per_clip):
        visibility[b, :, len(keep):] = 0
    if randomize_ids:
        track_ids = torch.stack([torch.randperm(MAX_TRACK_ID, generator=g)[:kept] for g in generators])
    else:
        track_ids = torch.arange(kept).expand(batch, kept)
    return coords, visibility, track_ids.to(device=coords.device, dtype=torch.int64).contiguous()


def mask_track_spans(
    visibility: torch.Tensor,
    generators: Sequence[torch.Generator],
    probability: float = 0.2,
    max_fraction: float = 0.5,
) -> torch.Tensor:
    """Hides one contiguous span of frames (up to `max_fraction` of the clip) of each track with `probability`.

    Teaches the model that a track may start late, pause or stop, as user-drawn tracks do.
    """
    if not 0 <= probability <= 1 or not 0 < max_fraction <= 1:
        raise ValueError(f"invalid temporal masking probability {probability} / max_fraction {max_fraction}")
    visibility = visibility.clone()
    _, frames, tracks = visibility.shape
    longest = max(1, int(max_fraction * frames))
    for b, generator in enumerate(generators):
        # Three draws per track, track after track: track n's span does not depend on how many follow.
        draws = torch.stack([torch.rand(3, generator=generator, dtype=torch.float64) for _ in range(tracks)])
        hit = draws[:, 0] < probability
        lengths = 1 + (draws[:, 1] * longest).long()
        starts = (draws[:, 2] * (frames - lengths + 1)).long()
        frame_index = torch.arange(frames)[:, None]
        hidden = hit[None] & (frame_index >= starts[None]) & (frame_index < (starts + lengths)[None])
        visibility[b][hidden.to(visibility.device)] = 0
    return visibility


def drop_conditions(
    batch: ClipBatch,
    generators: Sequence[torch.Generator],
    text_dropout: float = 0.1,
    motion_dropout: float = 0.1,
) -> ClipBatch:
    """Replaces the prompt by the null prompt and zeroes the track channels, independently per clip.

    Trains the two "null" branches that joint text-motion guidance evaluates.
    """
    draws = torch.stack([torch.rand(2, generator=g) for g in generators])
    drop_text = draws[:, 0] < text_dropout
    drop_motion = draws[:, 1] < motion_dropout
    text = batch.text
    if drop_text.any():
        if batch.null_text is None:
            raise ValueError("text dropout needs the null prompt embedding (null_text) in the batch")
        mask = drop_text.to(text.device)[:, None, None]
        text = torch.where(mask, batch.null_text.to(text.dtype), text)
    motion_keep = batch.motion_keep * (~drop_motion).to(batch.motion_keep)
    return dataclasses.replace(batch, text=text, motion_keep=motion_keep)


@dataclasses.dataclass(frozen=True)
class ClipAugmentation:
    min_tracks: int = 1
    max_tracks: int = 256
    randomize_track_ids: bool = True
    temporal_mask_probability: float = 0.2
    temporal_mask_max_fraction: float = 0.5
    text_dropout: float = 0.1
    motion_dropout: float = 0.1
    # Non-empty (and clips with track_groups): a few tracks per object instead of min..max per clip.
    tracks_per_group: tuple[int, ...] = ()
    still_group_dropout: float = 0.0

    def __call__(self, batch: ClipBatch, seed: int) -> ClipBatch:
        """The augmented batch; a clip's result depends on its sample id, not on the rest of the batch
        (as long as the clips of a batch have the same number of tracks, so that none is padded)."""
        def generators(stream: int) -> list[torch.Generator]:
            return sample_generators(seed, batch.sample_ids, stream)

        def subsample(states: torch.Tensor):
            if self.tracks_per_group and batch.track_groups is not None:
                return subsample_tracks_per_group(
                    batch.track_coords, states, batch.track_ids, batch.track_groups, generators(STREAM_SUBSAMPLE),
                    self.tracks_per_group, self.still_group_dropout, self.randomize_track_ids,
                )
            return subsample_tracks(
                batch.track_coords, states, batch.track_ids, generators(STREAM_SUBSAMPLE),
                self.min_tracks, self.max_tracks, self.randomize_track_ids,
            )

        def mask_spans(states: torch.Tensor) -> torch.Tensor:
            if self.temporal_mask_probability <= 0:
                return states
            return mask_track_spans(states, generators(STREAM_TEMPORAL_MASK),
                                    self.temporal_mask_probability, self.temporal_mask_max_fraction)

        if batch.has_tracks:
            occluded = batch.track_occluded
            if occluded is None:
                coords, visibility, track_ids = subsample(batch.track_visibility)
            else:
                # Both flags travel with their tracks in one subsampling; dropped tracks become unspecified.
                states = torch.stack((batch.track_visibility.float(), occluded.float()), dim=-1)
                coords, states, track_ids = subsample(states)
                visibility, occluded = states.unbind(-1)
                # The same span draws again (generators are rebuilt from the seed): masked is unspecified.
                occluded = mask_spans(occluded)
            visibility = mask_spans(visibility)
            batch = dataclasses.replace(batch, track_coords=coords, track_visibility=visibility, track_ids=track_ids,
                                        track_groups=None, track_occluded=occluded)
        if self.text_dropout > 0 or self.motion_dropout > 0:
            batch = drop_conditions(batch, generators(STREAM_DROPOUT), self.text_dropout, self.motion_dropout)
        return batch


def track_fields(tracks: TrackSet) -> dict[str, torch.Tensor]:
    """The track fields of one clip (no batch dimension) from a pixel-space `TrackSet`."""
    inputs = track_head_inputs(tracks)
    return {"track_coords": inputs.coords[0], "track_visibility": inputs.visibility[0], "track_ids": inputs.track_ids[0],
            "track_occluded": inputs.occluded[0]}
