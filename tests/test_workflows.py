"""The example workflows in example_workflows/ load and fit the nodes they use.

They are in the UI format the ComfyUI front end saves. Every node must be one of this pack's
(checked against its INPUT_TYPES / RETURN_TYPES) or a ComfyUI core node described in
tests/core_node_specs.json; links, sockets and widget values must fit those definitions the way the
front end lays them out:

- `widgets_values` holds one value per widget input (required, then optional; link-only types and
  `forceInput` inputs have no widget), in INPUT_TYPES order;
- after an INT input named `seed` / `noise_seed` (or declared with `control_after_generate`) the front
  end adds a "control_after_generate" widget, saved as "fixed" / "increment" / "decrement" / "randomize";
- after a COMBO with `image_upload` it adds an upload button, saved as "image";
- DOM widgets a pack adds in JavaScript are saved too, at the end (`""`; see FRONTEND_WIDGETS).

With COMFYUI_PATH pointing at a ComfyUI checkout, the spec file itself is compared with the real core
nodes (in a subprocess, with COMFYUI_PYTHON or this interpreter, so that ComfyUI's top-level `nodes`
module never meets this pack's `nodes` package).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = REPO_ROOT / "example_workflows"
SPEC_PATH = Path(__file__).with_name("core_node_specs.json")
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))
EXPECTED_WORKFLOWS = {
    "motionstream_anywhere_embedded_demo.json",
    "motionstream_drag_to_animate.json",
    "motionstream_motion_transfer.json",
    "motionstream_camera_preset.json",
    "motionstream_teacher_joint_guidance.json",
}

VIRTUAL_NODES = {"Note", "MarkdownNote"}  # front-end only: never sent to the server
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
SEED_NAMES = {"seed", "noise_seed"}
# DOM widgets this pack's JavaScript adds (track editor canvas, live preview player). The front end
# (1.27) saves their value, "", after the real widgets; `serialize: false` only keeps them out of the
# API prompt. Files may carry those trailing values or not.
FRONTEND_WIDGETS = {"MotionStreamTrackEditor": 1, "MotionStreamStreamingSampler": 1}
# Pack combos whose choices are the files on disk (and known downloads): only strings are checked.
DYNAMIC_PACK_COMBOS = {
    ("MotionStreamModelLoader", "model_name"): "diffusion_models",
    ("MotionStreamTinyVAELoader", "tiny_vae_name"): "vae_approx",
}
TITLE_BAR = 30  # LiteGraph draws a node's title above `pos`
# The streaming sampler writes the video file itself (its filename_prefix, into ComfyUI's output folder);
# these after it would write a second copy of the same video.
VIDEO_SAVERS = {"CreateVideo", "SaveVideo", "SaveWEBM"}
EXAMPLE_TRACKS = REPO_ROOT / "example_workflows" / "tracks"


@dataclasses.dataclass(frozen=True)
class ModelDownload:
    """A model file the example workflows load, where it goes and where it comes from."""

    folder: str  # ComfyUI's models/<folder>
    repo: str  # Hugging Face repository
    directory_in_repo: str  # "" or "path/"
    size: str  # as the notes give it

    def url(self, name: str) -> str:
        return f"https://huggingface.co/{self.repo}/resolve/main/{self.directory_in_repo}{name}"


# Every model file named by a loader in the example workflows: the notes name each with its folder, size and
# repository, and the loader node carries it in `properties.models` ({name, url, directory}), from which
# ComfyUI's front end offers the download of a selected file that is missing (a huggingface.co URL and a
# .safetensors/.sft/.ckpt/.pth/.pt name). Sizes: the repositories' file listings on huggingface.co; the
# Tiny VAE is madebyollin's taew2_1 (fp16 safetensors, 22.6 MB upstream).
WAN_REPACKAGED = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
MODEL_DOWNLOADS = {
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": ModelDownload("text_encoders", WAN_REPACKAGED, "split_files/text_encoders/", "6.74 GB"),
    "clip_vision_h.safetensors": ModelDownload("clip_vision", WAN_REPACKAGED, "split_files/clip_vision/", "1.26 GB"),
    "wan_2.1_vae.safetensors": ModelDownload("vae", WAN_REPACKAGED, "split_files/vae/", "254 MB"),
    "taew2_1.safetensors": ModelDownload("vae_approx", "Kijai/WanVideo_comfy", "", "about 23 MB"),
}
# Sizes of what the pack's own 'download:' entries fetch (nodes/downloads.py), by repository.
PACK_DOWNLOAD_SIZES = {"H1yori233/Track-v0": "about 3 GB"}
FRONTEND_MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pth", ".pt")


# ---------------------------------------------------------------------------------------------
# Node definitions, normalised the same way for pack nodes, the spec file and real ComfyUI
# ---------------------------------------------------------------------------------------------


def normalize_input(name: str, entry, optional: bool) -> dict:
    """One INPUT_TYPES entry -> {name, type, optional, options?, min?, max?, step?, force_input?, ...}."""
    kind = entry[0] if isinstance(entry, (list, tuple)) else entry
    config = entry[1] if isinstance(entry, (list, tuple)) and len(entry) > 1 and isinstance(entry[1], dict) else {}
    spec = {"name": name, "optional": optional}
    if isinstance(kind, (list, tuple)):  # the V1 way of writing a combo
        spec["type"] = "COMBO"
        spec["options"] = list(kind)
    else:
        spec["type"] = str(kind)
        if spec["type"] == "COMBO" and isinstance(config.get("options"), (list, tuple)):  # V3 nodes
            spec["options"] = list(config["options"])
    for key in ("min", "max", "step"):
        if isinstance(config.get(key), (int, float)) and not isinstance(config.get(key), bool):
            spec[key] = config[key]
    if config.get("forceInput"):
        spec["force_input"] = True
    if config.get("image_upload"):
        spec["image_upload"] = True
    if config.get("control_after_generate"):
        spec["control_after_generate"] = True
    return spec


def normalize_input_types(input_types: dict) -> list[dict]:
    inputs = []
    for section, optional in (("required", False), ("optional", True)):
        for name, entry in (input_types.get(section) or {}).items():
            inputs.append(normalize_input(name, entry, optional))
    return inputs


def is_widget(spec: dict) -> bool:
    return spec["type"] in WIDGET_TYPES and not spec.get("force_input")


def widget_slots(inputs: list[dict]) -> list[tuple[dict, str]]:
    """The widgets_values layout: (input, "value" | "control" | "upload") in order."""
    slots = []
    for spec in inputs:
        if not is_widget(spec):
            continue
        slots.append((spec, "value"))
        if spec.get("control_after_generate") or (spec["type"] == "INT" and spec["name"] in SEED_NAMES):
            slots.append((spec, "control"))
        if spec.get("image_upload"):
            slots.append((spec, "upload"))
    return slots


def socket_inputs(inputs: list[dict]) -> list[dict]:
    """Inputs drawn as sockets on a new node: link types and forceInput widgets."""
    return [spec for spec in inputs if not is_widget(spec)]


def pack_definitions(pack) -> dict[str, dict]:
    definitions = {}
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        inputs = normalize_input_types(cls.INPUT_TYPES())
        for spec in inputs:
            if (name, spec["name"]) in DYNAMIC_PACK_COMBOS:
                spec["dynamic"] = True
                spec.pop("options", None)
        definitions[name] = {"inputs": inputs, "outputs": list(cls.RETURN_TYPES),
                             "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}
    return definitions


def load_spec() -> dict:
    return json.loads(SPEC_PATH.read_text())


@pytest.fixture(scope="module")
def definitions(pack):
    core = load_spec()["nodes"]
    ours = pack_definitions(pack)
    assert not set(core) & set(ours), "a core spec shadows a pack node"
    return {**core, **ours}


def load_workflow(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def real_nodes(workflow: dict) -> list[dict]:
    return [node for node in workflow["nodes"] if node["type"] not in VIRTUAL_NODES]


def node_label(node: dict) -> str:
    return f"node {node['id']} ({node['type']})"


def api_prompt(workflow: dict, definitions: dict) -> dict:
    """The workflow as the API prompt the front end queues: {node id: {"class_type", "inputs"}}, with widget
    values by name and links as [source node id, output slot]."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in real_nodes(workflow):
        slots = widget_slots(definitions[node["type"]]["inputs"])
        inputs = {spec["name"]: value for (spec, kind), value in zip(slots, node["widgets_values"]) if kind == "value"}
        for entry in node["inputs"]:
            if entry.get("link") is not None:
                _, source, slot, *_ = links[entry["link"]]
                inputs[entry["name"]] = [str(source), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


workflow_files = pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])


