"""Two versions of the code side by side: streaming ms/chunk at a chunk index, a git ref against another ref or the working tree.

CPU, a small random-weight model, one thread by default. Each version other than the working tree is
checked out into a temporary `git worktree` (removed at the end, also on an error or Ctrl+C). In
each round every version runs once, in a fresh Python process whose PYTHONPATH is that version's
directory (so it imports that version's motionstream_core, and the child checks that it did), with
torch/OMP/MKL threads fixed. The order alternates round by round (baseline first, then candidate
first, ...), so a change in the machine's load hits both alike. Each process builds the same model
(same dims, same seed) and stream (same StreamingConfig preset, conditions and noise seed) through
that version's own StreamingSession, streams chunks 0 .. chunk+measure-1 and times every chunk,
from the start of its first model pass to its committed latents.

    python bench/bench_versions.py --baseline 50fcb66 [--candidate worktree] [--chunk 100] [--measure 5]
        [--rounds 5] [--threads 1] [--config small|track_v0_tiny|guided] [--dim 128 --layers 2 ...]
    python bench/bench_versions.py --baseline HEAD --smoke   # tiny dims, chunk 3, one round: proves it runs

Issue 22's "today's code" is 50fcb66, the parent of 125ca63 (RoPE tables once per grid, visible
keys rotated once per chunk, no host syncs, batched guidance); a shallow clone may lack it
(`git fetch --unshallow`).

How to read the table: one row per round with each version's median ms/chunk over the measured
chunks [chunk, chunk+measure), as process CPU time / wall time, and the ratio candidate/baseline of
that round; the last row holds the medians over rounds. CPU time (time.process_time) is the primary
figure: on a shared machine wall time also measures the other processes. A ratio below 1 means the
candidate is faster. The load average before and after says how busy the machine was. Below the
table: each version's cache geometry per guidance branch and its model and streaming configs as it
read them back (they must agree for the comparison to mean anything; a version may have fields the
other lacks), and how far the two versions' last chunks differ (same seed: a faster step should
compute the same video, up to float rounding). Nothing here is asserted: it only prints.

The configs (dims can be overridden with flags): `small` is bench_streaming's CPU model (dim 128, 2
layers, 12x16 latent, the paper's streaming setting; about 50 ms/chunk on one thread);
`track_v0_tiny` the same model with Track-v0's input layout (52 channels: noisy, mask, first-frame
latent, tracks) and streaming setting (a first block of 1 frame, blocks of 3, sink 1, window 6);
`guided` the small model with joint text-motion guidance (three branches per step).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKING_TREE = "worktree"
RESULT_PREFIX = "BENCH_VERSIONS_RESULT "
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")

# Text encoder geometry shared by every config (only the cross-attention reads it).
TEXT = dict(text_dim=64, freq_dim=64, text_len=16)
LATENT_CHANNELS = 16
MASK_CHANNELS = 4  # Wan image-to-video: one mask channel per pixel frame of a latent frame


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """A model and a stream that every version can build with the API both have."""

    description: str
    dim: int = 128
    ffn_dim: int = 256
    num_heads: int = 1
    num_layers: int = 2
    latent: tuple[int, int] = (12, 16)
    # A StreamingConfig classmethod (motionstream_paper and track_v0 exist at 50fcb66 and after).
    streaming: str = "motionstream_paper"
    text_scale: float = 0.0
    motion_scale: float = 0.0
    first_frame: bool = False  # mask + first-frame latent channels (image-to-video)
    track_channels: int = 0  # random tracks, given as a motion provider (what the track head gives)

    @property
    def in_channels(self) -> int:
        first_frame = MASK_CHANNELS + LATENT_CHANNELS if self.first_frame else 0
        return LATENT_CHANNELS + first_frame + self.track_channels


CONFIGS = {
    "small": BenchConfig("bench_streaming's CPU model, text only, the paper's streaming setting"),
    "track_v0_tiny": BenchConfig("Track-v0's input layout and streaming setting on the small model",
                                 streaming="track_v0", first_frame=True, track_channels=16),
    "guided": BenchConfig("the small model with joint text-motion guidance (3 branches per step)",
                          text_scale=3.0, motion_scale=1.5, track_channels=16),
}
SMOKE_DIMS = dict(dim=32, ffn_dim=64, num_heads=2, num_layers=1, latent=(4, 4))


# --- the child: runs inside one version's directory -------------------------------------------------------


class RandomTracks:
    """Stand-in for the track head: fixed random channels for any window of frames."""

    def __init__(self, channels: int, latent, generator, horizon: int = 64):
        import torch

        self.encoded = torch.randn(1, channels, horizon, *latent, generator=generator)

    def __call__(self, first_latent_frame: int, num_latent_frames: int):
        import torch

        frames = torch.arange(first_latent_frame, first_latent_frame + num_latent_frames)
        return self.encoded.index_select(2, frames % self.encoded.shape[2])


def _cache_geometry(session) -> dict:
    """Each guidance branch's view of the cache (comparable across versions) and the bytes actually held."""
    branches = {}
    storage = {}
    for branch, cache in session.caches.items():
        keys = cache.keys
        branches[getattr(branch, "name", str(branch))] = dict(
            layers=len(keys), keys=list(keys[0].shape), dtype=str(keys[0].dtype),
            sink_frames=getattr(cache, "sink_frames", None), window_frames=cache.window_frames,
            held_frames=len(cache.held_frames(session.next_frame)),
        )
        # Batched guidance (125ca63 on) gives each branch rows of one shared cache.
        shared = getattr(cache, "shared", cache)
        storage[id(shared)] = (type(shared).__name__, shared.nbytes())
    return dict(branches=branches, caches_held=sorted(name for name, _ in storage.values()),
                cache_mib=sum(size for _, size in storage.values()) / 2**20, next_frame=session.next_frame)


