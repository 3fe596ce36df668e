"""Endless streaming to a file: memory and cost per chunk stay flat, and the file holds every frame produced.

Streams the embedded demo model (the shipped image and tracks, 128x128 at 16 fps) for --minutes of wall
clock, as fast as it goes, writing each decoded chunk to a video file in the --output folder through the
nodes' progressive writer (`open_output_video`: `stream_NNNNN_.mp4`, H.264 where PyAV has it) and keeping
nothing else. Every --report-every seconds it prints one JSON line: resident memory (RSS), the median process
CPU time per chunk of that stretch (generation + decoding + encoding; encoding alone beside it) and the
frames written. At the end it closes the file, decodes it and counts its frames against the frames produced,
and prints the least-squares slopes of RSS and of CPU time per chunk against the elapsed minutes. Process
CPU time, not wall time, so that other load on a shared machine moves the figures less.

    python bench/stream_to_file.py --threads 1                    # 10 minutes
    python bench/stream_to_file.py --minutes 2 --report-every 30 --output /tmp/motionstream-bench
"""

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from motionstream_core import StreamConditions, rescale_tracks  # noqa: E402
from motionstream_core.demo import load_demo_image, load_demo_model, load_demo_tracks  # noqa: E402
from _support import load_pack, resident_megabytes, slope  # noqa: E402









def count_frames(path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@torch.no_grad()
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock streaming time")
    parser.add_argument("--report-every", type=float, default=60.0, help="seconds between reports")
    parser.add_argument("--output", default="output", help="folder of the video file (kept)")
    parser.add_argument("--format", default="auto", help="auto, h264, vp9 or mpeg4")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.report_every <= 0:
        parser.error("--minutes and --report-every must be positive")
    torch.set_num_threads(args.threads)
    os.environ["MOTIONSTREAM_OUTPUT_DIR"] = str(Path(args.output).resolve())  # the nodes' output folder outside ComfyUI
    video_file = importlib.import_module(f"{load_pack().__name__}.nodes.video_file")

    demo = load_demo_model()
    tracks = rescale_tracks(load_demo_tracks(), demo.size, demo.size)
    session = demo.session(seed=args.seed)
    session.start(StreamConditions(text=demo.text(), first_frame_latents=demo.first_frame_latents(load_demo_image()),
                                   motion_providers=[demo.track_provider(tracks)]))
    writer = video_file.open_output_video("stream", demo.fps, args.format, demo.size, demo.size)
    print(json.dumps({"minutes": args.minutes, "file": str(writer.path), "encoder": writer.video_format.encoder,
                      "size": demo.size, "fps": demo.fps, "threads": args.threads, "cpus": os.cpu_count(),
                      "load_average": [round(v, 2) for v in os.getloadavg()], "torch": torch.__version__}), flush=True)

    minutes, rss_mb, cpu_ms, stretch, encode_stretch = [], [], [], [], []
    chunks = produced = 0
    began = time.perf_counter()
    next_report = began + args.report_every
    deadline = began + 60 * args.minutes
    with writer:
        while True:
            cpu_before = time.process_time()
            frames = demo.codec.decode_images(session.next_chunk().latents)  # [t, 3, H, W]
            encode_before = time.process_time()
            writer.write(frames.permute(0, 2, 3, 1))
            cpu_after = time.process_time()
            stretch.append(1000 * (cpu_after - cpu_before))
            encode_stretch.append(1000 * (cpu_after - encode_before))
            chunks += 1
            produced += frames.shape[0]
            now = time.perf_counter()
            if now >= next_report or now >= deadline:
                minutes.append((now - began) / 60)
                rss_mb.append(resident_megabytes())
                cpu_ms.append(statistics.median(stretch))
                print(json.dumps({"minute": round(minutes[-1], 2), "rss_mb": round(rss_mb[-1], 1),
                                  "median_cpu_ms_per_chunk": round(cpu_ms[-1], 2),
                                  "median_encode_cpu_ms_per_chunk": round(statistics.median(encode_stretch), 2),
                                  "chunks": chunks, "frames_written": writer.frames_written,
                                  "load_average": [round(v, 2) for v in os.getloadavg()]}), flush=True)
                stretch, encode_stretch = [], []
                next_report += args.report_every
                if now >= deadline:
                    break
    path = writer.result
    counting = time.perf_counter()
    in_file = count_frames(path)
    print(json.dumps({
        "frames_produced": produced, "frames_in_file": in_file, "match": in_file == produced,
        "video_seconds": round(produced / demo.fps, 1), "file_mb": round(path.stat().st_size / 2**20, 2),
        "decode_count_s": round(time.perf_counter() - counting, 1),
        "rss_mb_first_last": [round(rss_mb[0], 1), round(rss_mb[-1], 1)],
        "rss_mb_slope_per_minute": round(slope(minutes, rss_mb), 3),
        "cpu_ms_per_chunk_first_last": [round(cpu_ms[0], 2), round(cpu_ms[-1], 2)],
        "cpu_ms_per_chunk_slope_per_minute": round(slope(minutes, cpu_ms), 3),
        "file": str(path),
    }), flush=True)
    return 0 if in_file == produced else 1


if __name__ == "__main__":
    raise SystemExit(main())
