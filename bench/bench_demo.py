"""Acceptance figures of the embedded demo model, on the CPU.

1. Track following on held-out synthetic clips at 128x128 (seeds no training clip uses): the
   student streams each clip from its first frame with the clip's tracks, and with its tracks
   removed (the null-motion input, all-zero track channels); EPE of each (`score_track_following`,
   pixels) and their ratio. Goals: EPE with tracks <= 4 px, and >= 5x lower than without.
2. Drift over a --rollout-chunks rollout (1,000 by default: 2,998 frames) of a held-out clip
   whose tracks span the whole rollout, with the sink frames and without them (same cache, same
   window): colour and content drift of the background (`colour_drift`, `content_drift`, mean
   over the last quarter of the frames) and their ratios. Goal: with sinks <= 1/3 of without.
3. Streaming speed: frames/s of the main job (generation + decoding, chunk by chunk) on the CPU.
4. With --drags: the same held-out clips conditioned the ways a user can ask for the motion, EPE
   side by side. Every case streams the same first frame with the same noise seed and is scored the
   same way: the sprites located in the generated video against their true paths (the clip's own
   five tracks per sprite, `score_track_following(frames, clip)`), whatever conditioned it; "static
   px" is that EPE over the static sprites' tracks alone (clips with a static sprite).
   - "five": the clip's five tracks per sprite (what the model was trained with);
   - "two": two drags per sprite, its centre track and one ring point's (occlusion flags included),
     through the widget JSON as "point";
   - "point": one drag per sprite, its centre track (occlusion flags included; a static sprite's is
     a static track), written as the editor's widget JSON and read back as the Track Editor node
     reads it;
   - "region": one region drag per sprite as the editor writes it (widget JSON version 2): grabbed at
     the sprite's centre at the first frame, a keyframe on every frame along its true centre path, a
     radius of the sprite's bounding radius plus --region-margin pixels (over the frame's shorter
     side); a static sprite gets an anchor of that radius. The document is read by the node's parser,
     which expands it into the DragController grid (the editor's default size, 8x8 at 128x128, unless
     --region-grid); grid tracks are visible while inside the frame (region drags carry no occlusion);
   - "anchors": static sprites get only an anchor as the editor writes one (a static track with one
     keyframe, at the centre: visible on every frame, no occlusion flags); moving sprites get one point
     drag as in "point". It differs from "point" only on clips with a static sprite;
   - "partial": one drag per sprite (its centre track) given over part of the clip only: from a third
     of the way in to the end, or from the start to two thirds, per sprite from the clip's seed
     (`partial_track_spans`); written as widget JSON (invisible keyframes outside the span) and read
     back. EPE and "lost" count only the frames where a sprite's track is given; the frames outside get
     the persistence score (below);
   - "none": no tracks (the null-motion input), also given the persistence score;
   - "occlusion": clips of their own, `occlusion_clip` of the same per-clip seeds: a small sprite passes
     behind a large static one (hidden entirely on the middle frame) and comes out again. One point drag
     per sprite as in "point": the mover's track is invisible while its centre is covered. Scored as the
     others, and on reappearance (`score_reappearance`, over the frames after the mover's track is
     visible again): "back px" the distance of its located centre to its true centre, "back lost" the
     share of those frames it is not found on, "RGB" its colour error (mean RGB distance of its interior
     pixels to its true colours) after reappearing, beside the same before it was hidden. The hidden
     stretch lies between the drag's keyframes, so the editor's document says "hidden here" (occluded:
     a track head with an occlusion branch reads it; others see nothing there);
   - "occlusion-unspecified": the same drags with the hidden stretch unspecified instead (nothing said
     there, as without occlusion flags): with "occlusion", shows what the occlusion signal is worth.
   Persistence (`score_persistence`), for the sprites without a given track: each unguided span of a
   sprite is judged on its last frame; "kept" is the share of spans whose sprite is found there
   (confidence >= 0.5), "moved px" the mean distance of a kept sprite from where it last was by request
   (its true centre on the frame before the span, or on the first frame); spans whose sprite would show
   less than 20% there are not counted. Objects kept and left in place score 1 and 0 px. The JSON report
   adds the mean location confidence on those frames (finer than "kept" when most sprites are lost).

    python bench/bench_demo.py
    python bench/bench_demo.py --model runs/demo/ode_init.safetensors --clips 8 --rollout-chunks 200
    python bench/bench_demo.py --clip-set validation --skip drift speed --streaming '{"motion_scale": 1.5}'
    python bench/bench_demo.py --threads 1 --skip epe drift speed --drags five point region
    python bench/bench_demo.py --threads 1 --skip epe drift speed --drags five two point anchors partial region none occlusion
"""

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from motionstream_core.demo import load_demo_image, load_demo_model, load_demo_tracks  # noqa: E402
from motionstream_core.motion.drag_control import default_grid_size  # noqa: E402
from motionstream_core.motion.formats import tracks_from_widget_json, tracks_to_widget_dict  # noqa: E402
from motionstream_core.synthetic import (  # noqa: E402
    REGION_MARGIN_PIXELS, SyntheticMotionConfig, clip_seed, colour_drift, content_drift, generate_clip, occlusion_clip,
    partial_track_spans, region_drag_document, region_drag_tracks, score_persistence, score_reappearance,
    score_track_following,
)

