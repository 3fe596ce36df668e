"""Live control: drags made in the editor while a stream runs reach that stream's next chunks, and
Stop ends it.

The streaming node registers a `LiveTracks` for (prompt id, node id) while it runs; the browser
POSTs the editor's widget JSON to /motionstream/live_tracks, which is validated and swapped in.
The session reads the current tracks when a chunk starts, so an edit never changes a chunk that
is already being generated. POST /motionstream/stop (the same ids and token) asks the stream to
finish after the chunk in progress and return normally, with its video file. POST
/motionstream/live_prompt (the same ids and token) switches the prompt of a stream that has a
prompt schedule (nodes/prompt_schedule.py), from its next chunk on.

Latency stamps: the route notes when it received each edit (`time.monotonic()`), `LiveTracks.window`
notes which edit a chunk was made with, and the sampler puts both in that chunk's frames message.

Only the client that queued the prompt steers its stream: each stream gets a random token when it
starts, which goes in its frames messages (`live_token`), sent to that client alone, and every edit
must carry it, and ComfyUI's client id where the prompt had one (both compared in constant time).
A prompt queued without a client id has its messages broadcast, so its stream hands out no token
and takes no edits. Requests are bounded (MAX_LIVE_REQUEST_BYTES, MAX_LIVE_TRACKS,
MAX_LIVE_KEYFRAMES) and handled on a worker thread; every bad one gets a 4xx with a message.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from typing import Callable

import torch

from motionstream_core import (
    MAX_LIVE_KEYFRAMES,
    MAX_LIVE_PROMPT_CHARS,
    MAX_LIVE_REQUEST_BYTES,
    MAX_LIVE_TRACKS,
    track_head_inputs,
    TrackHeadInputs,
    tracks_from_widget_json,
    TrackSet,
)

from . import host

ROUTE = "/motionstream/live_tracks"
STOP_ROUTE = "/motionstream/stop"
PROMPT_ROUTE = "/motionstream/live_prompt"
TOKEN_FIELD = "live_token"  # in the frames messages; the request field is "token"
MAX_ID_LENGTH = 256  # prompt, node and client ids, tokens
MAX_STOP_REQUEST_BYTES = 4096
MAX_PROMPT_REQUEST_BYTES = 8 * MAX_LIVE_PROMPT_CHARS  # the text JSON-escaped (up to 6 bytes a character) and the ids


class LiveTracks:
    """The tracks a running stream reads chunk by chunk, and the live edits that replace them.

    The initial tracks cover the stream from frame 0 (already converted by the caller). A live edit is
    read from the frame where the next chunk starts (`tracks_from_widget_json(..., from_time=...)`),
    converted to the stream with `convert`, and its last frame holds from then on, so an edit made
    any time into a stream of any length, even after the drawn tracks have ended, steers what comes.
    """

    def __init__(self, tracks: TrackSet | None, convert: Callable[[TrackSet], TrackSet], fps: float):
        self._lock = threading.Lock()
        self._convert = convert
        self._fps = float(fps)
        # Head inputs are computed once per edit, not once per chunk.
        self._inputs = track_head_inputs(tracks) if tracks is not None else None
        self._first_frame = 0  # the stream frame of the inputs' frame 0
        self._holds = False  # whether the inputs' last frame holds after their end (live edits)
        self._next_frame = 0  # where the next chunk starts: chunks read contiguous windows
        self.version = 0
        self.received_at: float | None = None  # time.monotonic() when the route received the latest edit
        self.version_read = 0  # the edit the latest chunk was made with (0: the initial tracks)
        self.version_read_received_at: float | None = None

    def window(self, start: int, stop: int) -> TrackHeadInputs | None:
        """Track-head inputs of pixel frames [start, stop) as they are now (None: no tracks)."""
        with self._lock:
            inputs, first, holds = self._inputs, self._first_frame, self._holds
            self._next_frame = max(self._next_frame, stop)
            self.version_read, self.version_read_received_at = self.version, self.received_at
        if inputs is None:
            return None
        if not holds:
            return inputs.frames(slice(start, stop))
        rows = (torch.arange(start, stop) - first).clamp(0, inputs.coords.shape[1] - 1)
        return inputs.frames(rows)

    def apply_edit(self, document, received_at: float | None = None) -> int:
        """Swaps in a widget document from the next chunk on; returns the edit's version."""
        with self._lock:
            first = self._next_frame
        # read, validated and converted before taking the lock
        inputs = track_head_inputs(self._convert(tracks_from_widget_json(document, from_time=first / self._fps)))
        with self._lock:
            self._inputs, self._first_frame, self._holds = inputs, first, True
            self.version += 1
            self.received_at = time.monotonic() if received_at is None else received_at
            return self.version


class _Stream:
    """One registration: the stream's tracks, its token (None: takes no edits) and its client's id."""

    def __init__(self, live: LiveTracks, token: str | None, client_id: str | None, prompts=None):
        self.live = live
        self.prompts = prompts  # the stream's LivePrompts (prompt_schedule.py), None: it takes no prompt switches
        self.token = token
        self.client_id = client_id
        self.update_lock = threading.Lock()  # edits of one stream apply in the order they are parsed
        self.stop = threading.Event()  # set by the stop route