def child_main(spec: dict) -> int:
    import torch

    import motionstream_core

    try:
        from motionstream_core.model.config import WanConfig
        from motionstream_core.streaming.session import StreamConditions, StreamingConfig, StreamingSession
        from motionstream_core.testing.random_model import random_wan_dit
    except ImportError as error:
        raise SystemExit(f"this version lacks the API the benchmark uses (WanConfig, StreamingSession, "
                         f"random_wan_dit): {error}") from None

    torch.set_num_threads(spec["threads"])
    torch.set_grad_enabled(False)
    config = BenchConfig(**{**spec["config"], "latent": tuple(spec["config"]["latent"])})
    model_config = WanConfig(dim=config.dim, ffn_dim=config.ffn_dim, num_heads=config.num_heads,
                             num_layers=config.num_layers, in_channels=config.in_channels,
                             out_channels=LATENT_CHANNELS, **TEXT)
    model = random_wan_dit(model_config, seed=spec["seed"])
    streaming = getattr(StreamingConfig, config.streaming)(text_scale=config.text_scale,
                                                           motion_scale=config.motion_scale)
    generator = torch.Generator().manual_seed(spec["seed"])
    text = torch.randn(1, TEXT["text_len"], TEXT["text_dim"], generator=generator)
    null_text = torch.randn(1, TEXT["text_len"], TEXT["text_dim"], generator=generator)
    first_frame = torch.randn(1, LATENT_CHANNELS, 2, *config.latent, generator=generator) if config.first_frame else None
    tracks = [RandomTracks(config.track_channels, config.latent, generator)] if config.track_channels else []
    # Keyword arguments both versions take; newer options (batch_guidance, compile, cuda_graphs) keep
    # their defaults, so each version runs as a user would run it.
    session = StreamingSession(model, streaming, latent_height=config.latent[0], latent_width=config.latent[1],
                               seed=spec["seed"])
    session.start(StreamConditions(text=text, first_frame_latents=first_frame, motion_providers=tracks,
                                   null_text=null_text if config.text_scale else None))

    cpu, wall = [], []
    chunk = None
    for index in range(spec["chunk"] + spec["measure"]):
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        chunk = session.next_chunk()
        cpu_ms, wall_ms = (time.process_time() - cpu_started) * 1e3, (time.perf_counter() - wall_started) * 1e3
        if index >= spec["chunk"]:
            cpu.append(cpu_ms)
            wall.append(wall_ms)
    if spec.get("latents_path"):
        torch.save(chunk.latents.clone(), spec["latents_path"])
    result = dict(
        cpu_ms=cpu, wall_ms=wall, module=str(Path(motionstream_core.__file__).resolve().parent),
        torch_threads=torch.get_num_threads(), geometry=_cache_geometry(session),
        model_config=model_config.to_dict(), streaming_config=dataclasses.asdict(streaming),
    )
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)
    return 0


