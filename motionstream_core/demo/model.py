"""The embedded demo model: a small Wan 2.1 student with its own codec, and the example it ships with.

The weights, example image and tracks live in `assets/` beside this file; `DemoModel.stream` runs the
streaming session and decodes each chunk as it arrives: with the model's `PatchCodec` plus the small learned
decoder in `assets/demo_decoder.safetensors` (`RefinedPatchCodec`) when that file is there and was trained for
the model's codec, else with the plain PCA decode.
"""

from __future__ import annotations

import dataclasses
import math
import time
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..codecs.learned_decoder import RefinedPatchCodec, codec_fingerprint, load_refined_codec
from ..codecs.patch_codec import PatchCodec
from ..model.weights import read_metadata
from ..motion.formats import load_tracks_file
from ..motion.formats.track_arrays import open_array_file, read_array
from ..motion.track_head import TrackChannelProvider, TrackHeadInputs, track_head_inputs
from ..motion.tracks import TrackSet
from ..streaming.session import StreamConditions, StreamingConfig, StreamingSession
from ..training.checkpoints import load_weights
from ..training.conditioned_model import TrackConditionedDiT


ASSETS = "assets"
MODEL_FILE = "demo_model.safetensors"
DECODER_FILE = "demo_decoder.safetensors"
IMAGE_FILE = "demo_image.npy"
TRACKS_FILE = "demo_tracks.json"
DEFAULT_FRAMES = 64


def asset_path(name: str) -> Path:
    return Path(str(resources.files(__package__).joinpath(ASSETS, name)))


@dataclasses.dataclass
class StreamResult:
    frames: torch.Tensor  # [T, 3, H, W] in [0, 1]
    seconds: float  # generation + decoding, wall clock
    first_chunk_seconds: float
    latents: torch.Tensor | None = None  # [1, C, T, h, w] as generated, with keep_latents=True

    @property
    def frames_per_second(self) -> float:
        return self.frames.shape[0] / self.seconds if self.seconds > 0 else math.inf


