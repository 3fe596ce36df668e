"""A streaming generation session: the one object a node, a CLI or a web demo drives.

    session = StreamingSession(transformer, StreamingConfig(), latent_height=60, latent_width=104, seed=1)
    session.start(StreamConditions(text=text_embeddings, channel_providers=[image_condition, tracks]))
    for chunk in session.stream():          # or session.next_chunk(), one at a time
        decoder.push(chunk.latents)
        session.update(text=new_prompt)     # affects only chunks that have not started

Each chunk is denoised with the few-step schedule, then committed: a last forward of the clean
chunk (at `commit_step`, LongLive's "context noise") leaves its keys/values in the cache.

How the chunks are computed, not what they are, is up to the session's keyword arguments:
`batch_guidance` (guidance branches in one batched forward, on by default), `compile` (the
transformer blocks through `torch.compile`) and `cuda_graphs` (steady-state chunks replayed from
captured CUDA graphs; see chunk_graphs.py).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable, Iterator, Mapping, Sequence

import torch

from .block_schedule import BlockSchedule
from .branch_rows import BranchRows
from .cache_policies import CachePolicy, cache_policy_named
from .causal_model import ROPE_POLICIES, CausalWanModel
from .chunk_graphs import ChunkGraphs
from .commit_inputs import CommitInputs
from .kv_cache import KVCache
from .presets import CheckpointFacts, choose_preset, preset_named
from .prompt_change import KeepCache, PromptChangePolicy, prompt_change_named
from ..sampling.guidance import Branch, branch_weights, guided_velocity
from .image_conditioning import CleanFirstFrame, ConditionChannelProvider, ImageConditioningMode, image_conditioning_named
from ..sampling.noise import NoiseSource, SeededNoise
from ..sampling.schedule import DEFAULT_DENOISING_STEPS, FlowMatchSchedule, add_noise, predicted_clean
from ..model.context_batch import stack_layer_contexts
from ..model.wan_dit import WanDiT

_UNCHANGED = object()

# Spellings of stored configs from before the cache policies: old key -> (new key, {old value: new value}).
_LEGACY_SETTINGS = {
    "growing_cache": ("cache_policy", {True: "growing", False: "rolling"}),
    "recache_on_prompt_change": ("prompt_change", {True: "recache", False: "keep"}),
}


class StreamInterrupted(RuntimeError):
    """The interrupt check asked to stop; the chunk in progress was dropped and will start over."""


@dataclasses.dataclass(frozen=True)
class StreamingConfig:
    # Cache: the first `sink_frames` latent frames are attended forever; `window_frames` is the whole
    # attention span of a chunk (sink + rolling frames + the chunk itself) and the cache capacity.
    sink_frames: int = 3
    window_frames: int = 9
    rope_policy: str = "relative"
    denoising_steps: tuple[int, ...] = DEFAULT_DENOISING_STEPS
    shift: float = 5.0
    num_train_timesteps: int = 1000
    # Latent frames per block; the last size repeats, e.g. (1, 3) = one frame, then blocks of 3.
    block_frames: tuple[int, ...] = (3,)
    # Timestep of the commit pass (0 = clean; "context noise"), and whether the clean chunk is first
    # re-noised to the matching sigma commit_step / num_train_timesteps.
    commit_step: int = 0
    commit_renoise: bool = False
    # What a prompt change does to the cached frames, by name (see prompt_change.py): "keep" them, or
    # "recache" them under the new prompt (LongLive).
    prompt_change: str = "keep"
    # Which frames the KV cache keeps, by name (see cache_policies.py): "rolling" (sink + rolling
    # window, constant memory) or "growing" (every frame; a baseline for tests and benchmarks only).
    cache_policy: str = "rolling"
    # Joint text-motion guidance (wt, wm); distilled students run without it (0, 0). Each branch
    # that contributes keeps its own keys/values (its own cache, or its own rows of a cache shared in
    # one batched forward, see StreamingSession's batch_guidance).
    text_scale: float = 0.0
    motion_scale: float = 0.0
    # How the start image (StreamConditions.first_frame_latents) reaches the model, by name (see
    # image_conditioning.py): "channels" (Wan 2.1 image-to-video: mask + image latent channels) or
    # "clean_latent" (Wan 2.2 TI2V: latent frame 0 is the clean image latent, at timestep 0).
    image_conditioning: str = "channels"

    def __post_init__(self):
        for name, minimum in (("sink_frames", 0), ("window_frames", 1), ("num_train_timesteps", 1), ("commit_step", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")
        if not isinstance(self.commit_renoise, bool):
            raise ValueError(f"commit_renoise must be true or false, got {self.commit_renoise!r}")
        object.__setattr__(self, "denoising_steps", tuple(int(s) for s in self.denoising_steps))
        block_frames = (self.block_frames,) if isinstance(self.block_frames, int) else self.block_frames
        object.__setattr__(self, "block_frames", tuple(int(s) for s in block_frames))
        if self.rope_policy not in ROPE_POLICIES:
            raise ValueError(f"unknown rope_policy {self.rope_policy!r}; use one of {ROPE_POLICIES}")
        branch_weights(self.text_scale, self.motion_scale)
        prompt_change_named(self.prompt_change).check_cache_policy(cache_policy_named(self.cache_policy))
        # Raise early on a bad schedule rather than at the first chunk.
        FlowMatchSchedule(self.shift, self.num_train_timesteps).warp(self.denoising_steps)
        if not 0 <= self.commit_step <= self.num_train_timesteps:
            raise ValueError(f"commit_step must be in [0, {self.num_train_timesteps}], got {self.commit_step}")
        BlockSchedule(self.block_frames)
        image_conditioning_named(self.image_conditioning)

    @classmethod
    def from_dict(cls, settings: Mapping) -> "StreamingConfig":
        """A config from `dataclasses.asdict` output (e.g. the JSON stored with weights), older spellings included."""
        settings = dict(settings)
        for old_key, (new_key, values) in _LEGACY_SETTINGS.items():
            if old_key in settings:
                old_value = settings.pop(old_key)
                if old_value not in values:
                    raise ValueError(f"{old_key} must be true or false, got {old_value!r}")
                settings.setdefault(new_key, values[old_value])
        return cls(**settings)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "StreamingConfig":
        """A preset of the table in presets.py (track_v0, self_forcing, longlive, causvid, ...), with overrides."""
        return cls(**{**preset_named(name).settings(), **overrides})

    @classmethod
    def track_v0(cls, **overrides) -> "StreamingConfig":
        """Track-v0 as published: relative RoPE, shift 6, a first block of 1 latent frame that stays as
        the sink, then blocks of 3 with a 6-frame window (sink + 2 rolling + the current 3)."""
        return cls.from_preset("track_v0", **overrides)

    @classmethod
    def motionstream_paper(cls, **overrides) -> "StreamingConfig":
        """The paper's streaming setting: relative RoPE, shift 6, sink 3, window 9, blocks of 3."""
        return cls.from_preset("motionstream_paper", **overrides)

    @classmethod
    def self_forcing(cls, **overrides) -> "StreamingConfig":
        """Self-Forcing's students: absolute RoPE, shift 5, blocks of 3, sink 3, window 9."""
        return cls.from_preset("self_forcing", **overrides)

    @classmethod
    def for_checkpoint(cls, has_track_head: bool, is_image_to_video: bool, **overrides) -> "StreamingConfig":
        """Best guess from what the weights hold: MotionStream-style image-to-video students with a
        track head use Track-v0's settings; text-to-video causal students use Self-Forcing's. The
        loader knows more (metadata, file name): see presets.choose_preset."""
        choice = choose_preset(CheckpointFacts(has_track_head=has_track_head, is_image_to_video=is_image_to_video))
        return cls.from_preset(choice.preset.name, **overrides)

    @classmethod
    def wan22_ti2v_5b(cls, **overrides) -> "StreamingConfig":
        """The paper's 720p student, a Wan 2.2 TI2V-5B (1280x704 video: 80x44 latents, 22x40 tokens a frame).

        The start image is latent frame 0, clean at timestep 0 ("clean_latent"), denoised beside the rest
        of the first block. Assumed, not confirmed for the 5B student: the paper's streaming setting
        (`motionstream_paper`: sink, window, blocks, shift) holds for this backbone as for Wan 2.1.
        """
        return cls.motionstream_paper(**{"image_conditioning": "clean_latent", **overrides})


