"""Runs the Streaming Sampler node as ComfyUI would, posting a live edit through the route mid-stream."""

import dataclasses
import json

import torch


@dataclasses.dataclass
class LiveRun:
    outputs: tuple  # the node's outputs (IMAGE, LATENT, VIDEO)
    chunks: list[torch.Tensor]  # [t, H, W, 3] per chunk, as sent to the live preview
    posted: list[tuple[int, tuple[int, dict]]]  # (body size in bytes, the route's (status, reply)) per edit


def add_latents_then(outputs_class, chunk: int, action):
    """A StreamOutputs.add_latents that runs `action()` once chunk `chunk` of a Streaming Sampler run is generated:
    on the generating thread, before the next chunk starts (its frames are decoded and sent on another thread)."""
    original, generated = outputs_class.add_latents, []

    def add_latents(outputs, latents):
        original(outputs, latents)
        generated.append(latents.shape[2])
        if len(generated) == chunk + 1:
            action()

    return add_latents


def stream_token(host, node_id) -> str:
    """The live token the running stream of `node_id` handed out in its first status message."""
    return next(data["live_token"] for event, data in reversed(host.sent_messages)
                if event == host.MESSAGE_STATUS and data.get("node") == str(node_id) and "live_token" in data)


def run_with_live_edit(pack, edit: dict | None = None, after_chunk: int = 1, **sampler_inputs) -> LiveRun:
    """`generate(**sampler_inputs)`; with `edit` (a widget document), the stream's owner posts it through
    the live route, with the token the stream handed out, once chunk `after_chunk` is generated and before
    the next one starts (from the generating thread: chunks are decoded and sent on another)."""
    host, live_control = pack.nodes.host, pack.nodes.live_control
    chunks, posted = [], []
    original_send = host.send_frames

    def send(node_id, frames, fps, chunk_index, done):
        original_send(node_id, frames, fps, chunk_index, done)
        chunks.append(frames.clone())

    def post_edit():
        node_id = str(sampler_inputs["unique_id"])
        body = json.dumps({"prompt_id": host.current_prompt_id(), "node_id": node_id,
                           "token": stream_token(host, node_id), "tracks": edit}).encode()
        posted.append((len(body), live_control.handle_live_tracks_request(body)))

    outputs_class = pack.nodes.output_memory.StreamOutputs
    original_add_latents = outputs_class.add_latents
    host.send_frames = send
    outputs_class.add_latents = add_latents_then(outputs_class, after_chunk, post_edit if edit is not None else lambda: None)
    try:
        outputs = pack.NODE_CLASS_MAPPINGS["MotionStreamStreamingSampler"]().generate(**sampler_inputs)["result"]
    finally:
        host.send_frames = original_send
        outputs_class.add_latents = original_add_latents
    return LiveRun(outputs, chunks, posted)