# Dataset seeds of the track-following clips. Training clips come from seed 0 (and the codec's from
# 1_000_003); these are disjoint. Checkpoints are chosen on "validation" so that the reported
# "held-out" figures stay unbiased.
CLIP_SETS = {"held-out": 424_242, "validation": 373_737}
ROLLOUT_DATASET_SEED = 515_151
DRAG_CASES = ("five", "two", "point", "anchors", "partial", "region", "none", "occlusion", "occlusion-unspecified")
OCCLUSION_CASES = ("occlusion", "occlusion-unspecified")
# Cases whose sprites go without a track on some frames: they also get the persistence score.
PERSISTENCE_CASES = ("partial", "none")


def nanmean(values):
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def track_following(demo, clips: int, frames: int, seed: int, dataset_seed: int = CLIP_SETS["held-out"]):
    config = SyntheticMotionConfig(width=demo.size, height=demo.size, num_frames=frames, fps=demo.fps)
    with_tracks, without_tracks, lost = [], [], []
    for index in range(clips):
        clip = generate_clip(config, clip_seed(dataset_seed, index))
        guided = demo.stream(clip.frames[0], clip.tracks, frames, seed=seed + index)
        free = demo.stream(clip.frames[0], None, frames, seed=seed + index)
        score = score_track_following(guided.frames, clip)
        with_tracks.append(score.epe)
        lost.append(score.lost_fraction)
        without_tracks.append(score_track_following(free.frames, clip).epe)
    return nanmean(with_tracks), nanmean(without_tracks), nanmean(lost), with_tracks, without_tracks


def centre_track_indices(clip) -> torch.Tensor:
    """Index of each sprite's centre track among the clip's tracks, in sprite order."""
    metadata = clip.metadata
    centres = (metadata.track_offsets == 0).all(dim=1).nonzero().squeeze(1)
    if metadata.track_sprite[centres].tolist() != list(range(metadata.num_sprites)):
        raise ValueError("expected one centre track per sprite")
    return centres


def through_widget_json(tracks):
    """``tracks`` written as the editor's widget JSON and read back as the Track Editor node reads it."""
    return tracks_from_widget_json(json.dumps(tracks_to_widget_dict(tracks)))


def point_drag_tracks(clip):
    """One drag per sprite: its centre track, through the editor's widget JSON and the node's parser."""
    return through_widget_json(clip.tracks.select(centre_track_indices(clip)))