# ---------------------------------------------------------------------------------------------
# The files
# ---------------------------------------------------------------------------------------------


def test_the_example_workflows_are_all_there():
    assert EXPECTED_WORKFLOWS <= {p.name for p in WORKFLOWS}


def test_the_workflow_that_needs_no_download_is_listed_first():
    assert WORKFLOWS[0].name == "motionstream_anywhere_embedded_demo.json"


@workflow_files
def test_ui_format_structure(path):
    workflow = load_workflow(path)
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"):
        assert key in workflow, f"{path.name}: no {key!r}"
    assert workflow["version"] == 0.4
    ids = [node["id"] for node in workflow["nodes"]]
    assert len(ids) == len(set(ids)), "node ids must be unique"
    assert workflow["last_node_id"] >= max(ids)
    link_ids = [link[0] for link in workflow["links"]]
    assert len(link_ids) == len(set(link_ids)), "link ids must be unique"
    assert not link_ids or workflow["last_link_id"] >= max(link_ids)
    for node in workflow["nodes"]:
        for key in ("id", "type", "pos", "size", "flags", "order", "mode", "properties", "widgets_values"):
            assert key in node, f"{node_label(node)} has no {key!r}"
        assert node["mode"] == 0, f"{node_label(node)} is muted or bypassed"
        assert len(node["pos"]) == 2 and len(node["size"]) == 2
        if node["type"] not in VIRTUAL_NODES:
            assert node["properties"].get("Node name for S&R") == node["type"]
            for key in ("inputs", "outputs"):
                assert isinstance(node.get(key), list), f"{node_label(node)} has no {key} list"


