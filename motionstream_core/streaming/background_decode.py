"""Decoding chunk k while the transformer generates chunk k+1.

The frames of a chunk go through the codec, the video file and the preview; done in line, that work
adds to every chunk's time. `BackgroundDecoder` hands it to one worker thread instead, in order, with
at most one chunk in flight (memory stays bounded and frames leave in the order they were made). On
CUDA the worker runs on its own stream, which first waits for the chunk's latents to be ready.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import torch


class BackgroundDecoder:
    """`submit(latents, *args)` runs `work(latents, *args)` on the worker once the previous chunk's work is
    done; an error in it comes back from the next `submit` or `wait`."""

    def __init__(self, work: Callable[..., object], device: torch.device | str = "cpu"):
        self._work = work
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="motionstream-decode")
        self._pending: Future | None = None
        device = torch.device(device)
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def submit(self, latents: torch.Tensor, *args) -> None:
        self.wait()
        ready = None
        if self._stream is not None:
            ready = torch.cuda.Event()
            ready.record()  # on the generating stream, after the latents were made
            latents.record_stream(self._stream)
        self._pending = self._executor.submit(self._run, latents, ready, args)

    def _run(self, latents: torch.Tensor, ready, args) -> object:
        if self._stream is None:
            return self._work(latents, *args)
        with torch.cuda.stream(self._stream):
            self._stream.wait_event(ready)
            return self._work(latents, *args)

    def wait(self) -> None:
        """Until the chunk in flight is done; raises its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Waits for the chunk in flight (without raising its error: the caller is ending anyway) and stops the worker."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.exception()
        self._executor.shutdown(wait=True)

    def __enter__(self) -> "BackgroundDecoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
