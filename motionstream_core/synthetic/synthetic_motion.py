"""Procedural videos of textured sprites moving along known paths, with exact point tracks.

A clip is a static, low-saturation background (a smooth linear gradient, or
value noise of three octaves with features from about a third down to a
twentieth of the frame) with 1..k sprites composited on it. Every sprite is a disc
or a rounded square of one saturated colour with a dark, point-symmetric
texture (rings, stripes or a checker) and moves without rotating along one
trajectory kind:

- ``linear``: constant velocity between two points;
- ``curved``: a cubic Bezier curve;
- ``circular``: an arc of a circle at constant angular speed;
- ``stop_and_go``: a quadratic Bezier curve travelled in bursts separated by
  holds (frames on which the sprite does not move at all);
- ``static``: the sprite never moves (its tracks are flagged ``static``).

Geometry (pixel coordinates as in :mod:`.tracks`: ``0`` is the left/top edge,
pixel ``(row i, column j)`` has its centre at ``(j + 0.5, i + 0.5)``):

- every sprite lies entirely inside the frame on every frame: its centre stays
  at least half its size from each border, so every track point lies in
  ``[0, width] x [0, height]``;
- a sprite's centre moves by at most ``max_speed`` pixels from one frame to the
  next;
- a sprite carries ``points_per_sprite`` tracks: its centre, then points at
  ``0.3 * size`` from the centre, evenly spread in angle. Sprites translate
  only, so each point keeps its offset from the centre.

Sprites are painted in list order (index 0 at the back). A point is invisible
on a frame exactly when a sprite painted after its own covers it (the
coverer's signed distance at the point is negative: its alpha exceeds 0.5).
Points never leave the frame, so occlusion is the only source of invisibility.

Colours are built so that :mod:`.motion_scoring` can find each sprite by colour
alone: a colour's *chroma* is the RGB vector minus its grey component (its mean
over channels). Backgrounds have chroma at most :data:`BACKGROUND_MAX_CHROMA`;
sprite colours have chroma of 0.5 or more, with hues spread evenly around the
colour wheel (at least 48 degrees apart); textures darken all three channels
equally, which leaves the chroma of every sprite pixel exactly its colour's.

Randomness comes only from ``numpy.random.default_rng(seed)``: a seed always
gives the same clip.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..motion.tracks import MAX_FRAME_SIZE, MAX_FRAMES, TrackSet

TRAJECTORY_KINDS = ("linear", "curved", "circular", "stop_and_go", "static")
SPRITE_SHAPES = ("disc", "rounded_square")
SPRITE_TEXTURES = ("rings", "stripes", "checker")
BACKGROUND_KINDS = ("gradient", "noise")

MAX_SPRITES = 6  # keeps sprite hues at least 48 degrees apart
MAX_POINTS_PER_SPRITE = 64
MIN_SPRITE_SIZE = 4.0
BACKGROUND_MAX_CHROMA = 0.06
TRACK_POINT_RADIUS = 0.3  # of the sprite size; inside both shapes
TEXTURE_DEPTH = 0.2  # darkest texture value subtracted from every channel
SPRITE_GREY_FLOOR = 0.25  # every sprite channel is at least this, so darkening never clips
ROUNDED_CORNER_FRACTION = 0.25  # corner radius of a rounded square, of its size

# Frames x pixels rendered at once; bounds the memory of long or large clips.
_RENDER_CHUNK_PIXELS = 1 << 22
_NON_OVERLAP_ATTEMPTS = 40
_MIN_SPEED_FRACTION = 0.25
# Grey-level amplitude of each octave of the noise background, coarsest first.
_NOISE_OCTAVE_AMPLITUDES = (0.2, 0.1, 0.05)


@dataclasses.dataclass(frozen=True)
class SyntheticMotionConfig:
    """What :func:`generate_clip` draws from. Sizes are in pixels, speed in pixels per frame.

    Each clip draws its sprite count uniformly from ``min_sprites..max_sprites``,
    and for each sprite a size, shape, texture and trajectory kind uniformly from
    the given ranges and choices. Each path's speed is capped at a limit drawn
    from ``[0.25, 1] * max_speed``; a faster path is shrunk towards its start.
    With ``allow_occlusion=False`` the bounding circles of any two sprites stay
    over 1 px apart on every frame; a sprite that finds no such path in 40
    tries is left out, so a crowded frame can hold fewer than ``min_sprites``.
    """

    width: int = 128
    height: int = 128
    num_frames: int = 33
    fps: float = 16.0
    min_sprites: int = 1
    max_sprites: int = 3
    min_sprite_size: float = 14.0  # disc diameter / square side
    max_sprite_size: float = 28.0
    max_speed: float = 2.5
    points_per_sprite: int = 5
    allow_occlusion: bool = True
    sprite_shapes: tuple[str, ...] = SPRITE_SHAPES
    sprite_textures: tuple[str, ...] = SPRITE_TEXTURES
    background_kinds: tuple[str, ...] = BACKGROUND_KINDS
    trajectory_kinds: tuple[str, ...] = TRAJECTORY_KINDS

    def __post_init__(self) -> None:
        for name, maximum in (("width", MAX_FRAME_SIZE), ("height", MAX_FRAME_SIZE), ("num_frames", MAX_FRAMES)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
                raise ValueError(f"{name} must be an integer in [1, {maximum}], got {value!r}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be positive, got {self.fps}")
        if not 1 <= self.min_sprites <= self.max_sprites <= MAX_SPRITES:
            raise ValueError(
                f"need 1 <= min_sprites <= max_sprites <= {MAX_SPRITES}, got {self.min_sprites}..{self.max_sprites}"
            )
        largest = min(self.width, self.height)
        if not MIN_SPRITE_SIZE <= self.min_sprite_size <= self.max_sprite_size <= largest:
            raise ValueError(
                f"sprite sizes must satisfy {MIN_SPRITE_SIZE:g} <= min <= max <= {largest} (the frame), "
                f"got {self.min_sprite_size:g}..{self.max_sprite_size:g}"
            )
        if not (math.isfinite(self.max_speed) and self.max_speed >= 0):
            raise ValueError(f"max_speed must be a non-negative number of pixels per frame, got {self.max_speed}")
        if not 1 <= self.points_per_sprite <= MAX_POINTS_PER_SPRITE:
            raise ValueError(f"points_per_sprite must be in [1, {MAX_POINTS_PER_SPRITE}], got {self.points_per_sprite}")
        for name, allowed in (
            ("sprite_shapes", SPRITE_SHAPES),
            ("sprite_textures", SPRITE_TEXTURES),
            ("background_kinds", BACKGROUND_KINDS),
            ("trajectory_kinds", TRAJECTORY_KINDS),
        ):
            chosen = tuple(getattr(self, name))
            unknown = [value for value in chosen if value not in allowed]
            if not chosen or unknown:
                raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {chosen}")
            object.__setattr__(self, name, chosen)


@dataclasses.dataclass(frozen=True)
class SpriteAppearance:
    """How one sprite looks; its position on each frame lives in ``ClipMetadata.centre_paths``."""

    shape: str  # one of SPRITE_SHAPES
    size: float  # disc diameter or square side, pixels
    colour: tuple[float, float, float]  # RGB of the undarkened sprite
    texture: str  # one of SPRITE_TEXTURES
    texture_period: float  # pixels
    texture_angle: float  # radians; orientation of stripes and checker

    @property
    def half_extent(self) -> float:
        """Half the side of the sprite's axis-aligned bounding box."""
        return self.size / 2

    @property
    def bounding_radius(self) -> float:
        """Radius of the smallest circle around the centre that contains the sprite."""
        if self.shape == "disc":
            return self.size / 2
        corner = ROUNDED_CORNER_FRACTION * self.size
        return (self.size / 2 - corner) * math.sqrt(2) + corner

    def signed_distance(self, offsets: torch.Tensor) -> torch.Tensor:
        """Signed distance (negative inside) of ``[..., 2]`` offsets from the sprite's centre."""
        if self.shape == "disc":
            return torch.hypot(offsets[..., 0], offsets[..., 1]) - self.size / 2
        corner = ROUNDED_CORNER_FRACTION * self.size
        excess = offsets.abs() - (self.size / 2 - corner)
        outside = excess.clamp(min=0)
        outside = torch.hypot(outside[..., 0], outside[..., 1])
        inside = excess.amax(dim=-1).clamp(max=0)
        return outside + inside - corner

    def alpha(self, offsets: torch.Tensor) -> torch.Tensor:
        """Coverage in ``[0, 1]`` with a one-pixel anti-aliased edge (0.5 on the outline)."""
        return (0.5 - self.signed_distance(offsets)).clamp(0.0, 1.0)

    def darkening(self, offsets: torch.Tensor) -> torch.Tensor:
        """Grey value in ``[0, TEXTURE_DEPTH]`` subtracted from every channel (even in the offset)."""
        frequency = 2 * math.pi / self.texture_period
        if self.texture == "rings":
            pattern = torch.cos(frequency * torch.hypot(offsets[..., 0], offsets[..., 1]))
        else:
            cos_a, sin_a = math.cos(self.texture_angle), math.sin(self.texture_angle)
            along = offsets[..., 0] * cos_a + offsets[..., 1] * sin_a
            if self.texture == "stripes":
                pattern = torch.cos(frequency * along)
            else:
                across = -offsets[..., 0] * sin_a + offsets[..., 1] * cos_a
                pattern = torch.cos(frequency * along) * torch.cos(frequency * across)
        return TEXTURE_DEPTH * 0.5 * (1.0 + pattern)