@workflow_files
def test_every_node_type_exists(path, definitions):
    unknown = {node["type"] for node in real_nodes(load_workflow(path))} - set(definitions)
    assert not unknown, f"{path.name}: node types neither in this pack nor in {SPEC_PATH.name}: {sorted(unknown)}"


@workflow_files
def test_there_is_a_note_saying_what_to_do(path):
    notes = [node for node in load_workflow(path)["nodes"] if node["type"] in VIRTUAL_NODES]
    assert notes, f"{path.name} has no Note"
    text = " ".join(str(value) for note in notes for value in note["widgets_values"])
    assert "models/" in text, "the note should say where the models go"


def note_text(workflow: dict) -> str:
    return " ".join(str(value) for node in workflow["nodes"] if node["type"] in VIRTUAL_NODES
                    for value in node["widgets_values"])


@workflow_files
def test_the_note_names_every_download_with_its_folder_size_and_repository(path, pack):
    workflow = load_workflow(path)
    text = note_text(workflow)
    downloads = pack.nodes.downloads
    known = {downloads.DOWNLOAD_PREFIX + weights.label: weights for weights in downloads.KNOWN_WEIGHTS}
    for node in real_nodes(workflow):
        for value in node["widgets_values"]:
            if value in MODEL_DOWNLOADS:
                model = MODEL_DOWNLOADS[value]
                wanted = (f"models/{model.folder}/{value}", model.repo, model.size)
            elif value in known:
                weights = known[value]
                wanted = (f"models/{weights.folder}/{weights.target}", weights.repo_id, PACK_DOWNLOAD_SIZES[weights.repo_id])
            else:
                continue
            missing = [part for part in wanted if part not in text]
            assert not missing, f"{path.name}: the note does not say {missing} for {node_label(node)}'s {value!r}"