# --- the parent: checks versions out, runs the children in turns, prints the table ------------------------


@dataclasses.dataclass
class Version:
    label: str  # "baseline" or "candidate"
    ref: str
    directory: Path
    description: str
    temporary: bool


def git(*args: str) -> str:
    result = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def resolve(ref: str, label: str) -> str:
    try:
        return git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except RuntimeError:
        shallow = git("rev-parse", "--is-shallow-repository") == "true"
        hint = " (this clone is shallow: `git fetch --unshallow` brings the history)" if shallow else ""
        raise SystemExit(f"--{label}: {ref!r} is not a commit in {REPO_ROOT}{hint}") from None


def describe_commit(sha: str) -> str:
    line = git("log", "-1", "--format=%h %s", sha)
    return line if len(line) <= 90 else line[:87] + "..."



@contextlib.contextmanager
def checked_out(refs: dict[str, str]):
    """{label: ref} -> {label: Version}; refs other than the working tree go into temporary worktrees."""
    temporary_root = Path(tempfile.mkdtemp(prefix="bench_versions_"))
    added = []
    try:
        versions = {}
        for label, ref in refs.items():
            if ref == WORKING_TREE:
                dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
                head = git("log", "-1", "--format=%h")
                versions[label] = Version(label, ref, REPO_ROOT, f"working tree {REPO_ROOT} (HEAD {head}"
                                          f"{' + uncommitted changes' if dirty else ''})", temporary=False)
                continue
            sha = resolve(ref, label)
            directory = temporary_root / label
            added.append(directory)
            git("worktree", "add", "--detach", str(directory), sha)
            versions[label] = Version(label, ref, directory, f"{ref} = {describe_commit(sha)}", temporary=True)
        yield versions
    finally:
        for directory in added:
            with contextlib.suppress(RuntimeError):
                git("worktree", "remove", "--force", str(directory))
        with contextlib.suppress(RuntimeError):
            git("worktree", "prune")
        shutil.rmtree(temporary_root, ignore_errors=True)