@dataclasses.dataclass
class DemoModel:
    model: TrackConditionedDiT
    streaming: StreamingConfig
    codec: PatchCodec | RefinedPatchCodec
    size: int
    fps: float
    renumber_track_ids: bool = True

    @property
    def latent_size(self) -> int:
        return self.size // self.codec.factor

    @property
    def text_dim(self) -> int:
        return self.model.config.text_dim

    def text(self) -> torch.Tensor:
        """The fixed (all-zero) text embedding the demo model was trained with."""
        return torch.zeros(1, 1, self.text_dim)

    def first_frame_latents(self, image: torch.Tensor) -> torch.Tensor:
        """Image [3, H, W] in [0, 1] -> the encoding of it followed by a gray frame [1, C, 2, h, w]."""
        frames = torch.stack((image, torch.full_like(image, 0.5)))
        return self.codec.encode_images(frames)

    def track_provider(self, tracks: TrackSet | None) -> TrackChannelProvider:
        """Track channels of a window of latent frames (one latent frame per video frame); zeros without tracks.

        The demo model was trained with the synthetic clips' own track ids (0 .. N-1), so tracks
        are renumbered 0 .. N-1 in the order given (the widget's ids are arbitrary labels).
        """
        inputs = None
        if tracks is not None:
            inputs = track_head_inputs(tracks)
            if self.renumber_track_ids:
                inputs = inputs._replace(track_ids=torch.arange(tracks.num_tracks, dtype=torch.int64)[None])

        def window(start: int, stop: int) -> TrackHeadInputs | None:
            if inputs is None:
                return None
            return inputs.frames(slice(start, stop))

        return TrackChannelProvider(self.model.track_encoder, window, self.latent_size, self.latent_size)

    def session(self, seed: int = 0, sinks: bool = True) -> StreamingSession:
        streaming = self.streaming if sinks else dataclasses.replace(self.streaming, sink_frames=0)
        return StreamingSession(
            self.model.transformer, streaming, latent_height=self.latent_size, latent_width=self.latent_size, seed=seed
        )

    @torch.no_grad()
    def stream(
        self,
        image: torch.Tensor,
        tracks: TrackSet | None,
        num_frames: int,
        seed: int = 0,
        sinks: bool = True,
        on_frames: Callable[[torch.Tensor], None] | None = None,
        keep_frames: bool = True,
        keep_latents: bool = False,
    ) -> StreamResult:
        """Streams `num_frames` video frames from `image` [3, H, W] in [0, 1] following `tracks`.

        Each chunk is decoded as soon as it is generated (`on_frames` gets [t, 3, H, W]); the
        time counts both. With `keep_frames=False` only the frame count is kept (long rollouts);
        `keep_latents=True` also returns the generated latents (to decode them another way).
        """
        if tuple(image.shape) != (3, self.size, self.size):
            raise ValueError(f"the demo model takes a 3x{self.size}x{self.size} image, got {tuple(image.shape)}")
        session = self.session(seed, sinks)
        began = time.perf_counter()
        session.start(StreamConditions(
            text=self.text(), first_frame_latents=self.first_frame_latents(image),
            motion_providers=[self.track_provider(tracks)],
        ))
        frames, latents, produced, first_chunk = [], [], 0, None
        while produced < num_frames:
            chunk = session.next_chunk()
            if keep_latents:
                latents.append(chunk.latents[:, :, : num_frames - produced])
            decoded = self.codec.decode_images(chunk.latents)[: num_frames - produced]
            produced += decoded.shape[0]
            if first_chunk is None:
                first_chunk = time.perf_counter() - began
            if on_frames is not None:
                on_frames(decoded)
            if keep_frames:
                frames.append(decoded)
        seconds = time.perf_counter() - began
        video = torch.cat(frames) if frames else torch.zeros(0, 3, self.size, self.size)
        return StreamResult(video, seconds, first_chunk or 0.0, torch.cat(latents, dim=2) if latents else None)


def load_demo_model(
    path: str | Path | None = None, dtype: torch.dtype = torch.float32, decoder: str | Path | None = None
) -> DemoModel:
    """The shipped demo model (or another file the demo recipe wrote).

    `decoder`: None decodes with the shipped learned decoder when it is there and was trained for this
    model's codec, else with the PCA decode; "pca" always with the PCA decode; a path, with the decoder
    in that file (a ``ValueError`` naming it if it was trained for another codec).

    A missing file is a ``FileNotFoundError``; a file that is not a demo model, or cannot be read,
    a ``ValueError`` naming it.
    """
    path = Path(path) if path is not None else asset_path(MODEL_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"demo model not found: {path}")
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"{path.name} is not a demo model: demo models are .safetensors files")
    try:
        metadata = read_metadata(path)
        if "codec" not in metadata:
            raise ValueError(f"{path} is not a demo model: it has no codec in its metadata")
        model, streaming = load_weights(path, dtype=dtype)
        if model.track_encoder is None or streaming is None:
            raise ValueError(f"{path} is not a demo model: it needs a track head and a streaming config")
        codec = PatchCodec.from_json(metadata["codec"])
        size, fps = int(metadata.get("demo_size", 128)), float(metadata.get("demo_fps", 16.0))
    except ValueError:
        raise
    except Exception as error:  # safetensors, json and torch raise their own types for a corrupt file
        raise ValueError(f"cannot read demo model {path.name}: {type(error).__name__}: {error}") from error
    model.eval().requires_grad_(False)
    codec = with_decoder(codec, decoder)
    return DemoModel(
        model=model, streaming=streaming, codec=codec, size=size, fps=fps,
        renumber_track_ids=metadata.get("track_ids", "renumber") == "renumber",
    )