@dataclasses.dataclass(frozen=True, eq=False)
class ClipMetadata:
    """Everything about a clip except its frames and tracks; what the scorer needs.

    ``sprites`` are in painting order (index 0 at the back). Track ``n`` belongs
    to sprite ``track_sprite[n]`` and sits at ``centre_paths[t, track_sprite[n]]
    + track_offsets[n]`` on frame ``t``; ``track_ids`` are the clip's
    ``tracks.track_ids``. ``visible_fraction[t, s]`` is the share of sprite
    ``s``'s rendered coverage not hidden by sprites in front of it.
    """

    width: int
    height: int
    fps: float
    seed: int
    background_kind: str
    background: torch.Tensor  # float32 [3, H, W]
    sprites: tuple[SpriteAppearance, ...]
    trajectory_kinds: tuple[str, ...]
    centre_paths: torch.Tensor  # float64 [T, S, 2]
    track_sprite: torch.Tensor  # int64 [N]
    track_offsets: torch.Tensor  # float64 [N, 2]
    track_ids: torch.Tensor  # int64 [N]
    visible_fraction: torch.Tensor  # float32 [T, S]

    @property
    def num_sprites(self) -> int:
        return len(self.sprites)

    @property
    def num_frames(self) -> int:
        return int(self.centre_paths.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticClip:
    frames: torch.Tensor  # float32 [T, 3, H, W] in [0, 1]
    tracks: TrackSet
    metadata: ClipMetadata


@dataclasses.dataclass(frozen=True, eq=False)
class RenderedFrames:
    frames: torch.Tensor  # float32 [T, 3, H, W]
    visible_fraction: torch.Tensor  # float32 [T, S]


def generate_clip(config: SyntheticMotionConfig, seed: int) -> SyntheticClip:
    """The clip of ``seed``: frames, exact tracks and the metadata the scorer uses."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    num_sprites = int(rng.integers(config.min_sprites, config.max_sprites + 1))
    background_kind = str(rng.choice(config.background_kinds))
    background = _background(background_kind, config.width, config.height, rng)

    hue_spacing = 1.0 / num_sprites
    first_hue = rng.random()
    sprites: list[SpriteAppearance] = []
    paths: list[np.ndarray] = []
    kinds: list[str] = []
    for index in range(num_sprites):
        hue = (first_hue + index * hue_spacing + rng.uniform(-0.1, 0.1) * hue_spacing) % 1.0
        sprite = _random_sprite(config, hue, rng)
        attempts = 1 if config.allow_occlusion else _NON_OVERLAP_ATTEMPTS
        for _ in range(attempts):
            kind = str(rng.choice(config.trajectory_kinds))
            path = _trajectory(kind, config, sprite.half_extent, rng)
            if config.allow_occlusion or _keeps_clear(path, sprite, paths, sprites):
                sprites.append(sprite)
                paths.append(path)
                kinds.append(kind)
                break
        # A sprite that finds no free path in a crowded frame is left out.

    centre_paths = np.stack(paths, axis=1)  # [T, S, 2]
    offsets = _track_point_offsets(config.points_per_sprite, rng)
    rendered = render_frames(background, sprites, torch.from_numpy(centre_paths))

    per_sprite = config.points_per_sprite
    track_sprite = np.repeat(np.arange(len(sprites)), per_sprite)
    track_offsets = np.concatenate([offsets * sprite.size for sprite in sprites], axis=0)
    points = centre_paths[:, track_sprite] + track_offsets[None]
    visibility = _unoccluded(torch.from_numpy(points), torch.from_numpy(track_sprite), sprites,
                             torch.from_numpy(centre_paths))
    static = np.array([kinds[s] == "static" for s in track_sprite])
    track_ids = torch.arange(len(track_sprite), dtype=torch.int64)
    tracks = TrackSet(
        torch.from_numpy(points.astype(np.float32)), visibility, config.width, config.height, config.fps,
        track_ids=track_ids, static=torch.from_numpy(static),
    )
    metadata = ClipMetadata(
        width=config.width,
        height=config.height,
        fps=float(config.fps),
        seed=int(seed),
        background_kind=background_kind,
        background=background,
        sprites=tuple(sprites),
        trajectory_kinds=tuple(kinds),
        centre_paths=torch.from_numpy(centre_paths),
        track_sprite=torch.from_numpy(track_sprite).to(torch.int64),
        track_offsets=torch.from_numpy(track_offsets),
        track_ids=track_ids,
        visible_fraction=rendered.visible_fraction,
    )
    return SyntheticClip(rendered.frames, tracks, metadata)


def render_frames(
    background: torch.Tensor, sprites: Sequence[SpriteAppearance], centre_paths: torch.Tensor
) -> RenderedFrames:
    """Composite ``sprites`` (back to front) centred at ``centre_paths`` ``[T, S, 2]`` over ``background`` ``[3, H, W]``.

    Centres may be anywhere (sprites are clipped by the frame); this also renders
    videos with deliberately wrong motion for testing the scorer.
    """
    _, height, width = background.shape
    num_frames = int(centre_paths.shape[0])
    if tuple(centre_paths.shape[1:]) != (len(sprites), 2):
        raise ValueError(f"centre_paths must have shape [frames, {len(sprites)}, 2], got {list(centre_paths.shape)}")
    frames = torch.empty(num_frames, 3, height, width, dtype=torch.float32)
    visible_fraction = torch.zeros(num_frames, len(sprites), dtype=torch.float32)
    if not sprites:
        frames[:] = background
        return RenderedFrames(frames, visible_fraction)
    # Each sprite is drawn in a small square window that follows it, on a canvas
    # padded so that windows of sprites (partly) outside the frame still fit.
    pad = max(_window_side(sprite) for sprite in sprites)
    chunk = max(1, _RENDER_CHUNK_PIXELS // ((width + 2 * pad) * (height + 2 * pad)))
    for start in range(0, num_frames, chunk):
        stop = min(num_frames, start + chunk)
        centres = centre_paths[start:stop].to(torch.float32)
        canvas = F.pad(background, (pad, pad, pad, pad)).expand(stop - start, -1, -1, -1).clone()
        windows = [_sprite_window(sprite, centres[:, index], width, height, pad) for index, sprite in enumerate(sprites)]
        for index, sprite in enumerate(sprites):
            rows, cols, offsets = windows[index]
            frame_index = torch.arange(stop - start)[:, None, None]
            alpha = sprite.alpha(offsets).unsqueeze(-1)  # [t, K, K, 1]
            colour = torch.tensor(sprite.colour, dtype=torch.float32) - sprite.darkening(offsets).unsqueeze(-1)
            under = canvas[frame_index, :, rows[:, :, None] + pad, cols[:, None, :] + pad]  # [t, K, K, 3]
            canvas[frame_index, :, rows[:, :, None] + pad, cols[:, None, :] + pad] = under * (1 - alpha) + colour * alpha
            inside = ((rows[:, :, None] >= 0) & (rows[:, :, None] < height)
                      & (cols[:, None, :] >= 0) & (cols[:, None, :] < width))
            coverage = alpha[..., 0] * inside
            visible = coverage.clone()
            for front_index in range(index + 1, len(sprites)):
                front_offsets = offsets + centres[:, index, None, None, :] - centres[:, front_index, None, None, :]
                visible = visible * (1 - sprites[front_index].alpha(front_offsets))
            total = coverage.sum(dim=(1, 2))
            visible_fraction[start:stop, index] = torch.where(
                total > 0, visible.sum(dim=(1, 2)) / total.clamp(min=1e-12), 0.0
            )
        frames[start:stop] = canvas[:, :, pad:pad + height, pad:pad + width].clamp(0.0, 1.0)
    return RenderedFrames(frames, visible_fraction)


def _window_side(sprite: SpriteAppearance) -> int:
    # The anti-aliased edge reaches half a pixel past the outline.
    return int(math.ceil(sprite.size)) + 3


def _sprite_window(
    sprite: SpriteAppearance, centres: torch.Tensor, width: int, height: int, pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel rows ``[t, K]``, columns ``[t, K]`` and offsets ``[t, K, K, 2]`` of a window around each centre."""
    side = _window_side(sprite)
    first = torch.floor(centres - sprite.half_extent - 1.0)
    # Windows of sprites far outside the frame are parked in the padding.
    first_col = first[:, 0].clamp(-pad, width + pad - side).long()
    first_row = first[:, 1].clamp(-pad, height + pad - side).long()
    steps = torch.arange(side)
    cols = first_col[:, None] + steps
    rows = first_row[:, None] + steps
    offset_x = (cols.to(torch.float32) + 0.5 - centres[:, 0, None])[:, None, :].expand(-1, side, -1)
    offset_y = (rows.to(torch.float32) + 0.5 - centres[:, 1, None])[:, :, None].expand(-1, -1, side)
    return rows, cols, torch.stack([offset_x, offset_y], dim=-1)


class SyntheticMotionDataset(torch.utils.data.Dataset):
    """``length`` clips; clip ``i`` is ``generate_clip(config, clip_seed(seed, i))``.

    Map-style, so it works with ``torch.utils.data.DataLoader`` (use
    ``collate_fn=collate_clips``) and with any number of workers; iterating it
    yields the clips in order.
    """

    def __init__(self, config: SyntheticMotionConfig, length: int, seed: int = 0):
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"length must be a non-negative integer, got {length!r}")
        self.config = config
        self.length = length
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> SyntheticClip:
        if not -self.length <= index < self.length:
            raise IndexError(f"clip {index} out of range for {self.length} clips")
        return generate_clip(self.config, clip_seed(self.seed, index % self.length))

    def __iter__(self) -> Iterator[SyntheticClip]:
        for index in range(self.length):
            yield self[index]


