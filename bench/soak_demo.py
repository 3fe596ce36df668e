"""Soak of the embedded demo model: stream many chunks and show that memory and cost per chunk stay flat.

Streams --chunks chunks (10,000 by default: 30,000 frames at 128x128) from the shipped image and
tracks, decoding each chunk with the model's codec and keeping nothing. Every --report-every chunks
it prints the resident memory (RSS) and the median process CPU time per chunk of that stretch; at
the end, the least-squares slopes of both against the chunk index, per 1,000 chunks, next to their
level. Process CPU time, not wall time, so that other load on a shared machine moves the figures
less; the load average is printed too.

    python bench/soak_demo.py --threads 1
    python bench/soak_demo.py --chunks 500 --report-every 100
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from motionstream_core import StreamConditions, rescale_tracks  # noqa: E402
from motionstream_core.demo import load_demo_image, load_demo_model, load_demo_tracks  # noqa: E402
from _support import resident_megabytes, slope  # noqa: E402






@torch.no_grad()
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--report-every", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.chunks < 2 or args.report_every < 1:
        parser.error("--chunks must be at least 2 and --report-every at least 1")
    torch.set_num_threads(args.threads)

    demo = load_demo_model()
    tracks = rescale_tracks(load_demo_tracks(), demo.size, demo.size)
    session = demo.session(seed=args.seed)
    session.start(StreamConditions(text=demo.text(), first_frame_latents=demo.first_frame_latents(load_demo_image()),
                                   motion_providers=[demo.track_provider(tracks)]))
    print(json.dumps({"chunks": args.chunks, "threads": args.threads, "load_average": os.getloadavg(),
                      "cpus": os.cpu_count(), "torch": torch.__version__}), flush=True)

    indices, cpu_ms, rss_mb, stretch, frames = [], [], [], [], 0
    began = time.perf_counter()
    for index in range(args.chunks):
        cpu_before = time.process_time()
        chunk = session.next_chunk()
        frames += demo.codec.decode_images(chunk.latents).shape[0]
        cost = 1000 * (time.process_time() - cpu_before)
        stretch.append(cost)
        if (index + 1) % args.report_every == 0 or index + 1 == args.chunks:
            indices.append(index + 1)
            cpu_ms.append(statistics.median(stretch))
            rss_mb.append(resident_megabytes())
            print(json.dumps({"chunk": index + 1, "rss_mb": round(rss_mb[-1], 1),
                              "median_cpu_ms_per_chunk": round(cpu_ms[-1], 2),
                              "max_cpu_ms_per_chunk": round(max(stretch), 2),
                              "wall_s": round(time.perf_counter() - began, 1),
                              "load_average": [round(v, 2) for v in os.getloadavg()]}), flush=True)
            stretch = []
    print(json.dumps({
        "frames": frames,
        "rss_mb_first_last": [round(rss_mb[0], 1), round(rss_mb[-1], 1)],
        "rss_mb_slope_per_1000_chunks": round(1000 * slope(indices, rss_mb), 3),
        "cpu_ms_per_chunk_first_last": [round(cpu_ms[0], 2), round(cpu_ms[-1], 2)],
        "cpu_ms_slope_per_1000_chunks": round(1000 * slope(indices, cpu_ms), 3),
    }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