# (prompt id, node id) -> the streams running under it, usually one.
_running: dict[tuple[str, str], list[_Stream]] = {}
_registry_lock = threading.Lock()


def _same(secret: str, given: str) -> bool:
    return hmac.compare_digest(secret.encode("utf-8", "surrogatepass"), given.encode("utf-8", "surrogatepass"))


class running_stream:
    """Context manager that makes a stream reachable by the live route while it runs."""

    def __init__(self, prompt_id: str | None, node_id: str | None, live: LiveTracks, prompts=None):
        self.key = (str(prompt_id), str(node_id))
        self.live = live
        self.prompts = prompts
        self.stream: _Stream | None = None
        self._fields: dict = {}

    @property
    def token(self) -> str | None:
        return self.stream.token if self.stream is not None else None

    @property
    def stop_requested(self) -> bool:
        return self.stream is not None and self.stream.stop.is_set()

    def wait_for_stop(self, seconds: float) -> bool:
        """Sleeps up to `seconds`, less if Stop comes; returns whether it came."""
        if self.stream is None:
            time.sleep(seconds)
            return False
        return self.stream.stop.wait(seconds)

    def set_frames_fields(self, **fields) -> None:
        """Adds `fields` to this stream's next frames and status messages (from the thread that sends them)."""
        self._fields.update(fields)

    def __enter__(self) -> LiveTracks:
        client_id = host.current_client_id()
        # With a server but no client id the frames messages go to every client, so no token is handed out.
        token = secrets.token_urlsafe(32) if client_id is not None or not host.has_server() else None
        self.stream = _Stream(self.live, token, client_id, self.prompts)
        self._fields = {TOKEN_FIELD: token} if token is not None else {}
        with _registry_lock:
            _running.setdefault(self.key, []).append(self.stream)
        host.add_frames_fields(*self.key, self._fields)
        return self.live

    def __exit__(self, *exc) -> None:
        host.remove_frames_fields(*self.key, self._fields)
        with _registry_lock:
            # Only this registration: another stream under the same ids keeps its own.
            streams = [stream for stream in _running.get(self.key, []) if stream is not self.stream]
            if streams:
                _running[self.key] = streams
            else:
                _running.pop(self.key, None)


def _id(body: dict, name: str) -> str:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
        raise ValueError(f"{name} must be a string")
    text = str(value)  # a ValueError past Python's digit limit for integers
    if len(text) > MAX_ID_LENGTH:
        raise ValueError(f"{name} is longer than {MAX_ID_LENGTH} characters")
    return text