def two_drag_tracks(clip):
    """Two drags per sprite: its centre track and its first ring point's, through the widget JSON."""
    metadata = clip.metadata
    chosen = []
    for sprite in range(metadata.num_sprites):
        own = (metadata.track_sprite == sprite).nonzero().squeeze(1)
        if len(own) < 2 or not bool((metadata.track_offsets[own[0]] == 0).all()):
            raise ValueError("expected a centre track and a ring point per sprite")
        chosen += own[:2].tolist()
    return through_widget_json(clip.tracks.select(chosen))


def anchor_drag_document(clip) -> dict:
    """The widget document of "anchors": each static sprite an anchor at its centre (one keyframe at t=0, held
    and visible to the end, as the editor writes an anchor), each moving sprite its centre track."""
    document = tracks_to_widget_dict(clip.tracks.select(centre_track_indices(clip)))
    for track in document["tracks"]:
        if track["static"]:
            first = track["keyframes"][0]
            track["keyframes"] = [{"t": 0.0, "x": first["x"], "y": first["y"]}]
    return document


def anchor_drag_tracks(clip):
    return tracks_from_widget_json(json.dumps(anchor_drag_document(clip)))


def partial_tracks(clip):
    """The clip's own tracks, visible only on the frames where their sprite's track is given in "partial"
    (what that case is scored against), and the bool ``[T, S]`` of those frames."""
    given = partial_track_spans(clip).given
    per_track = given[:, clip.metadata.track_sprite]
    tracks = clip.tracks  # outside its span a track is unspecified, not hidden
    return dataclasses.replace(tracks, visibility=tracks.visibility & per_track, specified=tracks.specified & per_track), given


def partial_drag_tracks(clip):
    """One drag per sprite, its centre track given over its span only, through the widget JSON."""
    tracks, _ = partial_tracks(clip)
    return through_widget_json(tracks.select(centre_track_indices(clip)))


def drag_tracks(case: str, clip, margin_pixels: float = REGION_MARGIN_PIXELS, grid: int | None = None):
    """The conditioning tracks of ``case`` for ``clip`` (for "occlusion", pass the occlusion clip)."""
    if case == "five":
        return clip.tracks
    if case in ("point", "occlusion"):
        return point_drag_tracks(clip)
    if case == "occlusion-unspecified":
        tracks = point_drag_tracks(clip)
        return dataclasses.replace(tracks, specified=tracks.visibility)
    if case == "two":
        return two_drag_tracks(clip)
    if case == "anchors":
        return anchor_drag_tracks(clip)
    if case == "partial":
        return partial_drag_tracks(clip)
    if case == "region":
        return region_drag_tracks(clip, margin_pixels, grid)
    if case == "none":
        return None
    raise ValueError(f"unknown drag case {case!r}")


def drag_kinds(demo, cases, clips: int, frames: int, seed: int, dataset_seed: int = CLIP_SETS["held-out"],
               margin_pixels: float = REGION_MARGIN_PIXELS, grid: int | None = None) -> dict:
    """Per case and clip: EPE, lost fraction, static sprites' EPE and conditioning tracks, on the same clips and
    noise; every video is scored against the clip's own tracks (the sprites' true paths; for "partial", on the
    frames where a track is given). "partial" and "none" also get the persistence score per clip, "occlusion"
    (streamed from its own clips, of the same per-clip seeds) the reappearance score."""
    config = SyntheticMotionConfig(width=demo.size, height=demo.size, num_frames=frames, fps=demo.fps)
    results = {case: {"epe": [], "lost": [], "tracks": [], "static_epe": [], "persistence": [], "reappearance": []}
               for case in cases}
    for index in range(clips):
        clip = generate_clip(config, clip_seed(dataset_seed, index))
        wants_occlusion = any(case in OCCLUSION_CASES for case in cases)
        occlusion = occlusion_clip(config, clip_seed(dataset_seed, index)) if wants_occlusion else None
        for case in cases:
            scored = occlusion.clip if case in OCCLUSION_CASES else clip
            tracks = drag_tracks(case, scored, margin_pixels, grid)
            if tracks is not None and tracks.num_frames != frames:
                raise ValueError(f"{case} drags have {tracks.num_frames} frames for a {frames}-frame clip")
            video = demo.stream(scored.frames[0], tracks, frames, seed=seed + index)
            requested, unguided = scored.tracks, None
            if case == "partial":
                requested, given = partial_tracks(clip)
                unguided = ~given
            score = score_track_following(video.frames, scored, None if case != "partial" else requested)
            results[case]["epe"].append(score.epe)
            results[case]["lost"].append(score.lost_fraction)
            results[case]["tracks"].append(0 if tracks is None else tracks.num_tracks)
            results[case]["static_epe"].append(nanmean(score.per_track_epe[requested.static].tolist()))
            if case in PERSISTENCE_CASES:
                results[case]["persistence"].append(
                    score_persistence(video.frames, scored, unguided, locations=score.locations))
            if case in OCCLUSION_CASES:
                results[case]["reappearance"].append(
                    score_reappearance(video.frames, occlusion, locations=score.locations))
    return results


