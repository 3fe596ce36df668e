"""The live-control route POST /motionstream/live_tracks: ownership, bounds, parse errors, registration
and fallback cancels, through the plain handler and through a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings, strategies as st

from motionstream_core import MAX_LIVE_KEYFRAMES, MAX_LIVE_REQUEST_BYTES, MAX_LIVE_TRACKS

# The streaming node's tiny model and helpers, for the node-level checks.
from test_streaming_node import _run, _widget, model, tiny_vae  # noqa: F401 (fixtures)

aiohttp_web = pytest.importorskip("aiohttp.web")
pytestmark = pytest.mark.usefixtures("single_thread")

EXAMPLE_SECONDS = 10.0  # no request may take longer than this ("no hang")


def _document(tracks: int = 1, keyframes: int = 2) -> dict:
    return {"format": "motionstream-tracks", "version": 1, "width": 80, "height": 48, "fps": 16, "duration": 1.0,
            "tracks": [{"id": i, "keyframes": [{"t": k / max(keyframes, 1), "x": 0.5, "y": 0.5} for k in range(keyframes)]}
                       for i in range(tracks)]}


@pytest.fixture(autouse=True)
def withdraw_cancels(pack):
    """Cancels requested by a test do not reach other tests."""
    yield
    pack.nodes.host.request_interrupt(False)


@pytest.fixture
def live_control(pack):
    return pack.nodes.live_control


@pytest.fixture
def host(pack):
    return pack.nodes.host


@pytest.fixture
def stream(live_control):
    """A registered stream (prompt "p", node "5") with identity conversion; yields its running_stream."""
    live = live_control.LiveTracks(None, lambda tracks: tracks, 16)
    registration = live_control.running_stream("p", "5", live)
    with registration:
        yield registration


def _body(registration, **changes) -> dict:
    body = {"prompt_id": "p", "node_id": "5", "token": registration.token, "tracks": _document()}
    body.update(changes)
    return body


def _raw(body) -> bytes:
    return json.dumps(body).encode()


# ---------------------------------------------------------------------------------------------
# 1. Ownership
# ---------------------------------------------------------------------------------------------


def test_only_the_token_holder_steers(live_control, stream):
    assert isinstance(stream.token, str) and len(stream.token) >= 32
    assert live_control.apply_live_tracks(_body(stream)) == (200, {"ok": True, "version": 1})
    for token in ("x" * len(stream.token), stream.token[:-1], "", None, "é\ud800"):
        status, reply = live_control.apply_live_tracks(_body(stream, token=token))
        assert status == 403 and "queued this prompt" in reply["error"], (token, reply)
    body = _body(stream)
    del body["token"]
    assert live_control.apply_live_tracks(body)[0] == 403
    assert live_control.apply_live_tracks(_body(stream, token=12))[0] == 400
    assert stream.live.version == 1, "no rejected edit was applied"


def test_another_streams_token_does_not_steer(live_control):
    first = live_control.running_stream("p", "5", live_control.LiveTracks(None, lambda t: t, 16))
    second = live_control.running_stream("p", "6", live_control.LiveTracks(None, lambda t: t, 16))
    with first, second:
        assert first.token != second.token
        assert live_control.apply_live_tracks(_body(first, token=second.token))[0] == 403
        assert live_control.apply_live_tracks(_body(second, node_id="6"))[0] == 200


def test_comfyui_client_id_is_compared_too(live_control, host, monkeypatch):
    monkeypatch.setattr(host, "has_server", lambda: True)
    monkeypatch.setattr(host, "current_client_id", lambda: "client-a")
    with live_control.running_stream("p", "5", live_control.LiveTracks(None, lambda t: t, 16)) as _:
        registration = live_control._running[("p", "5")][0]
        token = registration.token
        body = {"prompt_id": "p", "node_id": "5", "token": token, "tracks": _document()}
        assert live_control.apply_live_tracks({**body, "client_id": "client-b"})[0] == 403
        assert live_control.apply_live_tracks(body)[0] == 403, "the client id is required when known"
        assert live_control.apply_live_tracks({**body, "client_id": "client-a"})[0] == 200


def test_a_prompt_without_client_id_hands_out_no_token(live_control, host, monkeypatch):
    """Under a server, messages of such a prompt go to every client, so the token would leak."""
    monkeypatch.setattr(host, "has_server", lambda: True)
    monkeypatch.setattr(host, "current_client_id", lambda: None)
    host.sent_messages.clear()
    registration = live_control.running_stream("p", "5", live_control.LiveTracks(None, lambda t: t, 16))
    with registration:
        assert registration.token is None
        host.send_frames("5", torch.zeros(1, 2, 2, 3), 16.0, 0, done=False)
        status, reply = live_control.apply_live_tracks({"prompt_id": "p", "node_id": "5", "token": "", "tracks": _document()})
        assert status == 403 and "without a client id" in reply["error"]
    assert "live_token" not in host.sent_messages[-1][1]


def test_the_token_goes_in_this_streams_frames_messages_only(live_control, host):
    """Frames of (prompt, node) carry its stream's token: the one its own thread registered, else the latest."""
    host.sent_messages.clear()
    frames = torch.zeros(1, 2, 2, 3)
    first = live_control.running_stream(None, "5", live_control.LiveTracks(None, lambda t: t, 16))
    second = live_control.running_stream(None, "5", live_control.LiveTracks(None, lambda t: t, 16))
    entered, sent, done = threading.Event(), threading.Event(), threading.Event()

    def other_stream():
        with second:
            entered.set()
            sent.wait(EXAMPLE_SECONDS)
            host.send_frames("5", frames, 16.0, 0, done=False)
        done.set()

    with first:
        host.send_frames("5", frames, 16.0, 0, done=False)
        thread = threading.Thread(target=other_stream)
        thread.start()
        entered.wait(EXAMPLE_SECONDS)
        host.send_frames("5", frames, 16.0, 1, done=False)  # this thread's own stream
        host.send_frames("7", frames, 16.0, 0, done=False)  # another node
        sent.set()
        done.wait(EXAMPLE_SECONDS)
        thread.join(EXAMPLE_SECONDS)
        unregistered = threading.Thread(target=host.send_frames, args=("5", frames, 16.0, 2, False))
        unregistered.start()  # a thread with no stream of its own
        unregistered.join(EXAMPLE_SECONDS)
    host.send_frames("5", frames, 16.0, 3, done=True)  # after the streams ended
    tokens = [data.get("live_token") for _, data in host.sent_messages]
    assert first.token != second.token
    assert tokens == [first.token, first.token, None, second.token, first.token, None]


