"""Live drags steer only the chunks that have not started yet."""

import json

import pytest
import torch

from live_streams import run_with_live_edit
from motionstream_core.motion.drag_control import DragController, RegionHandle, cosine_falloff, region_grid_positions
from motionstream_core.motion.formats import tracks_from_widget_json
from motionstream_core.motion.formats.region_drags import GRID_FIRST_ID
from motionstream_core.motion.track_head import TrackChannelProvider, TrackEncoder

BLOCKS = [1, 3, 3, 3, 3]  # latent frames per chunk: first chunk of 1, then 3s


def _chunks(controller, edit_after_chunk=None, edit=None):
    torch.manual_seed(0)
    provider = TrackChannelProvider(TrackEncoder(id_dim=32, channels=8), controller.track_window, 6, 10)
    outputs, start = [], 0
    for index, frames in enumerate(BLOCKS):
        outputs.append(provider(start, frames))
        start += frames
        if index == edit_after_chunk:
            edit(controller)
    return outputs


def _drag_right(controller):
    now = controller.frames_committed / controller.fps
    controller.drag("h", now, 0.3, 0.5)
    controller.drag("h", now + 0.5, 0.6, 0.5)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_an_edit_during_chunk_k_changes_only_later_chunks(k):
    untouched = _chunks(DragController(fps=16))
    edited = _chunks(DragController(fps=16), edit_after_chunk=k, edit=_drag_right)
    for index in range(k + 1):
        torch.testing.assert_close(edited[index], untouched[index], rtol=0, atol=0)
    assert (edited[k + 1] - untouched[k + 1]).abs().max() > 1e-4


def test_a_drag_moves_a_region_not_a_pixel():
    controller = DragController(fps=10, grid_size=20, radius=0.2)
    controller.drag("h", 0.0, 0.5, 0.5)
    controller.drag("h", 1.0, 0.7, 0.5)
    moved = controller.frame_positions(0, 11)[-1] - controller.base_points
    distance = (controller.base_points - torch.tensor([0.5, 0.5])).norm(dim=-1)
    assert (moved[:, 0] > 0.1).sum() > 4, "several grid tracks near the grab point follow the handle"
    assert moved[distance >= 0.2].abs().max() == 0, "tracks outside the radius stay put"
    nearest = distance.argmin()
    assert float(moved[nearest, 0]) == pytest.approx(0.2 * float(cosine_falloff(distance[nearest], 0.2)), abs=1e-5)
    # The motion is spread over the drag's duration, not applied at once.
    halfway = controller.frame_positions(5, 1)[0] - controller.base_points
    assert float(halfway[nearest, 0]) == pytest.approx(float(moved[nearest, 0]) / 2, abs=1e-5)


def _drag_from_centre(pinned: bool):
    controller = DragController(fps=10, grid_size=20, radius=0.2)
    if pinned:
        controller.pin(0.5, 0.5)
    controller.drag("h", 0.0, 0.5, 0.5)
    controller.drag("h", 1.0, 0.8, 0.5)
    moved = controller.frame_positions(0, 11)[-1] - controller.base_points
    nearest = (controller.base_points - torch.tensor([0.5, 0.5])).norm(dim=-1).argmin()
    return float(moved[nearest].norm())


def test_anchors_pin_their_region():
    free, pinned = _drag_from_centre(False), _drag_from_centre(True)
    assert free > 0.2
    assert pinned < 0.1 * free


def test_track_ids_are_stable_for_the_session():
    controller = DragController(grid_size=10)
    ids = controller.track_ids.clone()
    _drag_right(controller)
    controller.release("h")
    controller.frame_positions(0, 20)
    assert torch.equal(controller.track_ids, ids) and ids.numel() == 100


def test_bad_samples_are_rejected():
    controller = DragController()
    with pytest.raises(ValueError, match="finite"):
        controller.drag("h", 0.0, float("nan"), 0.5)
    controller.drag("h", 1.0, 0.5, 0.5)
    with pytest.raises(ValueError, match="back in time"):
        controller.drag("h", 0.5, 0.6, 0.5)