def clip_seed(dataset_seed: int, index: int) -> int:
    """A well-mixed per-clip seed, so neighbouring datasets do not share clips."""
    return int(np.random.SeedSequence([int(dataset_seed), int(index)]).generate_state(1, np.uint32)[0])


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticBatch:
    """Clips stacked for training; tracks are padded to the largest track count.

    ``track_mask[b, n]`` is ``False`` for padding; padded tracks are invisible,
    at ``(0, 0)``, with id 0.
    """

    frames: torch.Tensor  # float32 [B, T, 3, H, W]
    points: torch.Tensor  # float32 [B, T, N, 2] pixels
    visibility: torch.Tensor  # bool [B, T, N]
    track_ids: torch.Tensor  # int64 [B, N]
    track_mask: torch.Tensor  # bool [B, N]
    clips: tuple[SyntheticClip, ...]


def collate_clips(clips: Sequence[SyntheticClip]) -> SyntheticBatch:
    if not clips:
        raise ValueError("cannot collate an empty list of clips")
    shapes = {tuple(clip.frames.shape) for clip in clips}
    if len(shapes) != 1:
        raise ValueError(f"clips must share frame count and size, got shapes {sorted(shapes)}")
    batch, num_frames = len(clips), clips[0].tracks.num_frames
    most = max(clip.tracks.num_tracks for clip in clips)
    points = torch.zeros(batch, num_frames, most, 2)
    visibility = torch.zeros(batch, num_frames, most, dtype=torch.bool)
    track_ids = torch.zeros(batch, most, dtype=torch.int64)
    track_mask = torch.zeros(batch, most, dtype=torch.bool)
    for index, clip in enumerate(clips):
        count = clip.tracks.num_tracks
        points[index, :, :count] = clip.tracks.points
        visibility[index, :, :count] = clip.tracks.visibility
        track_ids[index, :count] = clip.tracks.track_ids
        track_mask[index, :count] = True
    frames = torch.stack([clip.frames for clip in clips])
    return SyntheticBatch(frames, points, visibility, track_ids, track_mask, tuple(clips))


