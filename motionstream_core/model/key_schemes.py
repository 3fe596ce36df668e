"""Parameter naming schemes of public Wan 2.1 checkpoints and conversion to the canonical (original Wan) one.

Schemes seen in the wild:
- original Wan (Wan-AI, Comfy-Org repackaged, Kijai): `blocks.0.self_attn.q.weight`, ...
- diffusers `WanTransformer3DModel`: `blocks.0.attn1.to_q.weight`, `condition_embedder.*`, ...
Either may sit behind a prefix: `model.` (Self-Forcing, CausVid, LongLive, Causal Forcing),
`model.diffusion_model.` (ComfyUI saves, the ComfyUI-repackaged Causal Forcing), `diffusion_model.`,
`module.` / `_orig_mod.` / `_fsdp_wrapped_module.` (training wrappers, also inside names).
MotionStream-style students also carry `track_encoder.*`, which is not part of the transformer.
"""

from __future__ import annotations

import re
from typing import Mapping, TypeVar

T = TypeVar("T")

TRACK_ENCODER_PREFIX = "track_encoder."

# (canonical pattern, diffusers pattern); `{i}` stands for a block index.
_BLOCK_RENAMES = [
    ("self_attn.q.", "attn1.to_q."),
    ("self_attn.k.", "attn1.to_k."),
    ("self_attn.v.", "attn1.to_v."),
    ("self_attn.o.", "attn1.to_out.0."),
    ("self_attn.norm_q.", "attn1.norm_q."),
    ("self_attn.norm_k.", "attn1.norm_k."),
    ("cross_attn.q.", "attn2.to_q."),
    ("cross_attn.k.", "attn2.to_k."),
    ("cross_attn.v.", "attn2.to_v."),
    ("cross_attn.o.", "attn2.to_out.0."),
    ("cross_attn.norm_q.", "attn2.norm_q."),
    ("cross_attn.norm_k.", "attn2.norm_k."),
    ("cross_attn.k_img.", "attn2.add_k_proj."),
    ("cross_attn.v_img.", "attn2.add_v_proj."),
    ("cross_attn.norm_k_img.", "attn2.norm_added_k."),
    # The cross-attention norm is norm3 in Wan and norm2 in diffusers.
    ("norm3.", "norm2."),
    ("ffn.0.", "ffn.net.0.proj."),
    ("ffn.2.", "ffn.net.2."),
    ("modulation", "scale_shift_table"),
]

_TOP_RENAMES = [
    ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
    ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
    ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
    ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("img_emb.proj.0.", "condition_embedder.image_embedder.norm1."),
    ("img_emb.proj.1.", "condition_embedder.image_embedder.ff.net.0.proj."),
    ("img_emb.proj.3.", "condition_embedder.image_embedder.ff.net.2."),
    ("img_emb.proj.4.", "condition_embedder.image_embedder.norm2."),
    ("img_emb.emb_pos", "condition_embedder.image_embedder.pos_embed"),
    ("head.head.", "proj_out."),
    ("head.modulation", "scale_shift_table"),
    ("patch_embedding.", "patch_embedding."),
]

# Block keys that exporters write but no Wan 2.1 model uses; reading diffusers naming drops them, as diffusers
# does on load. FastVideo's image-to-video cross-attention defines a norm of the image query (it never applies
# it) and its exports, Track-v0's layout among them, carry its weight. It is the only one: FastVideo's exporter
# (training_utils.custom_to_hf_state_dict) writes every parameter of its Wan model, and this is the only one
# diffusers' model lacks (diffusers lists it in _keys_to_ignore_on_load_unexpected). The `to_gate_compress` of
# FastVideo's sparse-attention (VSA) students is not unused, it gates that attention: it is refused, not dropped.
UNUSED_DIFFUSERS_BLOCK_KEYS = ("attn2.norm_added_q.",)

# Wrapper segments that checkpoints put in front of the transformer's own names.
_WRAPPER_PREFIX = re.compile(
    r"^(?:(?:model|diffusion_model|_orig_mod|module|_fsdp_wrapped_module|_checkpoint_wrapped_module|transformer)\.)+"
)

# Training wrappers also sit inside names, around single blocks: FSDP, activation checkpointing and
# torch.compile. LongLive's EMA weights may keep them (`model.blocks.0._fsdp_wrapped_module.self_attn.q.weight`:
# its inference.py strips `_fsdp_wrapped_module.` anywhere in a name).
_WRAPPER_SEGMENT = re.compile(r"(?<![^.])(?:_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod)\.")

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.*)$")