def test_node_frames_carry_a_fresh_token_and_a_foreign_edit_changes_nothing(pack, model, tiny_vae, monkeypatch):  # noqa: F811
    host, live_control = pack.nodes.host, pack.nodes.live_control
    baseline, base_latent, _ = _run(pack, model, tiny_vae, _widget(0.8))
    replies, tokens = [], []
    original_send = host.send_frames

    def send_and_attack(node_id, frames, fps, chunk_index, done):
        original_send(node_id, frames, fps, chunk_index, done)
        tokens.append(host.sent_messages[-1][1].get("live_token"))
        if chunk_index == 1:  # another client, knowing the prompt and node ids, tries to steer
            body = {"prompt_id": None, "node_id": "12", "token": "guessed", "tracks": _widget(0.3)}
            replies.append(live_control.handle_live_tracks_request(_raw(body)))

    monkeypatch.setattr(host, "send_frames", send_and_attack)
    _, latent, _ = _run(pack, model, tiny_vae, _widget(0.8))
    _, _, _ = _run(pack, model, tiny_vae, _widget(0.8))
    assert replies[0][0] == 403 and "error" in replies[0][1]
    torch.testing.assert_close(latent["samples"], base_latent["samples"])
    assert len(tokens) == 6 and all(tokens) and len(set(tokens[:3])) == 1 and len(set(tokens[3:])) == 1
    assert tokens[0] != tokens[3], "every run gets its own token"
    assert not live_control._running


