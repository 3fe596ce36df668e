"""ComfyUI entry point of ComfyUI-MotionStream."""

import importlib.util
import os
import sys


def _import_bundled_core():
    # The pack folder is not on sys.path inside ComfyUI, and adding it would let our `nodes/`
    # shadow ComfyUI's own `nodes` module; register the bundled library by name instead.
    if "motionstream_core" in sys.modules:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    package_dir = os.path.join(here, "motionstream_core")
    spec = importlib.util.spec_from_file_location(
        "motionstream_core", os.path.join(package_dir, "__init__.py"), submodule_search_locations=[package_dir]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["motionstream_core"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["motionstream_core"]
        raise


_import_bundled_core()

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
