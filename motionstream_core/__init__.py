"""MotionStream core: a plain PyTorch library (no ComfyUI imports) for motion-conditioned streaming video diffusion.

The runtime packages: `model` (the Wan DiT and its weights), `sampling` (schedule, noise, guidance),
`streaming` (session and KV cache), `motion` (tracks and the track head), `codecs` (latent codecs).
Beside them, never imported by the runtime: `synthetic` (the sprite benchmark), `demo` (the embedded
model), `training` and `testing`. The names below are the public API.
"""

from .codecs import PatchCodec, TinyVAE, to_model_space, to_vae_space
from .model import (
    WanConfig,
    WanDiT,
    WeightsError,
    build_dit,
    load_dit,
    read_metadata,
    read_state_dict,
    save_state_dict,
)
from .motion import (
    MAX_LIVE_KEYFRAMES,
    MAX_LIVE_REQUEST_BYTES,
    MAX_LIVE_TRACKS,
    DragController,
    ReadOptions,
    ResizeCrop,
    TrackChannelProvider,
    TrackEncoder,
    TrackFormat,
    TrackHeadInputs,
    TrackSet,
    format_for_path,
    list_track_formats,
    load_cotracker_tracks,
    load_tracks_file,
    load_wan_move_tracks,
    read_tracks,
    register_track_format,
    rescale_tracks,
    resample_tracks,
    resize_crop_tracks,
    track_format,
    track_format_labeled,
    track_head_inputs,
    tracks_from_ati_json,
    tracks_from_spline_editor,
    tracks_from_widget_json,
    tracks_to_widget_json,
    unregister_track_format,
)
from .sampling import (
    DEFAULT_MOTION_SCALE,
    DEFAULT_TEXT_SCALE,
    SOLVERS,
    Branch,
    FlowMatchSchedule,
    TeacherConditions,
    TeacherSampler,
)
from .streaming import (
    CACHE_POLICIES,
    PROMPT_CHANGE_POLICIES,
    BlockSchedule,
    CachePolicy,
    GrowingBaseline,
    KeepCache,
    PromptChangePolicy,
    RecacheWindow,
    RollingWithSinks,
    cache_policy_named,
    prompt_change_named,
    CausalWanModel,
    FirstFrameCondition,
    LatentChunk,
    RopeRangeError,
    StreamConditions,
    StreamingConfig,
    StreamingSession,
    StreamInterrupted,
)

__all__ = [
    "BlockSchedule", "Branch", "CausalWanModel", "DEFAULT_MOTION_SCALE", "DEFAULT_TEXT_SCALE", "DragController",
    "FirstFrameCondition", "FlowMatchSchedule", "LatentChunk", "PatchCodec", "ResizeCrop", "RopeRangeError",
    "SOLVERS", "StreamConditions", "StreamInterrupted", "StreamingConfig", "StreamingSession", "TeacherConditions",
    "TeacherSampler", "TinyVAE", "TrackChannelProvider", "TrackEncoder", "TrackHeadInputs", "TrackSet", "WanConfig",
    "WanDiT", "WeightsError", "build_dit", "load_dit", "read_metadata", "read_state_dict", "rescale_tracks", "load_cotracker_tracks", "load_wan_move_tracks",
    "tracks_from_ati_json", "tracks_from_spline_editor",
    "ReadOptions", "TrackFormat", "format_for_path", "list_track_formats", "load_tracks_file", "read_tracks",
    "register_track_format", "track_format", "track_format_labeled", "unregister_track_format",
    "resample_tracks", "resize_crop_tracks", "save_state_dict", "to_model_space", "to_vae_space",
    "track_head_inputs", "tracks_from_widget_json", "tracks_to_widget_json",
    "MAX_LIVE_KEYFRAMES", "MAX_LIVE_REQUEST_BYTES", "MAX_LIVE_TRACKS",
    "CACHE_POLICIES", "PROMPT_CHANGE_POLICIES", "CachePolicy", "GrowingBaseline", "KeepCache", "PromptChangePolicy",
    "RecacheWindow", "RollingWithSinks", "cache_policy_named", "prompt_change_named",
]