def _pixel_centres(width: int, height: int) -> torch.Tensor:
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)  # [H, W, 2] as (x, y)


def _background(kind: str, width: int, height: int, rng: np.random.Generator) -> torch.Tensor:
    """Float32 ``[3, H, W]``: grey level in [0.2, 0.8] plus chroma of norm at most BACKGROUND_MAX_CHROMA."""
    if kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        low, high = np.sort(rng.uniform(0.25, 0.75, size=2))
        centres = _pixel_centres(width, height).to(torch.float64)
        direction = torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)
        along = (centres - torch.tensor([width / 2, height / 2], dtype=torch.float64)) @ direction
        span = float(abs(direction[0]) * width + abs(direction[1]) * height) / 2
        ramp = (along / max(span, 1e-9)).clamp(-1, 1) * 0.5 + 0.5  # [H, W] in [0, 1]
        grey = low + (high - low) * ramp
        ends = _random_chroma(rng, 2)
        chroma_map = ends[0][:, None, None] * (1 - ramp) + ends[1][:, None, None] * ramp
    else:
        cells = int(rng.integers(3, 7))
        grey = torch.full((height, width), 0.5, dtype=torch.float64)
        for octave, amplitude in enumerate(_NOISE_OCTAVE_AMPLITUDES):
            octave_cells = cells * 2**octave
            coarse_grey = torch.from_numpy(rng.uniform(-amplitude, amplitude, size=(1, 1, octave_cells, octave_cells)))
            grey += F.interpolate(coarse_grey, size=(height, width), mode="bicubic", align_corners=False)[0, 0]
        grey = grey.clamp(0.2, 0.8)
        coarse_chroma = _random_chroma(rng, cells * cells).T.reshape(1, 3, cells, cells)
        chroma_map = F.interpolate(coarse_chroma, size=(height, width), mode="bilinear", align_corners=False)[0]
    # Interpolating chroma vectors keeps them in the chroma plane and within the bound.
    return (grey[None] + chroma_map).to(torch.float32)