@dataclasses.dataclass
class StreamConditions:
    """What a stream is conditioned on.

    text: T5 embeddings [B, L, text_dim]; image_tokens: CLIP tokens [B, N, image_dim] for
    image-to-video checkpoints; first_frame_latents: VAE encoding [B, C, F_enc, H, W] of the first
    image followed by gray frames (becomes mask + latent channels, see `FirstFrameCondition`; or,
    with the config's image_conditioning "clean_latent", its frame 0 becomes latent frame 0);
    channel_providers: further `(first_latent_frame, num_latent_frames) -> [B, C, F, H, W]`
    callables; motion_providers: the same for motion (the track head), zeroed in the null-motion
    guidance branch. Input channels are [noisy | first frame | channel providers | motion providers].
    null_text: the negative/empty prompt embedding, needed when text guidance is on.
    """

    text: torch.Tensor
    image_tokens: torch.Tensor | None = None
    first_frame_latents: torch.Tensor | None = None
    channel_providers: Sequence[ConditionChannelProvider] = ()
    motion_providers: Sequence[ConditionChannelProvider] = ()
    null_text: torch.Tensor | None = None

    def providers(self, image_conditioning: ImageConditioningMode | None = None) -> list[ConditionChannelProvider]:
        image_conditioning = image_conditioning or image_conditioning_named("channels")
        first = image_conditioning.providers(self.first_frame_latents)
        return first + list(self.channel_providers) + list(self.motion_providers)