def drag_summary(per_clip: dict) -> dict:
    epes = [v for v in per_clip["epe"] if not math.isnan(v)]
    summary = {
        "epe_px": round(nanmean(per_clip["epe"]), 3),
        "median_epe_px": round(statistics.median(epes), 3) if epes else math.nan,
        "lost_fraction": round(nanmean(per_clip["lost"]), 3),
        "clips_within_4px": sum(v <= 4 for v in epes),
        "tracks_per_clip": round(statistics.fmean(per_clip["tracks"]), 2),
        "per_clip_epe": [round(v, 2) for v in per_clip["epe"]],
    }
    static = per_clip.get("static_epe", [])
    if static:
        summary["static_epe_px"] = round(nanmean(static), 3)
        summary["clips_with_static"] = sum(not math.isnan(v) for v in static)
    if per_clip.get("persistence"):
        summary["persistence"] = persistence_summary(per_clip["persistence"])
    if per_clip.get("reappearance"):
        summary["reappearance"] = reappearance_summary(per_clip["reappearance"])
    return summary


def persistence_summary(scores) -> dict:
    """Persistence pooled over the clips' counted spans: kept spans / spans, mean displacement of the kept ones,
    mean location confidence on the judged frames."""
    spans = sum(len(score.spans) for score in scores)
    kept = sum(int(score.kept.sum()) for score in scores)
    moved = sum(float(score.displacements[score.kept].sum()) for score in scores)
    confidence = sum(float(score.confidence.sum()) for score in scores)
    return {
        "kept_fraction": round(kept / spans, 3) if spans else math.nan,
        "displacement_px": round(moved / kept, 3) if kept else math.nan,
        "mean_confidence": round(confidence / spans, 3) if spans else math.nan,
        "spans": spans,
        "per_clip_kept_fraction": [round(score.kept_fraction, 3) for score in scores],
        "per_clip_displacement_px": [round(score.displacement, 2) for score in scores],
    }


def reappearance_summary(scores) -> dict:
    """Reappearance, mean (and median of the position error) over the clips."""
    positions = [score.position_error for score in scores]
    return {
        "position_error_px": round(nanmean(positions), 3),
        "median_position_error_px": round(statistics.median(positions), 3),
        "lost_fraction": round(nanmean([score.lost_fraction for score in scores]), 3),
        "colour_error": round(nanmean([score.colour_error for score in scores]), 4),
        "colour_error_before": round(nanmean([score.colour_error_before for score in scores]), 4),
        "per_clip_position_error": [round(v, 2) for v in positions],
    }


