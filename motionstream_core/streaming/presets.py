"""Streaming presets: how each family of causal Wan 2.1 students streams, in one table, every number with
where it comes from; and which preset a checkpoint gets, from what the file holds.

A preset is the part of a `StreamingConfig` a checkpoint was trained for: RoPE policy, schedule shift and
denoising steps, block size, and the cache (sink and window, in latent frames; the window is the whole
attention span of a block, sink and the block itself included). Students trained on 21 latent frames with
full causal attention and no sink (Self-Forcing, CausVid, Causal Forcing) have no streaming cache of their
own: they stream with this pack's sink 3 / window 9 rolling cache, which the Self-Forcing reference computes
too (its sink_size / local_attn_size; shared/fixtures/causal_rollout_absolute.safetensors).

The family comes from markers in the file (a track head, image-to-video weights, ComfyUI's causal_ar
metadata), else from the file's name (training checkpoints of Self-Forcing, CausVid, Causal Forcing and
LongLive are laid out alike: `generator[_ema]` dicts of `model.`-prefixed Wan weights), else it is a
Self-Forcing-style text-to-video student (or a bidirectional teacher, whose weights look the same).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import PurePath
from typing import Callable, Mapping

from ..sampling.schedule import DEFAULT_DENOISING_STEPS

_UNSEEN_CACHE = (
    "trained on 21 latent frames with full causal attention and no sink; sink 3 / window 9 is the rolling cache "
    "this pack streams it with past them"
)


@dataclasses.dataclass(frozen=True)
class StreamingPreset:
    name: str
    title: str
    rope_policy: str
    shift: float
    sink_frames: int
    window_frames: int
    # Latent frames per block; the last size repeats.
    block_frames: tuple[int, ...]
    # Where the numbers come from: repository and file, or paper.
    source: str
    denoising_steps: tuple[int, ...] = DEFAULT_DENOISING_STEPS
    prompt_change: str = "keep"

    def settings(self) -> dict:
        """The `StreamingConfig` keyword arguments of this preset."""
        return dict(
            rope_policy=self.rope_policy, shift=self.shift, sink_frames=self.sink_frames,
            window_frames=self.window_frames, block_frames=self.block_frames,
            denoising_steps=self.denoising_steps, prompt_change=self.prompt_change,
        )

    def summary(self) -> str:
        return summarize_streaming(self.settings())


def _frames(count: int) -> str:
    return f"{count} latent frame{'s' if count != 1 else ''}"


def summarize_streaming(settings: Mapping) -> str:
    """One line naming the streaming settings (a preset's, or a `StreamingConfig` as a dict)."""
    *first, repeating = settings["block_frames"]
    blocks = "".join(f"a block of {_frames(size)}, then " for size in first) + f"blocks of {_frames(repeating)}"
    text = (
        f"{settings['rope_policy']} RoPE, shift {settings['shift']:g}, sink {settings['sink_frames']}, "
        f"window {settings['window_frames']}, {blocks}, "
        f"steps {'/'.join(str(step) for step in settings['denoising_steps'])}"
    )
    if settings.get("prompt_change", "keep") != "keep":
        text += f", prompt change: {settings['prompt_change']}"
    return text


PRESETS: dict[str, StreamingPreset] = {preset.name: preset for preset in (
    StreamingPreset(
        "track_v0", "Track-v0", rope_policy="relative", shift=6.0, sink_frames=1, window_frames=6, block_frames=(1, 3),
        source="Track-v0 (huggingface.co/H1yori233/Track-v0, a FastVideo export of a MotionStream-style student): "
               "the setting this pack has shipped for it since its streaming engine was written (commit e1df908): "
               "a first block of 1 latent frame kept as the sink, then blocks of 3 in a 6-frame window, "
               "MotionStream's in-window (relative) RoPE, shift 6",
    ),
    StreamingPreset(
        "motionstream_paper", "MotionStream (paper)", rope_policy="relative", shift=6.0, sink_frames=3,
        window_frames=9, block_frames=(3,),
        source="MotionStream (arXiv 2511.01266): sliding-window causal attention anchored on an attention sink, "
               "the clean first chunk; as this pack reads it: a sink of the first 3-frame block, one rolling block "
               "and the current one (9 latent frames), positions counted within the window; shift 6 as Track-v0",
    ),
    StreamingPreset(
        "self_forcing", "Self-Forcing", rope_policy="absolute", shift=5.0, sink_frames=3, window_frames=9,
        block_frames=(3,),
        source="Self-Forcing (guandeh17/Self-Forcing) configs/self_forcing_dmd.yaml: timestep_shift 5.0, "
               "num_frame_per_block 3, denoising_step_list 1000/750/500/250 warped; wan/modules/causal_model.py "
               f"rotates keys at their absolute frame (causal_rope_apply); {_UNSEEN_CACHE}",
    ),
    StreamingPreset(
        "longlive", "LongLive", rope_policy="absolute", shift=5.0, sink_frames=3, window_frames=12, block_frames=(3,),
        prompt_change="recache",
        source="LongLive 1.0 (NVlabs/LongLive before the LongLive 2.0 commit 57f39c1) configs/longlive_inference.yaml: "
               "num_frame_per_block 3, timestep_shift 5.0, sink_size 3, local_attn_size 12 (the whole span, sink "
               "included: wan/modules/causal_model.py), denoising 1000/750/500/250 warped; a prompt switch "
               "re-caches the window (pipeline/interactive_causal_inference.py, _recache_after_switch)",
    ),
    StreamingPreset(
        # CausVid feeds its step list as timesteps (warp_denoising_step false) and takes each sigma from the
        # shift-8 table entry nearest that timestep; in this pack's warped steps those entries are raw steps
        # 1000, 280 and 120 (timesteps 1000, 756.8, 521.7; sigmas the same table entries CausVid uses).
        "causvid", "CausVid", rope_policy="absolute", shift=8.0, sink_frames=3, window_frames=9, block_frames=(3,),
        denoising_steps=(1000, 280, 120),
        source="CausVid (tianweiy/CausVid) configs/wan_causal_dmd.yaml, the config its README runs the released "
               "autoregressive checkpoint with: timestep_shift 8.0, num_frame_per_block 3, denoising_step_list "
               "1000/757/522 used as timesteps (not warped), i.e. warped steps 1000/280/120 at shift 8; absolute "
               f"RoPE (causvid/models/wan/causal_model.py causal_rope_apply); {_UNSEEN_CACHE}",
    ),
    StreamingPreset(
        "causal_forcing_chunkwise", "Causal Forcing, chunk-wise", rope_policy="absolute", shift=5.0, sink_frames=3,
        window_frames=9, block_frames=(3,),
        source="Causal Forcing (thu-ml/Causal-Forcing) configs/causal_forcing_dmd_chunkwise.yaml: num_frame_per_block "
               "3, timestep_shift 5.0, denoising_step_list 1000/750/500/250 warped; absolute RoPE as Self-Forcing "
               f"(wan/modules/causal_model.py); {_UNSEEN_CACHE}",
    ),
    StreamingPreset(
        "causal_forcing_framewise", "Causal Forcing, frame-wise", rope_policy="absolute", shift=5.0, sink_frames=3,
        window_frames=9, block_frames=(1,),
        source="Causal Forcing (thu-ml/Causal-Forcing) configs/causal_forcing_dmd_framewise.yaml: num_frame_per_block "
               "1, timestep_shift 5.0, denoising_step_list 1000/750/500/250 warped; absolute RoPE as Self-Forcing; "
               f"{_UNSEEN_CACHE}",
    ),
)}


def preset_named(name: str) -> StreamingPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown streaming preset {name!r}; use one of {', '.join(PRESETS)}")
    return PRESETS[name]


@dataclasses.dataclass(frozen=True)
class CheckpointFacts:
    """What a loaded checkpoint shows about itself: what its preset is chosen from."""

    has_track_head: bool = False
    is_image_to_video: bool = False
    # The safetensors metadata (empty for other formats).
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # The file's name with the folders that may name the model (a ComfyUI model name, or a path's last parts).
    name: str = ""

    @classmethod
    def for_file(cls, path, has_track_head: bool, is_image_to_video: bool, metadata: Mapping[str, str]):
        return cls(has_track_head, is_image_to_video, dict(metadata), "/".join(PurePath(path).parts[-3:]))


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    title: str
    # Why a checkpoint belongs to this family, in words for the user; None when it does not.
    evidence: Callable[[CheckpointFacts], str | None]
    # The preset for a checkpoint of this family.
    preset: Callable[[CheckpointFacts], str]


@dataclasses.dataclass(frozen=True)
class PresetChoice:
    family: Family
    evidence: str
    preset: StreamingPreset


def _named(pattern: str) -> Callable[[CheckpointFacts], str | None]:
    expression = re.compile(pattern, re.IGNORECASE)
    return lambda facts: f"from its file name ({facts.name})" if expression.search(facts.name) else None


_FRAMEWISE = re.compile(r"frame[-_ ]?wise", re.IGNORECASE)
_CHUNKWISE = re.compile(r"chunk[-_ ]?wise", re.IGNORECASE)


def _causal_forcing_blocks(default: str) -> Callable[[CheckpointFacts], str]:
    """Frame-wise and chunk-wise Causal Forcing weights look alike; the name may say which, else `default`."""

    def choose(facts: CheckpointFacts) -> str:
        if _CHUNKWISE.search(facts.name):
            return "causal_forcing_chunkwise"
        if _FRAMEWISE.search(facts.name):
            return "causal_forcing_framewise"
        return default

    return choose


_CAUSAL_FORCING_NAME = _named(r"causal[-_ ]?forcing")


def _causal_forcing_named(facts: CheckpointFacts) -> str | None:
    evidence = _CAUSAL_FORCING_NAME(facts)
    if evidence is not None and not (_CHUNKWISE.search(facts.name) or _FRAMEWISE.search(facts.name)):
        evidence += ("; the file does not say frame-wise or chunk-wise, so chunk-wise is assumed "
                     "(a name with 'framewise' picks frame-wise)")
    return evidence


def comfy_causal_ar(metadata: Mapping[str, str]) -> bool:
    """ComfyUI marks the Causal Forcing files it runs with {"transformer": {"causal_ar": true}} under 'config'."""
    try:
        config = json.loads(metadata.get("config", ""))
    except (ValueError, RecursionError):
        return False
    transformer = config.get("transformer") if isinstance(config, dict) else None
    return isinstance(transformer, dict) and transformer.get("causal_ar") is True


# First match wins: markers in the weights and metadata, then the file name, then the default.
FAMILIES: tuple[Family, ...] = (
    Family("motion_student", "MotionStream-style motion student",
           lambda facts: "from its track head (track_encoder.* weights)" if facts.has_track_head else None,
           lambda facts: "track_v0"),
    Family("causal_forcing_comfyui", "Causal Forcing (ComfyUI repackaged)",
           lambda facts: ("from its metadata: a ComfyUI causal_ar model, which ComfyUI runs frame by frame "
                          "(Comfy-Org/ComfyUI pull request 13082)") if comfy_causal_ar(facts.metadata) else None,
           _causal_forcing_blocks("causal_forcing_framewise")),
    Family("image_to_video", "MotionStream-style image-to-video student",
           lambda facts: "from its image-to-video weights (CLIP image embedding)" if facts.is_image_to_video
           else None,
           lambda facts: "track_v0"),
    Family("longlive", "LongLive", _named(r"long[-_ ]?live"), lambda facts: "longlive"),
    Family("causvid", "CausVid", _named(r"caus[-_ ]?vid"), lambda facts: "causvid"),
    # The chunk-wise student is the one that swaps in for Self-Forcing weights (thu-ml/Causal-Forcing README).
    Family("causal_forcing", "Causal Forcing", _causal_forcing_named,
           _causal_forcing_blocks("causal_forcing_chunkwise")),
    Family("self_forcing", "Self-Forcing", _named(r"self[-_ ]?forcing"), lambda facts: "self_forcing"),
    Family("text_to_video", "Wan 2.1 text-to-video (a Self-Forcing-style causal student, or a teacher)",
           lambda facts: "as nothing in the file or its name marks a family", lambda facts: "self_forcing"),
)


def choose_preset(facts: CheckpointFacts) -> PresetChoice:
    for family in FAMILIES:
        evidence = family.evidence(facts)
        if evidence is not None:
            return PresetChoice(family, evidence, preset_named(family.preset(facts)))
    raise AssertionError("the last family matches every checkpoint")
