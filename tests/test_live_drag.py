"""Live control end to end with the embedded demo model (issue #20, item 4, the CPU half).

A held-out synthetic clip is streamed through the Streaming Sampler node as ComfyUI runs it (the
embedded model via the Model Loader, tracks via the Track Editor node, the preview hook
`host.send_frames` wrapped to capture the stream's token and its chunks). Once chunk K has been
sent, the stream's owner POSTs through the route handler (`handle_live_tracks_request`) a widget
document that moves the front sprite, from frame F (the first frame of chunk K + 1) on, in a
straight line to another place. The chunks sent before the edit must be bit-identical to the same
stream without the edit, and the dragged sprite must follow its new path afterwards: its EPE to the
new path (`score_track_following` on the generated frames against the clip re-rendered with the
sprite on that path) must be far below that of the unedited stream.

`bench/bench_live_drag.py` runs the same measurement over many held-out clips with these helpers.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from live_streams import run_with_live_edit
from motionstream_core import TrackSet
from motionstream_core.motion.formats import tracks_to_widget_dict
from motionstream_core.synthetic import (
    SyntheticClip, SyntheticMotionConfig, clip_seed, generate_clip, render_frames, score_track_following,
)

EMBEDDED = "embedded: MotionStream demo (128x128, no download)"
HELD_OUT_DATASET_SEED = 424_242  # bench/bench_demo.py CLIP_SETS["held-out"]: no training clip uses it
FRAMES = 31  # as bench_demo's held-out clips: chunks of 1, 3, 3, ... frames, 11 chunks
EDIT_AFTER_CHUNK = 3  # the edit is posted once chunk 3 (frames 7..9) has been sent
DRAG_SPEED = 2.0  # pixels per frame along the new path (training paths go up to 2.5)
NODE_ID = "5"


def chunk_starts(block_frames: tuple[int, ...], num_frames: int) -> list[int]:
    """First frame of every chunk (one latent frame per video frame for the demo codec)."""
    starts, frame, index = [], 0, 0
    while frame < num_frames:
        starts.append(frame)
        frame += block_frames[min(index, len(block_frames) - 1)]
        index += 1
    return starts


def held_out_clip(index: int, frames: int = FRAMES, size: int = 128, fps: float = 16.0) -> SyntheticClip:
    """Clip `index` of the held-out set, drawn exactly as bench_demo draws it."""
    config = SyntheticMotionConfig(width=size, height=size, num_frames=frames, fps=fps)
    return generate_clip(config, clip_seed(HELD_OUT_DATASET_SEED, index))


def straight_drag(clip: SyntheticClip, sprite: int, first_frame: int, speed: float = DRAG_SPEED,
                  grid: int = 9) -> torch.Tensor:
    """Float64 [T - first_frame, 2]: the sprite's new centre path from `first_frame` on.

    It starts where the sprite is on frame first_frame - 1 and moves straight at `speed` px/frame
    to a target, where it stays. The target is the point of a grid over the box that keeps the
    sprite in the frame whose path lies farthest (mean over those frames) from the clip's own path.
    """
    metadata = clip.metadata
    old = metadata.centre_paths[first_frame:, sprite]
    start = metadata.centre_paths[first_frame - 1, sprite]
    half = metadata.sprites[sprite].half_extent + 1.0
    xs = torch.linspace(half, metadata.width - half, grid, dtype=torch.float64)
    ys = torch.linspace(half, metadata.height - half, grid, dtype=torch.float64)
    steps = torch.arange(1, old.shape[0] + 1, dtype=torch.float64)[:, None]
    best, best_distance = None, -1.0
    for y in ys:
        for x in xs:
            target = torch.stack((x, y))
            offset = target - start
            length = float(offset.norm())
            if length < 1e-9:
                continue
            path = start + offset / length * (steps * speed).clamp(max=length)
            distance = float((path - old).norm(dim=-1).mean())
            if distance > best_distance:
                best, best_distance = path, distance
    return best


def dragged_clip(clip: SyntheticClip, sprite: int, first_frame: int, new_path: torch.Tensor) -> SyntheticClip:
    """The clip with `sprite` on `new_path` from `first_frame` on: frames, exact tracks and metadata.

    Visibility is recomputed (a point is hidden where a sprite painted after its own covers it);
    the dragged sprite's tracks are moving tracks (a static sprite that is dragged moves).
    """
    metadata = clip.metadata
    paths = metadata.centre_paths.clone()
    paths[first_frame:, sprite] = new_path
    rendered = render_frames(metadata.background, metadata.sprites, paths)
    points = paths[:, metadata.track_sprite] + metadata.track_offsets[None]
    visibility = torch.ones(points.shape[:2], dtype=torch.bool)
    for index, appearance in enumerate(metadata.sprites):
        behind = metadata.track_sprite < index
        if bool(behind.any()):
            visibility[:, behind] &= appearance.signed_distance(points[:, behind] - paths[:, index, None]) >= 0
    static = clip.tracks.static & (metadata.track_sprite != sprite)
    tracks = dataclasses.replace(clip.tracks, points=points.to(torch.float32), visibility=visibility, static=static)
    edited = dataclasses.replace(metadata, centre_paths=paths, visible_fraction=rendered.visible_fraction)
    return SyntheticClip(rendered.frames, tracks, edited)


def sprite_tracks_from(clip: SyntheticClip, sprite: int, first_frame: int) -> TrackSet:
    """The clip's tracks of `sprite`, visible (where the clip's are) only from `first_frame` on."""
    tracks = clip.tracks.select((clip.metadata.track_sprite == sprite).nonzero().squeeze(1))
    later = torch.arange(tracks.num_frames)[:, None] >= first_frame  # before it, the tracks say nothing
    return dataclasses.replace(tracks, visibility=tracks.visibility & later, specified=tracks.specified & later)


def edit_epe(frames: torch.Tensor, target: SyntheticClip, sprite: int, first_frame: int) -> float:
    """EPE (px) of `sprite` in `frames` [T, 3, H, W] to its path in `target`, over frames >= first_frame."""
    return score_track_following(frames, target, sprite_tracks_from(target, sprite, first_frame)).epe


@dataclasses.dataclass
class NodeStream:
    images: torch.Tensor  # [T, 3, H, W] in [0, 1], the node's IMAGE output
    chunks: list[torch.Tensor]  # [t, H, W, 3] per chunk, as sent to the live preview
    replies: list[tuple[int, dict]]  # the route's answers to the edits posted


def stream_through_node(pack, model, clip: SyntheticClip, edit: dict | None = None,
                        after_chunk: int = EDIT_AFTER_CHUNK, seed: int = 0) -> NodeStream:
    """Streams `clip`'s first frame with its tracks through the Streaming Sampler node; with `edit`
    (a widget document), its owner posts it through the live route once chunk `after_chunk` is sent."""
    (tracks,) = pack.NODE_CLASS_MAPPINGS["MotionStreamTrackEditor"]().build(json.dumps(tracks_to_widget_dict(clip.tracks)))
    run = run_with_live_edit(
        pack, edit, after_chunk, model=model, width=clip.metadata.width, height=clip.metadata.height,
        num_frames=clip.tracks.num_frames, seed=seed, fps=clip.tracks.fps, sink_frames=-1, window_frames=-1,
        denoising_steps="", shift=0.0, start_image=clip.frames[0].movedim(0, -1)[None], tracks=tracks,
        unique_id=NODE_ID)
    # IMAGE [T, H, W, 3] -> [T, 3, H, W]
    return NodeStream(run.outputs[0].movedim(-1, 1), run.chunks, [reply for _, reply in run.posted])


@dataclasses.dataclass
class DragResult:
    clip_index: int
    sprite: int
    first_frame: int
    epe_edited: float  # dragged sprite to its new path, frames >= first_frame, stream with the edit
    epe_unedited: float  # the same, stream without the edit
    epe_edited_to_old_path: float  # the edited stream's sprite to its old path over the same frames
    epe_unedited_to_old_path: float
    before_identical: bool  # the chunks sent before the edit equal those of the unedited stream
    replies: list

    @property
    def ratio(self) -> float:
        return self.epe_unedited / self.epe_edited if self.epe_edited > 0 else math.inf


def measure_drag(pack, model, clip_index: int, frames: int = FRAMES, after_chunk: int = EDIT_AFTER_CHUNK,
                 seed: int = 0) -> tuple[DragResult, NodeStream, NodeStream]:
    clip = held_out_clip(clip_index, frames)
    sprite = clip.metadata.num_sprites - 1  # the front sprite: nothing ever hides it
    first_frame = chunk_starts(model.streaming_defaults.block_frames, frames)[after_chunk + 1]
    target = dragged_clip(clip, sprite, first_frame, straight_drag(clip, sprite, first_frame))
    edit = tracks_to_widget_dict(target.tracks)
    plain = stream_through_node(pack, model, clip, seed=seed)
    edited = stream_through_node(pack, model, clip, edit, after_chunk, seed=seed)
    before = after_chunk + 1
    identical = len(edited.chunks) == len(plain.chunks) and all(
        torch.equal(a, b) for a, b in zip(edited.chunks[:before], plain.chunks[:before]))
    result = DragResult(
        clip_index, sprite, first_frame,
        epe_edited=edit_epe(edited.images, target, sprite, first_frame),
        epe_unedited=edit_epe(plain.images, target, sprite, first_frame),
        epe_edited_to_old_path=edit_epe(edited.images, clip, sprite, first_frame),
        epe_unedited_to_old_path=edit_epe(plain.images, clip, sprite, first_frame),
        before_identical=identical, replies=edited.replies,
    )
    return result, plain, edited


# ---------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------

TEST_CLIP = 0  # held-out clip 0; bench/bench_live_drag.py reports the figures over many clips


@pytest.fixture(scope="module")
def demo(pack):
    (model,) = pack.NODE_CLASS_MAPPINGS["MotionStreamModelLoader"]().load(EMBEDDED, "auto")
    return model


@pytest.mark.usefixtures("single_thread")
def test_a_drag_posted_while_streaming_moves_the_sprite_from_the_next_chunk_on(pack, demo):
    result, plain, edited = measure_drag(pack, demo, TEST_CLIP)

    assert result.replies == [(200, {"ok": True, "version": 1})], "the owner's edit went through the route"
    assert not pack.nodes.live_control._running, "the stream unregistered when it ended"
    # Chunks 0..K were generated and sent before the edit: bit for bit the unedited stream's.
    assert result.before_identical
    assert torch.equal(edited.images[: result.first_frame], plain.images[: result.first_frame])
    assert not torch.equal(edited.images[result.first_frame:], plain.images[result.first_frame:])

    # The dragged sprite follows its new path afterwards (measured: see the module's bench).
    assert result.epe_edited < 6.0, result
    assert result.epe_unedited > 2.0 * result.epe_edited, result
    # and leaves its old one.
    assert result.epe_edited_to_old_path > 2.0 * result.epe_unedited_to_old_path, result