def with_decoder(codec: PatchCodec, decoder: str | Path | None) -> PatchCodec | RefinedPatchCodec:
    """`codec` decoding as `load_demo_model`'s `decoder` argument says."""
    if decoder == "pca":
        return codec
    if decoder is not None:
        return load_refined_codec(decoder, codec)
    shipped = asset_path(DECODER_FILE)
    # The shipped decoder belongs to the shipped model's codec; another model's codec decodes with PCA.
    if not shipped.is_file() or read_metadata(shipped).get("codec_sha256") != codec_fingerprint(codec):
        return codec
    return load_refined_codec(shipped, codec)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")
_PICTURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
MAX_IMAGE_SIDE = 4096  # the demo resizes to its own size; larger inputs only cost memory
_MAX_IMAGE_BYTES = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE * 3 * 8


def load_demo_image(path: str | Path | None = None) -> torch.Tensor:
    """An image [3, H, W] in [0, 1] from a PNG or JPEG (read with Pillow, converted to RGB) or
    a .npy array [H, W, 3] (uint8, or float in [0, 1]).

    A missing file is a ``FileNotFoundError``; anything else wrong (another file type, a corrupt
    or huge picture, another shape or dtype, NaN, values outside [0, 1]) a ``ValueError`` naming
    the file. Sides are limited to :data:`MAX_IMAGE_SIDE` pixels, checked before decoding.
    """
    path = Path(path) if path is not None else asset_path(IMAGE_FILE)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{path.name}: the image must be a PNG (.png), JPEG (.jpg, .jpeg) or .npy file")
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    array = _read_npy_image(path) if suffix == ".npy" else _read_picture(path, _PICTURE_FORMATS[suffix])
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{path.name}: the image must be [H, W, 3], got {list(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{path.name}: the image is empty ({array.shape[1]}x{array.shape[0]} pixels)")
    if array.dtype == np.uint8:
        image = torch.from_numpy(np.ascontiguousarray(array)).float() / 255.0
    elif array.dtype.kind == "f":
        image = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if not bool(torch.isfinite(image).all()):
            raise ValueError(f"{path.name}: the image contains NaN or infinite values")
        if float(image.min()) < 0.0 or float(image.max()) > 1.0:
            raise ValueError(
                f"{path.name}: a float image must lie in [0, 1], got values in "
                f"[{float(image.min()):g}, {float(image.max()):g}]"
            )
    else:
        raise ValueError(f"{path.name}: the image must be uint8, or float in [0, 1], got dtype {array.dtype}")
    return image.permute(2, 0, 1).contiguous()


def _read_npy_image(path: Path) -> np.ndarray:
    def check(shape: tuple[int, ...]) -> None:
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"{path.name}: the image must be [H, W, 3], got {list(shape)}")
        if max(shape[:2]) > MAX_IMAGE_SIDE:
            raise ValueError(f"{path.name}: the image is {shape[1]}x{shape[0]}; sides are limited to {MAX_IMAGE_SIDE} pixels")

    with open_array_file(path, max_bytes=_MAX_IMAGE_BYTES) as source:
        return read_array(source, check_shape=check)


def _read_picture(path: Path, image_format: str) -> np.ndarray:
    try:
        with Image.open(path, formats=(image_format,)) as picture:
            width, height = picture.size
            if max(width, height) > MAX_IMAGE_SIDE:
                raise ValueError(
                    f"{path.name}: the image is {width}x{height}; sides are limited to {MAX_IMAGE_SIDE} pixels"
                )
            return np.array(picture.convert("RGB"))  # a writable copy
    except ValueError:
        raise
    except Exception as error:  # UnidentifiedImageError, truncated data, decompression bombs, ...
        raise ValueError(f"cannot read {path.name} as a {image_format} image: {type(error).__name__}: {error}") from error


def load_demo_tracks(path: str | Path | None = None) -> TrackSet:
    """The shipped example, or a tracks file in any format its suffix names (widget JSON .json, CoTracker .npz, ...)."""
    path = Path(path) if path is not None else asset_path(TRACKS_FILE)
    return load_tracks_file(path)