def drag_table(cases, summaries: dict, clips: int) -> list[str]:
    """The side-by-side rows of the drag cases; "-" where a column does not apply."""
    def cell(value, width: int, digits: int = 3) -> str:
        return f"{'-':>{width}}" if value is None or math.isnan(value) else f"{value:>{width}.{digits}f}"

    rows = [f"  {'case':<9} {'tracks':>7} {'EPE px':>8} {'median':>8} {'lost':>6} {'<= 4 px':>8} {'static px':>9} "
            f"{'kept':>6} {'moved px':>8} {'back px':>8} {'back lost':>9} {'RGB after':>9} {'RGB before':>10}"]
    for case in cases:
        summary = summaries[case]
        persistence = summary.get("persistence", {})
        back = summary.get("reappearance", {})
        rows.append(
            f"  {case:<9} {summary['tracks_per_clip']:>7.2f} {cell(summary['epe_px'], 8)} "
            f"{cell(summary['median_epe_px'], 8)} {cell(summary['lost_fraction'], 6)} "
            f"{summary['clips_within_4px']:>4}/{clips:<3} {cell(summary.get('static_epe_px'), 9)} "
            f"{cell(persistence.get('kept_fraction'), 6)} {cell(persistence.get('displacement_px'), 8)} "
            f"{cell(back.get('position_error_px'), 8)} {cell(back.get('lost_fraction'), 9)} "
            f"{cell(back.get('colour_error'), 9, 4)} {cell(back.get('colour_error_before'), 10, 4)}")
    return rows


