"""The MotionStream track head: sparse point tracks to a latent-aligned condition map.

For every pixel frame, each track adds the sinusoidal embedding of its id, times
its visibility, to the latent cell it falls in (overlapping tracks sum). The
per-pixel-frame map is left-padded with ``temporal_compression - 1`` zero frames
and compressed in time by a strided Conv3d, then projected by a 1x1x1 Conv3d.
The result (``channels`` x latent frames x latent grid) is concatenated to the
DiT input channels (in Track-v0: 16 noisy latent + 4 mask + 16 first-frame latent
+ 16 track = 52).

Latent frame ``k`` only sees pixel frames ``4k - 3 .. 4k`` (with compression 4),
so a window of latent frames can be encoded from just the pixel frames it needs
and equals the matching slice of the full encoding; editing future tracks leaves
already generated chunks untouched.

Weights load from Track-v0-format checkpoints with
``TrackEncoder.from_state_dict(sd, prefix="track_encoder.")``.

Occluded vs unspecified (beyond the paper and Track-v0): in the published head an
occluded point and a point nobody specified are both zero. A head may carry an
*occlusion branch* (``occlusion_conv``, weights ``{prefix}occlusion_conv.weight``):
the id embeddings of points that are specified but hidden are rasterised into a
second map, compressed in time by their own strided Conv3d and added before the
projection. A head without the branch (every public checkpoint) ignores the
occluded points, so its output is unchanged; a new branch starts at zero, so
fine-tuning starts from the model's previous behaviour.
"""

from __future__ import annotations

from typing import Callable

import math
from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .tracks import TrackSet

# Devices with float64 arithmetic; the id embedding is computed on the CPU elsewhere.
_FLOAT64_DEVICES = ("cpu", "cuda")

# Bounds the scatter buffer (frames x tracks x id_dim floats) built per chunk of frames.
_SCATTER_CHUNK_ELEMENTS = 1 << 24


def track_id_embedding(track_ids: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Float32 ``[..., dim]`` embedding of integer ids: cosines, then sines.

    Frequency ``i`` is ``exp(-ln(max_period) * i / (dim / 2))`` and the phase is
    ``id * frequency``. The reference computes all of it in float32, where the
    transcendental functions differ between CPUs (AVX2 vs AVX-512) and devices by
    an ulp or more, and ids reach 1e5, so one ulp of a frequency moves the phase by
    up to ``id * frequency * 2**-24`` (about 3e-3 rad at id 1e5). Here the exact
    float32 arithmetic of the reference (exponent, product) is kept, while ``exp``,
    the phase reduction modulo 2*pi and ``cos``/``sin`` run in float64 before
    rounding to float32, so the result is the correctly rounded embedding of the
    reference's float32 phases on every device, to one float32 ulp. A float32
    reference whose ``exp`` is off by ``k`` ulps differs from it by up to
    ``k * id * frequency * 2**-24`` plus its own ``cos``/``sin`` error.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"the id embedding size must be even and at least 2, got {dim}")
    half = dim // 2
    device = track_ids.device if track_ids.device.type in _FLOAT64_DEVICES else torch.device("cpu")
    float32 = dict(dtype=torch.float32, device=device)
    # Explicit float32 operands: exactly the reference's IEEE float32 products, on every backend.
    arguments = torch.arange(half, **float32) * torch.tensor(-math.log(max_period), **float32)
    arguments = arguments / torch.tensor(float(half), **float32)
    frequencies = torch.exp(arguments.to(torch.float64)).to(torch.float32)
    phases = track_ids.to(device=device, dtype=torch.float32).unsqueeze(-1) * frequencies
    reduced = phases.to(torch.float64).remainder(2 * math.pi)
    embedding = torch.cat([torch.cos(reduced), torch.sin(reduced)], dim=-1)
    return embedding.to(device=track_ids.device, dtype=torch.float32)