# ---------------------------------------------------------------------------------------------
# Region drags of the widget JSON (version 2): handles in, the DragController grid out
# ---------------------------------------------------------------------------------------------



WIDTH, HEIGHT = 832, 480


def _region_document(regions, tracks=(), grid=12, duration=2.0, fps=8):
    return {"format": "motionstream-tracks", "version": 2, "width": WIDTH, "height": HEIGHT, "fps": fps,
            "duration": duration, "region_grid": grid, "tracks": list(tracks), "regions": regions}


DRAG = {"id": 4, "kind": "path", "radius": 0.2,
        "keyframes": [{"t": 0.25, "x": 0.4, "y": 0.5}, {"t": 1.0, "x": 0.6, "y": 0.45}]}
ANCHOR = {"id": 5, "kind": "anchor", "radius": 0.1, "keyframes": [{"t": 0.0, "x": 0.45, "y": 0.35}]}
LIVE = {"id": 6, "kind": "live", "radius": 0.15,
        "keyframes": [{"t": 1.5, "x": 0.6, "y": 0.45}, {"t": 1.75, "x": 0.6, "y": 0.7}]}
POINT_TRACK = {"id": 1, "keyframes": [{"t": 0.0, "x": 0.1, "y": 0.1}, {"t": 2.0, "x": 0.2, "y": 0.2}]}


def test_a_region_drag_document_expands_to_the_drag_controller_grid():
    tracks = tracks_from_widget_json(json.dumps(_region_document([DRAG, ANCHOR, LIVE], [POINT_TRACK])))
    # The grid comes first, with ids from the top of the id range; the point track follows.
    assert tracks.num_tracks == 12 * 12 + 1 and tracks.num_frames == 17
    assert tracks.track_ids[:144].tolist() == list(range(GRID_FIRST_ID, GRID_FIRST_ID + 144))
    assert tracks.track_ids[-1] == 1 and not bool(tracks.static.any())

    # The same edits made by hand on a DragController, in the order of their times.
    controller = DragController(fps=8, grid_size=12, aspect=WIDTH / HEIGHT)
    controller.pin(0.45, 0.35, radius=0.1)
    for handle, region in (("drag", DRAG), ("live", LIVE)):
        for keyframe in region["keyframes"]:
            controller.drag(handle, keyframe["t"], keyframe["x"], keyframe["y"], radius=region["radius"])
        controller.release(handle)
    expected = controller.frame_positions(0, 17)
    grid = tracks.normalized_points()[:, :144]
    torch.testing.assert_close(grid.float(), expected, rtol=0, atol=2e-6)
    assert bool(tracks.visibility[:, :144].all()), "nothing left the frame"

    moved = (expected[-1] - controller.base_points).norm(dim=-1)
    assert int((moved > 0.05).sum()) > 4, "a region moved, not one point"
    assert float((expected[2] - controller.base_points).abs().max()) == 0, "before the drag starts nothing moves"


def test_drags_one_after_another_add_up_and_simultaneous_ones_share():
    def moved(handles):
        final = region_grid_positions(handles, torch.arange(17) / 4, grid_size=9)[-1]
        return final - DragController(grid_size=9).base_points

    centre = 40  # grid point (0.5, 0.5)
    first = RegionHandle("path", 0.3, (0.0, 1.0), ((0.5, 0.5), (0.6, 0.5)))
    later = RegionHandle("live", 0.3, (2.0, 3.0), ((0.6, 0.5), (0.7, 0.5)))
    together = RegionHandle("path", 0.3, (0.0, 1.0), ((0.5, 0.5), (0.5, 0.6)))
    assert moved([first, later])[centre].tolist() == pytest.approx([0.2, 0.0], abs=1e-6), (
        "the second drag grabs the region where the first left it and moves it on")
    assert moved([first, together])[centre].tolist() == pytest.approx([0.05, 0.05], abs=1e-6), (
        "two handles pulling one point at once blend")
    pinned = RegionHandle("anchor", 0.3, (0.0,), ((0.5, 0.5),))
    assert moved([pinned, first])[centre].abs().max() == 0
    late_pin = RegionHandle("anchor", 0.3, (1.5,), ((0.5, 0.5),))
    assert moved([first, late_pin])[centre].tolist() == pytest.approx([0.1, 0.0], abs=1e-6), (
        "an anchor pins later drags only: it does not undo an earlier one")


