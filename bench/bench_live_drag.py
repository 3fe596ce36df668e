"""Live drags with the embedded demo model, on the CPU: does a sprite follow a drag posted while it streams?

For each held-out synthetic clip (bench_demo's "held-out" set, 31 frames at 128x128), the Streaming
Sampler node streams the clip's first frame with its tracks; once chunk K is sent, the stream's
owner posts through the live route a widget document that moves the front sprite, from the first
frame of chunk K + 1 on, in a straight line (2 px/frame) to another place (tests/test_live_drag.py
has the helpers and the assertions). Printed per clip and as means: the dragged sprite's EPE to the
new path over the frames after the edit, with the edit and in the same stream without it; the EPE
to its old path; and whether the chunks sent before the edit are bit-identical.

    python bench/bench_live_drag.py
    python bench/bench_live_drag.py --clips 16 --after-chunk 3 --threads 1
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))
from _support import load_pack  # noqa: E402




def nanmean(values):
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=16, help="held-out clips 0 .. clips-1")
    parser.add_argument("--frames", type=int, default=31)
    parser.add_argument("--after-chunk", type=int, default=3, help="the edit is posted once this chunk is sent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # The sampler also writes each stream to a video file: keep them out of the repository.
    scratch = tempfile.TemporaryDirectory(prefix="bench_live_drag_")
    os.environ.setdefault("MOTIONSTREAM_OUTPUT_DIR", scratch.name)

    from test_live_drag import EMBEDDED, measure_drag  # the test's helpers: one definition of the measurement

    pack = load_pack()
    (model,) = pack.NODE_CLASS_MAPPINGS["MotionStreamModelLoader"]().load(EMBEDDED, "auto")
    rows, started = [], time.perf_counter()
    for index in range(args.clips):
        result, _, _ = measure_drag(pack, model, index, args.frames, args.after_chunk, seed=args.seed + index)
        rows.append(result)
        print(f"clip {index:2d}: sprite {result.sprite} dragged from frame {result.first_frame}: EPE to the new path "
              f"{result.epe_edited:6.2f} px with the edit, {result.epe_unedited:6.2f} without (x{result.ratio:.1f}); "
              f"to the old path {result.epe_edited_to_old_path:6.2f} / {result.epe_unedited_to_old_path:6.2f}; "
              f"earlier chunks identical: {result.before_identical}; route {result.replies[0][0]}", flush=True)
    edited, unedited = nanmean([r.epe_edited for r in rows]), nanmean([r.epe_unedited for r in rows])
    report = {
        "clips": args.clips, "frames": args.frames, "after_chunk": args.after_chunk, "threads": args.threads,
        "epe_new_path_with_edit_px": round(edited, 3), "epe_new_path_without_edit_px": round(unedited, 3),
        "ratio_of_means": round(unedited / edited, 2) if edited > 0 else math.inf,
        "median_ratio": round(sorted(r.ratio for r in rows)[len(rows) // 2], 2),
        "min_ratio": round(min(r.ratio for r in rows), 2),
        "epe_old_path_with_edit_px": round(nanmean([r.epe_edited_to_old_path for r in rows]), 3),
        "epe_old_path_without_edit_px": round(nanmean([r.epe_unedited_to_old_path for r in rows]), 3),
        "earlier_chunks_identical": sum(r.before_identical for r in rows),
        "per_clip_epe_with_edit": [round(r.epe_edited, 2) for r in rows],
        "per_clip_epe_without_edit": [round(r.epe_unedited, 2) for r in rows],
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"{args.clips} held-out clips: EPE to the new path {edited:.3f} px with the edit vs {unedited:.3f} px without "
          f"(ratio {report['ratio_of_means']}x, median per clip {report['median_ratio']}x, min {report['min_ratio']}x); "
          f"earlier chunks bit-identical in {report['earlier_chunks_identical']}/{args.clips}", flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