@dataclasses.dataclass
class _BranchGroup:
    """Guidance branches run in one forward, stacked along the batch in this order, and what they carry
    from chunk to chunk. Without batched guidance every branch is a group of its own."""

    branches: tuple[Branch, ...]
    # Keys/values of every branch of the group: branch i holds batch rows [i * B, (i + 1) * B).
    cache: KVCache
    # Model inputs of the committed frames the cache holds: what a re-cache runs the model on.
    commit_inputs: CommitInputs
    context: list | None = None


@dataclasses.dataclass(frozen=True)
class LatentChunk:
    index: int
    start_frame: int
    # Clean latent frames [B, C, F, H, W] of this chunk.
    latents: torch.Tensor

    @property
    def num_frames(self) -> int:
        return self.latents.shape[2]

    @property
    def end_frame(self) -> int:
        return self.start_frame + self.num_frames


class StreamingSession:
    """Generates an endless latent video chunk by chunk with a causal student.

    on_chunk(chunk) is called with every finished chunk (e.g. to hand it to a streaming decoder);
    on_step(chunk_index, step_index, x0) with the clean prediction of every denoising step;
    interrupt() is called before every model pass and stops the chunk when it returns True (it may
    also raise its own exception, which propagates). An interrupted chunk leaves the session
    consistent: the next call generates that chunk again, with the same noise.

    The default noise is a `SeededNoise(seed)` on the model's device. batch_guidance runs the
    guidance branches of a step as one batched forward over one cache shared along the batch (equal
    to running them one by one, within float rounding); compile runs the transformer blocks
    through `torch.compile`; cuda_graphs replays steady-state chunks from captured CUDA graphs (only
    on a CUDA device; other chunks, and other devices, run eagerly).
    """

    def __init__(
        self,
        transformer: WanDiT | CausalWanModel,
        config: StreamingConfig = StreamingConfig(),
        *,
        latent_height: int,
        latent_width: int,
        batch_size: int = 1,
        seed: int = 0,
        noise: NoiseSource | None = None,
        on_chunk: Callable[[LatentChunk], None] | None = None,
        on_step: Callable[[int, int, torch.Tensor], None] | None = None,
        interrupt: Callable[[], bool] | None = None,
        batch_guidance: bool = True,
        compile: bool = False,
        cuda_graphs: bool = False,
    ):
        if isinstance(transformer, CausalWanModel):
            if transformer.rope_policy != config.rope_policy:
                raise ValueError(
                    f"the model uses the {transformer.rope_policy!r} RoPE policy but the config asks for {config.rope_policy!r}"
                )
            self.model = transformer
        else:
            self.model = CausalWanModel(transformer, config.rope_policy)
        self.config = config
        self.cache_policy: CachePolicy = cache_policy_named(config.cache_policy)
        self.prompt_change: PromptChangePolicy = prompt_change_named(config.prompt_change)
        self.latent_height = latent_height
        self.latent_width = latent_width
        self.batch_size = batch_size
        self.noise = noise if noise is not None else SeededNoise(seed, device=self.model.device)
        self.on_chunk = on_chunk
        self.on_step = on_step
        self.interrupt = interrupt

        schedule = FlowMatchSchedule(config.shift, config.num_train_timesteps)
        timesteps, sigmas = schedule.warp(config.denoising_steps)
        self._timesteps = [t.to(self.model.device) for t in timesteps]
        self._sigmas = [float(s) for s in sigmas]
        # Like Self-Forcing and LongLive, the commit timestep is fed as given (not warped); its
        # sigma, used only to re-noise, is the one that timestep denotes: t / num_train_timesteps.
        self._commit_timestep = torch.tensor(float(config.commit_step), device=self.model.device)
        self._commit_sigma = config.commit_step / config.num_train_timesteps
        self.blocks = BlockSchedule(config.block_frames)

        branches = tuple(branch_weights(config.text_scale, config.motion_scale))
        groups = [branches] if batch_guidance else [(branch,) for branch in branches]
        self._groups = [self._new_group(group) for group in groups]
        self._check_blocks_fit()
        if compile:
            self.model.compile_blocks()
        self._graphs = ChunkGraphs(self.model) if cuda_graphs else None
        self._sample_dtype = torch.promote_types(self.model.dtype, torch.float32)

        self._lock = threading.Lock()
        self._pending: dict = {}
        self._conditions: StreamConditions | None = None
        self._providers: list[ConditionChannelProvider] = []
        self._image_conditioning = image_conditioning_named(config.image_conditioning)
        self._pinned_frame: CleanFirstFrame | None = None
        self._motion_provider_count = 0
        self._motion_channels = 0
        self._chunk_index = 0
        self._next_frame = 0

    # --- state ---

    @property
    def cache(self) -> KVCache:
        """The KV cache of the conditional branch (the only one without guidance)."""
        return self.caches[Branch.CONDITIONAL]

    @property
    def caches(self) -> dict[Branch, KVCache]:
        """Each branch's keys/values: its own cache, or its rows of the cache its group shares."""
        caches = {}
        for group in self._groups:
            for row, branch in enumerate(group.branches):
                rows = slice(row * self.batch_size, (row + 1) * self.batch_size)
                caches[branch] = group.cache if len(group.branches) == 1 else BranchRows(group.cache, rows)
        return caches

    @property
    def chunk_index(self) -> int:
        """Index of the next chunk to be generated."""
        return self._chunk_index

    @property
    def next_frame(self) -> int:
        """First latent frame of the next chunk."""
        return self._next_frame

    @property
    def is_started(self) -> bool:
        return self._conditions is not None

    @property
    def conditions(self) -> StreamConditions | None:
        return self._conditions

    # --- control ---

    def start(self, conditions: StreamConditions) -> None:
        """Begins a new stream at frame 0 with these conditions."""
        with self._lock:
            self._pending.clear()
        self._set_conditions(conditions, text_changed=True)
        self._rewind()

    def reset(self, conditions: StreamConditions | None = None, seed: int | None = None) -> None:
        """Back to frame 0, with the current (or new) conditions and the same (or a new) seed."""
        if seed is not None:
            if not isinstance(self.noise, SeededNoise):
                raise ValueError("a new seed needs the default SeededNoise source")
            self.noise = SeededNoise(seed, device=self.noise.device)
        if conditions is not None:
            self.start(conditions)
            return
        if self._conditions is None:
            raise RuntimeError("the session has not been started; call start(conditions)")
        self._apply_pending(KeepCache())  # the rewind below leaves nothing cached to re-cache
        self._rewind()

    def update(
        self,
        *,
        text=_UNCHANGED,
        image_tokens=_UNCHANGED,
        first_frame_latents=_UNCHANGED,
        channel_providers=_UNCHANGED,
        motion_providers=_UNCHANGED,
        null_text=_UNCHANGED,
        prompt_change: str | None = None,
    ) -> None:
        """Changes conditions from the next chunk that starts on; safe to call from another thread.

        `prompt_change` ("keep" or "recache") overrides `config.prompt_change` for this prompt change.
        """
        policy = None if prompt_change is None else prompt_change_named(prompt_change)
        if policy is not None:
            policy.check_cache_policy(self.cache_policy)
        changes = {
            name: value
            for name, value in dict(
                text=text, image_tokens=image_tokens, first_frame_latents=first_frame_latents,
                channel_providers=channel_providers, motion_providers=motion_providers, null_text=null_text,
            ).items()
            if value is not _UNCHANGED
        }
        with self._lock:
            self._pending.update(changes)
            if policy is not None:
                self._pending["prompt_change"] = policy

    def stream(self, num_chunks: int | None = None) -> Iterator[LatentChunk]:
        """Yields chunks one at a time, forever or `num_chunks` of them."""
        produced = 0
        while num_chunks is None or produced < num_chunks:
            yield self.next_chunk()
            produced += 1

    def next_chunk(self) -> LatentChunk:
        self._apply_pending()
        if self._conditions is None:
            raise RuntimeError("the session has not been started; call start(conditions)")
        index, start = self._chunk_index, self._next_frame
        num_frames = self.blocks.size(index)
        conditions = self._condition_channels(start, num_frames)
        shape = (self.batch_size, self.model.config.out_channels, num_frames, self.latent_height, self.latent_width)

        def pin(latents: torch.Tensor) -> torch.Tensor:
            """The clean first frame, where this chunk holds it ("clean_latent" image conditioning)."""
            return latents if self._pinned_frame is None else self._pinned_frame.pin(latents, start)

        def frame_timesteps(timestep: torch.Tensor, model_input: torch.Tensor) -> torch.Tensor:
            if self._pinned_frame is None or not self._pinned_frame.pinned_frames(start, num_frames):
                return timestep
            return self._pinned_frame.timesteps(timestep, model_input.shape[0], start, num_frames)

        def branch_velocities(x: torch.Tensor, timestep: torch.Tensor) -> dict[Branch, torch.Tensor]:
            velocities = {}
            for group in self._groups:
                self._check_interrupt()
                model_input = self._group_input(x, conditions, group)
                velocity = self._forward_chunk(model_input, frame_timesteps(timestep, model_input), group, start)
                velocities.update(zip(group.branches, velocity.to(self._sample_dtype).split(self.batch_size)))
            return velocities

        x = pin(self._noise_tensor(self.noise.initial(index, shape), shape))
        x0 = x
        for step, (timestep, sigma) in enumerate(zip(self._timesteps, self._sigmas)):
            if step > 0:
                renoise = self._noise_tensor(self.noise.renoise(index, step, shape), shape)
                x = pin(add_noise(x0, renoise, sigma))
            velocities = branch_velocities(x, timestep)
            velocity = guided_velocity(velocities.__getitem__, self.config.text_scale, self.config.motion_scale)
            x0 = pin(predicted_clean(x, velocity.to(self._sample_dtype), sigma))
            if self.on_step is not None:
                self.on_step(index, step, x0)

        committed = x0
        if self.config.commit_renoise and self._commit_sigma > 0:
            committed = pin(add_noise(x0, self._noise_tensor(self.noise.commit(index, shape), shape), self._commit_sigma))
        for group in self._groups:
            self._check_interrupt()
            commit_input = self._group_input(committed, conditions, group)
            self._forward_chunk(commit_input, frame_timesteps(self._commit_timestep, commit_input), group, start)
            group.commit_inputs.remember(commit_input, start)

        self._chunk_index += 1
        self._next_frame += num_frames
        chunk = LatentChunk(index=index, start_frame=start, latents=x0)
        if self.on_chunk is not None:
            self.on_chunk(chunk)
        return chunk

    # --- internals ---

    def _new_group(self, branches: tuple[Branch, ...]) -> _BranchGroup:
        config = self.config
        cache = self.model.new_cache(
            self.batch_size * len(branches), self.latent_height, self.latent_width, config.sink_frames,
            config.window_frames, self.cache_policy,
        )
        return _BranchGroup(branches, cache, commit_inputs=self.cache_policy.commit_inputs(cache))

    def _rewind(self) -> None:
        self._chunk_index = 0
        self._next_frame = 0
        for group in self._groups:
            group.cache.restart()

    def _check_blocks_fit(self) -> None:
        # The widest non-sink block must fit the rolling part of the cache; plan() says why if not.
        probe_start = max(self.config.sink_frames, self.blocks.start(len(self.blocks.sizes) - 1))
        for size in set(self.blocks.sizes):
            self._groups[0].cache.plan(probe_start, size)

    def _set_conditions(self, conditions: StreamConditions, text_changed: bool) -> None:
        if not isinstance(conditions, StreamConditions):
            raise ValueError(f"conditions must be StreamConditions, got {type(conditions).__name__}")
        text = conditions.text
        if text.ndim != 3 or text.shape[0] != self.batch_size:
            raise ValueError(f"text embeddings must be [{self.batch_size}, L, text_dim], got {tuple(text.shape)}")
        branches = [branch for group in self._groups for branch in group.branches]
        if Branch.NULL_TEXT in branches and conditions.null_text is None:
            raise ValueError("text guidance (text_scale > 0) needs the negative/empty prompt embedding (null_text)")
        if Branch.NULL_MOTION in branches and not conditions.motion_providers:
            raise ValueError("motion guidance (motion_scale > 0) needs motion_providers (the track head)")
        pinned_frame = self._image_conditioning.pinned_frame(conditions.first_frame_latents)
        self._check_pinned_frame(pinned_frame)
        if text_changed:
            for group in self._groups:
                contexts = [
                    self.model.encode_context(text if branch.uses_text else conditions.null_text, conditions.image_tokens)
                    for branch in group.branches
                ]
                group.context = contexts[0] if len(contexts) == 1 else stack_layer_contexts(contexts)
        self._providers = conditions.providers(self._image_conditioning)
        self._pinned_frame = pinned_frame
        self._motion_provider_count = len(conditions.motion_providers)
        self._conditions = conditions

    def _check_pinned_frame(self, pinned_frame: CleanFirstFrame | None) -> None:
        if pinned_frame is None:
            return
        expected = (self.batch_size, self.model.config.out_channels, 1, self.latent_height, self.latent_width)
        if tuple(pinned_frame.latent.shape) != expected:
            raise ValueError(
                f"first_frame_latents frame 0 has shape {tuple(pinned_frame.latent.shape)}; with image_conditioning "
                f"'clean_latent' it becomes latent frame 0, so it must be {list(expected)} "
                "(batch, the model's output channels, 1 frame, latent height, width)"
            )

    def _apply_pending(self, prompt_change_override: PromptChangePolicy | None = None) -> None:
        """Applies the pending updates. A prompt change is handled by the override if given, else by
        the policy `update` asked for, else by the config's."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        if self._conditions is None:
            raise RuntimeError("the session has not been started; call start(conditions)")
        requested = pending.pop("prompt_change", self.prompt_change)
        text_changed = bool({"text", "image_tokens", "null_text"} & set(pending))
        self._set_conditions(dataclasses.replace(self._conditions, **pending), text_changed)
        if text_changed:
            (prompt_change_override or requested).after_prompt_change(
                self.model, self._groups, self._next_frame, self.blocks, self._commit_timestep
            )

    def _condition_channels(self, start: int, num_frames: int) -> torch.Tensor | None:
        parts = []
        expected = (self.batch_size, num_frames, self.latent_height, self.latent_width)
        for position, provider in enumerate(self._providers):
            part = provider(start, num_frames)
            if not isinstance(part, torch.Tensor) or part.ndim != 5 or (part.shape[0], *part.shape[2:]) != expected:
                got = tuple(part.shape) if isinstance(part, torch.Tensor) else type(part).__name__
                raise ValueError(
                    f"condition channel provider {position} ({_describe(provider)}) returned {got} for frames "
                    f"[{start}, {start + num_frames}); expected [{self.batch_size}, C, {num_frames}, "
                    f"{self.latent_height}, {self.latent_width}]"
                )
            parts.append(part.to(device=self.model.device, dtype=self._sample_dtype))
        condition_channels = sum(p.shape[1] for p in parts)
        config = self.model.config
        if config.out_channels + condition_channels != config.in_channels:
            layout = " + ".join([f"{config.out_channels} noisy"] + [f"{p.shape[1]} ({_describe(pr)})" for p, pr in zip(parts, self._providers)])
            hint = ""
            if self._conditions.first_frame_latents is not None and self._pinned_frame is None:
                hint = (". A model that takes the start image as its clean first latent frame (Wan 2.2 TI2V) "
                        "needs the streaming config's image_conditioning='clean_latent'")
            raise ValueError(
                f"the model takes {config.in_channels} input channels but the stream provides {layout} = "
                f"{config.out_channels + condition_channels}{hint}"
            )
        self._motion_channels = sum(p.shape[1] for p in parts[len(parts) - self._motion_provider_count:]) \
            if self._motion_provider_count else 0
        return torch.cat(parts, dim=1) if parts else None

    def _forward_chunk(self, model_input: torch.Tensor, timestep: torch.Tensor, group: _BranchGroup, start: int):
        forward = self.model.forward_chunk if self._graphs is None else self._graphs.forward_chunk
        return forward(model_input, timestep, group.context, group.cache, start)

    def _group_input(self, latents: torch.Tensor, conditions: torch.Tensor | None, group: _BranchGroup) -> torch.Tensor:
        inputs = [self._model_input(latents, conditions, with_motion=branch.uses_motion) for branch in group.branches]
        return inputs[0] if len(inputs) == 1 else torch.cat(inputs)

    def _model_input(self, latents: torch.Tensor, conditions: torch.Tensor | None, with_motion: bool = True) -> torch.Tensor:
        if conditions is None:
            return latents
        if not with_motion and self._motion_channels:
            conditions = conditions.clone()
            conditions[:, conditions.shape[1] - self._motion_channels:] = 0  # the "null motion" input
        return torch.cat((latents, conditions), dim=1)

    def _noise_tensor(self, noise: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        if tuple(noise.shape) != shape:
            raise ValueError(f"the noise source returned shape {tuple(noise.shape)}, expected {shape}")
        return noise.to(device=self.model.device, dtype=self._sample_dtype)

    def _check_interrupt(self) -> None:
        if self.interrupt is not None and self.interrupt():
            raise StreamInterrupted(f"interrupted while generating chunk {self._chunk_index}")


def _describe(provider) -> str:
    return getattr(provider, "__qualname__", None) or type(provider).__name__
