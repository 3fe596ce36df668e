"""Tiny video autoencoder (TAEHV layout) for Wan 2.1 and Wan 2.2 latents.

A small, causal replacement for the Wan VAEs, compatible with the published TAEHV
weights (``.pth`` or ``.safetensors``):

- ``taew2_1`` (Wan 2.1 VAE, also Wan 2.2 14B): 16 latent channels, 8x spatial compression;
- ``taew2_2`` (Wan 2.2 VAE of TI2V-5B): 48 latent channels, 16x spatial compression. The
  network is the same; around it, frames are pixel-unshuffled by 2 before the encoder
  (3 -> 12 channels at half size) and the decoder's 12 output channels pixel-shuffled back.

Both compress time 4x. One latent frame decodes to 4 video frames; the
first 3 frames of a decoded video are start-up frames and are dropped, so
T latents give 4 * T - 3 frames (the Wan VAE's 1 + 4 * (T - 1)).

Latents are used exactly as the diffusion model sees them: no scale or shift.

Time is handled without 3D convolutions. Every layer is a 2D layer applied to
each frame, except for three kinds of blocks:

- ``MemoryBlock`` also sees its own input from the previous time step,
- ``TemporalPool`` (encoder) merges ``stride`` consecutive frames into one,
- ``TemporalGrow`` (decoder) splits each frame into ``stride`` frames.

Because the network is causal and the decoder never looks ahead, decoding can
be streamed: the only state carried from one chunk to the next is the last
input of every memory block (``StreamingDecoder``).

Preview mode (``preview=True``) turns temporal upscaling off with the same
weights: each ``TemporalGrow`` keeps only the output channels of its last
sub-frame (the last C rows of its C -> stride*C 1x1 conv weight), so the
decoder makes one frame per latent. A checkpoint sliced that way and loaded as
a model without temporal upscaling gives the same frames.

Tensors are NTCHW (batch, time, channels, height, width) throughout.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model.weights import WeightsError, check_fits, check_weight_tensors, read_state_dict, read_tensor_specs

__all__ = ["TinyVAE", "StreamingDecoder", "StreamingEncoder"]

ENCODER_WIDTH = 64
DECODER_WIDTHS = (256, 128, 64, 64)
IMAGE_CHANNELS = 3

# Index of each temporal layer inside ``encoder`` / ``decoder``; these indices
# are part of the published key names (e.g. ``decoder.13.conv.weight``).
ENCODER_POOL_INDICES = (2, 7, 12)
DECODER_GROW_INDICES = (7, 13, 19)

# decode_video / encode_video work through long videos in chunks of about this
# many latent pixels (batch x time x height x width): one 832x480 latent frame.
LATENT_PIXELS_PER_CHUNK = 104 * 60

# Wan 2.1 and 2.2 time geometry (taew2_1, taew2_2): time is pooled by the first two
# encoder stages and grown by the last two decoder stages.
WAN21_ENCODER_TIME_DOWNSCALE = (True, True, False)
WAN21_DECODER_TIME_UPSCALE = (False, True, True)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


class SoftClamp(nn.Module):
    """Smoothly squashes latents into (-3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class MemoryBlock(nn.Module):
    """Residual conv block that also reads its input from the previous time step."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            conv3x3(in_channels * 2, out_channels),
            nn.ReLU(inplace=True),
            conv3x3(out_channels, out_channels),
            nn.ReLU(inplace=True),
            conv3x3(out_channels, out_channels),
        )
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        return self.forward_stacked(x, torch.cat([x, previous], 1))

    def forward_stacked(self, x: torch.Tensor, x_and_previous: torch.Tensor) -> torch.Tensor:
        """``forward`` given ``torch.cat([x, previous], 1)`` already built."""
        return self.conv(x_and_previous).add_(self.skip(x)).relu_()


class TemporalPool(nn.Module):
    """Merges ``stride`` consecutive frames into one with a 1x1 conv over their stacked channels."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels * stride, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x is (N*T, C, H, W) with T a multiple of stride, time-major within each batch item.
        frames, channels, height, width = x.shape
        return self.conv(x.reshape(frames // self.stride, self.stride * channels, height, width))


class TemporalGrow(nn.Module):
    """Splits every frame into ``stride`` frames with a 1x1 conv; output channel group k is sub-frame k."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.channels = channels
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x: torch.Tensor, preview: bool = False) -> torch.Tensor:
        frames, channels, height, width = x.shape
        if preview:
            # Keep only the last sub-frame. After the decoder's start-up trim,
            # the last sub-frame of latent t is output frame 4t, so a preview
            # frame shows the same moment as every 4th frame of a full decode.
            return F.conv2d(x, self.conv.weight[-channels:])
        grown = self.conv(x)
        if self.stride == 1 or not grown.is_contiguous(memory_format=torch.channels_last):
            return grown.reshape(frames * self.stride, channels, height, width)
        # Channels-last: one copy straight into channels-last sub-frames (a reshape would copy to NCHW).
        out = torch.empty((frames * self.stride, channels, height, width), dtype=grown.dtype, device=grown.device,
                          memory_format=torch.channels_last)
        out.unflatten(0, (frames, self.stride)).copy_(grown.unflatten(1, (self.stride, channels)))
        return out


def build_encoder(latent_channels: int, patch_size: int, time_downscale: Sequence[bool]) -> nn.Sequential:
    width = ENCODER_WIDTH
    layers: List[nn.Module] = [conv3x3(IMAGE_CHANNELS * patch_size**2, width), nn.ReLU(inplace=True)]
    for pools_time in time_downscale:
        layers += [
            TemporalPool(width, 2 if pools_time else 1),
            conv3x3(width, width, stride=2, bias=False),
            MemoryBlock(width, width),
            MemoryBlock(width, width),
            MemoryBlock(width, width),
        ]
    layers.append(conv3x3(width, latent_channels))
    return nn.Sequential(*layers)


def build_decoder(latent_channels: int, patch_size: int, time_upscale: Sequence[bool]) -> nn.Sequential:
    widths = DECODER_WIDTHS
    layers: List[nn.Module] = [SoftClamp(), conv3x3(latent_channels, widths[0]), nn.ReLU(inplace=True)]
    for stage, grows_time in enumerate(time_upscale):
        width, next_width = widths[stage], widths[stage + 1]
        layers += [
            MemoryBlock(width, width),
            MemoryBlock(width, width),
            MemoryBlock(width, width),
            nn.Upsample(scale_factor=2),
            TemporalGrow(width, 2 if grows_time else 1),
            conv3x3(width, next_width, bias=False),
        ]
    layers += [nn.ReLU(inplace=True), conv3x3(widths[-1], IMAGE_CHANNELS * patch_size**2)]
    return nn.Sequential(*layers)


# State carried between chunks of one stream: memory block index -> that block's
# input at the last time step it saw, shaped (N, 1, C, H, W).
BlockMemory = Dict[int, torch.Tensor]


# Frames go through the blocks in groups whose input to a block stays under this
# size; no block's output is more than 4x its input (the 2x upsample). Allocations
# above ~32 MB come straight from the OS as fresh pages, and faulting those in cost
# more than batching frames saved (one thread, fp32, 416x240: one latent's four
# 64-channel full-size frames are 100 MB). A single frame may exceed it.
ACTIVATION_BYTES_PER_PASS = 8 * 2**20


def run_blocks(
    blocks: nn.Sequential,
    x: torch.Tensor,
    memory: BlockMemory,
    preview: bool = False,
    memory_format: torch.memory_format = torch.contiguous_format,
    order: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """Applies ``blocks`` to a chunk of frames ``x`` (NTCHW), several time steps at once.

    ``memory`` holds the state left by the previous chunk of the same stream and
    is updated in place, so running consecutive chunks gives exactly the result of
    running their concatenation. That is also how a chunk whose activations grow
    too large is handled: from that block on, it runs as consecutive smaller chunks.
    ``order``: indices of the blocks still to run (default: ``execution_order(blocks)``).
    Every temporal pool must receive a whole number of groups (callers feed the
    encoder multiples of its time downscale).
    """
    batch = x.shape[0]
    h = x.flatten(0, 1).contiguous(memory_format=memory_format)
    order = execution_order(blocks) if order is None else order
    return run_frames(blocks, h, batch, memory, preview, memory_format, order).unflatten(0, (batch, -1))


def run_frames(
    blocks: nn.Sequential,
    h: torch.Tensor,
    batch: int,
    memory: BlockMemory,
    preview: bool,
    memory_format: torch.memory_format,
    order: Sequence[int],
) -> torch.Tensor:
    """``run_blocks`` on frames flattened to (N*T, C, H, W), batch item-major."""
    for step, index in enumerate(order):
        block = blocks[index]
        frames = h.shape[0] // batch
        group = frames_per_pass(blocks, order[step:], h, batch)
        if group < frames:
            # Slicing the flat tensor keeps a one-frame piece's strides canonical;
            # nearest upsampling of a (1, C, H, W) view with a stray batch stride was ~20x slower.
            if batch == 1:
                pieces = h.split(group)
            else:
                by_time = h.unflatten(0, (batch, -1)).split(group, 1)
                pieces = [piece.flatten(0, 1).contiguous(memory_format=memory_format) for piece in by_time]
            rest = order[step:]
            outputs = [run_frames(blocks, piece, batch, memory, preview, memory_format, rest) for piece in pieces]
            return torch.cat([output.unflatten(0, (batch, -1)) for output in outputs], 1).flatten(0, 1)
        if isinstance(block, MemoryBlock):
            h = run_memory_block(block, h, batch, memory, index, memory_format)
        elif isinstance(block, TemporalPool):
            if frames % block.stride:
                raise ValueError(f"temporal pool at index {index} needs a multiple of {block.stride} frames")
            h = block(h)
        elif isinstance(block, TemporalGrow):
            h = block(h, preview=preview)
        else:
            h = block(h)
        h = h.contiguous(memory_format=memory_format)
    return h


def execution_order(blocks: nn.Sequential) -> List[int]:
    """The indices of ``blocks`` in the order ``run_blocks`` applies them.

    A temporal grow is a bias-free 1x1 conv, so it commutes with the nearest-neighbour
    upsample before it: running it first does the same arithmetic on a quarter of the pixels.
    """
    order = list(range(len(blocks)))
    for index in range(len(blocks) - 1):
        upsample, grow = blocks[index], blocks[index + 1]
        if isinstance(upsample, nn.Upsample) and upsample.mode == "nearest" and isinstance(grow, TemporalGrow):
            order[index], order[index + 1] = index + 1, index
    return order


def frames_per_pass(blocks: nn.Sequential, order: Sequence[int], h: torch.Tensor, batch: int) -> int:
    """How many frames of ``h`` (per batch item) to send through the blocks in ``order`` at once."""
    frames = h.shape[0] // batch
    time_step_bytes = h[:batch].numel() * h.element_size()
    if frames <= 1 or frames * time_step_bytes <= ACTIVATION_BYTES_PER_PASS:
        return frames
    # Later temporal pools need whole groups of frames.
    multiple = math.prod(blocks[index].stride for index in order if isinstance(blocks[index], TemporalPool))
    group = max(1, ACTIVATION_BYTES_PER_PASS // time_step_bytes) // multiple * multiple
    return min(frames, max(multiple, group))


def run_memory_block(
    block: MemoryBlock, h: torch.Tensor, batch: int, memory: BlockMemory, index: int, memory_format: torch.memory_format
) -> torch.Tensor:
    """Runs ``block`` on every frame of ``h`` (N*T frames), each beside the frame before it."""
    channels = h.shape[1]
    # Build cat([x, previous], 1) in one buffer: each frame's previous is the frame
    # before it; the first one's comes from the last chunk (zeros at the start).
    stacked = torch.empty(
        (h.shape[0], 2 * channels, *h.shape[2:]), dtype=h.dtype, device=h.device, memory_format=memory_format
    )
    stacked[:, :channels] = h
    stacked_by_time = stacked.unflatten(0, (batch, -1))
    h_by_time = h.unflatten(0, (batch, -1))
    stacked_by_time[:, 1:, channels:] = h_by_time[:, :-1]
    stacked_by_time[:, :1, channels:] = memory.get(index, 0)
    # A view of a larger tensor would keep all of it alive until the next chunk.
    last = h_by_time[:, -1:]
    memory[index] = last if last.untyped_storage().nbytes() == last.numel() * last.element_size() else last.clone()
    return block.forward_stacked(h, stacked)


def check_same_stream(memory: BlockMemory, old_shape: Tuple[int, ...], new_shape: Tuple[int, ...]) -> Tuple[int, ...]:
    if memory and old_shape != new_shape:
        raise ValueError(
            f"this stream produces tensors shaped {old_shape} (with any length); got input for {new_shape}. "
            "Call reset() before changing the batch size or resolution."
        )
    return new_shape


class StreamingDecoder:
    """Decodes latents chunk by chunk; see ``TinyVAE.stream_decoder``.

    The decoder is causal and never looks ahead, so every pushed latent yields its
    frames immediately (the first latent yields 1, later ones ``time_upscale``
    each; in preview mode one each). The carried state is one frame per memory
    block, so memory use does not grow with the length of the stream.
    """

    def __init__(self, vae: "TinyVAE", preview: bool = False):
        self.vae = vae
        self.preview = preview
        self.reset()

    def reset(self) -> None:
        """Forgets the stream so far; the next push starts a new video."""
        self.memory: BlockMemory = {}
        self.frames_to_skip = 0 if self.preview else self.vae.frames_to_trim
        self._frame_shape: Tuple[int, ...] = (0, 0, IMAGE_CHANNELS, 0, 0)

    @torch.no_grad()
    def push(self, latents: torch.Tensor) -> torch.Tensor:
        """Feeds NTCHW latents; returns the NTCHW frames (float, [0, 1]) that became available (possibly 0 frames)."""
        latents = self.vae._check_latents(latents)
        batch, _, _, height, width = latents.shape
        scale = self.vae.spatial_scale
        self._frame_shape = check_same_stream(self.memory, self._frame_shape, (batch, 0, IMAGE_CHANNELS, height * scale, width * scale))
        if latents.shape[1] == 0:
            return self._no_frames()
        frames = run_blocks(self.vae.decoder, latents, self.memory, self.preview, self.vae.memory_format)
        if self.frames_to_skip:
            skipped = min(self.frames_to_skip, frames.shape[1])
            frames = frames[:, skipped:]
            self.frames_to_skip -= skipped
        return self.vae._postprocess_frames(frames)

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        """Ends the stream: returns the frames still pending (always none, as the decoder is causal) and resets."""
        pending = self._no_frames()
        self.reset()
        return pending

    def state_tensors(self) -> List[torch.Tensor]:
        """The tensors carried to the next chunk (for inspection and tests)."""
        return list(self.memory.values())

    def _no_frames(self) -> torch.Tensor:
        return torch.empty(self._frame_shape, device=self.vae.device)


class StreamingEncoder:
    """Encodes frames chunk by chunk; see ``TinyVAE.stream_encoder``.

    Frames are held back until a whole group of ``time_downscale`` frames has
    arrived; ``flush`` completes a partial group by repeating the last frame, as
    ``encode_video`` does at the end of a video.
    """

    def __init__(self, vae: "TinyVAE"):
        self.vae = vae
        self.reset()

    def reset(self) -> None:
        """Forgets the stream so far; the next push starts a new video."""
        self.memory: BlockMemory = {}
        self.pending: Optional[torch.Tensor] = None
        self._latent_shape: Tuple[int, ...] = (0, 0, self.vae.latent_channels, 0, 0)

    @torch.no_grad()
    def push(self, frames: torch.Tensor) -> torch.Tensor:
        """Feeds NTCHW RGB frames in [0, 1]; returns the NTCHW latents that became available (possibly 0)."""
        frames = self.vae._check_frames(frames)
        batch, _, _, height, width = frames.shape
        scale = self.vae.spatial_scale
        self._latent_shape = check_same_stream(
            self.memory, self._latent_shape, (batch, 0, self.vae.latent_channels, height // scale, width // scale)
        )
        if self.pending is not None:
            frames = torch.cat([self.pending, frames], 1)
        usable = frames.shape[1] - frames.shape[1] % self.vae.time_downscale
        self.pending = frames[:, usable:].clone() if usable < frames.shape[1] else None
        return self._encode(frames[:, :usable])

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        """Ends the stream: pads a partial group with its last frame, returns the last latents and resets."""
        pending = self.pending
        if pending is not None:
            missing = self.vae.time_downscale - pending.shape[1]
            pending = torch.cat([pending, pending[:, -1:].expand(-1, missing, -1, -1, -1)], 1)
        latents = self._encode(pending)
        self.reset()
        return latents

    def state_tensors(self) -> List[torch.Tensor]:
        """The tensors carried to the next chunk: memory block inputs and up to 3 held-back frames."""
        return list(self.memory.values()) + ([self.pending] if self.pending is not None else [])

    def _encode(self, frames: Optional[torch.Tensor]) -> torch.Tensor:
        if frames is None or frames.shape[1] == 0:
            return torch.empty(self._latent_shape, device=self.vae.device)
        latents = run_blocks(self.vae.encoder, self.vae._preprocess_frames(frames), self.memory, memory_format=self.vae.memory_format)
        return latents.float().contiguous()


class TinyVAE(nn.Module):
    """TAEHV-style tiny autoencoder; ``encoder`` / ``decoder`` use the published ``taew2_1`` / ``taew2_2`` key names.

    Build it from a checkpoint with ``from_file`` / ``from_state_dict``; the
    constructor arguments are read from the checkpoint there.

    Args:
        latent_channels: latent channels (16 for Wan 2.1, 48 for Wan 2.2).
        patch_size: pixel (un)shuffle factor around the network (1 for Wan 2.1, 2 for Wan 2.2).
        encoder_time_downscale: per encoder stage, whether it halves the frame rate.
        decoder_time_upscale: per decoder stage, whether it doubles the frame rate.
        channels_last: run convolutions on channels-last (NHWC) activations and weights.
            Same results; on a 2-core x86 CPU (fp32, 832x480, one thread, CPU time)
            it made decoding ~9% cheaper in full and ~8% in preview mode.
    """

    def __init__(
        self,
        latent_channels: int = 16,
        patch_size: int = 1,
        encoder_time_downscale: Sequence[bool] = WAN21_ENCODER_TIME_DOWNSCALE,
        decoder_time_upscale: Sequence[bool] = WAN21_DECODER_TIME_UPSCALE,
        channels_last: bool = True,
    ):
        super().__init__()
        self.latent_channels = latent_channels
        self.patch_size = patch_size
        self.encoder_time_downscale = tuple(bool(v) for v in encoder_time_downscale)
        self.decoder_time_upscale = tuple(bool(v) for v in decoder_time_upscale)
        self.encoder = build_encoder(latent_channels, patch_size, self.encoder_time_downscale)
        self.decoder = build_decoder(latent_channels, patch_size, self.decoder_time_upscale)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    # -- geometry -----------------------------------------------------------------

    @property
    def time_downscale(self) -> int:
        """Video frames per latent frame when encoding."""
        return 2 ** sum(self.encoder_time_downscale)

    @property
    def time_upscale(self) -> int:
        """Video frames per latent frame when decoding at full frame rate."""
        return 2 ** sum(self.decoder_time_upscale)

    @property
    def frames_to_trim(self) -> int:
        """Start-up frames dropped from the front of a full decode."""
        return self.time_upscale - 1

    @property
    def spatial_scale(self) -> int:
        return 8 * self.patch_size

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder[1].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder[1].weight.device

    # -- loading ------------------------------------------------------------------

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> "TinyVAE":
        """Builds the model that ``state_dict`` describes and loads it.

        ``dtype=None`` means float32 (published weights are stored in fp16, which is slow on CPU).
        Raises ValueError naming the offending keys when the state dict does not fit: names, shapes
        and dtypes are checked against a model on the meta device before any memory is allocated,
        so the model built is never larger than the weights given.
        """
        model = cls(**checked_config(state_dict))
        model.load_state_dict(dict(state_dict), strict=True)
        return model.to(device=device, dtype=dtype or torch.float32).eval().requires_grad_(False)

    @classmethod
    def from_file(
        cls,
        path: Union[str, os.PathLike],
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> "TinyVAE":
        """Loads ``taew2_1`` / ``taew2_2`` as ``.safetensors`` or ``.pth`` (tensors only: ``weights_only=True``).

        The latent channels and patch size are read off the tensors' shapes, not the file name.

        A safetensors file is checked from its header before its data is read; a ``.pth`` is
        memory-mapped, so its tensors are checked before they are copied. Every failure is a
        ValueError that names ``path``.
        """
        path = Path(path)
        try:
            if path.suffix == ".safetensors" and path.is_file():
                checked_config(read_tensor_specs(path), specs=True)
            return cls.from_state_dict(read_state_dict(path), device=device, dtype=dtype)
        except ValueError as error:
            if str(path) in str(error):
                raise
            raise WeightsError(f"{path}: {error}") from error

    # -- decoding -----------------------------------------------------------------

    @torch.no_grad()
    def decode_video(self, latents: torch.Tensor, preview: bool = False, latents_per_chunk: Optional[int] = None) -> torch.Tensor:
        """Decodes NTCHW latents to NTCHW RGB frames in [0, 1] (float32).

        Full mode returns ``time_upscale * T - frames_to_trim`` frames (4T - 3 for
        Wan 2.1); ``preview=True`` skips temporal upscaling and returns T frames,
        frame t showing the moment of full-mode frame 4t (see ``TemporalGrow``).
        The video goes through a stream decoder ``latents_per_chunk`` latents at a
        time (default: ``auto_latents_per_chunk``); the result does not depend on it.
        """
        latents = self._check_latents(latents)
        decoder = self.stream_decoder(preview=preview)
        chunk = latents_per_chunk or self.auto_latents_per_chunk(latents.shape)
        frames = [decoder.push(piece) for piece in latents.split(chunk, 1)]
        return torch.cat(frames + [decoder.flush()], 1)

    def stream_decoder(self, preview: bool = False) -> StreamingDecoder:
        """Returns a decoder whose state carries across ``push(latent_chunk)`` calls.

        Decoding a video chunk by chunk returns exactly the frames of one
        ``decode_video`` call on the whole video, each chunk's frames as soon as
        that chunk is pushed.
        """
        return StreamingDecoder(self, preview=preview)

    # -- encoding -----------------------------------------------------------------

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor, latents_per_chunk: Optional[int] = None) -> torch.Tensor:
        """Encodes NTCHW RGB frames in [0, 1] to NTCHW latents (float32).

        A video whose length is not a multiple of ``time_downscale`` is padded at
        the end by repeating its last frame; T frames give ceil(T / 4) latents.
        Frames are encoded ``time_downscale * latents_per_chunk`` at a time.
        """
        self._check_frames(frames, cast=False)  # each chunk is cast on its own, not the whole video
        encoder = self.stream_encoder()
        batch, _, _, height, width = frames.shape
        latent_shape = (batch, 0, self.latent_channels, height // self.spatial_scale, width // self.spatial_scale)
        chunk = self.time_downscale * (latents_per_chunk or self.auto_latents_per_chunk(latent_shape))
        latents = [encoder.push(piece) for piece in frames.split(chunk, 1)]
        return torch.cat(latents + [encoder.flush()], 1)

    def stream_encoder(self) -> StreamingEncoder:
        """Returns an encoder whose state carries across ``push(frame_chunk)`` calls."""
        return StreamingEncoder(self)

    @staticmethod
    def auto_latents_per_chunk(latent_shape: Sequence[int]) -> int:
        """How many latent frames to process at once: about one 832x480 latent frame per chunk.

        Processing a whole video at once needs memory in proportion to its length
        (~0.4 GB per 832x480 frame in fp32 in the last decoder stage). On a 2-core CPU,
        pushing 832x480 latents one at a time also took ~25% less CPU time than two
        at a time (less page-fault time); small inputs are still batched for speed.
        """
        batch, _, _, height, width = latent_shape
        return max(1, LATENT_PIXELS_PER_CHUNK // max(1, batch * height * width))

    # -- helpers ------------------------------------------------------------------

    def _check_latents(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 5 or latents.shape[2] != self.latent_channels:
            raise ValueError(f"expected NTCHW latents with {self.latent_channels} channels, got shape {tuple(latents.shape)}")
        return latents.to(device=self.device, dtype=self.dtype)

    def _check_frames(self, frames: torch.Tensor, cast: bool = True) -> torch.Tensor:
        if frames.ndim != 5 or frames.shape[2] != IMAGE_CHANNELS:
            raise ValueError(f"expected NTCHW RGB frames, got shape {tuple(frames.shape)}")
        if frames.shape[-1] % self.spatial_scale or frames.shape[-2] % self.spatial_scale:
            raise ValueError(f"frame height and width must be multiples of {self.spatial_scale}, got {tuple(frames.shape[-2:])}")
        return frames.to(device=self.device, dtype=self.dtype) if cast else frames

    def _preprocess_frames(self, frames: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(frames, self.patch_size) if self.patch_size > 1 else frames

    def _postprocess_frames(self, frames: torch.Tensor) -> torch.Tensor:
        if self.patch_size > 1:
            frames = F.pixel_shuffle(frames, self.patch_size)
        return frames.float().contiguous().clamp_(0, 1)


# -- checkpoint handling ------------------------------------------------------------


def checked_config(state_dict: Mapping[str, torch.Tensor], specs: bool = False) -> Dict[str, object]:
    """The ``TinyVAE`` arguments for ``state_dict``, after checking that it fits that model exactly.

    The model is built on the meta device, so a state dict whose shapes describe a huge model costs
    nothing before it is refused. ``specs``: the tensors are meta tensors read from a file's header.
    """
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise ValueError("a TinyVAE state dict must map parameter names to tensors")
    config = infer_config(state_dict)
    with torch.device("meta"):
        model = TinyVAE(**config)
    check_fits(model, state_dict)
    check_weight_tensors(state_dict, specs=specs)
    return config


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, object]:
    """Reads the constructor arguments of ``TinyVAE`` off the checkpoint's tensor shapes.

    Anything that cannot be read falls back to the Wan 2.1 value; the key check
    that follows then reports what does not fit.
    """

    def shape(key: str, dim: int) -> Optional[int]:
        tensor = state_dict.get(key)
        return int(tensor.shape[dim]) if tensor is not None and tensor.ndim > dim else None

    latent_channels = shape("decoder.1.weight", 1) or shape("encoder.17.weight", 0) or 16
    # The pixel (un)shuffle around the network turns 3 image channels into 3 * patch_size**2.
    image_channels = shape("encoder.0.weight", 1) or shape("decoder.22.weight", 0) or IMAGE_CHANNELS
    patch_size = math.isqrt(image_channels // IMAGE_CHANNELS) or 1
    if IMAGE_CHANNELS * patch_size**2 != image_channels:
        patch_size = 1

    def stride_flags(prefix: str, indices: Sequence[int], dim: int, widths: Sequence[int], default: Sequence[bool]) -> Tuple[bool, ...]:
        flags = []
        for index, width, fallback in zip(indices, widths, default):
            channels = shape(f"{prefix}.{index}.conv.weight", dim)
            flags.append(channels == 2 * width if channels in (width, 2 * width) else fallback)
        return tuple(flags)

    return dict(
        latent_channels=latent_channels,
        patch_size=patch_size,
        encoder_time_downscale=stride_flags("encoder", ENCODER_POOL_INDICES, 1, [ENCODER_WIDTH] * 3, WAN21_ENCODER_TIME_DOWNSCALE),
        decoder_time_upscale=stride_flags("decoder", DECODER_GROW_INDICES, 0, DECODER_WIDTHS[:3], WAN21_DECODER_TIME_UPSCALE),
    )
