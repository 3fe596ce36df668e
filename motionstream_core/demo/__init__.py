"""The embedded demo: a few-MB motion student that runs anywhere, its example, and its CLI (`python -m motionstream_core.demo`)."""

from .animated_png import write_animated_png
from .model import (
    DECODER_FILE,
    DEFAULT_FRAMES,
    MODEL_FILE,
    DemoModel,
    StreamResult,
    asset_path,
    load_demo_image,
    load_demo_model,
    load_demo_tracks,
)

__all__ = [
    "DECODER_FILE",
    "DEFAULT_FRAMES",
    "MODEL_FILE",
    "DemoModel",
    "StreamResult",
    "asset_path",
    "load_demo_image",
    "load_demo_model",
    "load_demo_tracks",
    "write_animated_png",
]
