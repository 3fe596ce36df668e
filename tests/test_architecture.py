"""The package layout is the architecture: import boundaries between the runtime, the rest, nodes and ComfyUI."""

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "motionstream_core"

# What a node, a CLI or a user's script runs: the model, sampling, streaming, motion and codecs.
RUNTIME_PACKAGES = {"model", "sampling", "streaming", "motion", "codecs"}
# Beside the runtime, never imported by it.
OFF_RUNTIME_PACKAGES = {"synthetic", "demo", "training", "testing"}
# What nodes may import from the core: the public API, and the embedded demo model (its own public API).
PUBLIC_CORE_MODULES = {"motionstream_core", "motionstream_core.demo"}
# Top-level modules of the ComfyUI host; only nodes/host.py talks to them.
HOST_MODULES = {"comfy", "comfy_extras", "comfy_api", "folder_paths", "server", "execution", "latent_preview", "nodes"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved; `from x import y` gives x.y too)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def core_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "motionstream_core" and len(parts) > 1 else None


def core_files():
    return sorted(CORE.rglob("*.py"))


def test_every_core_module_lives_in_a_known_package():
    loose = [path.name for path in CORE.glob("*.py") if path.name != "__init__.py"]
    assert loose == [], "core modules belong in one of the packages"
    packages = {path.name for path in CORE.iterdir() if (path / "__init__.py").exists()}
    assert packages == RUNTIME_PACKAGES | OFF_RUNTIME_PACKAGES


@pytest.mark.parametrize("path", [p for p in core_files() if core_package(module_name(p)) in RUNTIME_PACKAGES | {None}],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_the_runtime_imports_nothing_beside_it(path):
    crossing = sorted(m for m in imported_modules(path) if core_package(m) in OFF_RUNTIME_PACKAGES)
    assert crossing == [], f"{path.relative_to(ROOT)} imports the benchmark, demo, training or test helpers"


def test_runtime_packages_depend_on_each_other_without_cycles():
    edges = {package: set() for package in RUNTIME_PACKAGES}
    for path in core_files():
        own = core_package(module_name(path))
        if own in RUNTIME_PACKAGES:
            edges[own].update(p for p in map(core_package, imported_modules(path)) if p in RUNTIME_PACKAGES and p != own)
    order, remaining = [], dict(edges)
    while remaining:
        ready = sorted(package for package, needs in remaining.items() if needs <= set(order))
        assert ready, f"import cycle among {sorted(remaining)}: {remaining}"
        order.extend(ready)
        remaining = {package: needs for package, needs in remaining.items() if package not in ready}


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_never_imports_comfyui(path):
    host = sorted(m for m in imported_modules(path) if m.split(".")[0] in HOST_MODULES)
    assert host == [], f"{path.relative_to(ROOT)} imports the ComfyUI host"


@pytest.mark.parametrize("path", sorted((ROOT / "nodes").glob("*.py")), ids=lambda p: p.name)
def test_nodes_use_the_public_core_api_and_only_host_talks_to_comfyui(path):
    imports = imported_modules(path)
    core = {m for m in imports if m.split(".")[0] == "motionstream_core"}
    # `from motionstream_core import X` records motionstream_core.X too: X must be a public name of that module.
    def public(module: str) -> bool:
        parent, _, name = module.rpartition(".")
        return parent in PUBLIC_CORE_MODULES and name in importlib.import_module(parent).__all__

    deep = sorted(m for m in core if m not in PUBLIC_CORE_MODULES and not public(m))
    assert deep == [], f"nodes/{path.name} reaches past the public API"
    host = sorted(m for m in imports if m.split(".")[0] in HOST_MODULES - {"nodes"})
    if path.name != "host.py":
        assert host == [], f"nodes/{path.name} talks to ComfyUI directly; go through nodes/host.py"


def test_importing_the_public_api_loads_only_the_runtime():
    script = "import json, sys, motionstream_core; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True,
                                       capture_output=True, text=True).stdout)
    packages = {core_package(m) for m in loaded} - {None}
    assert packages <= RUNTIME_PACKAGES, sorted(packages - RUNTIME_PACKAGES)