def run_child(version: Version, spec: dict, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(version.directory), **{name: str(threads) for name in THREAD_VARIABLES}}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    result = subprocess.run(command, cwd=version.directory, env=env, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if result.returncode or not lines:
        raise SystemExit(f"the {version.label} ({version.description}) failed, exit {result.returncode}:\n"
                         f"{(result.stdout + result.stderr)[-3000:]}")
    report = json.loads(lines[-1][len(RESULT_PREFIX):])
    if Path(report["module"]) != (version.directory / "motionstream_core").resolve():
        raise SystemExit(f"the {version.label} imported motionstream_core from {report['module']}, "
                         f"not from {version.directory}: the comparison would be void")
    return report


def load_average() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def _differences(first: dict, second: dict) -> list[str]:
    shared = sorted(set(first) & set(second))
    changed = [f"{key}: {first[key]!r} vs {second[key]!r}" for key in shared if first[key] != second[key]]
    only = [f"{key} only in {name}" for name, mine, other in (("baseline", first, second), ("candidate", second, first))
            for key in sorted(set(mine) - set(other))]
    return changed + only


def _geometry_line(geometry: dict) -> str:
    parts = []
    for branch, cache in geometry["branches"].items():
        parts.append(f"{branch}: {cache['layers']} layer(s) x keys {cache['keys']} {cache['dtype']}, sink "
                     f"{cache['sink_frames']}, window {cache['window_frames']}, {cache['held_frames']} frames held")
    return (f"{'; '.join(parts)}; next frame {geometry['next_frame']}; held as "
            f"{' + '.join(geometry['caches_held'])}, {geometry['cache_mib']:.2f} MiB")


def print_report(versions: dict[str, Version], rounds: list[dict], config: BenchConfig, args, load_before: str,
                 load_after: str, latents: dict[str, Path]) -> None:
    baseline, candidate = versions["baseline"], versions["candidate"]
    first_report = rounds[0]["reports"]
    streaming = first_report["baseline"]["streaming_config"]
    _, patch_height, patch_width = first_report["baseline"]["model_config"]["patch_size"]
    tokens = (config.latent[0] // patch_height) * (config.latent[1] // patch_width)
    print(f"baseline:  {baseline.description}{' (temporary git worktree)' if baseline.temporary else ''}")
    print(f"candidate: {candidate.description}{' (temporary git worktree)' if candidate.temporary else ''}")
    print(f"config {args.config}: {config.description}; dim {config.dim}, ffn {config.ffn_dim}, "
          f"{config.num_heads} head(s), {config.num_layers} layer(s), {config.in_channels} input channels, latent "
          f"{config.latent[0]}x{config.latent[1]} ({tokens} tokens/frame); StreamingConfig.{config.streaming}: blocks "
          f"{streaming['block_frames']}, sink {streaming['sink_frames']}, window {streaming['window_frames']}, "
          f"{len(streaming['denoising_steps'])} steps + commit, guidance text {config.text_scale} / motion "
          f"{config.motion_scale}")
    print(f"measured: chunks [{args.chunk}, {args.chunk + args.measure}) of each stream, median per run; "
          f"{args.threads} thread(s) (torch and {', '.join(THREAD_VARIABLES)}); {len(rounds)} round(s), a fresh "
          f"process per version per round, the order alternating")
    print(f"load average (1/5/15 min) before: {load_before}, after: {load_after} on {os.cpu_count()} CPU(s)")
    print()
    header = (f"{'round':>6}  {'first':<9}  {'baseline ms/chunk':>19}  {'candidate ms/chunk':>19}  "
              f"{'candidate/baseline':>19}")
    print(header)
    print(f"{'':>6}  {'':<9}  {'cpu / wall':>19}  {'cpu / wall':>19}  {'cpu / wall':>19}")
    columns = {key: [] for key in ("b_cpu", "b_wall", "c_cpu", "c_wall", "r_cpu", "r_wall")}
    for number, round_ in enumerate(rounds, 1):
        b, c = round_["reports"]["baseline"], round_["reports"]["candidate"]
        row = dict(b_cpu=statistics.median(b["cpu_ms"]), b_wall=statistics.median(b["wall_ms"]),
                   c_cpu=statistics.median(c["cpu_ms"]), c_wall=statistics.median(c["wall_ms"]))
        row["r_cpu"], row["r_wall"] = row["c_cpu"] / row["b_cpu"], row["c_wall"] / row["b_wall"]
        for key, value in row.items():
            columns[key].append(value)
        print(_row(str(number), round_["first"], row))
    print(_row("median", "", {key: statistics.median(values) for key, values in columns.items()}))
    print()
    print("CPU time (time.process_time) is the primary figure; wall time also counts the machine's other load. "
          "Not asserted.")
    for label in ("baseline", "candidate"):
        print(f"cache per branch after the last chunk, {label}: {_geometry_line(first_report[label]['geometry'])}")
    b, c = first_report["baseline"], first_report["candidate"]
    same_geometry = b["geometry"]["branches"] == c["geometry"]["branches"]
    print(f"  geometry per branch: {'same' if same_geometry else 'DIFFERENT: not the same configuration'} "
          "(how the caches are held may differ: batched guidance shares one cache between branches)")
    for name in ("model_config", "streaming_config"):
        differences = _differences(b[name], c[name])
        print(f"  {name} as each version read it back: {'same' if not differences else '; '.join(differences)}")
    print(f"  threads in the children: baseline {b['torch_threads']}, candidate {c['torch_threads']}")
    print(f"  last chunk's latents: {_latent_difference(latents)} (same seed; not asserted)")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")


def _row(name: str, first: str, row: dict) -> str:
    return (f"{name:>6}  {first:<9}  {row['b_cpu']:>9.2f} / {row['b_wall']:<7.2f}  "
            f"{row['c_cpu']:>9.2f} / {row['c_wall']:<7.2f}  {row['r_cpu']:>9.3f} / {row['r_wall']:<7.3f}")


def _latent_difference(latents: dict[str, Path]) -> str:
    import torch

    baseline = torch.load(latents["baseline"], weights_only=True).double()
    candidate = torch.load(latents["candidate"], weights_only=True).double()
    if baseline.shape != candidate.shape:
        return f"shapes differ: {tuple(baseline.shape)} vs {tuple(candidate.shape)}"
    relative = (candidate - baseline).norm() / baseline.norm().clamp_min(1e-30)
    return f"|candidate - baseline| / |baseline| = {relative.item():.2e}, max |difference| " \
           f"{(candidate - baseline).abs().max().item():.2e}"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="git ref of the baseline (issue 22's: 50fcb66)")
    parser.add_argument("--candidate", default=WORKING_TREE,
                        help=f"git ref of the candidate, or {WORKING_TREE!r}: this working tree, in place (default)")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small", help="model and stream (default small)")
    parser.add_argument("--chunk", type=int, default=100, help="first measured chunk index (default 100)")
    parser.add_argument("--measure", type=int, default=5, help="chunks measured from --chunk on (default 5)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch/OMP/MKL threads (default 1, the steadiest)")
    parser.add_argument("--seed", type=int, default=0, help="weights, conditions and noise seed")
    parser.add_argument("--dim", type=int, help="model width (overrides the config's)")
    parser.add_argument("--ffn-dim", type=int, help="feed-forward width")
    parser.add_argument("--heads", type=int, help="attention heads")
    parser.add_argument("--layers", type=int, help="transformer blocks")
    parser.add_argument("--latent", help="latent HxW, e.g. 12x16 (each divisible by 2, the patch size)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny dims, chunk 3, 2 measured chunks, 1 round: proves the script runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None and not args.baseline:
        parser.error("--baseline is required (a git ref, e.g. 50fcb66 for issue 22, or HEAD)")
    if args.smoke:
        args.chunk, args.measure, args.rounds = 3, 2, 1
    for name in ("measure", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.chunk < 0:
        parser.error("--chunk must be non-negative")
    return parser, args


def bench_config(parser, args) -> BenchConfig:
    overrides = dict(SMOKE_DIMS) if args.smoke else {}
    for flag, field in (("dim", "dim"), ("ffn_dim", "ffn_dim"), ("heads", "num_heads"), ("layers", "num_layers")):
        if getattr(args, flag) is not None:
            overrides[field] = getattr(args, flag)
    if args.latent:
        try:
            height, width = (int(part) for part in args.latent.lower().split("x"))
        except ValueError:
            parser.error(f"--latent must be HxW, e.g. 12x16, got {args.latent!r}")
        overrides["latent"] = (height, width)
    config = dataclasses.replace(CONFIGS[args.config], **overrides)
    if min(config.dim, config.ffn_dim, config.num_heads, config.num_layers) < 1:
        parser.error("--dim, --ffn-dim, --heads and --layers must be positive")
    if config.dim % config.num_heads or (config.dim // config.num_heads) % 2:
        parser.error(f"--dim {config.dim} must split into --heads {config.num_heads} heads of even width")
    if any(size < 2 or size % 2 for size in config.latent):
        parser.error(f"--latent sides must be positive and even (patch size 2), got {config.latent}")
    return config


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    if args.child is not None:
        return child_main(json.loads(args.child))
    config = bench_config(parser, args)
    try:
        git("rev-parse", "--show-toplevel")
    except (RuntimeError, OSError) as error:
        raise SystemExit(f"{REPO_ROOT} must be a git checkout with git installed: {error}") from None
    # A terminated run still removes its worktrees.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    load_before = load_average()
    with checked_out({"baseline": args.baseline, "candidate": args.candidate}) as versions, \
            tempfile.TemporaryDirectory(prefix="bench_versions_latents_") as latents_dir:
        latents = {label: Path(latents_dir) / f"{label}.pt" for label in versions}
        spec = dict(config=dataclasses.asdict(config), chunk=args.chunk, measure=args.measure,
                    threads=args.threads, seed=args.seed)
        rounds = []
        for number in range(args.rounds):
            order = ["baseline", "candidate"] if number % 2 == 0 else ["candidate", "baseline"]
            reports = {}
            for label in order:
                child_spec = {**spec, "latents_path": str(latents[label]) if number == 0 else None}
                reports[label] = run_child(versions[label], child_spec, args.threads)
            rounds.append(dict(first=order[0], reports=reports))
            print(f"round {number + 1}/{args.rounds} done", flush=True)
        load_after = load_average()
        print()
        print_report(versions, rounds, config, args, load_before, load_after, latents)
    return 0


if __name__ == "__main__":
    sys.exit(main())
