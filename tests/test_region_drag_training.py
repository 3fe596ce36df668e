"""Training on region drags (issue 21): clips conditioned by one region drag per sprite, as the editor writes it,
whose grid the per-object subsampling keeps whole."""

import pytest
import torch

from motionstream_core.synthetic import SyntheticMotionConfig, clip_seed, generate_clip, region_drag_tracks
from motionstream_core.training.data import KEEP_WHOLE, NO_GROUP, subsample_tracks_per_group, track_fields
from motionstream_core.training.demo_recipe import DEMO_FPS, fit_codec, make_pool
from motionstream_core.training.seeding import sample_generators


def test_per_object_subsampling_keeps_a_whole_group_whole_even_when_it_stands_still():
    # 4 tracks of one object, 6 grid tracks given whole (all still), 2 of no object
    coords = torch.rand(1, 5, 12, 2)
    coords[0, :, 4:] = coords[0, :1, 4:]
    visibility = torch.ones(1, 5, 12)
    groups = torch.tensor([[0] * 4 + [KEEP_WHOLE] * 6 + [NO_GROUP] * 2])
    ids = torch.arange(12)[None]
    for draws in range(4):
        kept_coords, kept_visibility, _ = subsample_tracks_per_group(
            coords, visibility, ids, groups, sample_generators(draws, torch.arange(1), 1), (1,),
            still_group_dropout=1.0, randomize_ids=False)
        kept = int((kept_visibility[0].amax(dim=0) > 0).sum())
        assert kept == 1 + 6, "one track of the object and the whole grid, none of the tracks without an object"
        assert torch.equal(kept_coords[0, :, 1:7], coords[0, :, 4:10]), "the grid in its order, after the object's track"


def test_a_pool_conditions_its_region_share_with_the_editors_region_grid():
    codec = fit_codec(2, 0)
    count, frames, seed = 8, 5, 3
    pool = make_pool(codec, count, frames, seed, region_share=0.5, occlusion_share=0.25)
    config = SyntheticMotionConfig(width=128, height=128, num_frames=frames, fps=DEMO_FPS, max_speed=2.5)
    for index, sample in enumerate(pool):
        region = 2 <= index < 6  # the half before the last quarter (the occlusion clips)
        assert bool((sample["track_groups"] == KEEP_WHOLE).all()) == region
        if index < 2:
            clip = generate_clip(config, clip_seed(seed, index))
            assert torch.equal(sample["track_groups"], clip.metadata.track_sprite)
        if region and index < 6:
            clip = generate_clip(config, clip_seed(seed, index))
            expected = track_fields(region_drag_tracks(clip))
            for name, value in expected.items():
                assert torch.equal(sample[name], value), name
    with pytest.raises(ValueError, match="region_share"):
        make_pool(codec, 4, frames, seed, region_share=1.5)
    with pytest.raises(ValueError, match="at most 1"):
        make_pool(codec, 4, frames, seed, region_share=0.6, occlusion_share=0.6)