def _random_chroma(rng: np.random.Generator, count: int) -> torch.Tensor:
    """``[count, 3]`` chroma vectors (zero channel mean) of norm at most BACKGROUND_MAX_CHROMA."""
    basis = np.array([[1.0, -1.0, 0.0], [1.0, 1.0, -2.0]])
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    angle = rng.uniform(0, 2 * math.pi, size=count)
    radius = BACKGROUND_MAX_CHROMA * np.sqrt(rng.uniform(0, 1, size=count))
    planar = np.stack([np.cos(angle), np.sin(angle)], axis=1) * radius[:, None]
    return torch.from_numpy(planar @ basis)


def _random_sprite(config: SyntheticMotionConfig, hue: float, rng: np.random.Generator) -> SpriteAppearance:
    size = float(rng.uniform(config.min_sprite_size, config.max_sprite_size))
    pure = np.array(colorsys.hsv_to_rgb(hue, 1.0, 1.0))
    colour = SPRITE_GREY_FLOOR + (1 - SPRITE_GREY_FLOOR) * pure
    return SpriteAppearance(
        shape=str(rng.choice(config.sprite_shapes)),
        size=size,
        colour=tuple(float(c) for c in colour),
        texture=str(rng.choice(config.sprite_textures)),
        texture_period=float(size * rng.uniform(0.25, 0.45)),
        texture_angle=float(rng.uniform(0, math.pi)),
    )