def rasterize_tracks(
    coords: torch.Tensor,
    visibility: torch.Tensor,
    track_ids: torch.Tensor,
    *,
    id_dim: int,
    latent_height: int,
    latent_width: int,
) -> torch.Tensor:
    """Scatter id embeddings into latent cells: ``[B, id_dim, T, latent_height, latent_width]``.

    ``coords`` ``[B, T, N, 2]`` are normalised ``(x, y)``, clamped to ``[0, 1]`` and
    snapped to cell ``(round(x * (W - 1)), round(y * (H - 1)))``; ``visibility``
    ``[B, T, N]`` scales each contribution.
    """
    batch, frames, num_tracks, _ = coords.shape
    device = coords.device
    embeddings = track_id_embedding(track_ids, id_dim)  # [B, N, D]
    coords = coords.to(torch.float32).clamp(0.0, 1.0)
    cell_x = (coords[..., 0] * (latent_width - 1)).round().long()
    cell_y = (coords[..., 1] * (latent_height - 1)).round().long()
    cells = cell_y * latent_width + cell_x  # [B, T, N]
    weights = visibility.to(torch.float32)

    grid = torch.zeros(batch, frames, latent_height * latent_width, id_dim, device=device, dtype=torch.float32)
    chunk = max(1, _SCATTER_CHUNK_ELEMENTS // max(1, batch * num_tracks * id_dim))
    for start in range(0, frames, chunk):
        stop = min(frames, start + chunk)
        contributions = weights[:, start:stop, :, None] * embeddings[:, None]
        index = cells[:, start:stop, :, None].expand(-1, -1, -1, id_dim)
        grid[:, start:stop].scatter_add_(2, index, contributions)
    grid = grid.view(batch, frames, latent_height, latent_width, id_dim)
    return grid.permute(0, 4, 1, 2, 3).contiguous()


class TrackEncoder(nn.Module):
    """Track head: rasterised id embeddings -> temporal Conv3d -> 1x1x1 Conv3d."""

    def __init__(
        self,
        id_dim: int = 128,
        channels: int = 16,
        temporal_compression: int = 4,
        temporal_bias: bool = True,
        proj_bias: bool = True,
        occlusion_branch: bool = False,
    ) -> None:
        super().__init__()
        if id_dim < 2 or id_dim % 2:
            raise ValueError(f"id_dim must be even and at least 2, got {id_dim}")
        self.id_dim = id_dim
        self.channels = channels
        self.temporal_compression = temporal_compression
        kernel = (temporal_compression, 1, 1)
        self.temporal_conv = nn.Conv3d(id_dim, channels, kernel_size=kernel, stride=kernel, bias=temporal_bias)
        self.proj = nn.Conv3d(channels, channels, kernel_size=1, bias=proj_bias)
        self.occlusion_conv = None
        if occlusion_branch:
            self.add_occlusion_branch()

    @property
    def has_occlusion_branch(self) -> bool:
        return self.occlusion_conv is not None

    def add_occlusion_branch(self) -> None:
        """Adds a zero occlusion branch (no change to the output until it trains); no-op if there is one."""
        if self.occlusion_conv is None:
            weight = self.temporal_conv.weight
            kernel = tuple(weight.shape[2:])
            self.occlusion_conv = nn.Conv3d(self.id_dim, self.channels, kernel_size=kernel, stride=kernel, bias=False)
            nn.init.zeros_(self.occlusion_conv.weight)
            self.occlusion_conv.to(device=weight.device, dtype=weight.dtype)

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], prefix: str = "track_encoder.", strict: bool = True
    ) -> TrackEncoder:
        """Build from the ``{prefix}temporal_conv.*`` / ``{prefix}proj.*`` weights.

        ``id_dim``, ``channels``, the temporal kernel and bias presence come from the
        tensor shapes; the module takes the weights' dtype. With ``strict``, other
        keys under ``prefix`` are an error.
        """
        own = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
        for key in ("temporal_conv.weight", "proj.weight"):
            if key not in own:
                raise ValueError(f"state dict has no '{prefix}{key}'")
        temporal, proj = own["temporal_conv.weight"], own["proj.weight"]
        if temporal.ndim != 5 or tuple(temporal.shape[3:]) != (1, 1):
            raise ValueError(f"'{prefix}temporal_conv.weight' must be [C, D, k, 1, 1], got {list(temporal.shape)}")
        channels, id_dim, kernel = (int(size) for size in temporal.shape[:3])
        if tuple(proj.shape) != (channels, channels, 1, 1, 1):
            raise ValueError(
                f"'{prefix}proj.weight' must be [{channels}, {channels}, 1, 1, 1], got {list(proj.shape)}"
            )
        expected = {"temporal_conv.weight", "proj.weight"}
        occlusion = own.get("occlusion_conv.weight")
        if occlusion is not None:
            expected.add("occlusion_conv.weight")
            if tuple(occlusion.shape) != tuple(temporal.shape):
                raise ValueError(f"'{prefix}occlusion_conv.weight' must be {list(temporal.shape)} like "
                                 f"'{prefix}temporal_conv.weight', got {list(occlusion.shape)}")
        for name in ("temporal_conv.bias", "proj.bias"):
            if name in own:
                expected.add(name)
                if tuple(own[name].shape) != (channels,):
                    raise ValueError(f"'{prefix}{name}' must be [{channels}], got {list(own[name].shape)}")
        unexpected = sorted(set(own) - expected)
        if strict and unexpected:
            raise ValueError(f"unexpected track encoder weights: {', '.join(prefix + key for key in unexpected)}")
        encoder = cls(
            id_dim=id_dim,
            channels=channels,
            temporal_compression=kernel,
            temporal_bias="temporal_conv.bias" in own,
            proj_bias="proj.bias" in own,
            occlusion_branch=occlusion is not None,
        )
        encoder.load_state_dict({key: own[key] for key in expected})
        return encoder.to(dtype=temporal.dtype)

    def latent_frame_count(self, pixel_frames: int) -> int:
        """Latent frames produced by ``pixel_frames`` frames (``(T - 1) // 4 + 1``)."""
        return (pixel_frames - 1) // self.temporal_compression + 1

    def pixel_frame_range(self, latent_start: int, latent_frames: int) -> tuple[int, int]:
        """The pixel frames ``[start, stop)`` that latent frames ``[latent_start, +latent_frames)`` read."""
        stride = self.temporal_compression
        start = max(0, latent_start * stride - (stride - 1))
        stop = (latent_start + latent_frames - 1) * stride + 1
        return start, stop

    def forward(
        self,
        coords: torch.Tensor,
        visibility: torch.Tensor,
        track_ids: torch.Tensor,
        latent_height: int,
        latent_width: int,
        latent_frames: int | None = None,
        occluded: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode all latent frames: ``[B, channels, latent_frames, latent_height, latent_width]``.

        ``coords`` ``[B, T, N, 2]`` normalised ``(x, y)``, ``visibility`` ``[B, T, N]``,
        ``track_ids`` ``[B, N]``, ``occluded`` (optional) ``[B, T, N]``: 1 where a point
        is specified but hidden. ``latent_frames`` defaults to what ``T`` pixel
        frames give; extra pixel frames are ignored and missing ones count as
        unspecified.
        """
        if latent_frames is None:
            latent_frames = self.latent_frame_count(coords.shape[1])
        return self.encode_window(
            coords, visibility, track_ids,
            latent_start=0, latent_frames=latent_frames,
            latent_height=latent_height, latent_width=latent_width, occluded=occluded,
        )

    def encode_window(
        self,
        coords: torch.Tensor,
        visibility: torch.Tensor,
        track_ids: torch.Tensor,
        *,
        latent_start: int,
        latent_frames: int,
        latent_height: int,
        latent_width: int,
        pixel_start: int = 0,
        occluded: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode latent frames ``[latent_start, latent_start + latent_frames)``.

        ``coords[:, 0]`` is pixel frame ``pixel_start``; only the frames in
        :meth:`pixel_frame_range` are read, so passing exactly those (with their
        ``pixel_start``) is enough. Pixel frames past the end of ``coords`` count as
        unspecified (tracks not drawn yet). The result equals the same slice of
        :meth:`forward` on the full tracks. ``occluded`` is read by the occlusion
        branch only (a head without one ignores it).
        """
        _check_inputs(coords, visibility, track_ids)
        if occluded is not None and tuple(occluded.shape) != tuple(visibility.shape):
            raise ValueError(f"occluded must be shaped like visibility {list(visibility.shape)}, got {list(occluded.shape)}")
        if latent_start < 0 or latent_frames < 1:
            raise ValueError(f"invalid latent window start={latent_start}, frames={latent_frames}")
        start, stop = self.pixel_frame_range(latent_start, latent_frames)
        if pixel_start > start:
            raise ValueError(
                f"latent frames from {latent_start} need pixel frames from {start}, "
                f"but the tracks start at pixel frame {pixel_start}"
            )
        local_start, local_stop = start - pixel_start, stop - pixel_start
        left = self.temporal_compression - 1 if latent_start == 0 else 0

        def compressed_map(weights: torch.Tensor) -> torch.Tensor:
            grid = rasterize_tracks(
                coords[:, local_start:local_stop],
                weights[:, local_start:local_stop],
                track_ids,
                id_dim=self.id_dim,
                latent_height=latent_height,
                latent_width=latent_width,
            )
            right = (stop - start) - grid.shape[2]
            return F.pad(grid, (0, 0, 0, 0, left, right)).to(self.temporal_conv.weight.dtype)

        features = self.temporal_conv(compressed_map(visibility))
        if self.occlusion_conv is not None and occluded is not None:
            features = features + self.occlusion_conv(compressed_map(occluded))
        return self.proj(features)


class TrackHeadInputs(NamedTuple):
    coords: torch.Tensor  # [1, T, N, 2] normalised (x, y)
    visibility: torch.Tensor  # [1, T, N] float 0/1
    track_ids: torch.Tensor  # [1, N] int64
    occluded: torch.Tensor | None = None  # [1, T, N] float 0/1: specified but hidden

    def frames(self, index: slice | torch.Tensor) -> "TrackHeadInputs":
        """These inputs on the pixel frames ``index`` (a slice or a tensor of frame indices)."""
        occluded = None if self.occluded is None else self.occluded[:, index]
        return TrackHeadInputs(self.coords[:, index], self.visibility[:, index], self.track_ids, occluded)


def track_head_inputs(tracks: TrackSet, device: torch.device | str | None = None) -> TrackHeadInputs:
    """The head's batched inputs for a pixel-space track set (batch of one).

    Coordinates are divided by the frame size and not clamped (the head clamps).
    """
    return TrackHeadInputs(
        coords=tracks.normalized_points().unsqueeze(0).to(device),
        visibility=tracks.visibility.to(torch.float32).unsqueeze(0).to(device),
        track_ids=tracks.track_ids.unsqueeze(0).to(device),
        occluded=tracks.occluded.to(torch.float32).unsqueeze(0).to(device),
    )


class TrackChannelProvider:
    """Condition-channel provider for the streaming session: track channels of a latent window.

    `source(start, stop)` gives the head inputs of pixel frames [start, stop) as they are when the
    chunk starts (live edits land here), or None for no tracks, which yields zero channels: the
    null-motion input the models are trained with.
    """

    def __init__(
        self,
        encoder: TrackEncoder,
        source: Callable[[int, int], TrackHeadInputs | None],
        latent_height: int,
        latent_width: int,
    ):
        self.encoder = encoder
        self.source = source
        self.latent_height = latent_height
        self.latent_width = latent_width

    @torch.no_grad()
    def __call__(self, first_latent_frame: int, num_latent_frames: int) -> torch.Tensor:
        weight = self.encoder.temporal_conv.weight
        start, stop = self.encoder.pixel_frame_range(first_latent_frame, num_latent_frames)
        inputs = self.source(start, stop)
        if inputs is None:
            return torch.zeros(1, self.encoder.channels, num_latent_frames, self.latent_height, self.latent_width,
                               device=weight.device, dtype=weight.dtype)
        occluded = None if inputs.occluded is None else inputs.occluded.to(weight.device)
        return self.encoder.encode_window(
            inputs.coords.to(weight.device), inputs.visibility.to(weight.device), inputs.track_ids.to(weight.device),
            latent_start=first_latent_frame, latent_frames=num_latent_frames,
            latent_height=self.latent_height, latent_width=self.latent_width, pixel_start=start, occluded=occluded,
        )


def _check_inputs(coords: torch.Tensor, visibility: torch.Tensor, track_ids: torch.Tensor) -> None:
    if coords.ndim != 4 or coords.shape[-1] != 2:
        raise ValueError(f"coords must be [B, T, N, 2], got {list(coords.shape)}")
    batch, frames, num_tracks, _ = coords.shape
    if tuple(visibility.shape) != (batch, frames, num_tracks):
        raise ValueError(f"visibility must be [{batch}, {frames}, {num_tracks}], got {list(visibility.shape)}")
    if tuple(track_ids.shape) != (batch, num_tracks):
        raise ValueError(f"track_ids must be [{batch}, {num_tracks}], got {list(track_ids.shape)}")