@workflow_files
def test_loaders_carry_the_download_of_their_model_file(path):
    """`properties.models` as ComfyUI's front end reads it: the entry of the selected file, with its URL."""
    for node in real_nodes(load_workflow(path)):
        declared = node["properties"].get("models", [])
        selected = [value for value in node["widgets_values"] if value in MODEL_DOWNLOADS]
        assert [entry["name"] for entry in declared] == selected, f"{node_label(node)}: models {declared}"
        for entry in declared:
            model = MODEL_DOWNLOADS[entry["name"]]
            assert entry == {"name": entry["name"], "url": model.url(entry["name"]), "directory": model.folder}
            assert entry["url"].startswith("https://huggingface.co/") and "/resolve/main/" in entry["url"]
            assert entry["name"].endswith(FRONTEND_MODEL_SUFFIXES), f"the front end downloads no {entry['name']}"


def downstream(workflow: dict, node_id: int) -> set[int]:
    targets, seen = {}, set()
    for _, source, _, target, _, _ in workflow["links"]:
        targets.setdefault(source, []).append(target)
    stack = [node_id]
    while stack:
        for target in targets.get(stack.pop(), []):
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


@workflow_files
def test_a_streamed_video_is_saved_once_by_the_sampler(path, definitions):
    """The sampler writes the video into output/ as it streams; no node after it saves the same frames again,
    and the note says where the file goes."""
    workflow = load_workflow(path)
    prompt = api_prompt(workflow, definitions)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for node in real_nodes(workflow):
        if node["type"] != "MotionStreamStreamingSampler":
            continue
        savers = [node_label(nodes[i]) for i in downstream(workflow, node["id"]) if nodes[i]["type"] in VIDEO_SAVERS]
        assert not savers, f"{path.name}: {savers} save a second copy of {node_label(node)}'s video"
        prefix = prompt[str(node["id"])]["inputs"]["filename_prefix"]
        assert prefix.strip(), f"{path.name}: the sampler's filename_prefix is empty"
        assert f"output/{prefix}_00001_.mp4" in note_text(workflow), f"{path.name}: the note does not name the video file"


def test_the_embedded_demo_writes_its_video_to_output_video():
    """What the ComfyUI host test looks for: output/video/MotionStream_demo_*.mp4, written by the sampler alone."""
    workflow = load_workflow(WORKFLOW_DIR / "motionstream_anywhere_embedded_demo.json")
    types = {node["type"] for node in workflow["nodes"]}
    assert not types & VIDEO_SAVERS
    (sampler,) = [node for node in workflow["nodes"] if node["type"] == "MotionStreamStreamingSampler"]
    assert "video/MotionStream_demo" in sampler["widgets_values"]


