"""The pack imports as ComfyUI would import it, and its nodes follow the classic node contract."""

import ast
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT
from motionstream_core import save_state_dict
from tiny_models import random_dit, tiny_config

VALID_WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def test_entry_point_exports(pack):
    assert pack.WEB_DIRECTORY == "./js"
    assert (REPO_ROOT / "js").is_dir()
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert pack.NODE_CLASS_MAPPINGS


def test_every_node_follows_the_contract(pack):
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        inputs = cls.INPUT_TYPES()
        assert set(inputs) <= {"required", "optional", "hidden"}, name
        for section in ("required", "optional"):
            for input_name, spec in inputs.get(section, {}).items():
                kind = spec[0]
                assert isinstance(kind, (str, list, tuple)), (name, input_name)
                if len(spec) > 1:
                    assert isinstance(spec[1], dict), (name, input_name)
        assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in cls.RETURN_TYPES)
        if hasattr(cls, "RETURN_NAMES"):
            assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
        assert callable(getattr(cls, cls.FUNCTION)), name
        assert cls.CATEGORY.startswith("MotionStream"), name


def test_core_never_imports_comfyui():
    forbidden = {"comfy", "folder_paths", "server", "nodes", "execution", "comfy_extras"}
    for path in (REPO_ROOT / "motionstream_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


def test_model_loader_runs_without_the_host(pack, tmp_path, monkeypatch):
    monkeypatch.setenv("MOTIONSTREAM_MODELS_DIR", str(tmp_path))
    model = random_dit(tiny_config(dim=256, num_heads=2, ffn_dim=64))
    save_state_dict(model.state_dict(), tmp_path / "diffusion_models" / "tiny.safetensors", scheme="diffusers")
    loader = pack.NODE_CLASS_MAPPINGS["MotionStreamModelLoader"]
    assert "tiny.safetensors" in loader.INPUT_TYPES()["required"]["model_name"][0]
    (loaded,) = loader().load("tiny.safetensors", "fp32")
    assert loaded.dit.config.num_layers == 2 and loaded.track_encoder is None
    assert loaded.streaming_defaults.rope_policy == "absolute"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.dit.state_dict()[key], value), key


def test_pack_imports_its_bundled_core_when_not_installed(tmp_path):
    """As in a ComfyUI custom_nodes clone: nothing pip-installed, pack folder not on sys.path."""
    import subprocess
    import sys

    script = f"""
import importlib.abc, importlib.util, sys
class HideInstalledCore(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "motionstream_core":
            raise ImportError("not installed")
sys.meta_path.insert(0, HideInstalledCore())
spec = importlib.util.spec_from_file_location(
    "ComfyUI-MotionStream", {str(REPO_ROOT / '__init__.py')!r}, submodule_search_locations=[{str(REPO_ROOT)!r}])
pack = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pack
spec.loader.exec_module(pack)
import motionstream_core
assert motionstream_core.__file__.startswith({str(REPO_ROOT)!r})
assert "nodes" not in sys.modules, "the pack must not shadow ComfyUI's top-level nodes module"
print(sorted(pack.NODE_CLASS_MAPPINGS))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "MotionStreamModelLoader" in result.stdout


def test_downloads_stay_listed_and_are_reused_once_present(pack, tmp_path, monkeypatch):
    downloads = pack.nodes.downloads
    monkeypatch.setenv("MOTIONSTREAM_MODELS_DIR", str(tmp_path))
    choice = next(c for c in downloads.choices("vae_approx") if "taew2_1" in c)
    (tmp_path / "vae_approx").mkdir()
    (tmp_path / "vae_approx" / "taew2_1.safetensors").write_bytes(b"present")
    assert choice in downloads.choices("vae_approx"), "a saved workflow's choice must stay valid"
    assert downloads.resolve("vae_approx", choice) == str(tmp_path / "vae_approx" / "taew2_1.safetensors")


def test_offline_download_says_what_to_do(pack, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    downloads = pack.nodes.downloads
    monkeypatch.setenv("MOTIONSTREAM_MODELS_DIR", str(tmp_path))

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("no connection")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    choice = next(c for c in downloads.choices("diffusion_models") if "Track-v0" in c)
    with pytest.raises(RuntimeError, match=r"offline.*diffusion_models/Track-v0"):
        downloads.resolve("diffusion_models", choice)


def test_an_interrupted_download_is_resumed_not_taken_as_complete(pack, tmp_path, monkeypatch):
    import huggingface_hub

    downloads = pack.nodes.downloads
    monkeypatch.setenv("MOTIONSTREAM_MODELS_DIR", str(tmp_path))
    choice = next(c for c in downloads.choices("diffusion_models") if "Track-v0" in c)
    seen_on_resume = []

    def killed(repo_id, local_dir):
        (Path(local_dir) / "model-00001-of-00002.safetensors").parent.mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / "model-00001-of-00002.safetensors").write_bytes(b"first shard")
        raise OSError("connection reset")

    def resumed(repo_id, local_dir):
        seen_on_resume.extend(sorted(p.name for p in Path(local_dir).iterdir()))
        (Path(local_dir) / "model-00002-of-00002.safetensors").write_bytes(b"second shard")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", killed)
    with pytest.raises(RuntimeError, match="could not download"):
        downloads.resolve("diffusion_models", choice)
    target = tmp_path / "diffusion_models" / "Track-v0"
    assert not target.exists(), "a partial download must not look complete"
    assert pack.nodes.host.model_directories("diffusion_models") == [], "the staging folder is not a model choice"

    monkeypatch.setattr(huggingface_hub, "snapshot_download", resumed)
    assert downloads.resolve("diffusion_models", choice) == str(target)
    assert seen_on_resume == ["model-00001-of-00002.safetensors"], "the second attempt resumes the first one's files"
    assert sorted(p.name for p in target.iterdir()) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert sorted(p.name for p in (tmp_path / "diffusion_models").iterdir()) == ["Track-v0"]


def test_a_target_left_half_downloaded_by_huggingface_hub_is_downloaded_again(pack, tmp_path, monkeypatch):
    import huggingface_hub

    downloads = pack.nodes.downloads
    monkeypatch.setenv("MOTIONSTREAM_MODELS_DIR", str(tmp_path))
    target = tmp_path / "diffusion_models" / "Track-v0"
    (target / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (target / ".cache" / "huggingface" / "download" / "model.safetensors.abc.incomplete").write_bytes(b"half")

    def complete(repo_id, local_dir):
        for partial in Path(local_dir).rglob("*.incomplete"):
            partial.unlink()
        (Path(local_dir) / "model.safetensors").write_bytes(b"whole")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", complete)
    choice = next(c for c in downloads.choices("diffusion_models") if "Track-v0" in c)
    assert downloads.resolve("diffusion_models", choice) == str(target)
    assert (target / "model.safetensors").read_bytes() == b"whole"
