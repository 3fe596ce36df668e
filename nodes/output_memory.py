"""Whether a stream's IMAGE and LATENT outputs fit in memory; beyond that the frames go to the video file only."""

from __future__ import annotations

import dataclasses

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