def load_example_tracks_script():
    spec = importlib.util.spec_from_file_location("make_motion_transfer_example",
                                                  EXAMPLE_TRACKS / "make_motion_transfer_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_motion_transfer_example_loads_the_tracks_shipped_with_the_pack(pack, definitions, tmp_path, monkeypatch):
    """As queued, with an empty input folder: Load Tracks File finds the example in example_workflows/tracks."""
    import numpy as np

    monkeypatch.chdir(tmp_path)  # the input folder outside ComfyUI: empty
    workflow = load_workflow(WORKFLOW_DIR / "motionstream_motion_transfer.json")
    prompt = api_prompt(workflow, definitions)
    (loader,) = [entry["inputs"] for entry in prompt.values() if entry["class_type"] == "MotionStreamLoadTracksFile"]
    (sampler,) = [entry["inputs"] for entry in prompt.values() if entry["class_type"] == "MotionStreamStreamingSampler"]
    shipped = EXAMPLE_TRACKS / loader["path"]
    assert shipped.is_file() and shipped.stat().st_size < 32_000
    (tracks,) = pack.NODE_CLASS_MAPPINGS["MotionStreamLoadTracksFile"]().load(**loader)
    path, visible = tracks["track_path"], tracks["track_visibility"]
    assert path.shape[0] == sampler["num_frames"] and path.shape[1] >= 10
    assert (loader["width"], loader["height"], loader["fps"]) == (sampler["width"], sampler["height"], sampler["fps"])
    assert bool(visible.any(dim=0).all()), "every track is seen"
    inside = (path[..., 0] >= 0) & (path[..., 0] < loader["width"]) & (path[..., 1] >= 0) & (path[..., 1] < loader["height"])
    assert bool(inside[visible].all())
    assert float((path[-1] - path[0]).norm(dim=-1).max()) > 50, "the example moves"
    # and it is what the script beside it writes
    with np.load(shipped) as stored:
        for name, array in load_example_tracks_script().example_arrays().items():
            np.testing.assert_array_equal(stored[name], array, err_msg=name)


def test_a_tracks_file_in_the_input_folder_comes_before_the_example(pack, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "motion_transfer_example.npz", pred_tracks=np.zeros((1, 3, 2, 2), np.float32))
    (tracks,) = pack.NODE_CLASS_MAPPINGS["MotionStreamLoadTracksFile"]().load(
        "motion_transfer_example.npz", "CoTracker", 64, 64, 16.0)
    assert tracks["track_path"].shape == (3, 2, 2)


def test_only_plain_names_are_looked_up_among_the_examples(pack, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load = pack.NODE_CLASS_MAPPINGS["MotionStreamLoadTracksFile"]().load
    for name in ("tracks/motion_transfer_example.npz", "../tracks/motion_transfer_example.npz", "missing.npz"):
        with pytest.raises(FileNotFoundError, match="example tracks"):
            load(name, "CoTracker", 832, 480, 16.0)


@workflow_files
def test_sockets_match_the_node_definitions(path, definitions):
    workflow = load_workflow(path)
    for node in real_nodes(workflow):
        definition = definitions[node["type"]]
        by_name = {spec["name"]: spec for spec in definition["inputs"]}
        seen = set()
        for entry in node["inputs"]:
            spec = by_name.get(entry["name"])
            assert spec is not None, f"{node_label(node)} has no input {entry['name']!r}"
            assert entry["name"] not in seen, f"{node_label(node)}: input {entry['name']!r} listed twice"
            seen.add(entry["name"])
            if "widget" in entry:  # a widget shown as a socket (converted, or the new front end's listing)
                assert is_widget(spec), f"{node_label(node)}: {entry['name']!r} is not a widget"
                assert entry["widget"].get("name") == entry["name"]
            else:
                assert not is_widget(spec), f"{node_label(node)}: widget {entry['name']!r} listed as a socket"
                assert entry["type"] == spec["type"], f"{node_label(node)}: input {entry['name']!r} type {entry['type']}"
        for spec in socket_inputs(definition["inputs"]):
            entry = next((e for e in node["inputs"] if e["name"] == spec["name"]), None)
            assert entry is not None, f"{node_label(node)} lacks the socket {spec['name']!r}"
            if not spec["optional"]:
                assert entry.get("link") is not None, f"{node_label(node)}: required input {spec['name']!r} is not connected"
        outputs = [output["type"] for output in node["outputs"]]
        assert outputs == definition["outputs"], f"{node_label(node)} outputs {outputs}, expected {definition['outputs']}"


@workflow_files
def test_links_match_the_node_definitions(path, definitions):
    workflow = load_workflow(path)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for link in workflow["links"]:
        assert len(link) == 6, f"link {link} is not [id, from, from_slot, to, to_slot, type]"
        link_id, source_id, source_slot, target_id, target_slot, kind = link
        source, target = nodes[source_id], nodes[target_id]
        assert source["type"] not in VIRTUAL_NODES and target["type"] not in VIRTUAL_NODES
        output_types = definitions[source["type"]]["outputs"]
        assert 0 <= source_slot < len(output_types), f"link {link_id}: {node_label(source)} has no output {source_slot}"
        assert output_types[source_slot] == kind, f"link {link_id}: output type {output_types[source_slot]}, link says {kind}"
        assert link_id in (source["outputs"][source_slot].get("links") or []), f"link {link_id} missing from its output"
        assert 0 <= target_slot < len(target["inputs"]), f"link {link_id}: {node_label(target)} has no input slot {target_slot}"
        entry = target["inputs"][target_slot]
        assert entry.get("link") == link_id, f"link {link_id}: {node_label(target)} input {entry['name']!r} says {entry.get('link')}"
        spec = next(s for s in definitions[target["type"]]["inputs"] if s["name"] == entry["name"])
        assert spec["type"] == kind, f"link {link_id}: {kind} into {node_label(target)}.{entry['name']} ({spec['type']})"
    # and nothing refers to a link that is not in the table
    link_ids = {link[0] for link in workflow["links"]}
    for node in real_nodes(workflow):
        for entry in node["inputs"]:
            assert entry.get("link") is None or entry["link"] in link_ids, f"{node_label(node)}: dangling link"
        for output in node["outputs"]:
            assert set(output.get("links") or []) <= link_ids, f"{node_label(node)}: dangling output link"


def check_widget_value(node_type: str, spec: dict, kind: str, value, pack_nodes) -> None:
    where = f"{node_type}.{spec['name']}" + ("" if kind == "value" else f" ({kind})")
    if kind == "control":
        assert value in CONTROL_VALUES, f"{where}: {value!r}"
        return
    if kind == "upload":
        assert value == "image", f"{where}: {value!r}"
        return
    kind_of = spec["type"]
    if kind_of == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an int"
    elif kind_of == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r} is not a number"
    elif kind_of == "STRING":
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
    elif kind_of == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: {value!r} is not a boolean"
    elif kind_of == "COMBO":
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
        if spec.get("dynamic"):
            folder = DYNAMIC_PACK_COMBOS.get((node_type, spec["name"]))
            downloads = pack_nodes.downloads
            if value.startswith("embedded: "):
                assert value in pack_nodes.model_loaders.EMBEDDED_MODELS, f"{where}: unknown embedded model {value!r}"
            if folder and value.startswith(downloads.DOWNLOAD_PREFIX):
                labels = {k.label for k in downloads.KNOWN_WEIGHTS if k.folder == folder}
                assert value[len(downloads.DOWNLOAD_PREFIX):] in labels, f"{where}: unknown download {value!r}"
        else:
            assert value in spec["options"], f"{where}: {value!r} not in {spec['options']}"
    if kind_of in ("INT", "FLOAT"):
        if "min" in spec:
            assert value >= spec["min"], f"{where}: {value} < min {spec['min']}"
        if "max" in spec:
            assert value <= spec["max"], f"{where}: {value} > max {spec['max']}"
        if kind_of == "INT" and spec.get("step", 1) > 1:  # the front end snaps to min % step + k * step
            step = spec["step"]
            assert (value - spec.get("min", 0) % step) % step == 0, f"{where}: {value} is off the widget's step {step}"


@workflow_files
def test_widget_values_match_the_node_definitions(path, definitions, pack):
    for node in real_nodes(load_workflow(path)):
        slots = widget_slots(definitions[node["type"]]["inputs"])
        values = node["widgets_values"]
        assert isinstance(values, list), f"{node_label(node)}: widgets_values must be a list"
        extra = len(values) - len(slots)
        allowed = FRONTEND_WIDGETS.get(node["type"], 0)
        assert 0 <= extra <= allowed, (
            f"{node_label(node)}: {len(values)} widget values for the widgets "
            f"{[s['name'] + ('' if k == 'value' else ' ' + k) for s, k in slots]}"
        )
        for (spec, kind), value in zip(slots, values):
            check_widget_value(node["type"], spec, kind, value, pack.nodes)
        assert all(value in ("", None) for value in values[len(slots):]), f"{node_label(node)}: odd trailing values"


@workflow_files
def test_track_editor_documents_parse(path, pack):
    from motionstream_core.motion.formats import tracks_from_widget_json

    editors = [node for node in load_workflow(path)["nodes"] if node["type"] == "MotionStreamTrackEditor"]
    for node in editors:
        document = node["widgets_values"][0]
        tracks = tracks_from_widget_json(document)
        assert tracks.num_tracks > 0
        # and the node itself accepts it, as ComfyUI would call it (no image connected)
        (comfy_tracks,) = pack.NODE_CLASS_MAPPINGS["MotionStreamTrackEditor"]().build(document)
        assert comfy_tracks["track_path"].shape[1] == tracks.num_tracks


@workflow_files
def test_layout_is_tidy(path):
    """No two nodes overlap (title bars included), and `order` runs along the links."""
    workflow = load_workflow(path)
    boxes = []
    for node in workflow["nodes"]:
        (x, y), (w, h) = node["pos"], node["size"]
        assert w > 0 and h > 0
        boxes.append((node, (x, y - TITLE_BAR, x + w, y + h)))
    for i, (a, (ax0, ay0, ax1, ay1)) in enumerate(boxes):
        for b, (bx0, by0, bx1, by1) in boxes[i + 1:]:
            overlap = ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1
            assert not overlap, f"{path.name}: {node_label(a)} overlaps {node_label(b)}"
    orders = {node["id"]: node["order"] for node in workflow["nodes"]}
    for _, source, _, target, _, _ in workflow["links"]:
        assert orders[source] < orders[target], f"{path.name}: order of node {source} is not before node {target}"


def test_camera_preset_grid_pans_the_camera(pack):
    """The connected preset moves every point of a regular grid by the same amount: a camera pan."""
    from motionstream_core.motion.formats import tracks_from_widget_json

    workflow = load_workflow(WORKFLOW_DIR / "motionstream_camera_preset.json")
    linked = {link[1] for link in workflow["links"]}
    editors = [n for n in workflow["nodes"] if n["type"] == "MotionStreamTrackEditor" and n["id"] in linked]
    assert len(editors) == 1, "exactly one preset feeds the sampler"
    tracks = tracks_from_widget_json(editors[0]["widgets_values"][0])
    assert tracks.num_tracks >= 9
    first, last = tracks.points[0], tracks.points[-1]
    motion = last - first
    assert bool(tracks.visibility[0].all() and tracks.visibility[-1].all())
    assert float((motion - motion[0]).abs().max()) < 1e-3, "every grid point moves the same way"
    assert float(motion[0, 0]) < 0 and abs(float(motion[0, 1])) < 1e-3, "content moves left: the camera pans right"


# ---------------------------------------------------------------------------------------------
# The spec file, and (with COMFYUI_PATH) the spec file against real ComfyUI
# ---------------------------------------------------------------------------------------------


def test_spec_file_covers_the_core_nodes_the_workflows_use(pack):
    spec = load_spec()
    assert spec["source"]["commit"], "say which ComfyUI the spec was taken from"
    used = {node["type"] for path in WORKFLOWS for node in real_nodes(load_workflow(path))}
    core_used = used - set(pack.NODE_CLASS_MAPPINGS)
    assert core_used <= set(spec["nodes"])
    for name, node in spec["nodes"].items():
        assert isinstance(node["outputs"], list)
        for entry in node["inputs"]:
            assert {"name", "type", "optional"} <= set(entry), f"{name}: malformed input {entry}"
            if entry["type"] == "COMBO":
                assert entry.get("dynamic") or entry.get("options"), f"{name}.{entry['name']}: a combo needs options or dynamic"


_DUMP_CORE_NODES = r"""
import asyncio, inspect, json, os, sys
comfy_path, names = sys.argv[1], json.loads(sys.argv[2])
base = sys.argv[3]
os.chdir(comfy_path)
sys.path.insert(0, comfy_path)
sys.argv = [sys.argv[0], "--cpu", "--base-directory", base]
import comfy.options
comfy.options.enable_args_parsing()
import utils.extra_config  # noqa: F401  main.py imports these before the nodes
import server  # noqa: F401
import nodes
init = nodes.init_extra_nodes
kwargs = {k: False for k in ("init_custom_nodes", "init_api_nodes") if k in inspect.signature(init).parameters}
result = init(**kwargs)
if inspect.iscoroutine(result):
    asyncio.run(result)
out = {}
for name in names:
    cls = nodes.NODE_CLASS_MAPPINGS.get(name)
    if cls is None:
        out[name] = None
        continue
    out[name] = {"input_types": cls.INPUT_TYPES(), "outputs": [str(t) for t in cls.RETURN_TYPES],
                 "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}
print("@@SPEC@@" + json.dumps(out, default=repr))
"""


def comfyui_python() -> str:
    return os.environ.get("COMFYUI_PYTHON") or sys.executable


def dump_core_nodes(comfy_path: str, names: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as base:
        (Path(base) / "input").mkdir()
        result = subprocess.run(
            [comfyui_python(), "-c", _DUMP_CORE_NODES, comfy_path, json.dumps(names), base],
            capture_output=True, text=True, timeout=600, cwd=comfy_path,
        )
    marker = next((line for line in result.stdout.splitlines() if line.startswith("@@SPEC@@")), None)
    assert marker, (f"could not import ComfyUI's nodes with {comfyui_python()} (rc {result.returncode}); "
                    f"set COMFYUI_PYTHON to a Python that has ComfyUI's requirements:\n{result.stderr[-4000:]}")
    return json.loads(marker[len("@@SPEC@@"):])


@pytest.mark.skipif(not os.environ.get("COMFYUI_PATH"), reason="COMFYUI_PATH is not set")
def test_spec_file_matches_the_real_comfyui_nodes():
    spec = load_spec()["nodes"]
    real = dump_core_nodes(os.environ["COMFYUI_PATH"], sorted(spec))
    problems = []
    for name, expected in spec.items():
        found = real.get(name)
        if found is None:
            problems.append(f"{name}: not in this ComfyUI")
            continue
        inputs = normalize_input_types(found["input_types"])
        if found["outputs"] != expected["outputs"]:
            problems.append(f"{name}: outputs {found['outputs']} != {expected['outputs']}")
        if bool(expected.get("output_node")) != found["output_node"]:
            problems.append(f"{name}: output_node {found['output_node']}")
        names = [(i["name"], i["optional"]) for i in inputs]
        expected_names = [(i["name"], i["optional"]) for i in expected["inputs"]]
        if names != expected_names:
            problems.append(f"{name}: inputs {names} != {expected_names}")
            continue
        for got, want in zip(inputs, expected["inputs"]):
            where = f"{name}.{want['name']}"
            for key in ("type", "min", "max", "step", "force_input", "image_upload", "control_after_generate"):
                if got.get(key) != want.get(key):
                    problems.append(f"{where}: {key} {got.get(key)!r} != {want.get(key)!r}")
            if want["type"] == "COMBO" and not want.get("dynamic") and got.get("options") != want.get("options"):
                problems.append(f"{where}: options {got.get('options')} != {want.get('options')}")
        if [(s["name"], k) for s, k in widget_slots(inputs)] != [(s["name"], k) for s, k in widget_slots(expected["inputs"])]:
            problems.append(f"{name}: widget layout differs")
    assert not problems, "core_node_specs.json disagrees with ComfyUI:\n" + "\n".join(problems)