def test_region_documents_are_checked_and_version_1_still_loads():
    plain = {"format": "motionstream-tracks", "version": 1, "width": WIDTH, "height": HEIGHT, "tracks": [POINT_TRACK]}
    assert tracks_from_widget_json(plain).num_tracks == 1
    only_regions = tracks_from_widget_json(_region_document([DRAG]))
    assert only_regions.num_tracks == 144, "a document may hold region drags and no point tracks"
    # Without a region_grid: one grid track per 16 px of the shorter side (8 x 8 on the demo's frames).
    automatic = {key: value for key, value in _region_document([DRAG]).items() if key != "region_grid"}
    assert tracks_from_widget_json(automatic).num_tracks == 30 * 30
    assert tracks_from_widget_json({**automatic, "width": 128, "height": 128}).num_tracks == 8 * 8
    cases = [
        ({**_region_document([DRAG]), "version": 1}, "'regions' need widget JSON version 2"),
        ({**_region_document([DRAG]), "version": 3}, "unsupported widget JSON version 3"),
        (_region_document([{**DRAG, "kind": "drag"}]), "'kind' of region 4"),
        (_region_document([{**DRAG, "radius": 0}]), r"'radius' of region 4 must be in \(0, 2\]"),
        (_region_document([{**DRAG, "radius": "big"}]), "'radius' of region 4"),
        (_region_document([{**DRAG, "keyframes": []}]), "region 4 needs a non-empty 'keyframes' list"),
        (_region_document([{**DRAG, "keyframes": [{"t": 0, "x": 5, "y": 0}]}]), "lies far outside the frame"),
        (_region_document([{**ANCHOR, "keyframes": [{"t": 0, "x": 0.1, "y": 0}, {"t": 1, "x": 0.2, "y": 0}]}]),
         "anchor region 5 must not move"),
        (_region_document([DRAG, DRAG]), "region ids must be unique"),
        (_region_document([{**DRAG, "id": 1}], [POINT_TRACK]), "id 1 is both a track's and a region's"),
        (_region_document([DRAG], [{**POINT_TRACK, "id": GRID_FIRST_ID}]), "belong to the region-drag grid"),
        (_region_document([DRAG], grid=65), r"region_grid must be in \[1, 64\]"),
        (_region_document([{**ANCHOR, "id": i} for i in range(65)]), "too many region drags"),
        (_region_document({}), "'regions' of the widget JSON must be a list"),
    ]
    for document, message in cases:
        with pytest.raises(ValueError, match=message):
            tracks_from_widget_json(json.dumps(document))


def test_a_grid_point_pushed_out_of_the_frame_is_invisible():
    out = {"id": 9, "kind": "path", "radius": 0.3,
           "keyframes": [{"t": 0, "x": 0.9, "y": 0.5}, {"t": 1, "x": 1.9, "y": 0.5}]}
    tracks = tracks_from_widget_json(_region_document([out], duration=1.0))
    normalized = tracks.normalized_points()
    assert not bool(tracks.visibility[-1].all()) and bool(tracks.visibility[0].all())
    inside = ((normalized[-1] >= 0) & (normalized[-1] <= 1)).all(dim=-1)
    assert torch.equal(inside, tracks.visibility[-1])


# ---------------------------------------------------------------------------------------------
# A live region drag through the node path with the embedded demo model
# ---------------------------------------------------------------------------------------------

EMBEDDED = "embedded: MotionStream demo (128x128, no download)"
DEMO_FRAMES = 16  # chunks of 1, 3, 3, 3, 3, 3 frames


