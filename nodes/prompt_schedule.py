"""Prompt schedule: the Streaming Sampler switches prompts at set times of the video (LongLive's
interactive prompts), and the client that queued the stream may switch it live
(POST /motionstream/live_prompt, see live_control.py).

Times are seconds of the video, like the tracks'. A switch lands on the first chunk that starts at
or after its time, with the schedule's prompt change: "recache" recomputes the cached frames under
the new prompt (LongLive), "keep" leaves them (see motionstream_core/streaming/prompt_change.py).

A live switch names one of the schedule's prompts by index (from 0), or gives new text, which needs a
CLIP (the umT5 text encoder) connected to the schedule: the text is encoded on the generating thread
just before the next chunk. A live switch holds for the rest of the stream, as a live drag does. The
sampler's live preview offers these switches (a prompt row, js/live_preview.js) from the stream's first status.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from motionstream_core import MAX_PROMPT_ENTRIES, PROMPT_CHANGE_POLICIES, PromptSchedule, PromptTimeline, ScheduledPrompt

from . import host
from .inputs import text_embedding

SLOTS = 4  # prompts per node; chain nodes through `previous` for more
DEFAULT_STARTS = (0.0, 5.0, 10.0, 15.0)
MAX_SECONDS = 1_000_000.0


@dataclasses.dataclass(frozen=True, eq=False)
class StreamPrompts:
    """What flows along a MOTIONSTREAM_PROMPTS link: the schedule, and the text encoder for live text."""

    schedule: PromptSchedule
    clip: Any = None  # ComfyUI's CLIP; None: live switches name a prompt of the schedule

    def encode(self, text: str) -> torch.Tensor:
        """Text embeddings [1, L, dim] of `text`, as CLIPTextEncode makes them."""
        return text_embedding(self.clip.encode_from_tokens_scheduled(self.clip.tokenize(text)))


class MotionStreamPromptSchedule:
    @classmethod
    def INPUT_TYPES(cls):
        def start(slot):
            return ("FLOAT", {"default": DEFAULT_STARTS[slot - 1], "min": 0.0, "max": MAX_SECONDS, "step": 0.5,
                              "tooltip": f"Seconds into the video where prompt_{slot} begins (at the first chunk "
                                         f"that starts at or after it)."})

        prompt_tooltip = "CLIPTextEncode with the umT5 'wan' text encoder."
        optional = {}
        for slot in range(2, SLOTS + 1):
            optional[f"prompt_{slot}"] = ("CONDITIONING", {"tooltip": prompt_tooltip + " Unconnected: skipped."})
            optional[f"start_{slot}"] = start(slot)
        optional["previous"] = ("MOTIONSTREAM_PROMPTS", {
            "tooltip": "An earlier schedule these prompts follow (their times must come after its last)."})
        optional["clip"] = ("CLIP", {
            "tooltip": "The umT5 text encoder: lets the running stream take newly typed prompts (the prompt row "
                       "of the sampler's preview, or POST /motionstream/live_prompt with text). Without it, live "
                       "switches pick a prompt of this schedule."})
        return {
            "required": {
                "prompt_1": ("CONDITIONING", {"tooltip": prompt_tooltip}),
                "start_1": start(1),
                "prompt_change": (list(PROMPT_CHANGE_POLICIES), {
                    "default": "recache",
                    "tooltip": "recache (LongLive): at a switch the cached frames are recomputed under the new "
                               "prompt, so the video follows it at once. keep: they stay as they were, and the "
                               "new prompt takes over more gradually."}),
            },
            "optional": optional,
        }

    RETURN_TYPES = ("MOTIONSTREAM_PROMPTS",)
    RETURN_NAMES = ("prompt_schedule",)
    FUNCTION = "build"
    CATEGORY = "MotionStream/sampling"
    DESCRIPTION = ("Prompts that take turns while the Streaming Sampler streams: each from its start time (seconds) "
                   "on. Connect it to the sampler's prompt_schedule; a prompt at 0 s replaces positive, else "
                   "positive runs until the first one. Wan 2.1 text-to-video and image-to-video models only (the "
                   f"embedded demo has a fixed text). At most {MAX_PROMPT_ENTRIES} prompts in all.")

    def build(self, prompt_1, start_1, prompt_change, previous=None, clip=None, **slots):
        if previous is not None and not isinstance(previous, StreamPrompts):
            raise ValueError(f"previous must be a MotionStream prompt schedule, got {type(previous).__name__}")
        given = [(1, prompt_1, start_1)] + [
            (slot, slots.get(f"prompt_{slot}"), slots.get(f"start_{slot}", DEFAULT_STARTS[slot - 1]))
            for slot in range(2, SLOTS + 1)
        ]
        prompts = []
        after = ("the last prompt of previous", previous.schedule[-1].start_seconds) if previous is not None else None
        for slot, conditioning, start in given:
            if conditioning is None:
                continue
            start = float(start)
            if after is not None and start <= after[1]:
                raise ValueError(f"start_{slot} ({start:g} s) must come after {after[0]} ({after[1]:g} s): "
                                 f"the prompts take turns in order")
            try:
                text = text_embedding(conditioning)
            except ValueError as error:
                raise ValueError(f"prompt_{slot}: {error}") from error
            prompts.append(ScheduledPrompt(start, text, prompt_change))
            after = (f"start_{slot}", start)
        schedule = previous.schedule.then(prompts) if previous is not None else PromptSchedule(prompts)
        return (StreamPrompts(schedule, clip if clip is not None else getattr(previous, "clip", None)),)


class LivePrompts:
    """A running stream's prompts: its timeline, switched by the schedule and by the live route."""

    def __init__(self, timeline: PromptTimeline, encode=None):
        self.timeline = timeline
        self._encode = encode  # text -> embeddings; None: live text cannot be used

    @property
    def starting_text(self) -> torch.Tensor:
        return self.timeline.starting_text

    def request(self, *, index: int | None = None, text: str | None = None, prompt_change: str | None = None) -> int:
        """A live switch (from the route's thread): exactly one of `index` and `text`. Returns its version;
        raises ValueError with a message for the client."""
        if (index is None) == (text is None):
            raise ValueError("give either text (a new prompt) or index (a prompt of the stream's schedule, from 0)")
        if text is None:
            return self.timeline.switch_live(index, prompt_change)
        if self._encode is None:
            raise ValueError("this stream cannot encode text: connect a CLIP (the umT5 text encoder) to its "
                             "Prompt Schedule's clip input, or switch by index")
        return self.timeline.switch_live(lambda: self._encode(text), prompt_change)

    def offer(self) -> dict:
        """What the live preview offers the user, in the stream's first status message: the schedule's prompts
        (index for POST /motionstream/live_prompt, start in seconds) and whether new text can be typed."""
        return {"prompts": [{"index": index, "start": prompt.start_seconds}
                            for index, prompt in enumerate(self.timeline.schedule.prompts)],
                "text": self._encode is not None}

    def before_chunk(self, session, device, dtype) -> None:
        """On the generating thread, before each chunk: hands the session the prompt change due, if any."""
        try:
            switch = self.timeline.switch_for_chunk(session.next_frame)
        except ValueError as error:  # live text the encoder turned into embeddings the model cannot take
            host.warn(f"MotionStream: a live prompt was not used: {error}")
            return
        if switch is not None:
            session.update(text=switch.text.to(device, dtype), prompt_change=switch.prompt_change)


