"""Writes motion_transfer_example.npz, the tracks file the motion-transfer example workflow loads.

The tracks are the exact point tracks of a synthetic sprite clip from the pack's benchmark
(motionstream_core.synthetic): three textured shapes moving on curved, straight and circular paths,
five points on each, hidden where a shape passes behind another. They are stored the way a CoTracker
run saves its result (pred_tracks [1, T, N, 2] in pixels, pred_visibility [1, T, N]), plus the video
size and frame rate, for an 832x480 video of 81 frames at 16 fps: what Track-v0 makes.

The clip is generated at a quarter of that size (fast to render) and its coordinates scaled by 4.

    python example_workflows/tracks/make_motion_transfer_example.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

OUTPUT = Path(__file__).with_name("motion_transfer_example.npz")
WIDTH, HEIGHT, FRAMES, FPS = 832, 480, 81, 16.0
SCALE = 4  # the clip is drawn at WIDTH / SCALE x HEIGHT / SCALE
SEED = 5  # curved, straight and circular paths, a little occlusion


def example_arrays() -> dict[str, np.ndarray]:
    """The arrays of the example file, as np.savez takes them."""
    from motionstream_core.synthetic import SyntheticMotionConfig, generate_clip

    config = SyntheticMotionConfig(
        width=WIDTH // SCALE, height=HEIGHT // SCALE, num_frames=FRAMES, fps=FPS,
        min_sprites=3, max_sprites=3, min_sprite_size=22.0, max_sprite_size=38.0, max_speed=1.5,
        points_per_sprite=5, trajectory_kinds=("linear", "curved", "circular", "stop_and_go"),
    )
    tracks = generate_clip(config, SEED).tracks
    return {
        "pred_tracks": (tracks.points.numpy() * SCALE).astype(np.float32)[None],  # [1, T, N, 2]
        "pred_visibility": tracks.visibility.numpy().astype(bool)[None],  # [1, T, N]
        "width": np.array(WIDTH),
        "height": np.array(HEIGHT),
        "fps": np.array(FPS),
    }


def main() -> None:
    np.savez_compressed(OUTPUT, **example_arrays())
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout: the bundled library
    main()