def _demo_stream(pack, model, document, edit=None, after_chunk=1, num_frames=DEMO_FRAMES):
    (tracks,) = pack.NODE_CLASS_MAPPINGS["MotionStreamTrackEditor"]().build(json.dumps(document))
    (image,) = pack.NODE_CLASS_MAPPINGS["MotionStreamDemoImage"]().load()["result"]
    run = run_with_live_edit(
        pack, edit, after_chunk, model=model, width=128, height=128, num_frames=num_frames, seed=0, fps=16.0,
        sink_frames=-1, window_frames=-1, denoising_steps="", shift=0.0, start_image=image, tracks=tracks,
        unique_id="7")
    return run.outputs[0], run.chunks, run.posted


@pytest.mark.usefixtures("single_thread")
def test_a_live_region_drag_changes_only_the_chunks_after_it(pack):
    (model,) = pack.NODE_CLASS_MAPPINGS["MotionStreamModelLoader"]().load(EMBEDDED, "auto")
    drawn = {"format": "motionstream-tracks", "version": 2, "width": 128, "height": 128, "fps": 16, "duration": 1.0,
             "tracks": [],  # no region_grid: 8 x 8 grid tracks, as many as the demo was trained with
             "regions": [{"id": 0, "kind": "path", "radius": 0.2,
                          "keyframes": [{"t": 0.0, "x": 0.3, "y": 0.3}, {"t": 1.0, "x": 0.45, "y": 0.35}]}]}
    # While chunk 1 (frames 1..3) is shown, the user drags a region live: the edit carries one
    # more handle, timed from the stream's clock (4 frames = 0.25 s), not the grid's tracks.
    live = {"id": 1, "kind": "live", "radius": 0.25,
            "keyframes": [{"t": 0.25, "x": 0.6, "y": 0.6}, {"t": 0.5, "x": 0.75, "y": 0.5},
                          {"t": 0.7, "x": 0.8, "y": 0.3}]}
    edited_document = {**drawn, "regions": drawn["regions"] + [live]}

    baseline, base_chunks, _ = _demo_stream(pack, model, drawn)
    edited, edited_chunks, requests = _demo_stream(pack, model, drawn, edit=edited_document, after_chunk=1)

    [(body_bytes, reply)] = requests
    assert reply == (200, {"ok": True, "version": 1})
    assert body_bytes < 1500, "a live edit carries handles, not the grid"
    assert [chunk.shape[0] for chunk in edited_chunks] == [1, 3, 3, 3, 3, 3]
    for index in range(2):  # generated before the edit arrived: bit for bit the same
        assert torch.equal(edited_chunks[index], base_chunks[index]), index
    assert torch.equal(edited[:4], baseline[:4])
    assert (edited[4:] - baseline[4:]).abs().max() > 1e-3, "the chunks after the edit follow the new drag"


@pytest.mark.usefixtures("single_thread")
def test_an_edit_made_after_the_drawn_tracks_have_ended_still_steers(pack):
    """A stream outlives the editor's clip (until Stop, or longer than drawn): a live drag at 0.9 s of
    a stream whose drawn tracks end at 0.25 s is read from where the stream is, not cut at 0.25 s."""
    (model,) = pack.NODE_CLASS_MAPPINGS["MotionStreamModelLoader"]().load(EMBEDDED, "auto")
    drawn = {"format": "motionstream-tracks", "version": 2, "width": 128, "height": 128, "fps": 16, "duration": 0.25,
             "tracks": [], "regions": [{"id": 0, "kind": "path", "radius": 0.2, "keyframes": [
                 {"t": 0.0, "x": 0.3, "y": 0.3}, {"t": 0.25, "x": 0.4, "y": 0.35}]}]}
    live = {"id": 1, "kind": "live", "radius": 0.25, "keyframes": [
        {"t": 0.9, "x": 0.6, "y": 0.6}, {"t": 1.2, "x": 0.8, "y": 0.4}, {"t": 1.4, "x": 0.85, "y": 0.3}]}
    edited_document = {**drawn, "regions": drawn["regions"] + [live]}  # the editor's duration stays 0.25 s
    frames = 25  # chunks of 1 and 8 x 3 frames; the edit arrives once chunk 4 (frames 10..12) is sent

    baseline, base_chunks, _ = _demo_stream(pack, model, drawn, num_frames=frames)
    edited, edited_chunks, requests = _demo_stream(pack, model, drawn, edit=edited_document, after_chunk=4,
                                                   num_frames=frames)

    assert [reply for _, reply in requests] == [(200, {"ok": True, "version": 1})]
    assert torch.equal(edited[:13], baseline[:13])
    assert (edited[13:] - baseline[13:]).abs().max() > 1e-3, "the late drag steers the chunks after it"
    assert len(edited_chunks) == len(base_chunks) == 9