def temporal_compression(codec, width: int, height: int) -> int:
    """Video frames per latent frame after the first, from the codec's own geometry (Wan: 4, the demo's: 1)."""
    probe = 17  # a length every codec takes (4k + 1)
    latent_frames = codec.geometry(width, height, probe)[0]
    return (probe - 1) // (latent_frames - 1)


def stream_prompts(model, positive, prompt_schedule, *, fps: float, codec, width: int, height: int,
                   cache_policy: str) -> LivePrompts | None:
    """The stream's prompts when a schedule is connected (None: the sampler's positive throughout).
    Raises ValueError naming the inputs when they do not go together."""
    if prompt_schedule is None:
        return None
    if model.fixed_text is not None:
        raise ValueError(f"{model.name} was trained with one fixed text and takes no prompts: disconnect "
                         f"prompt_schedule")
    if not isinstance(prompt_schedule, StreamPrompts):
        raise ValueError(f"prompt_schedule must come from MotionStream Prompt Schedule, "
                         f"got {type(prompt_schedule).__name__}")
    schedule = prompt_schedule.schedule
    if schedule.starts_at_zero and positive is not None:
        raise ValueError("both positive and prompt_schedule's prompt at 0 s give the starting prompt: disconnect "
                         "positive, or start the schedule later")
    if not schedule.starts_at_zero:
        if positive is None:
            raise ValueError(f"prompt_schedule starts at {schedule[0].start_seconds:g} s: connect positive for the "
                             f"video before it, or start its first prompt at 0 s")
        schedule = schedule.starting_with(text_embedding(positive))
    text_dim = model.dit.config.text_dim
    if schedule.text_dim != text_dim:
        raise ValueError(f"prompt_schedule's prompts have {schedule.text_dim}-dim embeddings; {model.name} takes "
                         f"{text_dim} (encode them with its text encoder, umT5 for Wan 2.1)")
    timeline = PromptTimeline(schedule, fps, temporal_compression(codec, width, height), cache_policy)
    return LivePrompts(timeline, prompt_schedule.encode if prompt_schedule.clip is not None else None)


NODE_CLASS_MAPPINGS = {"MotionStreamPromptSchedule": MotionStreamPromptSchedule}
NODE_DISPLAY_NAME_MAPPINGS = {"MotionStreamPromptSchedule": "MotionStream Prompt Schedule"}