def _trajectory(kind: str, config: SyntheticMotionConfig, half_extent: float, rng: np.random.Generator) -> np.ndarray:
    """Float64 ``[T, 2]`` centre path inside the box that keeps the sprite in the frame."""
    low = np.array([half_extent, half_extent])
    high = np.array([config.width - half_extent, config.height - half_extent])
    steps = config.num_frames - 1
    progress = np.linspace(0.0, 1.0, config.num_frames) if steps else np.zeros(1)

    def random_point() -> np.ndarray:
        return rng.uniform(low, high)

    if kind == "static" or steps == 0:
        path = np.repeat(random_point()[None], config.num_frames, axis=0)
    elif kind == "linear":
        start, end = random_point(), random_point()
        path = start + progress[:, None] * (end - start)
    elif kind == "curved":
        path = _bezier(np.stack([random_point() for _ in range(4)]), progress)
    elif kind == "circular":
        room = (high - low) / 2
        radius = float(min(room)) * rng.uniform(0.3, 1.0)
        centre = rng.uniform(low + radius, high - radius)
        turn = rng.uniform(0.5 * math.pi, 2 * math.pi)
        if radius > 0:
            turn = min(turn, config.max_speed * steps / radius)
        turn *= rng.choice([-1.0, 1.0])
        angles = rng.uniform(0, 2 * math.pi) + turn * progress
        path = centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    else:  # stop_and_go
        path = _bezier(np.stack([random_point() for _ in range(3)]), _stop_and_go_progress(steps, rng))
    # Shrinking towards the start keeps the path in the (convex) box.
    return _limit_speed(path, config.max_speed * rng.uniform(_MIN_SPEED_FRACTION, 1.0))


