"""Prompts that change while a video streams: a schedule of prompts by start time, and live switches.

    schedule = PromptSchedule([ScheduledPrompt(0.0, text_a), ScheduledPrompt(5.0, text_b, "recache")])
    timeline = PromptTimeline(schedule, fps=16, temporal_compression=4)
    for each chunk:
        switch = timeline.switch_for_chunk(session.next_frame)
        if switch is not None:
            session.update(text=switch.text, prompt_change=switch.prompt_change)
        session.next_chunk()

Times are seconds of the video, as the tracks are. A prompt starting at t applies from the first chunk
whose first video frame is at or after t * fps; a chunk never changes prompt halfway. When several
start times fall within one chunk, that chunk takes the last of them.

A live switch (`switch_live`, from any thread) applies from the next chunk on and takes over: like a
live track edit, it holds for the rest of the stream, and the schedule's later prompts are dropped.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Callable, Sequence

import torch

from .cache_policies import cache_policy_named
from .prompt_change import prompt_change_named

# A schedule keeps every prompt's embedding for the whole stream (umT5: 512 x 4096 floats each).
MAX_PROMPT_ENTRIES = 32
# Characters of one live prompt (umT5 reads at most 512 tokens, a few characters each).
MAX_LIVE_PROMPT_CHARS = 4000


@dataclasses.dataclass(frozen=True, eq=False)
class ScheduledPrompt:
    start_seconds: float
    # Text embeddings [B, L, text_dim].
    text: torch.Tensor
    # How the stream switches to this prompt, by name (see prompt_change.py); unused for a prompt at 0 s.
    prompt_change: str = "recache"


class PromptSchedule:
    """Prompts in the order they start; validated when made."""

    def __init__(self, prompts: Sequence[ScheduledPrompt]):
        prompts = tuple(prompts)
        if not prompts:
            raise ValueError("a prompt schedule needs at least one prompt")
        if len(prompts) > MAX_PROMPT_ENTRIES:
            raise ValueError(f"a prompt schedule holds at most {MAX_PROMPT_ENTRIES} prompts, got {len(prompts)}")
        for number, prompt in enumerate(prompts, start=1):
            _check_prompt(number, prompt)
        first = prompts[0].text
        for number, prompt in enumerate(prompts[1:], start=2):
            if prompt.text.shape[0] != first.shape[0] or prompt.text.shape[2] != first.shape[2]:
                raise ValueError(
                    f"prompt {number} has text embeddings {list(prompt.text.shape)}, prompt 1 {list(first.shape)}: "
                    f"every prompt needs the same batch and embedding size (the same text encoder)"
                )
            previous = prompts[number - 2].start_seconds
            if prompt.start_seconds <= previous:
                raise ValueError(
                    f"prompt {number} starts at {prompt.start_seconds:g} s, not after prompt {number - 1} at "
                    f"{previous:g} s: start times must increase"
                )
        self.prompts = prompts

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: int) -> ScheduledPrompt:
        return self.prompts[index]

    @property
    def text_dim(self) -> int:
        return self.prompts[0].text.shape[2]

    @property
    def starts_at_zero(self) -> bool:
        return self.prompts[0].start_seconds == 0

    def then(self, prompts: Sequence[ScheduledPrompt]) -> PromptSchedule:
        """This schedule followed by `prompts` (which must start later)."""
        return PromptSchedule(self.prompts + tuple(prompts))

    def starting_with(self, text: torch.Tensor) -> PromptSchedule:
        """This schedule with `text` from 0 s until its first prompt."""
        if self.starts_at_zero:
            raise ValueError("the schedule already has a prompt at 0 s")
        return PromptSchedule((ScheduledPrompt(0.0, text, self.prompts[0].prompt_change),) + self.prompts)


def _check_prompt(number: int, prompt) -> None:
    if not isinstance(prompt, ScheduledPrompt):
        raise ValueError(f"prompt {number} must be a ScheduledPrompt, got {type(prompt).__name__}")
    start = prompt.start_seconds
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not math.isfinite(start) or start < 0:
        raise ValueError(f"prompt {number} must start at a finite number of seconds of at least 0, got {start!r}")
    if not isinstance(prompt.text, torch.Tensor) or prompt.text.ndim != 3:
        got = list(prompt.text.shape) if isinstance(prompt.text, torch.Tensor) else type(prompt.text).__name__
        raise ValueError(f"prompt {number} needs text embeddings [batch, tokens, dim], got {got}")
    prompt_change_named(prompt.prompt_change)


def first_pixel_frame(latent_frame: int, temporal_compression: int) -> int:
    """The first video frame of a latent frame, when latent frame 0 holds video frame 0 alone and each
    later one `temporal_compression` frames (Wan's VAE: 4; a codec without temporal compression: 1)."""
    return 0 if latent_frame == 0 else 1 + temporal_compression * (latent_frame - 1)


@dataclasses.dataclass(frozen=True, eq=False)
class PromptSwitch:
    """A prompt change for the next chunk."""

    text: torch.Tensor
    prompt_change: str
    # The schedule's prompt switched to (None: a live prompt that is not in the schedule).
    index: int | None
    # 0 for the schedule's own switches, else the live switch's version.
    version: int = 0


# What a live switch names: a prompt of the schedule by index, or new embeddings, or a callable that
# makes them when the switch applies (e.g. a text encoder that must run on the generating thread).
LivePrompt = int | torch.Tensor | Callable[[], torch.Tensor]


class PromptTimeline:
    """Which prompt each chunk of one stream is made with: the schedule's, until a live switch takes over.

    `switch_live` may be called from any thread; `switch_for_chunk` from the thread that makes the chunks,
    once before each chunk, with the chunk's first latent frame. `cache_policy` (the stream's, by name)
    lets prompt changes that it cannot do be refused when they are asked for rather than mid-stream.
    """

    def __init__(self, schedule: PromptSchedule, fps: float, temporal_compression: int = 1,
                 cache_policy: str = "rolling"):
        if not isinstance(schedule, PromptSchedule):
            raise ValueError(f"schedule must be a PromptSchedule, got {type(schedule).__name__}")
        if not schedule.starts_at_zero:
            raise ValueError(f"the stream needs a prompt from 0 s; the schedule starts at "
                             f"{schedule[0].start_seconds:g} s")
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        compression = temporal_compression
        if isinstance(compression, bool) or not isinstance(compression, int) or compression < 1:
            raise ValueError(f"temporal_compression must be a positive integer, got {temporal_compression!r}")
        self._cache_policy = cache_policy_named(cache_policy)
        for number, prompt in enumerate(schedule.prompts, start=1):  # the first's is a live switch's default
            try:
                prompt_change_named(prompt.prompt_change).check_cache_policy(self._cache_policy)
            except ValueError as error:
                raise ValueError(f"prompt {number}: {error}") from error
        self.schedule = schedule
        self.temporal_compression = temporal_compression
        # Each prompt's first video frame; the small tolerance keeps e.g. 0.3 s * 10 fps at frame 3.
        self._switch_frames = [math.ceil(p.start_seconds * fps - 1e-6) for p in schedule.prompts]
        self._lock = threading.Lock()  # guards the live request; the rest is the generating thread's
        self._next_scheduled = 1  # the schedule's first prompt is the stream's starting prompt
        self._change_in_use = schedule[0].prompt_change  # how the stream switched to the prompt in use
        self._live_request: tuple[LivePrompt, str | None, int] | None = None
        self._taken_over = False
        self.version = 0  # of the latest live switch asked for

    @property
    def starting_text(self) -> torch.Tensor:
        return self.schedule[0].text

    def check_live(self, prompt: LivePrompt, prompt_change: str | None = None) -> None:
        """Raises ValueError if `switch_live(prompt, prompt_change)` would be refused."""
        if isinstance(prompt, bool) or not (isinstance(prompt, (int, torch.Tensor)) or callable(prompt)):
            raise ValueError(f"a live prompt is an index into the schedule or text embeddings, "
                             f"got {type(prompt).__name__}")
        if isinstance(prompt, int) and not 0 <= prompt < len(self.schedule):
            raise ValueError(f"index {prompt} is out of range: the schedule has {len(self.schedule)} prompt(s), "
                             f"0 to {len(self.schedule) - 1}")
        if isinstance(prompt, torch.Tensor):
            self._check_text(prompt)
        if prompt_change is not None:
            prompt_change_named(prompt_change).check_cache_policy(self._cache_policy)

    def switch_live(self, prompt: LivePrompt, prompt_change: str | None = None) -> int:
        """Asks for `prompt` from the next chunk on (a later request before then replaces it); returns its
        version. `prompt_change` None: a scheduled prompt's own; for new text, the way the prompt in use came."""
        self.check_live(prompt, prompt_change)
        with self._lock:
            self.version += 1
            self._live_request = (prompt, prompt_change, self.version)
            return self.version

    def switch_for_chunk(self, start_frame: int) -> PromptSwitch | None:
        """The prompt change to make before the chunk starting at latent frame `start_frame`, if any.

        A live switch whose callable raises is dropped (the stream keeps its prompt) and the error raised."""
        with self._lock:
            request, self._live_request = self._live_request, None
        if request is not None:
            prompt, prompt_change, version = request
            index = prompt if isinstance(prompt, int) else None
            text = self._live_text(prompt)
            if prompt_change is None:
                prompt_change = self.schedule[index].prompt_change if index is not None else self._change_in_use
            self._taken_over = True
            self._change_in_use = prompt_change
            return PromptSwitch(text, prompt_change, index, version)
        if self._taken_over:
            return None
        start = first_pixel_frame(start_frame, self.temporal_compression)
        due = self._next_scheduled
        while due < len(self.schedule) and self._switch_frames[due] <= start:
            due += 1
        if due == self._next_scheduled:
            return None
        self._next_scheduled = due
        index = due - 1  # of the prompts due by now, the last
        prompt = self.schedule[index]
        self._change_in_use = prompt.prompt_change
        return PromptSwitch(prompt.text, prompt.prompt_change, index)

    def _live_text(self, prompt: LivePrompt) -> torch.Tensor:
        if isinstance(prompt, int):
            return self.schedule[prompt].text
        text = prompt if isinstance(prompt, torch.Tensor) else prompt()
        self._check_text(text)
        return text

    def _check_text(self, text) -> None:
        first = self.schedule[0].text
        if not isinstance(text, torch.Tensor) or text.ndim != 3 or text.shape[0] != first.shape[0] \
                or text.shape[2] != first.shape[2]:
            got = list(text.shape) if isinstance(text, torch.Tensor) else type(text).__name__
            raise ValueError(f"a live prompt needs text embeddings [{first.shape[0]}, tokens, {first.shape[2]}] "
                             f"like the schedule's, got {got}")