def drift(demo, chunks: int, seed: int):
    blocks = demo.streaming.block_frames
    frames = sum(blocks[min(i, len(blocks) - 1)] for i in range(chunks))
    config = SyntheticMotionConfig(width=demo.size, height=demo.size, num_frames=frames, fps=demo.fps)
    clip = generate_clip(config, clip_seed(ROLLOUT_DATASET_SEED, 0))
    results = {}
    for sinks in (True, False):
        started = time.perf_counter()
        video = demo.stream(clip.frames[0], clip.tracks, frames, seed=seed, sinks=sinks).frames
        colour = colour_drift(video, clip=clip)
        content = content_drift(video, clip=clip)
        results[sinks] = (colour.summary, content.summary, time.perf_counter() - started)
    return frames, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="demo-format weights (default: the shipped model)")
    parser.add_argument("--pca-decoder", action="store_true",
                        help="decode with the codec's PCA alone, not the learned decoder (figures before it shipped)")
    parser.add_argument("--clips", type=int, default=48,
                        help="track-following clips (means over 16 clips scatter by about 1 px from set to set)")
    parser.add_argument("--frames", type=int, default=31, help="frames per held-out clip (1 + 3k)")
    parser.add_argument("--rollout-chunks", type=int, default=1000)
    parser.add_argument("--speed-frames", type=int, default=193)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clip-set", choices=tuple(CLIP_SETS), default="held-out",
                        help="track-following clips: the reported held-out set, or the validation set used to pick checkpoints")
    parser.add_argument("--streaming", default="{}",
                        help='JSON overrides of the model\'s streaming settings, e.g. \'{"commit_step": 0, "motion_scale": 1.5}\'')
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=(), choices=("epe", "drift", "speed"))
    parser.add_argument("--drags", nargs="+", choices=DRAG_CASES,
                        help="also score the --clips clips conditioned each of these ways, side by side: the clip's five "
                             "tracks per sprite, two or one point drags per sprite, anchors on static sprites and one "
                             "point on moving ones, one point given over part of the clip, one region drag per sprite "
                             "(the editor's widget JSON expanded to its grid), no tracks (with a persistence score), and "
                             "occlusion clips (one point per sprite, scored on reappearance; needs --frames 25 or more)")
    parser.add_argument("--region-margin", type=float, default=REGION_MARGIN_PIXELS,
                        help="pixels added to a sprite's bounding radius for its region drag's radius")
    parser.add_argument("--region-grid", type=int,
                        help="grid tracks per side for region drags (default: the editor's for the frame, 8 at 128x128)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    demo = load_demo_model(args.model, decoder="pca" if args.pca_decoder else None)
    overrides = json.loads(args.streaming)
    demo.streaming = dataclasses.replace(demo.streaming, **overrides)
    report = {"model": args.model or "shipped", "threads": args.threads, "streaming_overrides": overrides,
              "decoder": "pca" if args.pca_decoder else type(demo.codec).__name__}

    if "speed" not in args.skip:
        image, tracks = load_demo_image(), load_demo_tracks()
        demo.stream(image, tracks, 16)  # warm-up
        result = demo.stream(image, tracks, args.speed_frames, seed=args.seed)
        report["speed"] = {"frames": args.speed_frames, "frames_per_second": round(result.frames_per_second, 1),
                           "first_chunk_ms": round(1000 * result.first_chunk_seconds, 1), "realtime_goal_fps": demo.fps}
        print(f"speed: {result.frames_per_second:.1f} frames/s at {demo.size}x{demo.size} incl. decoding "
              f"({args.threads} threads; goal >= {demo.fps:g}), first chunk {1000 * result.first_chunk_seconds:.1f} ms",
              flush=True)

    if "epe" not in args.skip:
        epe, epe_free, lost, per_clip, per_clip_free = track_following(
            demo, args.clips, args.frames, args.seed, CLIP_SETS[args.clip_set])
        ratio = epe_free / epe if epe > 0 else math.inf
        report["track_following"] = {
            "clip_set": args.clip_set, "clips": args.clips, "frames": args.frames, "epe_px": round(epe, 3), "epe_without_tracks_px": round(epe_free, 3),
            "ratio": round(ratio, 2), "lost_fraction": round(lost, 3),
            "per_clip_epe": [round(v, 2) for v in per_clip], "per_clip_epe_without_tracks": [round(v, 2) for v in per_clip_free],
        }
        print(f"track following ({args.clips} {args.clip_set} clips, {args.frames} frames, 128x128): EPE {epe:.3f} px with tracks "
              f"(goal <= 4), {epe_free:.3f} px without; ratio {ratio:.2f}x (goal >= 5); lost {lost:.3f}", flush=True)

    if args.drags:
        cases = list(dict.fromkeys(args.drags))
        results = drag_kinds(demo, cases, args.clips, args.frames, args.seed, CLIP_SETS[args.clip_set],
                             args.region_margin, args.region_grid)
        summaries = {case: drag_summary(results[case]) for case in cases}
        grid = args.region_grid or default_grid_size(demo.size, demo.size)
        report["drags"] = {"clip_set": args.clip_set, "clips": args.clips, "frames": args.frames,
                           "region_margin_px": args.region_margin, "region_grid": grid, "cases": summaries}
        print(f"drag kinds ({args.clips} {args.clip_set} clips, {args.frames} frames, {demo.size}x{demo.size}; "
              f"region drags: {grid}x{grid} grid, radius = sprite + {args.region_margin:g} px):", flush=True)
        for row in drag_table(cases, summaries, args.clips):
            print(row, flush=True)

    if "drift" not in args.skip:
        frames, results = drift(demo, args.rollout_chunks, args.seed)
        (colour_s, content_s, time_s), (colour_n, content_n, time_n) = results[True], results[False]
        report["drift"] = {
            "chunks": args.rollout_chunks, "frames": frames,
            "colour_with_sinks": colour_s, "colour_without_sinks": colour_n, "colour_ratio": colour_s / colour_n,
            "content_with_sinks": content_s, "content_without_sinks": content_n, "content_ratio": content_s / content_n,
            "seconds_with_sinks": round(time_s, 1), "seconds_without_sinks": round(time_n, 1),
        }
        print(f"drift over {args.rollout_chunks} chunks ({frames} frames), mean of the last quarter: colour {colour_s:.4f} "
              f"with sinks vs {colour_n:.4f} without (ratio {colour_s / colour_n:.3f}, goal <= 0.333); content "
              f"{content_s:.4f} vs {content_n:.4f} (ratio {content_s / content_n:.3f})", flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