# ---------------------------------------------------------------------------------------------
# 2, 3. Bounds and parse errors
# ---------------------------------------------------------------------------------------------


def test_limits_are_the_cores_named_constants(live_control):
    assert (MAX_LIVE_REQUEST_BYTES, MAX_LIVE_TRACKS, MAX_LIVE_KEYFRAMES) == (2**20, 1_000, 20_000)


def test_oversized_bodies_and_documents_answer_413_quickly(live_control, stream):
    start = time.perf_counter()
    status, reply = live_control.handle_live_tracks_request(b" " * (MAX_LIVE_REQUEST_BYTES + 1))
    assert status == 413 and str(MAX_LIVE_REQUEST_BYTES) in reply["error"]
    status, reply = live_control.apply_live_tracks(_body(stream, tracks=_document(tracks=MAX_LIVE_TRACKS + 1, keyframes=1)))
    assert status == 413 and "too many tracks" in reply["error"]
    status, reply = live_control.apply_live_tracks(_body(stream, tracks=_document(tracks=11, keyframes=MAX_LIVE_KEYFRAMES // 10)))
    assert status == 413 and "too many keyframes" in reply["error"]
    assert time.perf_counter() - start < 2.0
    # The limits themselves are accepted.
    assert live_control.apply_live_tracks(_body(stream, tracks=_document(tracks=MAX_LIVE_TRACKS, keyframes=1)))[0] == 200


def test_a_reported_hostile_body_is_refused_before_parsing(live_control, stream):
    """The issue's reproducer: 1,000,000 keyframes (~40 MB) held the event loop for 14.6 s."""
    tracks = _document(tracks=1, keyframes=1)
    tracks["tracks"][0]["keyframes"] = [{"t": i * 1e-6, "x": 0.5, "y": 0.5} for i in range(1_000_000)]
    raw = _raw(_body(stream, tracks=tracks))
    assert len(raw) > 30_000_000
    start = time.perf_counter()
    status, reply = live_control.handle_live_tracks_request(raw)
    assert status == 413 and "error" in reply
    assert time.perf_counter() - start < 0.1


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deep_nesting_answers_400(live_control, stream, depth):
    for raw in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth,
                json.dumps(_body(stream))[:-1] + ',"extra":' + "[" * depth + "]" * depth + "}"):
        status, reply = live_control.handle_live_tracks_request(raw.encode())
        assert status == 400 and "error" in reply, (depth, reply)
    # Already parsed (a caller of apply_live_tracks): nesting inside the document.
    nested: list = []
    for _ in range(depth):
        nested = [nested]
    body = _body(stream, tracks={**_document(), "tracks": [{"id": 0, "keyframes": nested}]})
    status, reply = live_control.apply_live_tracks(body)
    assert status == 400 and "error" in reply


def test_bad_bodies_answer_400_with_a_message(live_control, stream):
    cases = [b"", b"nonsense", b"\xff\xfe\x00", b"[]", b"null", b'"text"', b"1" * 5000,
             _raw(_body(stream, prompt_id=["p"])), _raw(_body(stream, node_id={"n": 5})),
             _raw(_body(stream, node_id="5" * 300)), _raw(_body(stream, client_id=7)),
             _raw(_body(stream, tracks="a string")), _raw(_body(stream, tracks=[1, 2])),
             _raw(_body(stream, tracks={**_document(), "tracks": [{"id": 0, "keyframes": [{"t": "x"}]}]})),
             _raw(_body(stream, tracks={**_document(), "fps": float("nan")}))]
    for raw in cases:
        status, reply = live_control.handle_live_tracks_request(raw)
        assert status == 400 and isinstance(reply.get("error"), str) and reply["error"], (raw[:60], status, reply)


# ---------------------------------------------------------------------------------------------
# 4. Registration
# ---------------------------------------------------------------------------------------------


def test_a_stream_ending_unregisters_only_itself(live_control):
    """Two streams under the same prompt and node id: when the first ends, the second stays reachable."""
    first = live_control.running_stream("p", "5", live_control.LiveTracks(None, lambda t: t, 16))
    second = live_control.running_stream("p", "5", live_control.LiveTracks(None, lambda t: t, 16))
    first.__enter__()
    second.__enter__()
    try:
        assert live_control.apply_live_tracks(_body(first))[0] == 200
        assert live_control.apply_live_tracks(_body(second))[0] == 200
        assert (first.live.version, second.live.version) == (1, 1), "each edit reached its own stream"
        first.__exit__(None, None, None)
        assert live_control.apply_live_tracks(_body(second))[0] == 200
        assert live_control.apply_live_tracks(_body(first))[0] == 403
    finally:
        second.__exit__(None, None, None)
    assert live_control.apply_live_tracks(_body(second))[0] == 404
    assert not live_control._running


# ---------------------------------------------------------------------------------------------
# 5. Fallback cancels
# ---------------------------------------------------------------------------------------------


def test_a_cancel_stops_every_running_stream(host):
    first, second = host.interrupt_check(), host.interrupt_check()
    assert first() is False and second() is False
    host.request_interrupt()
    for check in (first, second, first):  # it is not used up by the first to see it
        with pytest.raises(host.Interrupted):
            check()
    assert host.interrupt_check()() is False, "a run started after the cancel goes on"


def test_a_cancel_while_nothing_runs_does_not_stop_the_next_run(pack, host, model, tiny_vae):  # noqa: F811
    host.request_interrupt()
    images, _, _ = _run(pack, model, tiny_vae, _widget(0.8))
    assert images.shape[0] == 17


def test_a_cancel_during_a_run_stops_it_and_withdrawing_works(pack, host, model, tiny_vae, monkeypatch):  # noqa: F811
    original_send = host.send_frames

    def send_and_cancel(node_id, frames, fps, chunk_index, done):
        original_send(node_id, frames, fps, chunk_index, done)
        host.request_interrupt()

    monkeypatch.setattr(host, "send_frames", send_and_cancel)
    with pytest.raises(host.Interrupted):
        _run(pack, model, tiny_vae, _widget(0.8))
    assert not pack.nodes.live_control._running
    check = host.interrupt_check()
    host.request_interrupt()
    host.request_interrupt(False)
    assert check() is False


def test_a_cancel_stops_the_runs_going_on_and_not_the_next(host):
    running = host.interrupt_check()
    host.request_interrupt()
    with pytest.raises(host.Interrupted):
        running()
    assert host.interrupt_check()() is False


# ---------------------------------------------------------------------------------------------
# The aiohttp route, on a real server on 127.0.0.1
# ---------------------------------------------------------------------------------------------


class RouteServer:
    """aiohttp serving `routes` [(method, path, aiohttp handler)] on 127.0.0.1, its loop on a thread."""

    def __init__(self, routes):
        self.loop = asyncio.new_event_loop()
        self.loop_thread: threading.Thread | None = None
        ready = threading.Event()

        async def start():
            app = aiohttp_web.Application()
            for method, path, handler in routes:
                app.router.add_route(method, path, handler)
            self.runner = aiohttp_web.AppRunner(app)
            await self.runner.setup()
            site = aiohttp_web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = self.runner.addresses[0][1]

        def serve():
            self.loop_thread = threading.current_thread()
            self.loop.run_until_complete(start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(30), "the server did not start"

    def request(self, raw: bytes, path: str = "/motionstream/live_tracks", headers=None) -> tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=EXAMPLE_SECONDS)
        try:
            connection.request("POST", path, body=raw, headers=headers or {"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def raw_exchange(self, head: bytes, body_parts=(), pause: float = 0.0) -> tuple[int, dict]:
        """Sends `head`, then the body parts (pausing between), and reads one reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=EXAMPLE_SECONDS) as sock:
            sock.sendall(head)
            for part in body_parts:
                time.sleep(pause)
                sock.sendall(part)
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = sock.recv(65536)
                assert chunk, f"the connection closed before a reply: {reply!r}"
                reply += chunk
            head_text, _, body = reply.partition(b"\r\n\r\n")
            length = int(next(line.split(b":", 1)[1] for line in head_text.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            while len(body) < length:
                chunk = sock.recv(65536)
                assert chunk, "the connection closed inside the reply"
                body += chunk
        return int(head_text.split()[1]), json.loads(body)

    def close(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.fixture
def server(host, live_control):
    route = host.json_route(live_control.handle_live_tracks_request, MAX_LIVE_REQUEST_BYTES)
    running = RouteServer([("POST", live_control.ROUTE, route)])
    yield running
    running.close()


def test_route_answers_through_http(server, stream):
    assert server.request(_raw(_body(stream))) == (200, {"ok": True, "version": 1})
    status, reply = server.request(_raw(_body(stream, token="other")))
    assert status == 403 and "queued this prompt" in reply["error"]
    status, reply = server.request(("[" * 100_000 + "]" * 100_000).encode())
    assert status == 400 and "nests too deeply" in reply["error"]
    status, reply = server.request(b"{")
    assert status == 400 and "not JSON" in reply["error"]


def test_route_refuses_a_40_mb_body_without_reading_it(server):
    head = (b"POST /motionstream/live_tracks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 40000000\r\n\r\n")
    start = time.perf_counter()
    status, reply = server.raw_exchange(head, [b"[" * 65536])  # and not the other 39.9 MB
    assert status == 413 and str(MAX_LIVE_REQUEST_BYTES) in reply["error"]
    assert time.perf_counter() - start < 2.0


def test_route_limits_a_body_without_length(server):
    size = MAX_LIVE_REQUEST_BYTES + 10
    head = (b"POST /motionstream/live_tracks HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (size, b" " * size)
    status, reply = server.raw_exchange(head, [chunk])
    assert status == 413 and "larger than" in reply["error"]


def test_route_times_out_a_slow_body(server, host, monkeypatch):
    monkeypatch.setattr(host, "ROUTE_READ_TIMEOUT_S", 0.3)
    head = (b"POST /motionstream/live_tracks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n")
    status, reply = server.raw_exchange(head, [b"{"], pause=0.0)
    assert status == 408 and "did not arrive" in reply["error"]


def test_route_handles_off_the_event_loop_and_bounds_requests_in_flight(host, monkeypatch):
    monkeypatch.setattr(host, "ROUTE_MAX_IN_FLIGHT", 2)
    release, threads = threading.Event(), []

    def slow_handler(body: bytes):
        threads.append(threading.current_thread())
        if body == b"wait":
            release.wait(EXAMPLE_SECONDS)
        if body == b"boom":
            raise KeyError("a bug")
        return 200, {"ok": True}

    running = RouteServer([("POST", "/slow", host.json_route(slow_handler, 100))])
    try:
        results = []
        waiting = [threading.Thread(target=lambda: results.append(running.request(b"wait", "/slow"))) for _ in range(2)]
        for thread in waiting:
            thread.start()
        deadline = time.monotonic() + EXAMPLE_SECONDS
        while len(threads) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, reply = running.request(b"more", "/slow")
        assert status == 429 and "too many" in reply["error"]
        release.set()
        for thread in waiting:
            thread.join(EXAMPLE_SECONDS)
        assert results == [(200, {"ok": True})] * 2
        status, reply = running.request(b"boom", "/slow")
        assert status == 500 and "KeyError" in reply["error"]
        assert running.loop_thread not in threads, "handlers run on worker threads"
    finally:
        running.close()


# ---------------------------------------------------------------------------------------------
# 6. Fuzzing: every hostile request gets a 4xx with a message, never a 500, and never hangs
# ---------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)
keyframes = st.lists(st.dictionaries(st.sampled_from(["t", "x", "y", "visible"]), json_values, max_size=4), max_size=6)
documents = st.fixed_dictionaries(
    {"format": st.sampled_from(["motionstream-tracks", "other"]) | json_values,
     "version": st.sampled_from([1, 2]) | json_values,
     "width": st.sampled_from([80, 0, -1, 10**30]) | json_values,
     "height": st.sampled_from([48, 2**40]) | json_values,
     "fps": st.sampled_from([16, 0, 1e308]) | json_values,
     "tracks": st.lists(st.fixed_dictionaries({"id": json_values, "keyframes": keyframes | json_values},
                                              optional={"static": json_values}), max_size=4) | json_values},
    optional={"duration": st.floats() | json_values},
)


def _deep(depth: int, kind: str) -> bytes:
    opening, closing = {"list": ("[", "]"), "object": ('{"a":', "}")}[kind]
    return (opening * depth + "0" + closing * depth).encode()


def _mutated(key: str, value, remove: bool) -> dict:
    document = _document()
    if remove:
        del document[key]
    else:
        document[key] = value
    return document


def hostile_bodies(token: str):
    """(raw body, whether it carries the owner's token) pairs."""
    foreign = st.text(min_size=0, max_size=60).filter(lambda text: text != token)
    return st.one_of(
        st.binary(max_size=200).map(lambda raw: (raw, False)),
        json_values.map(lambda value: (json.dumps(value).encode(), False)),
        st.tuples(st.integers(1_000, 200_000), st.sampled_from(["list", "object"])).map(lambda a: (_deep(*a), False)),
        st.integers(1, 3).map(lambda n: (b" " * (MAX_LIVE_REQUEST_BYTES + n), False)),
        st.fixed_dictionaries({"prompt_id": st.just("p") | json_values, "node_id": st.just("5") | json_values,
                               "token": foreign | json_values, "tracks": documents | json_values}).map(
            lambda body: (_raw(body), False)),
        st.fixed_dictionaries({"prompt_id": st.just("p"), "node_id": st.just("5"), "token": st.just(token),
                               "tracks": documents | json_values}).map(lambda body: (_raw(body), True)),
        st.tuples(foreign, documents).map(  # another client's token on a well-formed request
            lambda a: (_raw({"prompt_id": "p", "node_id": "5", "token": a[0], "tracks": a[1]}), False)),
        st.tuples(st.sampled_from(sorted(_document())), st.none() | json_values, st.booleans()).map(  # owner, one field off
            lambda a: (_raw({"prompt_id": "p", "node_id": "5", "token": token, "tracks": _mutated(*a)}), True)),
        st.integers(MAX_LIVE_TRACKS + 1, MAX_LIVE_TRACKS + 50).map(
            lambda n: (_raw({"prompt_id": "p", "node_id": "5", "token": token, "tracks": _document(n, 1)}), True)),
    )


def _assert_refused_or_applied(status: int, reply: dict, owner: bool) -> None:
    event(f"{'owner' if owner else 'other'} {status}")
    assert status != 500, reply
    if owner and status == 200:
        assert reply["ok"] is True  # a well-formed document from the owner may be valid
        return
    assert 400 <= status < 500, (status, reply)
    assert isinstance(reply.get("error"), str) and reply["error"]
    if not owner and status not in (400, 413):
        assert status in (403, 404)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_the_handler(live_control, data):
    live = live_control.LiveTracks(None, lambda tracks: tracks, 16)
    registration = live_control.running_stream("p", "5", live)
    with registration:
        raw, owner = data.draw(hostile_bodies(registration.token))
        start = time.perf_counter()
        status, reply = live_control.handle_live_tracks_request(raw)
        assert time.perf_counter() - start < EXAMPLE_SECONDS
        json.dumps(reply)  # the reply is JSON
        _assert_refused_or_applied(status, reply, owner)
        if not owner:
            assert live.version == 0, "nothing but the owner's edit is applied"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_the_route_over_http(server, live_control, data):
    live = live_control.LiveTracks(None, lambda tracks: tracks, 16)
    registration = live_control.running_stream("p", "5", live)
    with registration:
        raw, owner = data.draw(hostile_bodies(registration.token))
        start = time.perf_counter()
        status, reply = server.request(raw)
        assert time.perf_counter() - start < EXAMPLE_SECONDS
        _assert_refused_or_applied(status, reply, owner)
