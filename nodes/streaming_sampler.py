"""The streaming sampler: a causal student generates the video chunk by chunk inside the graph run,
each chunk decoded, written to a video file and shown in the browser as soon as it exists, steerable
by live drags, for a set length or until Stop.

Memory stays flat whatever the length: every chunk goes to the file (nodes/video_file.py) and the
preview as it comes, and the frames are kept for the IMAGE/LATENT outputs only when they fit
(nodes/output_memory.py: min(2 GiB, a quarter of the available RAM); never for an endless stream).
Otherwise IMAGE and LATENT hold the last frame, the VIDEO output has every frame, and a warning says so.

Stop (the preview's button, POST /motionstream/stop) ends the stream after the chunk in progress;
the node returns normally with what was made. Cancel interrupts as ComfyUI does: the node raises,
and the file keeps every frame written up to then (it is finalised, not discarded).
"""

from __future__ import annotations

import dataclasses
import math
import time

from motionstream_core import BackgroundDecoder, StreamConditions, StreamingSession, TrackChannelProvider

from . import host
from .inputs import clip_image_tokens, tracks_for_generation
from .live_control import LiveTracks, running_stream
from .output_memory import decide_in_memory_outputs, StreamOutputs
from .pacing import PlaybackPacer
from .prompt_schedule import stream_prompts
from .video_file import open_output_video, preview_ui, video_value

DEFAULT_FILENAME_PREFIX = "MotionStream"


def _parse_steps(text: str) -> tuple[int, ...] | None:
    if not text.strip():
        return None
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError as error:
        raise ValueError(f"denoising_steps must be comma-separated integers like 1000,750,500,250, got {text!r}") from error


# The acceleration choice -> StreamingSession options.
ACCELERATIONS = {
    "none": {},
    "compile": {"compile": True},
    "CUDA graphs": {"cuda_graphs": True},
    "compile + CUDA graphs": {"compile": True, "cuda_graphs": True},
}


class MotionStreamStreamingSampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MOTIONSTREAM_MODEL", {"tooltip": "What the model needs is in the Model Loader's description; "
                                                            "inputs it does not use may stay unconnected."}),
                "width": ("INT", {"default": 832, "min": 16, "max": 4096, "step": 16,
                                  "tooltip": "The embedded demo model makes 128x128 only (other sizes are an error)."}),
                "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16}),
                "num_frames": ("INT", {"default": 81, "min": 1, "max": 100001, "step": 4,
                                       "tooltip": "Video frames: 4k + 1 for Wan 2.1 models, any count for the embedded "
                                                  "demo. Memory and time per chunk stay constant, so this can be long."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
                "fps": ("FLOAT", {"default": 16.0, "min": 1.0, "max": 120.0, "step": 1.0,
                                  "tooltip": "Frame rate the tracks are timed in and the preview plays at."}),
                "sink_frames": ("INT", {"default": -1, "min": -1, "max": 64, "tooltip": "-1: the checkpoint's default."}),
                "window_frames": ("INT", {"default": -1, "min": -1, "max": 256,
                                          "tooltip": "Attention span in latent frames incl. sink and current chunk; -1: the checkpoint's default."}),
                "denoising_steps": ("STRING", {"default": "", "tooltip": "e.g. 1000,750,500,250; empty: the checkpoint's default."}),
                "shift": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 20.0, "step": 0.5, "tooltip": "0: the checkpoint's default."}),
            },
            "optional": {
                "positive": ("CONDITIONING", {"tooltip": "Wan 2.1 models: CLIPTextEncode with the umT5 'wan' text encoder. "
                                                         "The embedded demo has its own fixed text."}),
                "tiny_vae": ("MOTIONSTREAM_TINY_VAE", {"tooltip": "Wan 2.1 models: decodes every chunk at once for the live "
                                                                  "preview and the IMAGE output."}),
                "vae": ("VAE", {"tooltip": "Wan 2.1 models: the Wan 2.1 VAE encodes the start image and decodes the result "
                                           "when no Tiny VAE is connected."}),
                "start_image": ("IMAGE", {"tooltip": "The first frame, centre-cropped and resized to width x height."}),
                "clip_vision_output": ("CLIP_VISION_OUTPUT", {"tooltip": "CLIP-H of the start image, for Wan 2.1 "
                                                                         "image-to-video checkpoints."}),
                "tracks": ("TRACKS",),
                "prompt_schedule": ("MOTIONSTREAM_PROMPTS", {"tooltip": "MotionStream Prompt Schedule: prompts that "
                                                                        "take turns at set times (Wan 2.1 models)."}),
                "filename_prefix": ("STRING", {"default": DEFAULT_FILENAME_PREFIX,
                                               "tooltip": "The video file written as the stream goes, in ComfyUI's "
                                                          "output folder (H.264 MP4, else VP9 WebM)."}),
                "until_stopped": ("BOOLEAN", {"default": False, "label_on": "until Stop", "label_off": "num_frames",
                                              "tooltip": "Stream until Stop in the preview (num_frames is ignored; "
                                                         "the frames go to the video file only)."}),
                "pace_to_playback": ("BOOLEAN", {"default": True,
                                                 "tooltip": "While the browser that queued the run plays the preview, "
                                                            "stay at most two chunks ahead of it, so drags show up "
                                                            "within a chunk or two. Off: as fast as possible."}),
                "acceleration": (list(ACCELERATIONS), {
                    "default": "none",
                    "tooltip": "compile: the transformer blocks through torch.compile (the first chunk of each "
                               "shape waits for the compiler). CUDA graphs: on a GPU, each steady-state chunk "
                               "replays one recorded graph (first chunks and CPUs run as usual)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ("IMAGE", "LATENT", "VIDEO")
    OUTPUT_NODE = True  # it writes the video file: ComfyUI runs it, and its history and queue list the file
    RETURN_NAMES = ("images", "latent", "video")
    OUTPUT_TOOLTIPS = ("The frames, when they fit in memory; else the last frame.",
                       "Their latents, when they fit in memory; else the last latent frame.",
                       "The video file with every frame.")
    FUNCTION = "generate"
    CATEGORY = "MotionStream/sampling"
    DESCRIPTION = ("Streams a video chunk by chunk with a causal student; drags in a connected track editor steer the next "
                   "chunks. Each model decodes with its own codec: Wan 2.1 models with the Tiny VAE (or the VAE), the "
                   "embedded demo with its built-in one, so it needs only a start image. A missing input is named "
                   "when the run starts. Every chunk goes to a video file as it comes, so any length (or until Stop) "
                   "runs in constant memory.")

    @classmethod
    def IS_CHANGED(cls, until_stopped=False, **_):
        """A stream until Stop runs again whenever it is queued (NaN never equals itself): its length is the user's."""
        return float("nan") if until_stopped else ""

    def generate(self, model, width, height, num_frames, seed, fps, sink_frames, window_frames, denoising_steps, shift,
                 positive=None, tiny_vae=None, vae=None, start_image=None, clip_vision_output=None, tracks=None,
                 filename_prefix=DEFAULT_FILENAME_PREFIX, until_stopped=False, pace_to_playback=True,
                 acceleration="none", prompt_schedule=None, unique_id=None, prompt=None, extra_pnginfo=None):
        dit, config = model.dit, model.dit.config
        model.check_inputs(positive=positive if positive is not None else prompt_schedule, tiny_vae=tiny_vae, vae=vae,
                           start_image=start_image, clip_vision_output=clip_vision_output)
        model.check_size(width, height)
        codec = model.codec.connect(vae=vae, tiny_vae=tiny_vae)
        length = None if until_stopped else num_frames  # None: until Stop
        latent_frames, latent_height, latent_width = codec.geometry(width, height, 1 if length is None else length)
        latent_frames = None if length is None else latent_frames
        decoder = codec.decoder()
        if length is None and not decoder.live:
            raise ValueError("until_stopped needs every chunk decoded as it comes: connect the Tiny VAE (the Wan 2.1 "
                             "VAE decodes the whole video at the end)")
        overrides = {"sink_frames": sink_frames, "window_frames": window_frames, "shift": shift,
                     "denoising_steps": _parse_steps(denoising_steps)}
        streaming = dataclasses.replace(
            model.streaming_defaults,
            **{k: v for k, v in overrides.items() if v not in (None, -1, 0.0)},
        )
        prompts = stream_prompts(model, positive, prompt_schedule, fps=fps, codec=codec, width=width, height=height,
                                 cache_policy=streaming.cache_policy)

        device = host.compute_device()
        dtype = dit.dtype
        first_frame = None
        if start_image is not None:
            first_frame = codec.encode_start(start_image, width, height).to(device, dtype)
        source_size = (start_image.shape[2], start_image.shape[1]) if start_image is not None else None

        def to_generation(track_set, pixel_frames):
            track_set = tracks_for_generation(track_set, width, height, fps, pixel_frames, source_size)
            return model.tracks_with_trained_ids(track_set)

        # The initial tracks cover the stream; a live edit covers the frames from its chunk on (its own length).
        live = LiveTracks(to_generation(tracks, length) if tracks is not None else None,
                          lambda edit: to_generation(edit, None), fps)
        providers = []
        if model.track_encoder is not None:
            providers.append(TrackChannelProvider(model.track_encoder.to(device), live.window, latent_height, latent_width))
        elif tracks is not None:
            raise ValueError("this checkpoint has no track head, so it cannot follow tracks; disconnect them or load a motion model")
        conditions = StreamConditions(
            text=(model.text(positive) if prompts is None else prompts.starting_text).to(device, dtype),
            image_tokens=clip_image_tokens(clip_vision_output).to(device, dtype) if config.is_image_to_video else None,
            first_frame_latents=first_frame,
            motion_providers=providers,
        )

        latent_bytes = 0 if length is None else math.ceil(4 * config.out_channels * latent_frames * latent_height
                                                          * latent_width / length)
        memory = decide_in_memory_outputs(length, height, width, latent_bytes_per_frame=latent_bytes)
        if memory.warning:
            host.warn(f"MotionStream: {memory.warning}")
            if not decoder.live:
                host.warn("MotionStream: the Wan 2.1 VAE still decodes the whole video at once at the end; connect "
                          "the Tiny VAE to decode it chunk by chunk in constant memory")
        writer = open_output_video((filename_prefix or "").strip() or DEFAULT_FILENAME_PREFIX, fps, width=width,
                                   height=height, metadata=_file_metadata(prompt, extra_pnginfo))
        outputs = StreamOutputs(writer, memory.keep, length)
        registration = running_stream(host.current_prompt_id(), unique_id, live, prompts)
        pacer = None
        edit_shown = 0  # the latest live edit whose latency went out in a frames message

        def on_frames(chunk_frames, chunk_index, done, edit):
            """Every decoded chunk's frames [T, H, W, 3] come through here once, in order; `edit`: (version,
            received_at) of the live edit the chunk was made with."""
            nonlocal edit_shown
            chunk_frames = outputs.add_frames(chunk_frames)
            if not (decoder.live and chunk_frames.shape[0]):
                return
            version, received_at = edit
            if version != edit_shown and received_at is not None:
                # the first chunk made with this edit: the route-to-preview part of the drag-to-screen latency
                edit_shown = version
                registration.set_frames_fields(tracks_version=version, edit_to_frames_ms=round(
                    1000 * (time.monotonic() - received_at), 1))
            host.send_frames(unique_id, chunk_frames, fps, chunk_index, done)
            if pacer is not None:
                pacer.sent(chunk_frames.shape[0])

        def decode_chunk(latents, chunk_index, last, edit):
            decoded = decoder.push(latents)
            if decoded.shape[0]:
                on_frames(decoded, chunk_index, last, edit)

        # A live codec decodes, writes and previews chunk k on a worker while the transformer makes chunk k+1.
        background = BackgroundDecoder(decode_chunk, device) if decoder.live else None

        def emit(latents, chunk_index, last):
            # On the generating thread, before the next chunk reads the tracks: the edit this chunk was made with.
            edit = (live.version_read, live.version_read_received_at)
            (background.submit if background is not None else decode_chunk)(latents, chunk_index, last, edit)
        interrupt = host.interrupt_check()

        def pause(seconds):  # the pacer's sleep: Stop ends it at once, Cancel within 0.1 s
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0 and not registration.wait_for_stop(min(left, 0.1)):
                host.throw_if_interrupted(interrupt)

        def pace():
            if pacer is None:
                return
            if background is not None:
                background.wait()  # the pacer counts what reached the player: the chunk in flight first
            pacer.wait()

        progress = host.Progress(latent_frames)
        state, chunk_count, stopped = "failed", 0, False
        dit.to(device)
        session = None
        try:
            try:
                session = StreamingSession(dit, streaming, latent_height=latent_height, latent_width=latent_width,
                                           seed=seed, interrupt=interrupt, **ACCELERATIONS[acceleration])
                session.start(conditions)
                with registration:
                    # Prompt switches are offered only to the client that can make them (the one holding the token).
                    offer = {"live_prompts": prompts.offer()} if prompts is not None and registration.token else {}
                    host.send_status(unique_id, "streaming", num_frames=length, fps=fps, **offer)
                    if pace_to_playback and decoder.live and registration.token is not None and host.has_server():
                        pacer = PlaybackPacer(fps, sleep=pause)
                    chunk_count, stopped = self._stream(
                        session, emit,
                        latent_frames, progress, outputs,
                        stop_requested=lambda: registration.stop_requested,
                        pace=pace,
                        before_chunk=None if prompts is None else lambda s: prompts.before_chunk(s, device, dtype))
                    if background is not None:
                        background.wait()  # the last chunk's frames are out before the status says how it ended
            finally:
                if background is not None:
                    background.close()
                del session
                dit.to(host.offload_device())
                host.free_memory()
            rest = decoder.flush()  # where a decoder keeps frames back (the whole-video VAE), with the transformer offloaded
            if rest.shape[0]:
                on_frames(rest, chunk_count, True, (live.version_read, live.version_read_received_at))
            state = "stopped" if stopped else "done"
        except BaseException as error:
            state = "cancelled" if host.is_interrupt(error) else "failed"
            raise
        finally:
            path = writer.close()  # on Cancel too: the file keeps the frames written so far
            host.send_status(unique_id, state, frames=outputs.frame_count,
                             file=writer.output_file.ui_entry() if path is not None else None)

        latent = {"samples": codec.latent_output(outputs.latent())}
        result = (outputs.images(), latent, video_value(path) if path is not None else None)
        return {"ui": preview_ui(writer.output_file) if path is not None else {}, "result": result}

    @staticmethod
    def _stream(session, decode, latent_frames, progress, outputs, stop_requested, pace, before_chunk=None):
        """Generates chunks until `latent_frames` latent frames are made (None: until Stop). Each chunk's latents go
        to `outputs` and to `decode(latents, chunk index, last)`; `pace()` runs between chunks, and
        `before_chunk(session)` (prompt switches) before each. Returns (chunks made, stopped)."""
        produced = count = 0
        while True:
            if before_chunk is not None:
                before_chunk(session)
            chunk = session.next_chunk()
            latents = chunk.latents if latent_frames is None else chunk.latents[:, :, : latent_frames - produced]
            produced += latents.shape[2]  # the last block may run past the end
            count += 1
            outputs.add_latents(latents)
            finished = latent_frames is not None and produced >= latent_frames
            stopped = not finished and stop_requested()  # Stop ends the stream after the chunk in progress
            decode(latents, chunk.index, finished or stopped)
            progress.update(produced)
            if finished or stopped:
                return count, stopped
            pace()
            if stop_requested():  # Stop while waiting for the player
                return count, True


def _file_metadata(prompt, extra_pnginfo) -> dict:
    """What ComfyUI's SaveVideo stores in a file: the workflow (so dropping the file loads it) and the prompt."""
    metadata = dict(extra_pnginfo) if isinstance(extra_pnginfo, dict) else {}
    if prompt is not None:
        metadata["prompt"] = prompt
    return metadata

NODE_CLASS_MAPPINGS = {"MotionStreamStreamingSampler": MotionStreamStreamingSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"MotionStreamStreamingSampler": "MotionStream Streaming Sampler"}