def _optional_string(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{name} is longer than {MAX_ID_LENGTH} characters")
    return value


def _size_problem(document: dict) -> str | None:
    """Why the edit is too large for live control (counted before anything is parsed), or None."""
    tracks = document.get("tracks")
    if not isinstance(tracks, list):
        return None  # the parser names that problem
    # Region drags (widget JSON version 2) count as tracks here: each is one handle of the request.
    regions = document.get("regions")
    tracks = tracks + regions if isinstance(regions, list) else tracks
    if len(tracks) > MAX_LIVE_TRACKS:
        return f"too many tracks for a live edit: {len(tracks)} (the limit is {MAX_LIVE_TRACKS})"
    keyframes = sum(len(track["keyframes"]) for track in tracks
                    if isinstance(track, dict) and isinstance(track.get("keyframes"), list))
    if keyframes > MAX_LIVE_KEYFRAMES:
        return f"too many keyframes for a live edit: {keyframes} (the limit is {MAX_LIVE_KEYFRAMES})"
    return None


def _owned_stream(body, what: str) -> tuple[_Stream | None, int, dict]:
    """The running stream a request body names and owns, or (None, HTTP status, error reply)."""
    if not isinstance(body, dict):
        return None, 400, {"error": f"the body must be a JSON object with prompt_id, node_id, token{what}"}
    try:
        key = (_id(body, "prompt_id"), _id(body, "node_id"))
        token = _optional_string(body, "token")
        client_id = _optional_string(body, "client_id")
    except ValueError as error:
        return None, 400, {"error": str(error)}
    with _registry_lock:
        streams = list(_running.get(key, ()))
    if not streams:
        return None, 404, {"error": f"no MotionStream stream is running for prompt {key[0]}, node {key[1]}"}
    if all(stream.token is None for stream in streams):
        return None, 403, {"error": "this stream was queued without a client id, so it takes no live edits "
                                    "and no Stop (Cancel still ends it)"}
    owned = None
    for stream in streams:  # every candidate is compared, so the time does not tell which failed
        matches = stream.token is not None and _same(stream.token, token or "")
        if stream.client_id is not None:
            matches &= _same(stream.client_id, client_id or "")
        if matches:
            owned = stream
    if owned is None:
        return None, 403, {"error": "only the client that queued this prompt can steer or stop its stream "
                                    "(the token or client id is missing or wrong)"}
    return owned, 200, {}


def apply_live_tracks(body, received_at: float | None = None) -> tuple[int, dict]:
    """Handles one parsed request body; returns (HTTP status, JSON reply). Shared by the route and tests.

    The body: {"prompt_id", "node_id", "token" (the stream's live_token), "client_id" (ComfyUI's, where
    the prompt had one), "tracks" (a motionstream-tracks document)}. `received_at`: when the route got it
    (time.monotonic(); now if None), for the latency stamps."""
    received_at = time.monotonic() if received_at is None else received_at
    owned, status, reply = _owned_stream(body, " and tracks")
    if owned is None:
        return status, reply
    document = body.get("tracks")
    if not isinstance(document, dict):
        return 400, {"error": "tracks must be a motionstream-tracks object"}
    problem = _size_problem(document)
    if problem is not None:
        return 413, {"error": problem}
    try:
        with owned.update_lock:
            version = owned.live.apply_edit(document, received_at)
    except RecursionError:
        return 400, {"error": "the tracks nest too deeply"}
    except (ValueError, TypeError, OverflowError) as error:
        return 400, {"error": f"the tracks cannot be used: {error}"}
    return 200, {"ok": True, "version": version}


def apply_stop(body) -> tuple[int, dict]:
    """Asks the stream a body names (as for live edits, without tracks) to finish after its current chunk."""
    owned, status, reply = _owned_stream(body, "")
    if owned is None:
        return status, reply
    owned.stop.set()
    return 200, {"ok": True, "stopping": True}


def apply_live_prompt(body) -> tuple[int, dict]:
    """Switches the prompt of the stream a body names (as for live edits) from its next chunk on.

    The body: the ids and token as for live edits, and either "index" (a prompt of the stream's prompt
    schedule, from 0) or "text" (a new prompt; the schedule needs a CLIP to encode it), and optionally
    "prompt_change" ("recache" or "keep"; else the schedule's). See nodes/prompt_schedule.py."""
    owned, status, reply = _owned_stream(body, " and index or text")
    if owned is None:
        return status, reply
    if owned.prompts is None:
        return 409, {"error": "this stream has no prompt schedule: connect a MotionStream Prompt Schedule to the "
                              "sampler's prompt_schedule to switch prompts while it runs"}
    index, text, prompt_change = body.get("index"), body.get("text"), body.get("prompt_change")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
        return 400, {"error": "index must be an integer (a prompt of the stream's schedule, from 0)"}
    if text is not None:
        if not isinstance(text, str) or not text.strip():
            return 400, {"error": "text must be a non-empty string"}
        if len(text) > MAX_LIVE_PROMPT_CHARS:
            return 413, {"error": f"the text is longer than {MAX_LIVE_PROMPT_CHARS} characters"}
    if prompt_change is not None and not isinstance(prompt_change, str):
        return 400, {"error": "prompt_change must be a string"}
    try:
        with owned.update_lock:
            version = owned.prompts.request(index=index, text=text, prompt_change=prompt_change)
    except ValueError as error:
        return 400, {"error": str(error)}
    return 200, {"ok": True, "version": version}


def _parsed(raw: bytes | str, limit: int):
    """(body, None) or (None, (HTTP status, error reply))."""
    if len(raw) > limit:
        return None, (413, {"error": f"the body is larger than the limit of {limit} bytes"})
    try:
        return json.loads(raw), None
    except RecursionError:
        return None, (400, {"error": "the body is not usable JSON: it nests too deeply"})
    except ValueError as error:  # also bad UTF-8 and integers past Python's digit limit
        return None, (400, {"error": f"the body is not JSON: {error}"})


def handle_live_tracks_request(raw: bytes | str) -> tuple[int, dict]:
    """The route's whole work on a raw body: bounded, decoded, checked, applied. Runs on a worker thread."""
    received_at = time.monotonic()
    body, problem = _parsed(raw, MAX_LIVE_REQUEST_BYTES)
    return problem if problem is not None else apply_live_tracks(body, received_at)


def handle_stop_request(raw: bytes | str) -> tuple[int, dict]:
    body, problem = _parsed(raw, MAX_STOP_REQUEST_BYTES)
    return problem if problem is not None else apply_stop(body)


def handle_live_prompt_request(raw: bytes | str) -> tuple[int, dict]:
    body, problem = _parsed(raw, MAX_PROMPT_REQUEST_BYTES)
    return problem if problem is not None else apply_live_prompt(body)


host.add_json_route("POST", ROUTE, handle_live_tracks_request, MAX_LIVE_REQUEST_BYTES)
host.add_json_route("POST", STOP_ROUTE, handle_stop_request, MAX_STOP_REQUEST_BYTES)
host.add_json_route("POST", PROMPT_ROUTE, handle_live_prompt_request, MAX_PROMPT_REQUEST_BYTES)
