"""Whether a stream's IMAGE and LATENT outputs fit in memory (beyond that the frames go to the video file only),
and `StreamOutputs`, which keeps them accordingly while writing every frame to the file."""

from __future__ import annotations

import dataclasses

import torch

MAX_IN_MEMORY_BYTES = 2 * 2**30  # never more than this, however much RAM is free
AVAILABLE_RAM_FRACTION = 0.25  # of the RAM available when the stream starts: downstream nodes copy the batch


def available_ram_bytes() -> int | None:
    """RAM available to new allocations (psutil, else /proc/meminfo's MemAvailable); None where unknown."""
    try:
        import psutil  # ComfyUI ships it

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def in_memory_budget_bytes(available: int | None = None) -> int:
    """min(2 GiB, a quarter of the available RAM); 2 GiB where the available RAM is unknown."""
    available = available_ram_bytes() if available is None else available
    if available is None:
        return MAX_IN_MEMORY_BYTES
    return min(MAX_IN_MEMORY_BYTES, int(AVAILABLE_RAM_FRACTION * available))


@dataclasses.dataclass(frozen=True)
class InMemoryOutputs:
    """The decision: `keep` the frames for IMAGE/LATENT, or not (then `warning` says why)."""

    keep: bool
    needed_bytes: int | None  # None: an endless stream
    budget_bytes: int
    warning: str | None = None


def decide_in_memory_outputs(frames: int | None, height: int, width: int, channels: int = 3,
                             latent_bytes_per_frame: int = 0, budget_bytes: int | None = None) -> InMemoryOutputs:
    """Whether a stream of `frames` frames (None: endless, until stopped) keeps its frames for IMAGE/LATENT.

    The rule: IMAGE is float32 [frames, height, width, channels], so it needs frames * height * width * channels
    * 4 bytes, plus `latent_bytes_per_frame` per frame for LATENT (the latents of one video frame). The outputs
    are kept when that total is at most the budget, min(2 GiB, a quarter of the RAM available now; 2 GiB where
    that is unknown), or `budget_bytes` if given. An endless stream never keeps them. When they are not kept,
    the sampler writes the frames to the video file only and returns a one-frame IMAGE (the last frame) and
    the matching LATENT, and `warning` says so, for the sampler to log instead of running out of memory."""
    budget = in_memory_budget_bytes() if budget_bytes is None else budget_bytes
    if frames is None:
        return InMemoryOutputs(False, None, budget, "endless stream: the frames go to the video file only; IMAGE and "
                                                    "LATENT hold the last frame")
    needed = frames * (height * width * channels * 4 + latent_bytes_per_frame)
    if needed <= budget:
        return InMemoryOutputs(True, needed, budget)
    return InMemoryOutputs(False, needed, budget,
                           f"{frames} frames of {width}x{height} need {needed / 2**30:.2f} GiB as IMAGE/LATENT, more "
                           f"than the {budget / 2**30:.2f} GiB allowed (min(2 GiB, 1/4 of the available RAM)): the "
                           f"frames go to the video file only; IMAGE and LATENT hold the last frame")


class StreamOutputs:
    """Where a stream's chunks go: every frame to the video file; frames and latents for IMAGE/LATENT only when
    `keep`, else the last ones only. `num_frames` (None: no set length) cuts frames past the end."""

    def __init__(self, writer, keep: bool, num_frames: int | None):
        self.writer, self.keep, self.num_frames = writer, keep, num_frames
        self.frames: list[torch.Tensor] = []
        self.latents: list[torch.Tensor] = []
        self.frame_count = 0

    def add_latents(self, latents: torch.Tensor) -> None:
        """Model-space latents [1, C, t, h, w] of one chunk."""
        latents = latents.float().cpu()
        if self.keep:
            self.latents.append(latents)
        else:
            self.latents = [latents[:, :, -1:].clone()]

    def add_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Writes frames [T, H, W, 3] to the file; returns those written (none past num_frames)."""
        if self.num_frames is not None:
            frames = frames[: self.num_frames - self.frame_count]
        if frames.shape[0]:
            self.writer.write(frames)
            self.frame_count += frames.shape[0]
            if self.keep:
                self.frames.append(frames)
            else:
                self.frames = [frames[-1:].clone()]
        return frames

    def images(self) -> torch.Tensor:
        return torch.cat(self.frames, dim=0).float().cpu()

    def latent(self) -> torch.Tensor:
        return torch.cat(self.latents, dim=2)
