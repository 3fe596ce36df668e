"""Runs the Streaming Sampler node as ComfyUI would, posting a live edit through the route mid-stream."""

import dataclasses
import json

import torch


@dataclasses.dataclass
class LiveRun:
    outputs: tuple  # the node's outputs (IMAGE, LATENT, VIDEO)
    chunks: list[torch.Tensor]  # [t, H, W, 3] per chunk, as sent to the live preview
    posted: list[tuple[int, tuple[int, dict]]]  # (body size in bytes, the route's (status, reply)) per edit


def run_with_live_edit(pack, edit: dict | None = None, after_chunk: int = 1, **sampler_inputs) -> LiveRun:
    """`generate(**sampler_inputs)`; with `edit` (a widget document), the stream's owner posts it through
    the live route, with the token from the stream's frames messages, once chunk `after_chunk` is sent."""
    host, live_control = pack.nodes.host, pack.nodes.live_control
    chunks, posted = [], []
    original_send = host.send_frames

    def send_and_edit(node_id, frames, fps, chunk_index, done):
        original_send(node_id, frames, fps, chunk_index, done)
        chunks.append(frames.clone())
        if edit is not None and chunk_index == after_chunk:
            token = next(data["live_token"] for event, data in reversed(host.sent_messages)
                         if event == "motionstream.frames" and data.get("node") == str(node_id))
            body = json.dumps({"prompt_id": host.current_prompt_id(), "node_id": node_id, "token": token,
                               "tracks": edit}).encode()
            posted.append((len(body), live_control.handle_live_tracks_request(body)))

    host.send_frames = send_and_edit
    try:
        outputs = pack.NODE_CLASS_MAPPINGS["MotionStreamStreamingSampler"]().generate(**sampler_inputs)["result"]
    finally:
        host.send_frames = original_send
    return LiveRun(outputs, chunks, posted)