def _bezier(control: np.ndarray, progress: np.ndarray) -> np.ndarray:
    degree = len(control) - 1
    u = progress[:, None]
    return sum(
        math.comb(degree, k) * u**k * (1 - u) ** (degree - k) * control[k] for k in range(degree + 1)
    )


def _stop_and_go_progress(steps: int, rng: np.random.Generator) -> np.ndarray:
    """``[steps + 1]`` progress in [0, 1]: moving bursts separated by 1 or 2 holds (repeated values)."""
    if steps < 3:
        return np.linspace(0.0, 1.0, steps + 1)
    holds = 1 if steps < 5 else int(rng.integers(1, 3))
    hold_steps = max(holds, int(round(steps * rng.uniform(0.25, 0.5))))
    move_steps = steps - hold_steps
    if move_steps < holds + 1:
        holds, hold_steps = 1, steps - 2
        move_steps = 2
    moves = _random_composition(move_steps, holds + 1, rng)
    pauses = _random_composition(hold_steps, holds, rng)
    weights: list[float] = []
    for index in range(holds + 1):
        weights += [1.0] * moves[index]
        if index < holds:
            weights += [0.0] * pauses[index]
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    return cumulative / cumulative[-1]


def _random_composition(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    """``parts`` positive integers summing to ``total``."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False)) if parts > 1 else np.array([], int)
    edges = np.concatenate([[0], cuts, [total]])
    return [int(n) for n in np.diff(edges)]


def _limit_speed(path: np.ndarray, max_speed: float) -> np.ndarray:
    if len(path) < 2:
        return path
    fastest = float(np.linalg.norm(np.diff(path, axis=0), axis=1).max())
    if fastest <= max_speed:
        return path
    # The small safety factor absorbs float32 rounding of the stored tracks.
    return path[0] + (path - path[0]) * (max_speed / fastest * (1 - 1e-6))


def _keeps_clear(
    path: np.ndarray, sprite: SpriteAppearance, paths: Sequence[np.ndarray], sprites: Sequence[SpriteAppearance]
) -> bool:
    for other_path, other in zip(paths, sprites):
        distance = np.linalg.norm(path - other_path, axis=1)
        if float(distance.min()) <= sprite.bounding_radius + other.bounding_radius + 1.0:
            return False
    return True


def _track_point_offsets(points_per_sprite: int, rng: np.random.Generator) -> np.ndarray:
    """``[P, 2]`` offsets in units of the sprite size: the centre, then a ring."""
    ring = points_per_sprite - 1
    angles = rng.uniform(0, 2 * math.pi) + 2 * math.pi * np.arange(ring) / max(ring, 1)
    around = TRACK_POINT_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.concatenate([np.zeros((1, 2)), around], axis=0)


def _unoccluded(
    points: torch.Tensor, track_sprite: torch.Tensor, sprites: Sequence[SpriteAppearance], centre_paths: torch.Tensor
) -> torch.Tensor:
    """Bool ``[T, N]``: no sprite painted after a point's own covers it."""
    visible = torch.ones(points.shape[:2], dtype=torch.bool)
    for index, sprite in enumerate(sprites):
        behind = track_sprite < index
        if not bool(behind.any()):
            continue
        offsets = points[:, behind] - centre_paths[:, index, None, :]
        visible[:, behind] &= sprite.signed_distance(offsets) >= 0
    return visible
