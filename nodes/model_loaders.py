"""Loader nodes: MotionStream transformers (students and teachers, or the embedded demo model) and the Tiny VAE."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from motionstream_core import (CheckpointFacts, choose_preset, load_dit, read_metadata, StreamingConfig,
                               summarize_streaming, TinyVAE, TrackEncoder, TrackSet, WanDiT)
from motionstream_core.demo import asset_path, load_demo_image, load_demo_model, MODEL_FILE

from . import downloads, host
from .inputs import Need, text_embedding
from .latent_codecs import LatentCodec, PatchCodecLatents, wan_latent_family, WanLatents

DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CATEGORY = "MotionStream/loaders"

TEXT = Need(("positive",), "the prompt: CLIPTextEncode with the umT5 'wan' text encoder")
START_IMAGE = Need(("start_image",), "the first frame of the video")
DEMO_START_IMAGE = Need(("start_image",), "the first frame; MotionStream Demo Image gives the shipped example")
CLIP_VISION = Need(("clip_vision_output",), "CLIPVisionEncode (CLIP-H) of the start image")


@dataclasses.dataclass
class MotionStreamModel:
    """What flows along a MOTIONSTREAM_MODEL link: the transformer and what a sampler needs to run it."""

    dit: WanDiT
    track_encoder: TrackEncoder | None
    streaming_defaults: StreamingConfig
    source: str
    codec: LatentCodec = dataclasses.field(default_factory=WanLatents)
    needs: tuple[Need, ...] | None = None  # None: what a Wan 2.1 checkpoint of this config needs
    fixed_text: torch.Tensor | None = None  # a model trained with one text embedding takes no CONDITIONING
    native_size: tuple[int, int] | None = None  # (width, height) of a model that makes one size only
    renumber_track_ids: bool = False  # trained with track ids 0 .. N-1: tracks are renumbered in order
    name: str = ""

    def __post_init__(self):
        self.name = self.name or Path(self.source).name
        if self.needs is None:
            image_needs = (START_IMAGE, CLIP_VISION) if self.dit.config.is_image_to_video else ()
            self.needs = (TEXT, *self.codec.needs, *image_needs)

    def check_inputs(self, **given) -> None:
        """Raises, naming what is missing, unless every need is met by the sampler inputs `given`."""
        missing = [need for need in self.needs if not need.met(given)]
        if missing:
            used = {name for need in self.needs for name in need.inputs}
            unused = [name for name in given if name not in used]
            raise ValueError(
                f"{self.name} needs {'; '.join(map(str, missing))}: connect it to the sampler. "
                f"All it needs: {', '.join(' or '.join(need.inputs) for need in self.needs)}."
                + (f" Not used by it: {', '.join(unused)}." if unused else "")
            )

    def check_size(self, width: int, height: int) -> None:
        if self.native_size is not None and (width, height) != self.native_size:
            w, h = self.native_size
            raise ValueError(f"{self.name} makes {w}x{h} video only: set width to {w} and height to {h} "
                             f"(the start image is centre-cropped and resized to that), got {width}x{height}")

    def text(self, positive) -> torch.Tensor:
        return self.fixed_text if self.fixed_text is not None else text_embedding(positive)

    def tracks_with_trained_ids(self, tracks: TrackSet) -> TrackSet:
        if not self.renumber_track_ids:
            return tracks
        return dataclasses.replace(tracks, track_ids=torch.arange(tracks.num_tracks, dtype=torch.int64))


def load_embedded_demo(dtype: torch.dtype | None) -> MotionStreamModel:
    demo = load_demo_model(dtype=dtype or torch.float32)
    return MotionStreamModel(
        demo.model.transformer, demo.model.track_encoder, demo.streaming, str(asset_path(MODEL_FILE)),
        codec=PatchCodecLatents(demo.codec), needs=(DEMO_START_IMAGE,), fixed_text=demo.text(),
        native_size=(demo.size, demo.size), renumber_track_ids=demo.renumber_track_ids,
        name="the embedded MotionStream demo model",
    )


def model_info(model: MotionStreamModel, family: str, preset: str, source: str | None = None) -> str:
    """What the loader found, in lines a user reads before sampling: a wrong file shows here."""
    config = model.dit.config
    takes_image = config.is_image_to_video or any("start_image" in need.inputs for need in model.needs)
    task = "image-to-video (I2V)" if takes_image else "text-to-video (T2V)"
    lines = [
        f"file: {model.name}",
        f"family: {family}",
        f"task: {task}, {config.in_channels} input channels, {config.out_channels} latent channels",
        f"track head: {'yes' if model.track_encoder is not None else 'no'}",
        f"size: {config.num_layers} layers, dim {config.dim}, attention heads {config.num_heads} x {config.head_dim}, "
        f"ffn {config.ffn_dim}",
        f"preset: {preset}: {summarize_streaming(dataclasses.asdict(model.streaming_defaults))}",
    ]
    if source:
        lines.append(f"source: {source}")
    return "\n".join(lines)


def load_embedded_with_info(dtype: torch.dtype | None) -> tuple[MotionStreamModel, str]:
    model = load_embedded_demo(dtype)
    return model, model_info(model, "MotionStream demo (embedded in the pack)", "its own, stored with the model")


# Models shipped inside the pack: listed first, nothing to download or place in models/.
EMBEDDED_MODELS = {"embedded: MotionStream demo (128x128, no download)": load_embedded_with_info}


def load_file_with_info(model_name: str, dtype: torch.dtype | None) -> tuple[MotionStreamModel, str]:
    path = downloads.resolve("diffusion_models", model_name)
    dit, track_weights = load_dit(path, dtype=dtype, device=host.offload_device())
    track_encoder = TrackEncoder.from_state_dict(track_weights).to(dit.dtype) if track_weights else None
    codec, family_preset = wan_latent_family(dit.config.out_channels)
    if family_preset is None:  # Wan 2.1 latents: the checkpoint family's preset, from what the file holds
        facts = CheckpointFacts.for_file(path, track_encoder is not None, dit.config.is_image_to_video,
                                         read_metadata(path))
        choice = choose_preset(facts)
        defaults = StreamingConfig.from_preset(choice.preset.name)
        family, preset, source = f"{choice.family.title}, {choice.evidence}", choice.preset.name, choice.preset.source
    else:
        defaults = family_preset()
        family = f"a Wan model with {dit.config.out_channels}-channel latents ({type(codec).__name__})"
        preset, source = "that latent family's own (latent_codecs.WAN_LATENT_FAMILIES)", None
    model = MotionStreamModel(dit.eval().requires_grad_(False), track_encoder, defaults, path, codec=codec)
    return model, model_info(model, family, preset, source)


class MotionStreamModelLoader:
    @classmethod
    def INPUT_TYPES(cls):
        names = host.model_files("diffusion_models") + host.model_directories("diffusion_models")
        return {
            "required": {
                "model_name": (list(EMBEDDED_MODELS) + names + downloads.choices("diffusion_models"), {
                    "tooltip": "'embedded:' the demo model shipped with the pack (128x128, runs on a CPU; needs only a "
                               "start image and tracks: no text encoder, CLIP vision, VAE or Tiny VAE). Otherwise a "
                               "Wan 2.1 transformer in models/diffusion_models: Track-v0, Self-Forcing, Causal Forcing, "
                               "LongLive, CausVid or a Wan 2.1 teacher, in any public layout. 'download:' entries fetch "
                               "known weights from Hugging Face into that folder."}),
                "weight_dtype": (list(DTYPES), {"default": "auto", "tooltip": "auto keeps the file's dtype (fp8 files become bf16; the embedded demo: fp32)."}),
            }
        }

    RETURN_TYPES = ("MOTIONSTREAM_MODEL", "STRING")
    RETURN_NAMES = ("model", "info")
    OUTPUT_TOOLTIPS = ("The transformer, with the streaming settings its family was trained for.",
                       "What the loader found: family and why, task, channels, track head, size, and the streaming "
                       "preset with its settings and their source (also sent as the node's UI text).")
    FUNCTION = "load_with_info"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Loads a causal (student) or bidirectional (teacher) Wan 2.1 transformer for MotionStream, or the "
                   "embedded demo model, and says what it found (family, task, streaming preset). What the Streaming "
                   "Sampler then needs: the embedded demo, a start image (128x128 video, any frame count); a Wan 2.1 "
                   "model, the prompt (positive) and a Tiny VAE or the VAE, plus start_image and clip_vision_output for "
                   "image-to-video checkpoints such as Track-v0.")

    def load_with_info(self, model_name, weight_dtype="auto"):
        """The node's function: the model and the info text, the info also sent as the node's UI text."""
        model, info = self._load(model_name, weight_dtype)
        return {"ui": {"text": [info]}, "result": (model, info)}

    def load(self, model_name, weight_dtype="auto"):
        """The model alone, for scripts and tests."""
        return (self._load(model_name, weight_dtype)[0],)

    def _load(self, model_name, weight_dtype):
        embedded = EMBEDDED_MODELS.get(model_name)
        if embedded is not None:
            return embedded(DTYPES[weight_dtype])
        return load_file_with_info(model_name, DTYPES[weight_dtype])


class MotionStreamTinyVAELoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                # Not "vae_name": the front end reserves that name for its full-VAE asset browser.
                "tiny_vae_name": (host.model_files("vae_approx") + downloads.choices("vae_approx"), {
                    "tooltip": "TAEHV in models/vae_approx: taew2_1 / lighttaew2_1 for Wan 2.1, taew2_2 for Wan 2.2 TI2V-5B."}),
                "dtype": (["fp16", "bf16", "fp32"], {"default": "fp16", "tooltip": "fp32 is used on the CPU regardless."}),
            }
        }

    RETURN_TYPES = ("MOTIONSTREAM_TINY_VAE",)
    RETURN_NAMES = ("tiny_vae",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads the Tiny VAE that decodes each streamed chunk to frames at a fraction of the full VAE's cost."

    def load(self, tiny_vae_name, dtype="fp16"):
        path = downloads.resolve("vae_approx", tiny_vae_name)
        device = host.compute_device()
        chosen = DTYPES[dtype] if device.type != "cpu" else torch.float32
        return (TinyVAE.from_file(path, device=device, dtype=chosen).eval(),)


class MotionStreamDemoImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = ("The embedded demo model's example picture (128x128), shipped with the pack: a start image that "
                   "needs no file in ComfyUI's input folder.")

    def load(self):
        image = load_demo_image().movedim(0, -1)[None]  # [1, H, W, 3]
        return {"ui": {"images": host.preview_images(image)}, "result": (image,)}


# The track editor shows the demo image from here before the node has run (or after a page reload).
DEMO_IMAGE_ROUTE = "/motionstream/demo_image.png"
host.add_get_route(DEMO_IMAGE_ROUTE, lambda: host.png_bytes(load_demo_image().movedim(0, -1)), "image/png")

NODE_CLASS_MAPPINGS = {
    "MotionStreamModelLoader": MotionStreamModelLoader,
    "MotionStreamTinyVAELoader": MotionStreamTinyVAELoader,
    "MotionStreamDemoImage": MotionStreamDemoImage,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MotionStreamModelLoader": "MotionStream Model Loader",
    "MotionStreamTinyVAELoader": "MotionStream Tiny VAE Loader",
    "MotionStreamDemoImage": "MotionStream Demo Image",
}