def strip_prefixes(state_dict: Mapping[str, T]) -> dict[str, T]:
    """Removes wrapper prefixes (`model.`, `model.diffusion_model.`, `model._orig_mod.`, ...) from model keys,
    and training wrappers' segments inside them; two keys that come to the same name are refused."""
    result, original = {}, {}
    for key, value in state_dict.items():
        name = _WRAPPER_SEGMENT.sub("", key)
        match = _WRAPPER_PREFIX.match(name)
        if match and _is_model_key(name[match.end():]):
            name = name[match.end():]
        if name in result:
            raise ValueError(f"the keys {original[name]!r} and {key!r} both hold the weight {name!r}")
        result[name], original[name] = value, key
    return result


def _is_model_key(key: str) -> bool:
    return key.startswith((
        "blocks.", "patch_embedding.", "head.", "proj_out.", "condition_embedder.", "text_embedding.",
        "time_embedding.", "time_projection.", "img_emb.", "scale_shift_table", TRACK_ENCODER_PREFIX,
    ))


def detect_scheme(keys) -> str:
    """'wan' or 'diffusers', from keys without prefixes."""
    keys = list(keys)
    if any(k.startswith("condition_embedder.") or ".attn1." in k or k.startswith("proj_out.") for k in keys):
        return "diffusers"
    if any(k.startswith(("text_embedding.", "time_embedding.", "head.head.")) or ".self_attn." in k for k in keys):
        return "wan"
    raise ValueError(
        "these weights are not a Wan 2.1 transformer in any known naming "
        f"(first keys: {sorted(keys)[:5]})"
    )


def _rename(key: str, renames, to_diffusers: bool) -> str | None:
    for canonical, diffusers in renames:
        source, target = (canonical, diffusers) if to_diffusers else (diffusers, canonical)
        if key == source or (source.endswith(".") and key.startswith(source)):
            return target + key[len(source):]
    return None


def _convert_key(key: str, to_diffusers: bool) -> str | None:
    match = _BLOCK_KEY.match(key)
    if match:
        renamed = _rename(match.group(2), _BLOCK_RENAMES, to_diffusers)
        return None if renamed is None else f"blocks.{match.group(1)}.{renamed}"
    return _rename(key, _TOP_RENAMES, to_diffusers)


def _convert(state_dict: Mapping[str, T], to_diffusers: bool) -> dict[str, T]:
    converted, unknown = {}, []
    for key, value in state_dict.items():
        if key.startswith(TRACK_ENCODER_PREFIX):
            converted[key] = value
            continue
        if not to_diffusers and _is_unused_diffusers_key(key):
            continue
        new_key = _convert_key(key, to_diffusers)
        if new_key is None:
            unknown.append(key)
        else:
            converted[new_key] = value
    if unknown:
        source = "Wan" if to_diffusers else "diffusers"
        raise ValueError(f"unexpected keys for the {source} naming: {_preview(unknown)}")
    return converted


def _is_unused_diffusers_key(key: str) -> bool:
    match = _BLOCK_KEY.match(key)
    return match is not None and match.group(2).startswith(UNUSED_DIFFUSERS_BLOCK_KEYS)


def diffusers_to_wan(state_dict: Mapping[str, T]) -> dict[str, T]:
    return _convert(state_dict, to_diffusers=False)


def wan_to_diffusers(state_dict: Mapping[str, T]) -> dict[str, T]:
    return _convert(state_dict, to_diffusers=True)


def to_canonical(state_dict: Mapping[str, T]) -> dict[str, T]:
    """Any known scheme, with or without prefixes -> canonical Wan names (track encoder keys kept)."""
    stripped = strip_prefixes(state_dict)
    transformer_keys = [k for k in stripped if not k.startswith(TRACK_ENCODER_PREFIX)]
    if detect_scheme(transformer_keys) == "diffusers":
        return diffusers_to_wan(stripped)
    return stripped


def split_track_encoder(state_dict: Mapping[str, T]) -> tuple[dict[str, T], dict[str, T]]:
    """(transformer weights, track encoder weights with their `track_encoder.` prefix)."""
    transformer = {k: v for k, v in state_dict.items() if not k.startswith(TRACK_ENCODER_PREFIX)}
    track = {k: v for k, v in state_dict.items() if k.startswith(TRACK_ENCODER_PREFIX)}
    return transformer, track


def _preview(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys) - limit} more)" if len(keys) > limit else "")
