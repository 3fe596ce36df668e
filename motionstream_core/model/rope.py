"""Three-axis rotary position embedding of Wan 2.1 (time, height, width), on interleaved channel pairs."""

from __future__ import annotations

from typing import Sequence

import torch

from .config import WanConfig

# Tables cut from a `RotaryTables` that a stream is likely to ask for again (the same chunk geometry).
_MEMO_SIZE = 16


def rotation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype queries and keys are rotated in: float32 for half-precision models, the model's own otherwise.

    Half precision is not enough for cos/sin: bfloat16 keeps 8 bits, an error of up to 0.4% on every
    rotated element, which the attention scores of far-apart frames would inherit.
    """
    return torch.promote_types(dtype, torch.float32)


class RotaryEmbedding:
    """Rotations of a set of token positions: unit complex numbers cos + i sin, shaped [L, head_dim // 2].

    Kept as one complex table because a complex product rotates every channel pair in one pass; the
    same thing done on real tensors takes six elementwise passes and an interleaving copy.
    """

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor):
        self.rotation = torch.complex(cos, sin)

    @classmethod
    def _of(cls, rotation: torch.Tensor) -> "RotaryEmbedding":
        table = cls.__new__(cls)
        table.rotation = rotation
        return table

    # Views into `rotation`: holding either keeps the table alive (a captured CUDA graph reads it).
    @property
    def cos(self) -> torch.Tensor:
        return torch.view_as_real(self.rotation)[..., 0]

    @property
    def sin(self) -> torch.Tensor:
        return torch.view_as_real(self.rotation)[..., 1]

    def __len__(self) -> int:
        return self.rotation.shape[0]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Rotates x [B, L, H, D]; pairs (2i, 2i+1) are treated as complex numbers."""
        compute_dtype = rotation_dtype(x.dtype)
        pairs = x.to(compute_dtype).unflatten(-1, (-1, 2))
        if not _viewable_as_complex(pairs):
            pairs = pairs.contiguous()
        # A no-op when the tables were built in the rotation dtype (see RotaryTables).
        rotation = self.rotation.to(torch.promote_types(compute_dtype, torch.complex64))
        rotated = torch.view_as_complex(pairs) * rotation[None, :, None, :]
        return torch.view_as_real(rotated).flatten(-2).to(x.dtype)

    def slice(self, start: int, stop: int) -> "RotaryEmbedding":
        return RotaryEmbedding._of(self.rotation[start:stop])


def _viewable_as_complex(pairs: torch.Tensor) -> bool:
    """Whether torch.view_as_complex accepts pairs [..., 2] as they are (adjacent, evenly aligned)."""
    return (
        pairs.stride(-1) == 1
        and pairs.storage_offset() % 2 == 0
        and all(stride % 2 == 0 for stride in pairs.stride()[:-1])
    )


def _axis_angles(positions: torch.Tensor, axis_dim: int, theta: float) -> torch.Tensor:
    inverse_freq = 1.0 / theta ** (torch.arange(0, axis_dim, 2, dtype=torch.float64, device=positions.device) / axis_dim)
    return positions.to(torch.float64)[:, None] * inverse_freq[None, :]


def _rows_at(table: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """table[positions], cut as slices of runs of consecutive positions: no index tensor, so no host-to-device copy."""
    runs, start = [], 0
    for index in range(1, len(positions) + 1):
        if index == len(positions) or positions[index] != positions[index - 1] + 1:
            runs.append(table[positions[start] : positions[start] + index - start])
            start = index
    return torch.cat(runs) if runs else table[:0]


class RotaryTables:
    """cos/sin of one latent grid at every frame position, from which the table of any frames is cut.

    Built once per grid, on the model's device and in the dtype keys are rotated in (see
    `rotation_dtype`); angles are computed in float64 so that position 1000 is as exact as
    position 0. Cutting a table out of them (`at`) takes only Python integers, so a stream's
    chunks never wait on the device for their positions.
    """

    def __init__(
        self,
        config: WanConfig,
        grid_height: int,
        grid_width: int,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        num_positions: int | None = None,
    ):
        self.config = config
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        _, height_dim, width_dim = config.rope_dims()
        rows = _axis_angles(torch.arange(grid_height, device=self.device), height_dim, config.rope_theta)
        cols = _axis_angles(torch.arange(grid_width, device=self.device), width_dim, config.rope_theta)
        rows = rows[:, None, :].expand(grid_height, grid_width, -1)
        cols = cols[None, :, :].expand(grid_height, grid_width, -1)
        space = torch.cat((rows, cols), dim=-1).flatten(0, 1)
        self._space = (space.cos().to(dtype), space.sin().to(dtype))
        self._time = self._time_tables(config.rope_max_len if num_positions is None else num_positions)
        self._memo: dict[tuple[int, ...], RotaryEmbedding] = {}

    @property
    def tokens_per_frame(self) -> int:
        return self._space[0].shape[0]

    def _time_tables(self, num_positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        time_dim = self.config.rope_dims()[0]
        positions = torch.arange(num_positions, device=self.device)
        angles = _axis_angles(positions, time_dim, self.config.rope_theta)
        return angles.cos().to(self.dtype), angles.sin().to(self.dtype)

    def at(self, frame_positions: Sequence[int]) -> RotaryEmbedding:
        """Tables [len(frame_positions) * tokens_per_frame, head_dim // 2] of frames at these positions, in order."""
        key = tuple(frame_positions)
        table = self._memo.get(key)
        if table is None:
            table = self._build(key)
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.pop(next(iter(self._memo)))
            self._memo[key] = table
        return table

    def _build(self, positions: tuple[int, ...]) -> RotaryEmbedding:
        if any(isinstance(p, bool) or int(p) != p or p < 0 for p in positions):
            raise ValueError(f"frame positions must be non-negative integers, got {list(positions)}")
        needed = max(positions, default=-1) + 1
        if needed > self._time[0].shape[0]:
            self._time = self._time_tables(max(needed, 2 * self._time[0].shape[0]))
        frames, tokens = len(positions), self.tokens_per_frame
        tables = []
        for time, space in zip(self._time, self._space):
            time = _rows_at(time, positions)[:, None, :].expand(frames, tokens, -1)
            tables.append(torch.cat((time, space[None].expand(frames, -1, -1)), dim=-1).flatten(0, 1))
        return RotaryEmbedding(*tables)


def grid_rotary_embedding(
    config: WanConfig,
    frame_positions: torch.Tensor | Sequence[int],
    grid_height: int,
    grid_width: int,
    device: torch.device | str | None = None,
) -> RotaryEmbedding:
    """Float64 rotary tables for tokens of a (frame, row, column) grid, frames at the given positions.

    Token order is frame-major then row then column, as produced by patchify. For repeated use
    (a stream), build a `RotaryTables` once instead.
    """
    if isinstance(frame_positions, torch.Tensor):
        device = frame_positions.device if device is None else device
        frame_positions = frame_positions.reshape(-1).tolist()
    positions = list(frame_positions)
    num_positions = max(positions, default=-1) + 1
    return RotaryTables(config, grid_height, grid_width, torch.float64, device, num_positions).at(positions)
