"""Live control: drags made in the editor while a stream runs reach that stream's next chunks.

The streaming node registers a `LiveTracks` for (prompt id, node id) while it runs; the browser
POSTs the editor's widget JSON to /motionstream/live_tracks, which is validated and swapped in.
The session reads the current tracks when a chunk starts, so an edit never changes a chunk that
is already being generated.
"""

from __future__ import annotations

import threading
from typing import Callable

from motionstream_core import track_head_inputs, TrackHeadInputs, tracks_from_widget_json, TrackSet

from . import host

ROUTE = "/motionstream/live_tracks"


class LiveTracks:
    def __init__(self, tracks: TrackSet | None, convert: Callable[[TrackSet], TrackSet]):
        self._lock = threading.Lock()
        self._convert = convert
        # Head inputs are computed once per edit, not once per chunk.
        self._inputs = track_head_inputs(tracks) if tracks is not None else None
        self.version = 0

    def window(self, start: int, stop: int) -> TrackHeadInputs | None:
        """Track-head inputs of pixel frames [start, stop) as they are now (None: no tracks)."""
        with self._lock:
            inputs = self._inputs
        if inputs is None:
            return None
        return TrackHeadInputs(inputs.coords[:, start:stop], inputs.visibility[:, start:stop], inputs.track_ids)

    def replace(self, tracks: TrackSet) -> None:
        inputs = track_head_inputs(self._convert(tracks))  # validate and map before taking the lock
        with self._lock:
            self._inputs = inputs
            self.version += 1


_running: dict[tuple[str, str], LiveTracks] = {}
_registry_lock = threading.Lock()


class running_stream:
    """Context manager that makes a stream reachable by the live route while it runs."""

    def __init__(self, prompt_id: str | None, node_id: str | None, live: LiveTracks):
        self.key = (str(prompt_id), str(node_id))
        self.live = live

    def __enter__(self) -> LiveTracks:
        with _registry_lock:
            _running[self.key] = self.live
        return self.live

    def __exit__(self, *exc) -> None:
        with _registry_lock:
            _running.pop(self.key, None)


def apply_live_tracks(body) -> tuple[int, dict]:
    """Handles one request body; returns (HTTP status, JSON reply). Shared by the route and tests."""
    if not isinstance(body, dict):
        return 400, {"error": "the body must be a JSON object with prompt_id, node_id and tracks"}
    key = (str(body.get("prompt_id")), str(body.get("node_id")))
    with _registry_lock:
        live = _running.get(key)
    if live is None:
        return 404, {"error": f"no MotionStream stream is running for prompt {key[0]}, node {key[1]}"}
    try:
        live.replace(tracks_from_widget_json(body.get("tracks")))
    except ValueError as error:
        return 400, {"error": str(error)}
    return 200, {"ok": True, "version": live.version}


host.add_json_route("POST", ROUTE, apply_live_tracks)
