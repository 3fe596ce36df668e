"""Drag-to-screen latency of a live stream, paced to playback or not: the Streaming Sampler node runs the
embedded demo model until Stop, as inside ComfyUI with a browser watching, while edits arrive through
the live route's handler at random times.

For each edit: route -> frames message (the stamp the first chunk made with it carries, `edit_to_frames_ms`)
and route -> first affected frame on screen, with the screen modelled as the preview player plays: it
starts with the first frames, shows `fps` frames a second and waits when it runs out (it never skips
here). Also the frames queued on screen when each chunk lands, and the wall time against the playback time.

    python bench/bench_live_latency.py [--chunks 120] [--edits 20] [--threads 1] [--fps 16]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time

import torch
from _support import load_pack  # noqa: E402

EMBEDDED = "embedded: MotionStream demo (128x128, no download)"




def run(pack, paced: bool, chunks: int, edits: int, seed: int, fps: float) -> dict:
    from motionstream_core.demo import load_demo_image, load_demo_tracks
    from motionstream_core.motion.formats.widget_json import tracks_to_widget_dict

    host, live_control = pack.nodes.host, pack.nodes.live_control
    host.has_server = lambda: True  # as inside ComfyUI, with the browser that queued the prompt watching
    host.current_client_id = lambda: "bench"
    host.sent_messages.clear()
    document = tracks_to_widget_dict(load_demo_tracks())
    (tracks,) = pack.NODE_CLASS_MAPPINGS["MotionStreamTrackEditor"]().build(json.dumps(document))
    (model,) = pack.NODE_CLASS_MAPPINGS["MotionStreamModelLoader"]().load(EMBEDDED, "auto")
    arrivals, chunk_first_frame, received, frames_messages = [], {}, {}, []
    original = host.send_frames
    rng = random.Random(seed)

    tokens = []

    def token():
        return tokens[0]

    def send(node_id, frames, fps, chunk_index, done):
        now = time.monotonic()
        original(node_id, frames, fps, chunk_index, done)
        tokens[:] = tokens or [host.sent_messages[-1][1]["live_token"]]
        frames_messages.append(host.sent_messages[-1][1])
        chunk_first_frame[chunk_index] = len(arrivals)
        arrivals.extend([now] * frames.shape[0])
        if chunk_index == chunks - 1:
            live_control.apply_stop({"prompt_id": None, "node_id": node_id, "token": token(), "client_id": "bench"})

    def post_edits():
        while len(arrivals) < 2:
            time.sleep(0.01)
        for version in range(1, edits + 1):
            time.sleep(rng.uniform(0.1, 0.4))
            body = {"prompt_id": None, "node_id": "1", "token": token(), "client_id": "bench", "tracks": document}
            before = time.monotonic()
            status, _ = live_control.handle_live_tracks_request(json.dumps(body).encode())
            if status != 200:
                return
            received[version] = before

    host.send_frames = send
    poster = threading.Thread(target=post_edits, daemon=True)
    poster.start()
    began = time.monotonic()
    try:
        pack.NODE_CLASS_MAPPINGS["MotionStreamStreamingSampler"]().generate(
            model=model, width=128, height=128, num_frames=5, seed=0, fps=fps, sink_frames=-1, window_frames=-1,
            denoising_steps="", shift=0.0, start_image=load_demo_image().movedim(0, -1)[None], tracks=tracks,
            filename_prefix="bench/live_latency", until_stopped=True, pace_to_playback=paced, unique_id="1")
    finally:
        host.send_frames = original
    wall = time.monotonic() - began
    poster.join(5)
    shown = []
    for arrival in arrivals:
        shown.append(arrival if not shown else max(shown[-1] + 1 / fps, arrival))
    queued = [sum(1 for s in shown[:first] if s > arrivals[first]) for first in chunk_first_frame.values()]
    server_ms, screen_ms = [], []
    for message in frames_messages:
        version = message.get("tracks_version")
        if version in received and version not in [v for v, _ in server_ms]:
            server_ms.append((version, message["edit_to_frames_ms"]))
            screen_ms.append(1000 * (shown[chunk_first_frame[message["chunk_index"]]] - received[version]))
    return {"paced": paced, "frames": len(arrivals), "wall_s": round(wall, 2), "playback_s": round(len(arrivals) / fps, 2),
            "max_queued_frames_at_landing": max(queued), "edits_measured": len(server_ms),
            "route_to_frames_ms_median": round(statistics.median(ms for _, ms in server_ms), 1) if server_ms else None,
            "route_to_frames_ms_max": round(max(ms for _, ms in server_ms), 1) if server_ms else None,
            "route_to_screen_ms_median": round(statistics.median(screen_ms), 1) if screen_ms else None,
            "route_to_screen_ms_max": round(max(screen_ms), 1) if screen_ms else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=120)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=16.0, help="playback rate (lower it where generating is slower)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import os
    import tempfile

    os.environ.setdefault("MOTIONSTREAM_OUTPUT_DIR", tempfile.mkdtemp(prefix="motionstream-bench-"))
    pack = load_pack()
    for paced in (True, False):
        print(json.dumps(run(pack, paced, args.chunks, args.edits, args.seed, args.fps)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
