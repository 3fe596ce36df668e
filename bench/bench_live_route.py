"""Load test of the live-control route POST /motionstream/live_tracks: does hostile traffic hold the
server's event loop?

Starts the route (the pack's own handler, `host.json_route`) with a registered stream on an aiohttp
server on 127.0.0.1 in a subprocess, then sends 1,000 valid edits (the stream owner's token) and
1,000 hostile requests (oversized bodies, including the issue's 40 MB / 1,000,000-keyframe one,
100,000-deep nesting, malformed bodies, another client's token), several at a time, while a probe
process GETs a trivial endpoint of the same server every few ms. Prints the probe's latency
(median / p99 / max, idle and under load) and the status codes per kind of request.

    python bench/bench_live_route.py [--valid 1000] [--hostile 1000] [--concurrency 4] [--deadline 240]

Loopback only; bounded in count and time (the server and probe stop by themselves at the deadline).
Needs aiohttp (pip install aiohttp; ComfyUI ships it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from _support import load_pack  # noqa: E402

PROBE_PATH = "/ping"
PROBE_INTERVAL_S = 0.005




def document(tracks: int, keyframes: int, shift: float = 0.0) -> dict:
    """An editor document: `tracks` drags of `keyframes` keyframes over 5 s."""
    return {"format": "motionstream-tracks", "version": 1, "width": 832, "height": 480, "fps": 16, "duration": 5.0,
            "tracks": [{"id": i, "keyframes": [
                {"t": round(5.0 * k / max(keyframes - 1, 1), 4), "x": round(0.1 + 0.8 * k / keyframes, 4),
                 "y": round((0.1 + 0.05 * i + shift) % 1.0, 4)} for k in range(keyframes)]} for i in range(tracks)]}


# ---------------------------------------------------------------------------------------------
# The server (a subprocess): the route, a registered stream and a trivial endpoint
# ---------------------------------------------------------------------------------------------


def serve(deadline_s: float) -> None:
    from aiohttp import web

    pack = load_pack()
    host, live_control = pack.nodes.host, pack.nodes.live_control
    from motionstream_core import MAX_LIVE_REQUEST_BYTES

    live = live_control.LiveTracks(None, lambda tracks: tracks, 16)
    registration = live_control.running_stream("bench-prompt", "5", live)

    async def ping(request):
        return web.Response(text="ok")

    async def main():
        app = web.Application()
        app.router.add_post(live_control.ROUTE, host.json_route(live_control.handle_live_tracks_request,
                                                                MAX_LIVE_REQUEST_BYTES))
        app.router.add_get(PROBE_PATH, ping)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(json.dumps({"port": runner.addresses[0][1], "token": registration.token}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
        try:
            await asyncio.wait_for(stop.wait(), deadline_s)
        except asyncio.TimeoutError:
            pass
        await runner.cleanup()
        print(json.dumps({"version": live.version}), flush=True)

    with registration:
        asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# The probe (a subprocess): GET /ping every few ms until stdin closes; prints the latencies
# ---------------------------------------------------------------------------------------------


def probe(port: int, deadline_s: float) -> None:
    import http.client

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    end = time.monotonic() + deadline_s
    latencies, failures = [], 0
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set() and time.monotonic() < end:
        start = time.perf_counter()
        try:
            connection.request("GET", PROBE_PATH)
            connection.getresponse().read()
            latencies.append(time.perf_counter() - start)
        except OSError:
            failures += 1
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        time.sleep(PROBE_INTERVAL_S)
    print(json.dumps({"latencies": latencies, "failures": failures}), flush=True)


# ---------------------------------------------------------------------------------------------
# The load (this process)
# ---------------------------------------------------------------------------------------------


def requests(token: str, valid: int, hostile: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)

    def body(tracks, token_=token, **extra):
        return json.dumps({"prompt_id": "bench-prompt", "node_id": "5", "token": token_, "tracks": tracks, **extra}).encode()

    items = [("valid", body(document(tracks=rng.randint(1, 8), keyframes=rng.randint(2, 40), shift=rng.random())))
             for _ in range(valid)]
    big = body(document(tracks=1, keyframes=1))[:-2] + b',"pad":"' + b"x" * (2**20) + b'"}'  # just past 1 MiB
    keyframes = [{"t": i * 1e-6, "x": 0.5, "y": 0.5} for i in range(1_000_000)]
    reported = body({**document(tracks=1, keyframes=1), "tracks": [{"id": 0, "keyframes": keyframes}]})  # ~40 MB
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    deep_inside = body(document(2, 2))[:-1] + b',"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    malformed = [b"", b"{", b"nonsense", b"\xff\xfe", b"[]", b"null", body("a string"), body(document(1, 2), token_=12),
                 body({**document(2, 2), "fps": "fast"}), body(document(2, 2), prompt_id=["x"]),
                 json.dumps({"prompt_id": "bench-prompt", "node_id": "5", "token": token}).encode(),
                 body({**document(1, 2), "tracks": [{"id": 0, "keyframes": [{"t": 0, "x": 50, "y": 0}]}]})]
    kinds = ["oversized", "deep", "malformed", "other client's token"]
    for index in range(hostile):
        kind = kinds[index % len(kinds)]
        if kind == "oversized":
            raw = reported if index % 100 == 0 else big  # ten 40 MB bodies, the rest just past the limit
        elif kind == "deep":
            raw = deep if index % 2 else deep_inside
        elif kind == "malformed":
            raw = malformed[rng.randrange(len(malformed))]
        else:
            raw = body(document(tracks=3, keyframes=10), token_=rng.randbytes(24).hex())
        items.append((kind, raw))
    rng.shuffle(items)
    return items


async def send_all(port: int, items, concurrency: int, deadline: float):
    import aiohttp

    statuses = collections.defaultdict(collections.Counter)
    slowest = collections.defaultdict(float)
    queue = list(reversed(items))
    url = f"http://127.0.0.1:{port}/motionstream/live_tracks"
    timeout = aiohttp.ClientTimeout(total=60)

    async def worker(session):
        while queue and time.monotonic() < deadline:
            kind, raw = queue.pop()
            start = time.perf_counter()
            try:
                async with session.post(url, data=raw, headers={"Content-Type": "application/json"}) as response:
                    reply = await response.json(content_type=None)
                    status = response.status
                    if status != 200 and not (isinstance(reply, dict) and reply.get("error")):
                        status = f"{status} without a message"
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
                status = type(error).__name__
            statuses[kind][status] += 1
            slowest[kind] = max(slowest[kind], time.perf_counter() - start)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return statuses, slowest, len(queue)


def summary(latencies: list[float]) -> str:
    if not latencies:
        return "no samples"
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return (f"n={len(ordered)}  median {statistics.median(ordered) * 1e3:.2f} ms  p99 {p99 * 1e3:.2f} ms  "
            f"max {ordered[-1] * 1e3:.2f} ms")


def run_probe(port: int, deadline_s: float):
    process = subprocess.Popen([sys.executable, __file__, "--probe", str(port), "--deadline", str(deadline_s)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return process


def finish_probe(process) -> dict:
    output, _ = process.communicate("", timeout=60)
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--valid", type=int, default=1000)
    parser.add_argument("--hostile", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--deadline", type=float, default=240.0, help="seconds; everything stops by then")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.deadline)
    if args.probe:
        return probe(args.probe, args.deadline)

    started = time.monotonic()
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--deadline", str(args.deadline + 30)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(server.stdout.readline())
        port, token = info["port"], info["token"]
        items = requests(token, args.valid, args.hostile, args.seed)

        idle = run_probe(port, args.deadline)
        time.sleep(2.0)
        idle_result = finish_probe(idle)

        loaded = run_probe(port, args.deadline)
        time.sleep(0.5)
        load_start = time.monotonic()
        statuses, slowest, unsent = asyncio.run(send_all(port, items, args.concurrency, started + args.deadline))
        load_seconds = time.monotonic() - load_start
        load_result = finish_probe(loaded)
    finally:
        try:
            tail, _ = server.communicate("", timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            tail = ""
    version = next((json.loads(line)["version"] for line in tail.splitlines() if line.startswith('{"version"')), None)

    print(f"live route load: {args.valid} valid + {args.hostile} hostile requests, {args.concurrency} at a time, "
          f"{load_seconds:.1f} s ({unsent} unsent at the deadline)")
    print(f"probe GET {PROBE_PATH} every {PROBE_INTERVAL_S * 1e3:g} ms, idle:       {summary(idle_result['latencies'])}"
          f"  failures {idle_result['failures']}")
    print(f"probe GET {PROBE_PATH} every {PROBE_INTERVAL_S * 1e3:g} ms, under load: {summary(load_result['latencies'])}"
          f"  failures {load_result['failures']}")
    for kind in ["valid", "oversized", "deep", "malformed", "other client's token"]:
        counts = ", ".join(f"{status}: {count}" for status, count in sorted(statuses[kind].items(), key=str))
        print(f"  {kind:>22}: {counts}  (slowest reply {slowest[kind] * 1e3:.0f} ms)")
    print(f"edits applied by the stream: {version}")


if __name__ == "__main__":
    main()
