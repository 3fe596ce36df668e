"""How an endless latent video is cut into the blocks (chunks) a causal student denoises one at a time."""

from __future__ import annotations

from typing import Sequence


class BlockSchedule:
    """Block sizes in latent frames; the last size repeats forever.

    `BlockSchedule((3,))` gives 3, 3, 3, ...; `BlockSchedule((1, 3))` gives a first block of one
    latent frame (the image-conditioned frame of Wan's causal VAE) and then blocks of 3.
    """

    def __init__(self, sizes: Sequence[int] | int = (3,)):
        sizes = (sizes,) if isinstance(sizes, int) else tuple(sizes)
        if not sizes or any(int(s) != s or s < 1 for s in sizes):
            raise ValueError(f"block sizes must be a non-empty list of positive integers, got {list(sizes)}")
        self.sizes = tuple(int(s) for s in sizes)
        self._prefix_starts = [0]
        for size in self.sizes[:-1]:
            self._prefix_starts.append(self._prefix_starts[-1] + size)

    def __repr__(self) -> str:
        return f"BlockSchedule({self.sizes})"

    @property
    def max_block_frames(self) -> int:
        return max(self.sizes)

    def size(self, block: int) -> int:
        self._check(block)
        return self.sizes[min(block, len(self.sizes) - 1)]

    def start(self, block: int) -> int:
        """First latent frame of a block."""
        self._check(block)
        fixed = len(self.sizes) - 1
        if block <= fixed:
            return self._prefix_starts[block]
        return self._prefix_starts[fixed] + (block - fixed) * self.sizes[-1]

    def block_of(self, frame: int) -> int:
        """Index of the block that contains a latent frame."""
        if frame < 0:
            raise ValueError(f"frame index must be non-negative, got {frame}")
        fixed = len(self.sizes) - 1
        for block in range(fixed):
            if frame < self._prefix_starts[block + 1]:
                return block
        return fixed + (frame - self._prefix_starts[fixed]) // self.sizes[-1]

    def blocks_for_frames(self, num_frames: int) -> int:
        """Number of blocks needed to cover at least `num_frames` latent frames."""
        return 0 if num_frames <= 0 else self.block_of(num_frames - 1) + 1

    @staticmethod
    def _check(block: int) -> None:
        if block < 0:
            raise ValueError(f"block index must be non-negative, got {block}")
