"""Architecture of a Wan 2.1 diffusion transformer, derived from weights or a config file."""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
import re
from typing import Any, Mapping

# Wan checkpoints never store the head count; every released size uses 128-dim heads.
WAN_HEAD_DIM = 128

# Where the head count can come from when the weights alone do not prove it.
CONFIG_HINT = (
    "give the architecture: load a folder that holds the weights and a config.json (diffusers: num_attention_heads "
    "and attention_head_dim; or Wan: dim and num_heads), store that JSON under 'config' in the safetensors "
    "metadata, or pass config= to the loader"
)

_INT_FIELDS = ("dim", "ffn_dim", "num_heads", "num_layers", "in_channels", "out_channels", "text_dim", "freq_dim",
               "text_len", "rope_max_len")
_OPTIONAL_INT_FIELDS = ("image_dim", "image_pos_len")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < math.inf:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class WanConfig:
    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    # CLIP vision width for image-to-video checkpoints (1280 for CLIP-H); None for text-to-video.
    image_dim: int | None = None
    # Learned positions added to image tokens (first-last-frame checkpoints); None otherwise.
    image_pos_len: int | None = None
    # Text embeddings shorter than this are zero-padded, as the original model does.
    text_len: int = 512
    rope_theta: float = 10000.0
    # Positions at or past this length are outside what the model was trained with.
    rope_max_len: int = 1024

    def __post_init__(self):
        """Checks every field's type and range, so a malformed config file fails here with a ValueError."""
        for name in _INT_FIELDS:
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        for name in _OPTIONAL_INT_FIELDS:
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        for name in ("eps", "rope_theta"):
            object.__setattr__(self, name, _positive_float(name, getattr(self, name)))
        for name in ("qk_norm", "cross_attn_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        patch = self.patch_size
        if isinstance(patch, (str, bytes)) or not isinstance(patch, (tuple, list)) or len(patch) != 3:
            raise ValueError(f"patch_size must be 3 positive integers (time, height, width), got {patch!r}")
        object.__setattr__(self, "patch_size", tuple(_positive_int("patch_size", p) for p in patch))
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def is_image_to_video(self) -> bool:
        return self.image_dim is not None

    @property
    def patch_volume(self) -> int:
        return math.prod(self.patch_size)

    def rope_dims(self) -> tuple[int, int, int]:
        """Per-head rotary dims for (time, height, width): 44/42/42 for 128-dim heads."""
        spatial = 2 * (self.head_dim // 6)
        return self.head_dim - 2 * spatial, spatial, spatial

    def tokens_per_frame(self, latent_height: int, latent_width: int) -> int:
        _, ph, pw = self.patch_size
        if latent_height % ph or latent_width % pw:
            raise ValueError(
                f"latent size {latent_height}x{latent_width} is not divisible by the patch size {ph}x{pw}"
            )
        return (latent_height // ph) * (latent_width // pw)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["patch_size"] = list(self.patch_size)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WanConfig":
        """Accepts this class's own field names, the original Wan constructor arguments, or a diffusers config."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a model config must be a JSON object, got {type(data).__name__}")
        if "num_attention_heads" in data or "attention_head_dim" in data:
            return cls.from_diffusers_config(data)
        fields = {f.name for f in dataclasses.fields(cls)}
        renamed = {"in_dim": "in_channels", "out_dim": "out_channels"}
        kwargs = {}
        for key, value in data.items():
            key = renamed.get(key, key)
            if key in fields:
                kwargs[key] = value
        if data.get("model_type") in ("i2v", "flf2v") and "image_dim" not in kwargs:
            kwargs["image_dim"] = 1280
        if data.get("model_type") == "flf2v" and "image_pos_len" not in kwargs:
            kwargs["image_pos_len"] = 514
        return cls(**kwargs)

    @classmethod
    def from_diffusers_config(cls, data: Mapping[str, Any]) -> "WanConfig":
        if not isinstance(data, Mapping):
            raise ValueError(f"a diffusers config must be a JSON object, got {type(data).__name__}")
        heads = _positive_int("num_attention_heads", data.get("num_attention_heads", 40))
        head_dim = _positive_int("attention_head_dim", data.get("attention_head_dim", 128))
        qk_norm = data.get("qk_norm", "rms_norm_across_heads")
        if qk_norm not in (None, "rms_norm_across_heads"):
            raise ValueError(f"unsupported qk_norm {qk_norm!r} in diffusers config")
        in_channels = data.get("in_channels", 16)
        # Values are checked by __post_init__, so a wrong type is a ValueError naming the field.
        return cls(
            dim=heads * head_dim,
            ffn_dim=data.get("ffn_dim", 13824),
            num_heads=heads,
            num_layers=data.get("num_layers", 40),
            in_channels=in_channels,
            out_channels=data.get("out_channels") or in_channels,
            text_dim=data.get("text_dim", 4096),
            freq_dim=data.get("freq_dim", 256),
            patch_size=data.get("patch_size", (1, 2, 2)),
            eps=data.get("eps", 1e-6),
            qk_norm=qk_norm is not None,
            cross_attn_norm=bool(data.get("cross_attn_norm", True)),
            image_dim=data.get("image_dim"),
            image_pos_len=data.get("pos_embed_seq_len"),
            rope_max_len=data.get("rope_max_seq_len", 1024),
        )

    def to_diffusers_config(self) -> dict[str, Any]:
        return {
            "_class_name": "WanTransformer3DModel",
            "patch_size": list(self.patch_size),
            "num_attention_heads": self.num_heads,
            "attention_head_dim": self.head_dim,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "text_dim": self.text_dim,
            "freq_dim": self.freq_dim,
            "ffn_dim": self.ffn_dim,
            "num_layers": self.num_layers,
            "cross_attn_norm": self.cross_attn_norm,
            "qk_norm": "rms_norm_across_heads" if self.qk_norm else None,
            "eps": self.eps,
            "image_dim": self.image_dim,
            "added_kv_proj_dim": self.dim if self.image_dim else None,
            "rope_max_seq_len": self.rope_max_len,
            "pos_embed_seq_len": self.image_pos_len,
        }

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], num_heads: int | None = None) -> "WanConfig":
        """Reads the architecture off the shapes of a state dict in the canonical (original Wan) naming.

        The head count is not stored in the weights (the q/k norms are [dim], across heads), so without
        `num_heads` it is inferred only where the shapes allow Wan's 128-wide heads: a `dim` that is not
        a multiple of 128 proves the heads are narrower or wider, and is refused with a request for a
        config. A multiple of 128 is assumed to mean 128-wide heads, as in every released Wan 2.1 model;
        a model of the same width with other heads (the demo model: dim 256, 4 heads of 64) needs its
        config, which `save_weights` stores in the metadata.
        """

        def shape(key, ndim):
            if key not in state_dict:
                raise ValueError(f"cannot infer the architecture: the weights have no {key!r}")
            found = tuple(state_dict[key].shape)
            if len(found) != ndim:
                raise ValueError(f"cannot infer the architecture: {key} has shape {found}, expected {ndim} dimensions")
            return found

        dim, in_channels, *patch = shape("patch_embedding.weight", 5)
        layer_ids = {int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))}
        if not layer_ids:
            raise ValueError("cannot infer the architecture: the weights have no transformer blocks")
        if layer_ids != set(range(len(layer_ids))):
            raise ValueError(f"transformer block indices are not contiguous: {sorted(layer_ids)[:16]}")
        head_out = shape("head.head.weight", 2)[0]
        patch_volume = math.prod(patch)
        if patch_volume < 1 or head_out % patch_volume:
            raise ValueError(
                f"cannot infer the architecture: head.head.weight has {head_out} outputs, "
                f"not a multiple of the patch volume {patch_volume} of patch_embedding.weight"
            )
        if num_heads is None:
            if dim % WAN_HEAD_DIM:
                raise ValueError(
                    f"cannot infer the attention head count: the model width {dim} is not a multiple of {WAN_HEAD_DIM}, "
                    f"so its heads are not Wan's {WAN_HEAD_DIM} wide, and the weights do not store how many there are; "
                    + CONFIG_HINT
                )
            num_heads = dim // WAN_HEAD_DIM
        image_dim = shape("img_emb.proj.0.weight", 1)[0] if "img_emb.proj.0.weight" in state_dict else None
        image_pos_len = shape("img_emb.emb_pos", 3)[1] if "img_emb.emb_pos" in state_dict else None
        return cls(
            dim=dim,
            ffn_dim=shape("blocks.0.ffn.0.weight", 2)[0],
            num_heads=num_heads,
            num_layers=len(layer_ids),
            in_channels=in_channels,
            out_channels=head_out // patch_volume,
            text_dim=shape("text_embedding.0.weight", 2)[1],
            freq_dim=shape("time_embedding.0.weight", 2)[1],
            patch_size=tuple(patch),
            qk_norm="blocks.0.self_attn.norm_q.weight" in state_dict,
            cross_attn_norm="blocks.0.norm3.weight" in state_dict,
            image_dim=image_dim,
            image_pos_len=image_pos_len,
        )
