"""Live drags steer only the chunks that have not started yet."""

import pytest
import torch

from motionstream_core.motion.drag_control import DragController, cosine_falloff
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
