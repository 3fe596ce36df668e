"""The synthetic motion benchmark: procedural sprite clips with exact tracks, and scores of generated videos.

Training and benchmarks use it; the runtime never imports it.

Clips: `clip_config` (what a clip is drawn from), `sprites`, `backgrounds`,
`trajectories`, `rendering`, `clips` (generation with exact tracks), `dataset`
(map-style dataset and batch collation), `occlusion_clips` (a sprite that passes
behind another and comes out again), `track_spans` (tracks given over part of a
clip), `region_drags` (one region drag per sprite, as the editor writes it).
Scores, of ``[T, 3, H, W]`` RGB frames in ``[0, 1]`` at the clip's size:
`colour_membership` and `sprite_location` (finding sprites by colour),
`track_following` (end-point error against the requested tracks), `persistence`
(sprites without tracks kept and left in place), `sprite_colour` and
`reappearance` (a hidden sprite back at the right place and colour), `drift`
(colour and content drift over long rollouts).
"""

from .backgrounds import BACKGROUND_MAX_CHROMA
from .clip_config import (
    BACKGROUND_KINDS,
    MAX_POINTS_PER_SPRITE,
    MAX_SPRITES,
    MIN_SPRITE_SIZE,
    SPRITE_SHAPES,
    SPRITE_TEXTURES,
    TRAJECTORY_KINDS,
    SyntheticMotionConfig,
)
from .clips import TRACK_POINT_RADIUS, ClipMetadata, SyntheticClip, generate_clip
from .colour_membership import MEMBERSHIP_THRESHOLD, colour_membership
from .dataset import SyntheticBatch, SyntheticMotionDataset, clip_seed, collate_clips
from .drift import DriftCurve, colour_drift, content_drift
from .occlusion_clips import OcclusionClip, occlusion_clip
from .persistence import PersistenceScore, score_persistence
from .reappearance import ReappearanceScore, score_reappearance
from .region_drags import REGION_MARGIN_PIXELS, region_drag_document, region_drag_tracks
from .rendering import RenderedFrames, render_frames
from .sprite_colour import sprite_colour_error
from .sprite_location import SpriteLocations, locate_sprites
from .sprites import SpriteAppearance
from .track_following import TrackFollowingScore, score_track_following, track_following_epe
from .track_spans import SPAN_KINDS, TrackSpans, partial_track_spans

__all__ = [
    "BACKGROUND_KINDS", "BACKGROUND_MAX_CHROMA", "MAX_POINTS_PER_SPRITE", "MAX_SPRITES", "MIN_SPRITE_SIZE",
    "SPRITE_SHAPES", "SPRITE_TEXTURES", "TRACK_POINT_RADIUS", "TRAJECTORY_KINDS", "SyntheticMotionConfig",
    "SpriteAppearance", "RenderedFrames", "render_frames", "ClipMetadata", "SyntheticClip", "generate_clip",
    "SyntheticBatch", "SyntheticMotionDataset", "clip_seed", "collate_clips",
    "MEMBERSHIP_THRESHOLD", "colour_membership", "SpriteLocations", "locate_sprites",
    "TrackFollowingScore", "score_track_following", "track_following_epe",
    "DriftCurve", "colour_drift", "content_drift",
    "OcclusionClip", "occlusion_clip", "SPAN_KINDS", "TrackSpans", "partial_track_spans",
    "REGION_MARGIN_PIXELS", "region_drag_document", "region_drag_tracks",
    "PersistenceScore", "score_persistence", "sprite_colour_error", "ReappearanceScore", "score_reappearance",
]
