"""Pacing a live stream to its playback, so that a drag shows up within a chunk or two.

Generating far ahead of the preview would put every live edit behind seconds of frames already
made. `PlaybackPacer` follows the player the way it plays: it starts when the first frames reach it,
shows `fps` frames a second and waits when it runs out (so it is never ahead of what was sent).
Before each chunk, the sampler waits until at most `lead_chunks` chunks are queued on screen, so
a chunk lands with at most `lead_chunks` + 1 chunks queued before it: with the default of one,
two chunks. When generating is slower than real time, it never waits.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

DEFAULT_LEAD_CHUNKS = 1


class PlaybackPacer:
    def __init__(self, fps: float, lead_chunks: int = DEFAULT_LEAD_CHUNKS,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] = time.sleep):
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = float(fps)
        self.lead_chunks = lead_chunks
        self.clock = clock
        self.sleep = sleep
        self.sent_frames = 0
        self.shown_frames = 0.0  # where the player is, in frames
        self.largest_chunk = 0
        self.waited_seconds = 0.0
        self._last_time: float | None = None  # None: nothing sent yet, the player has not started
        self._lock = threading.Lock()  # frames are sent from the decoding thread, waits come from the generating one

    def _follow_player(self) -> None:
        now = self.clock()
        if self._last_time is not None:
            self.shown_frames = min(float(self.sent_frames), self.shown_frames + (now - self._last_time) * self.fps)
        self._last_time = now

    def sent(self, frames: int) -> None:
        """`frames` more frames went to the player."""
        with self._lock:
            self._follow_player()
            self.sent_frames += frames
            self.largest_chunk = max(self.largest_chunk, frames)

    def queued(self) -> float:
        """Frames sent and not shown yet."""
        with self._lock:
            self._follow_player()
            return self.sent_frames - self.shown_frames

    def lead_frames(self) -> int:
        return self.lead_chunks * self.largest_chunk

    def wait(self) -> float:
        """Waits (through `sleep`, which may return early, e.g. on Stop) until at most `lead_frames` are queued;
        returns the seconds it asked to wait."""
        excess = self.queued() - self.lead_frames()
        if excess <= 0:
            return 0.0
        seconds = excess / self.fps
        self.waited_seconds += seconds
        self.sleep(seconds)
        return seconds
