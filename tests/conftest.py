import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# CI draws the same property-test examples on every run (HYPOTHESIS_PROFILE=ci in .ci/run), so a
# submission's result does not depend on the draw; local runs keep exploring new examples.
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_MODULE = "comfyui_motionstream"


def _fixtures_dir() -> Path:
    override = os.environ.get("MOTIONSTREAM_FIXTURES")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    path = _fixtures_dir()
    if not path.is_dir():
        pytest.fail(f"golden fixtures not found at {path} (set MOTIONSTREAM_FIXTURES)")
    return path


def load_pack():
    """Import the repository root as the ComfyUI custom-node package it is when installed."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(
        PACK_MODULE, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pack():
    return load_pack()


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models run fastest on one thread, and do not fight other processes for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def output_folder_outside_the_repository(tmp_path_factory):
    """Nodes that write video files (the streaming sampler) write them here, not into ./output."""
    if "MOTIONSTREAM_OUTPUT_DIR" in os.environ:
        yield
        return
    os.environ["MOTIONSTREAM_OUTPUT_DIR"] = str(tmp_path_factory.mktemp("output"))
    yield
    os.environ.pop("MOTIONSTREAM_OUTPUT_DIR", None)
