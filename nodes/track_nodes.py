"""Track nodes: the drawing editor, importers for other packs' formats, and a preview overlay."""

from __future__ import annotations

from pathlib import Path

import torch

from motionstream_core import (
    ReadOptions,
    TrackSet,
    list_track_formats,
    load_tracks_file,
    read_tracks,
    rescale_tracks,
    track_format_labeled,
    tracks_from_widget_json,
)

from . import host

CATEGORY = "MotionStream/tracks"
# The Load Tracks File choice that picks the format from the file name (see `format_for_path`).
BY_FILE_SUFFIX = "by file suffix"
# Tracks files shipped with the pack (the motion-transfer example's): Load Tracks File finds them by name
# when ComfyUI's input folder has no file of that name, so the example workflow runs without copying one.
EXAMPLE_TRACKS_DIR = Path(__file__).resolve().parents[1] / "example_workflows" / "tracks"


def _frame_inputs(default_fps: float = 16.0):
    return {
        "width": ("INT", {"default": 832, "min": 16, "max": 16384, "step": 16}),
        "height": ("INT", {"default": 480, "min": 16, "max": 16384, "step": 16}),
        "fps": ("FLOAT", {"default": default_fps, "min": 1.0, "max": 240.0, "step": 1.0}),
    }


class MotionStreamTrackEditor:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                # Single-line on purpose: the canvas widget hides it and writes every edit into it.
                "tracks_json": ("STRING", {"default": "", "multiline": False,
                                            "tooltip": "Edited by the canvas: drag to draw a track, shift-click for an anchor."}),
            },
            "optional": {"image": ("IMAGE", {"tooltip": "Shown under the canvas; its size becomes the frame size."})},
        }

    RETURN_TYPES = ("TRACKS",)
    RETURN_NAMES = ("tracks",)
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = "Draw point trajectories on an image; outputs ComfyUI's TRACKS."

    def build(self, tracks_json, image=None):
        if isinstance(tracks_json, str) and not tracks_json.strip():
            raise ValueError("the track editor has no tracks: drag on the image to draw one (or disconnect the editor)")
        # The library parser validates everything (JSON syntax, nesting, number sizes, the schema)
        # and names the problem; an empty track list is its "no tracks" error.
        tracks = tracks_from_widget_json(tracks_json)
        if image is not None:
            tracks = _rescaled(tracks, width=image.shape[2], height=image.shape[1])
        return (tracks.to_comfy_tracks(),)


def _rescaled(tracks: TrackSet, width: int, height: int) -> TrackSet:

    return tracks if (tracks.width, tracks.height) == (width, height) else rescale_tracks(tracks, width, height)


class MotionStreamTracksFromCoordinates:
    """Track text from another node in any registered text format: KJNodes SplineEditor `coord_str`,
    ATI / WanTrackToVideo JSON, the editor's widget JSON."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "coordinates": ("STRING", {"forceInput": True}),
                "format": ([entry.label for entry in list_track_formats("text")],),
                **_frame_inputs(),
            }
        }

    RETURN_TYPES = ("TRACKS",)
    RETURN_NAMES = ("tracks",)
    FUNCTION = "convert"
    CATEGORY = CATEGORY

    def convert(self, coordinates, format, width, height, fps):
        options = ReadOptions(width=width, height=height, fps=fps)
        return (read_tracks(coordinates, track_format_labeled(format), options).to_comfy_tracks(),)


class MotionStreamLoadTracksFile:
    """Motion transfer: tracks from a file in any registered file format, e.g. a point tracker's
    (CoTracker .npz/.npy/.pt) or a Wan-Move .npy pair; or chosen by the file's suffix."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "path": ("STRING", {"default": "", "tooltip": "Relative to ComfyUI's input folder, or absolute; the name "
                                                              "of a file in the pack's example_workflows/tracks "
                                                              "is found there too (the input folder first)."}),
                "format": ([entry.label for entry in list_track_formats("file")] + [BY_FILE_SUFFIX],),
                "width": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 16,
                                  "tooltip": "Frame size the tracks were made at; 0: read it from the file (CoTracker .npz)."}),
                "height": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 16}),
                "fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 1.0, "tooltip": "0: from the file, else 16."}),
            },
            "optional": {
                "visibility_path": ("STRING", {"default": "", "tooltip": "Wan-Move *_visibility.npy, or a CoTracker visibility file."}),
            },
        }

    RETURN_TYPES = ("TRACKS",)
    RETURN_NAMES = ("tracks",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, path, format, width, height, fps, visibility_path=""):
        path = _input_or_example_file(path)
        # 0 and "" are the widgets' "not given".
        options = ReadOptions(width=width or None, height=height or None, fps=fps or None,
                              visibility_path=_input_or_example_file(visibility_path) if visibility_path else None)
        track_format = None if format == BY_FILE_SUFFIX else track_format_labeled(format)
        return (load_tracks_file(path, track_format, options).to_comfy_tracks(),)


