"""Drag-to-screen latency in the browser: a real ComfyUI streams the embedded demo workflow until Stop,
paced to playback, while headless chromium (tests/js/comfyui_live.mjs) drags the demo's sprite in the
track editor every few seconds; the preview player times each live edit from the route receiving it to
its first frame on screen (its `totalMs` = `serverMs`, route -> frames message sent, + `displayMs`,
message arrived -> frame drawn).

Prints one JSON line: latency median / p90 / max over the player's samples (one per edit version a chunk
was first made with; the drafts a drag posts while it is drawn count too), the player's skipped frames,
frames and chunks streamed, and the machine: load average before and after, CPU count.

    python bench/bench_browser_latency.py [--seconds 120] [--drag-every 4] [--comfyui PATH] [--python PATH]

Needs a ComfyUI checkout (--comfyui, default $COMFYUI_PATH) with a Python that has its requirements
(--python, default $COMFYUI_PYTHON, else this one), node with tests/js/node_modules (playwright-core) and
chromium (default /usr/bin/chromium, or $CHROMIUM_PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _support import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))
from comfyui_server import make_base_directory, start_comfyui  # noqa: E402

PAGE_SCRIPT = REPO_ROOT / "tests" / "js" / "comfyui_live.mjs"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


def summary(page: dict, load_before: tuple, load_after: tuple) -> dict:
    total = [sample["totalMs"] for sample in page["latencies"]]
    server = [sample["serverMs"] for sample in page["latencies"]]
    display = [sample["displayMs"] for sample in page["latencies"]]
    frames = page["frames"]
    streamed_s = (frames[-1]["at"] - frames[0]["at"]) / 1000 if frames else 0.0

    def ms(values, how):
        return round(how(values), 1) if values else None

    return {
        "streamed_s": round(streamed_s, 1), "chunks": len(frames), "frames": sum(m["count"] for m in frames),
        "generated_fps": round(sum(m["count"] for m in frames) / streamed_s, 2) if streamed_s else None,
        "drags": len(page["drags"]), "edits_posted": len(page["liveTracks"]),
        "edits_rejected": sum(1 for post in page["liveTracks"] if post["status"] != 200),
        "latency_samples": len(total),
        "drag_to_screen_ms_median": ms(total, statistics.median),
        "drag_to_screen_ms_p90": ms(total, lambda v: percentile(v, 0.9)),
        "drag_to_screen_ms_max": ms(total, max),
        "route_to_frames_ms_median": ms(server, statistics.median),
        "frames_to_screen_ms_median": ms(display, statistics.median),
        "skipped_frames": (page["player"] or {}).get("skippedFrames"),
        "final_state": (page["player"] or {}).get("state"),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
        "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="streaming time before Stop")
    parser.add_argument("--drag-every", type=float, default=4.0, help="seconds between drags")
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout")
    parser.add_argument("--python", default=os.environ.get("COMFYUI_PYTHON") or sys.executable,
                        help="the Python that runs ComfyUI")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for ComfyUI (default: its own)")
    parser.add_argument("--out", help="also write everything the page recorded to this JSON file")
    args = parser.parse_args(argv)
    if not args.comfyui:
        parser.error("--comfyui (or COMFYUI_PATH) is required")
    node = shutil.which("node")
    if node is None:
        parser.error("node is not installed")

    base = make_base_directory(Path(tempfile.mkdtemp(prefix="motionstream-bench-comfyui-")))
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else None
    server = start_comfyui(Path(args.comfyui), args.python, base, env=env)
    try:
        out = Path(args.out) if args.out else base / "page.json"
        drags = max(1, int(args.seconds // args.drag_every))
        load_before = os.getloadavg()
        command = [node, str(PAGE_SCRIPT), server.url, str(out), "--seconds", str(args.seconds),
                   "--drags", str(drags), "--drag-every", str(args.drag_every), "--first-drag-chunk", "3", "--no-frames"]
        result = subprocess.run(command, cwd=PAGE_SCRIPT.parent, capture_output=True, text=True,
                                timeout=args.seconds + 600)
        load_after = os.getloadavg()
        if result.returncode != 0:
            print(result.stderr[-4000:], "\nComfyUI log:\n", server.log()[-4000:], file=sys.stderr)
            return 1
        print(json.dumps(summary(json.loads(out.read_text()), load_before, load_after)), flush=True)
        return 0
    finally:
        server.stop()
        if not args.out:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
