"""The embedded demo model as a Model Loader choice: listed first, needs no download, and the example
workflow built around it runs end to end on the CPU, called node by node as ComfyUI calls it."""

import json
from collections import defaultdict

import pytest
import torch

from live_streams import add_latents_then, stream_token
from motionstream_core.demo import load_demo_image, load_demo_tracks
from test_workflows import api_prompt, load_spec, load_workflow, pack_definitions, WORKFLOW_DIR

pytestmark = pytest.mark.usefixtures("single_thread")

EMBEDDED = "embedded: MotionStream demo (128x128, no download)"
WORKFLOW = WORKFLOW_DIR / "motionstream_anywhere_embedded_demo.json"
FEW_FRAMES = 7  # blocks of 1, 3 and 3 latent frames: three chunks


@pytest.fixture(scope="module")
def demo(pack):
    (model,) = pack.NODE_CLASS_MAPPINGS["MotionStreamModelLoader"]().load(EMBEDDED, "auto")
    return model


def run_prompt_in_process(pack, prompt: dict) -> tuple[dict, dict]:
    """Runs an API prompt's pack nodes as ComfyUI's executor calls them (inputs by name, outputs along links).
    Returns {node id: outputs} and, for core nodes (not run), {node id: the inputs they would get}."""
    outputs, core_inputs = {}, {}

    def run(node_id):
        if node_id in outputs:
            return outputs[node_id]
        node = prompt[node_id]
        arguments = {name: run(value[0])[value[1]] if isinstance(value, list) else value
                     for name, value in node["inputs"].items()}
        cls = pack.NODE_CLASS_MAPPINGS.get(node["class_type"])
        if cls is None:
            core_inputs[node_id] = arguments
            outputs[node_id] = defaultdict(lambda: None)
            return outputs[node_id]
        if "unique_id" in cls.INPUT_TYPES().get("hidden", {}):
            arguments["unique_id"] = node_id
        result = getattr(cls(), cls.FUNCTION)(**arguments)
        outputs[node_id] = result["result"] if isinstance(result, dict) else result
        return outputs[node_id]

    for node_id in prompt:
        run(node_id)
    return outputs, core_inputs


def example_prompt(pack, num_frames: int | None = None) -> dict:
    """The example workflow as ComfyUI queues it, with fewer frames when asked."""
    prompt = api_prompt(load_workflow(WORKFLOW), {**load_spec()["nodes"], **pack_definitions(pack)})
    if num_frames is not None:
        sampler = next(node for node in prompt.values() if node["class_type"] == "MotionStreamStreamingSampler")
        sampler["inputs"]["num_frames"] = num_frames
    return prompt


def test_the_loader_lists_the_embedded_model_first_and_loads_it_without_a_models_folder(pack, tmp_path, monkeypatch):
    monkeypatch.setenv("MOTIONSTREAM_MODELS_DIR", str(tmp_path / "empty"))
    loader = pack.NODE_CLASS_MAPPINGS["MotionStreamModelLoader"]
    assert loader.INPUT_TYPES()["required"]["model_name"][0][0] == EMBEDDED
    (model,) = loader().load(EMBEDDED, "auto")
    assert model.native_size == (128, 128) and model.fixed_text is not None and model.renumber_track_ids
    assert [need.inputs for need in model.needs] == [("start_image",)]


def test_the_example_workflow_streams_128x128_frames_one_preview_message_per_chunk(pack, monkeypatch):
    host = pack.nodes.host
    sent = []
    monkeypatch.setattr(host, "send_frames", lambda node, frames, fps, index, done: sent.append(
        (node, tuple(frames.shape), index, done)))
    prompt = example_prompt(pack, FEW_FRAMES)
    outputs, core_inputs = run_prompt_in_process(pack, prompt)

    sampler = next(node_id for node_id, node in prompt.items() if node["class_type"] == "MotionStreamStreamingSampler")
    images, latent, video = outputs[sampler]
    assert images.shape == (FEW_FRAMES, 128, 128, 3)
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0.01
    assert latent["samples"].shape == (1, 16, FEW_FRAMES, 32, 32)
    assert sent == [(sampler, (1, 128, 128, 3), 0, False), (sampler, (3, 128, 128, 3), 1, False),
                    (sampler, (3, 128, 128, 3), 2, True)]
    # the sampler writes the one video itself; the core save node gets the tracks drawn over it
    import av

    with av.open(video.get_stream_source()) as container:
        assert sum(1 for _ in container.decode(video=0)) == FEW_FRAMES
    videos = [inputs["images"] for inputs in core_inputs.values() if "images" in inputs]
    assert [tuple(v.shape) for v in videos] == [(FEW_FRAMES, 128, 128, 3)]