def _input_or_example_file(name: str) -> str:
    """A user's file (host.input_path), else a file of that plain name among the pack's example tracks."""
    try:
        return host.input_path(name)
    except FileNotFoundError as error:
        example = EXAMPLE_TRACKS_DIR / name
        if name and Path(name).name == name and example.is_file():
            return str(example)
        raise FileNotFoundError(f"{error} (nor among the pack's example tracks in {EXAMPLE_TRACKS_DIR})") from None


def _track_colors(track_ids: torch.Tensor) -> torch.Tensor:
    """A distinct, stable colour per track id (golden-ratio hues), [N, 3] in 0..1."""
    hue = (track_ids.double() * 0.6180339887) % 1.0
    channel_offsets = torch.tensor([0.0, 1 / 3, 2 / 3], dtype=torch.float64)
    rgb = 0.5 + 0.5 * torch.cos(2 * torch.pi * (hue[:, None] + channel_offsets[None, :]))
    return rgb.float()


def draw_tracks(frames: torch.Tensor, tracks: TrackSet, radius: int = 4, tail: int = 8) -> torch.Tensor:
    """frames [T, H, W, 3] in 0..1 with each visible point drawn as a dot and its recent path as a fading tail."""
    out = frames.clone()
    count, height, width, _ = out.shape
    scale_x, scale_y = width / tracks.width, height / tracks.height
    colors = _track_colors(tracks.track_ids)
    rows = torch.arange(height, dtype=torch.float32)[:, None]
    cols = torch.arange(width, dtype=torch.float32)[None, :]
    for frame in range(count):
        source = min(frame, tracks.num_frames - 1)
        for age in range(tail, -1, -1):
            past = source - age
            if past < 0:
                continue
            dot = radius if age == 0 else max(1, radius // 2)
            strength = 1.0 if age == 0 else 0.6 * (1 - age / (tail + 1))
            visible = tracks.visibility[past].nonzero().flatten()
            for track in visible.tolist():
                x, y = tracks.points[past, track].tolist()
                disk = ((cols - x * scale_x) ** 2 + (rows - y * scale_y) ** 2) <= dot * dot
                out[frame][disk] = out[frame][disk] * (1 - strength) + colors[track] * strength
    return out


class MotionStreamDrawTracks:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "tracks": ("TRACKS",),
                "radius": ("INT", {"default": 4, "min": 1, "max": 64}),
                "tail": ("INT", {"default": 8, "min": 0, "max": 64, "tooltip": "How many past frames of each path to show."}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "draw"
    CATEGORY = CATEGORY
    DESCRIPTION = "Draws tracks over frames (a single image is repeated for every track frame) to check them."

    def draw(self, images, tracks, radius, tail):
        track_set = TrackSet.from_comfy_tracks(tracks, width=images.shape[2], height=images.shape[1])
        if images.shape[0] == 1:
            images = images.expand(track_set.num_frames, -1, -1, -1)
        return (draw_tracks(images[..., :3].float(), track_set, radius, tail),)


NODE_CLASS_MAPPINGS = {
    "MotionStreamTrackEditor": MotionStreamTrackEditor,
    "MotionStreamTracksFromCoordinates": MotionStreamTracksFromCoordinates,
    "MotionStreamLoadTracksFile": MotionStreamLoadTracksFile,
    "MotionStreamDrawTracks": MotionStreamDrawTracks,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MotionStreamTrackEditor": "MotionStream Track Editor",
    "MotionStreamTracksFromCoordinates": "MotionStream Tracks from Coordinates",
    "MotionStreamLoadTracksFile": "MotionStream Load Tracks File",
    "MotionStreamDrawTracks": "MotionStream Draw Tracks",
}