def _late_document():
    return {"format": "motionstream-tracks", "version": 2, "width": 64, "height": 64, "fps": 8, "duration": 1.0,
            "region_grid": 4,
            "tracks": [{"id": 1, "keyframes": [{"t": 0.0, "x": 0.1, "y": 0.1}, {"t": 0.5, "x": 0.3, "y": 0.2}]},
                       {"id": 2, "static": True, "keyframes": [{"t": 0.25, "x": 0.9, "y": 0.9}]}],
            "regions": [{"id": 3, "kind": "live", "radius": 0.3, "keyframes": [
                            {"t": 0.375, "x": 0.5, "y": 0.5}, {"t": 1.25, "x": 0.7, "y": 0.6}]},
                        {"id": 4, "kind": "anchor", "radius": 0.2, "keyframes": [{"t": 0.0, "x": 0.2, "y": 0.8}]}]}


def test_a_live_reading_starts_at_its_time_and_ends_with_the_state_that_holds():
    document = _late_document()
    whole = tracks_from_widget_json({**document, "duration": 4.0})  # frame i at i / 8 s

    live = tracks_from_widget_json(document, from_time=0.5)
    # from 0.5 s through the first frame after the last keyframe (1.25 s, past the 1.0 s duration): 1.375 s
    assert live.num_frames == 8
    assert torch.equal(live.track_ids, whole.track_ids) and torch.equal(live.static, whole.static)
    torch.testing.assert_close(live.points, whole.points[4:12], rtol=0, atol=1e-5)  # float32 of the same times
    assert torch.equal(live.visibility, whole.visibility[4:12])
    # its last frame is the state from then on: the moving track ended, the static one and the grid held
    for late in (12, 20, 32):
        torch.testing.assert_close(live.points[-1], whole.points[late], rtol=0, atol=1e-5)
        assert torch.equal(live.visibility[-1], whole.visibility[late])

    # long after every keyframe, an edit is one frame of that state, not the whole stream so far
    later = tracks_from_widget_json(document, from_time=36_000.0)
    assert later.num_frames == 1
    torch.testing.assert_close(later.points[0], whole.points[-1], rtol=0, atol=1e-5)
    assert torch.equal(later.visibility[0], whole.visibility[-1])
    with pytest.raises(ValueError, match="from_time"):
        tracks_from_widget_json(document, from_time=-1.0)


def test_live_tracks_read_an_edit_from_the_next_chunk_and_hold_its_last_frame(pack):
    LiveTracks = pack.nodes.live_control.LiveTracks
    live = LiveTracks(None, lambda tracks: tracks, 8)
    assert live.window(0, 1) is None and live.window(1, 5) is None  # no tracks yet; two chunks read
    document = _late_document()
    assert live.apply_edit(document) == 1
    whole = tracks_from_widget_json({**document, "duration": 4.0})
    window = live.window(5, 9)  # the next chunk: read from frame 5 (0.625 s) on
    torch.testing.assert_close(window.coords[0], whole.normalized_points()[5:9], rtol=0, atol=1e-5)
    assert torch.equal(window.visibility[0].bool(), whole.visibility[5:9])
    beyond = live.window(400, 403)  # long after the edit's last keyframe: its final state holds
    torch.testing.assert_close(beyond.coords[0], whole.normalized_points()[-1:].expand(3, -1, -1), rtol=0, atol=1e-5)
    assert torch.equal(beyond.visibility[0].bool(), whole.visibility[-1:].expand(3, -1))