def test_the_sampler_makes_the_video_the_demo_cli_makes(pack, demo):
    """Same seed, image and tracks: the node and DemoModel.stream (the CLI) produce the same frames."""
    from motionstream_core.demo import load_demo_model

    tracks = load_demo_tracks()
    editor = next(node for node in example_prompt(pack).values() if node["class_type"] == "MotionStreamTrackEditor")
    (comfy_tracks,) = pack.NODE_CLASS_MAPPINGS["MotionStreamTrackEditor"]().build(editor["inputs"]["tracks_json"])
    image = load_demo_image()
    images, _, _ = _generate(pack, demo, start_image=image.movedim(0, -1)[None], tracks=comfy_tracks)
    expected = load_demo_model().stream(image, tracks, FEW_FRAMES, seed=0).frames
    torch.testing.assert_close(images, expected.movedim(1, -1), atol=2e-3, rtol=0)


def _generate(pack, model, **inputs):
    args = dict(model=model, width=128, height=128, num_frames=FEW_FRAMES, seed=0, fps=16.0, sink_frames=-1,
                window_frames=-1, denoising_steps="", shift=0.0, unique_id="5")
    args.update(inputs)
    return pack.NODE_CLASS_MAPPINGS["MotionStreamStreamingSampler"]().generate(**args)["result"]


def _widget(ids, x_end):
    return {"format": "motionstream-tracks", "version": 1, "width": 128, "height": 128, "fps": 16, "duration": 0.5,
            "tracks": [{"id": track_id, "keyframes": [{"t": 0.0, "x": 0.3 + 0.3 * i, "y": 0.5},
                                                      {"t": 0.5, "x": x_end, "y": 0.4 + 0.2 * i}]}
                       for i, track_id in enumerate(ids)]}


def test_track_ids_are_renumbered_as_the_demo_was_trained_also_in_live_edits(pack, demo, monkeypatch):
    host, live_control = pack.nodes.host, pack.nodes.live_control
    editor = pack.NODE_CLASS_MAPPINGS["MotionStreamTrackEditor"]()
    image = load_demo_image().movedim(0, -1)[None]
    outputs_class = pack.nodes.output_memory.StreamOutputs
    original = outputs_class.add_latents

    def run(ids, edit_ids=None):
        (tracks,) = editor.build(json.dumps(_widget(ids, 0.8)))

        def edit():  # once chunk 0 is made
            reply = live_control.apply_live_tracks(
                {"prompt_id": None, "node_id": "5", "token": stream_token(host, "5"), "tracks": _widget(edit_ids, 0.2)})
            assert reply[0] == 200

        monkeypatch.setattr(outputs_class, "add_latents", original)
        if edit_ids is not None:
            monkeypatch.setattr(outputs_class, "add_latents", add_latents_then(outputs_class, 0, edit))
        return _generate(pack, demo, start_image=image, tracks=tracks)[0]

    torch.testing.assert_close(run([0, 1]), run([7, 42]))
    edited = run([0, 1], edit_ids=[0, 1])
    torch.testing.assert_close(run([0, 1], edit_ids=[7, 42]), edited)
    assert (edited - run([0, 1])).abs().max() > 1e-3, "the live edit steers the later chunks"


def test_clear_errors_name_what_the_model_needs(pack, demo):
    image = load_demo_image().movedim(0, -1)[None]
    with pytest.raises(ValueError, match=r"needs start_image .*Not used by it: positive, tiny_vae, vae, clip_vision_output"):
        _generate(pack, demo)
    with pytest.raises(ValueError, match=r"128x128 video only: set width to 128 and height to 128"):
        _generate(pack, demo, start_image=image, width=832, height=480)
    with pytest.raises(ValueError, match="teacher sampler runs Wan 2.1 models"):
        pack.NODE_CLASS_MAPPINGS["MotionStreamTeacherSampler"]().sample(
            demo, None, None, 128, 128, 9, 0, 2, 5.0, "euler", 3.0, 1.5, 16.0, start_image=image)


def test_a_wan_model_without_a_prompt_says_so(pack):
    from motionstream_core.streaming.session import StreamingConfig
    from tiny_models import random_dit, tiny_config

    loaders = pack.nodes.model_loaders
    model = loaders.MotionStreamModel(random_dit(tiny_config()), None, StreamingConfig.self_forcing(), "t2v.pt")
    with pytest.raises(ValueError, match=r"t2v.pt needs positive \(the prompt.*; tiny_vae or vae \(turns latents"):
        _generate(pack, model, width=80, height=48, num_frames=5)


def test_the_demo_image_node_gives_the_shipped_picture(pack):
    result = pack.NODE_CLASS_MAPPINGS["MotionStreamDemoImage"]().load()
    (image,) = result["result"]
    assert image.shape == (1, 128, 128, 3)
    torch.testing.assert_close(image[0], load_demo_image().movedim(0, -1))
    assert result["ui"]["images"] == []  # previews are written only inside ComfyUI
