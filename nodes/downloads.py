"""Optional downloads of known weights through huggingface_hub, only when the user picks one."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from . import host

DOWNLOAD_PREFIX = "download: "


@dataclasses.dataclass(frozen=True)
class KnownWeights:
    label: str
    repo_id: str
    folder: str  # ComfyUI model folder it goes to
    target: str  # file or directory name inside that folder, what the loader then reads
    files: tuple[str, ...] = ()  # empty: the whole repository (a diffusers-style directory)


KNOWN_WEIGHTS = (
    KnownWeights("Track-v0 (MotionStream-style I2V student)", "H1yori233/Track-v0", "diffusion_models", "Track-v0"),
    # madebyollin publishes TAEHV on GitHub; this is the Hugging Face copy ComfyUI Wan setups download.
    KnownWeights("taew2_1 (Tiny VAE for Wan 2.1)", "Kijai/WanVideo_comfy", "vae_approx", "taew2_1.safetensors",
                 ("taew2_1.safetensors",)),
)


def choices(folder: str) -> list[str]:
    """Always listed, so a saved workflow keeps working after the first download."""
    return [DOWNLOAD_PREFIX + k.label for k in KNOWN_WEIGHTS if k.folder == folder]


def resolve(folder: str, name: str) -> str:
    """The local path of a model choice, downloading it first when the choice is a download."""
    if not name.startswith(DOWNLOAD_PREFIX):
        return host.model_path(folder, name)
    label = name[len(DOWNLOAD_PREFIX):]
    known = next((k for k in KNOWN_WEIGHTS if k.label == label and k.folder == folder), None)
    if known is None:
        raise ValueError(f"unknown download {label!r}")
    return download(known)


def download(known: KnownWeights) -> str:
    """Downloads into a staging folder beside the target and renames it into place when every file is there.

    So the target exists only when complete. A killed download leaves its staging folder, which the next
    attempt resumes from (huggingface_hub keeps its partial files there) and removes once done. A target
    that an earlier version of this pack left half-downloaded (huggingface_hub's `.incomplete` files in it)
    becomes the staging folder.
    """
    destination = Path(host.model_directory(known.folder)) / known.target
    if destination.exists() and not _interrupted(destination):
        return os.fspath(destination)
    try:
        import huggingface_hub
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as error:
        raise RuntimeError("downloading needs the huggingface_hub package (pip install huggingface_hub)") from error
    staging = destination.with_name(f".{known.target}.download")
    staging.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        shutil.rmtree(staging, ignore_errors=True)
        destination.replace(staging)
    try:
        if known.files:
            for filename in known.files:
                huggingface_hub.hf_hub_download(known.repo_id, filename, local_dir=staging)
        else:
            huggingface_hub.snapshot_download(known.repo_id, local_dir=staging)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise RuntimeError(
            f"could not download {known.repo_id} from Hugging Face ({type(error).__name__}: {error}). "
            f"If this machine is offline, download it elsewhere and put it at {destination}"
        ) from error
    (staging / known.target if known.files else staging).replace(destination)
    shutil.rmtree(staging, ignore_errors=True)
    return os.fspath(destination)


def _interrupted(path: Path) -> bool:
    return path.is_dir() and any((path / ".cache" / "huggingface" / "download").rglob("*.incomplete"))
