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
    DragController,
    ResizeCrop,
    TrackChannelProvider,
    TrackEncoder,
    TrackHeadInputs,
    TrackSet,
    load_cotracker_tracks,
    load_wan_move_tracks,
    rescale_tracks,
    resample_tracks,
    resize_crop_tracks,
    track_head_inputs,
    tracks_from_ati_json,
    tracks_from_spline_editor,
    tracks_from_widget_json,
    tracks_to_widget_json,
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
    BlockSchedule,
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
    "resample_tracks", "resize_crop_tracks", "save_state_dict", "to_model_space", "to_vae_space",
    "track_head_inputs", "tracks_from_widget_json", "tracks_to_widget_json",
]
