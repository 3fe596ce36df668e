"""Fuzzing the weight loaders with random and mutated files.

Whatever the file (truncated or garbled safetensors headers, garbage JSON metadata, wrong dtypes and
shapes, pickles whose dicts contain themselves, hostile shard indexes, malformed config.json), every
loader either loads it or raises a ValueError that names the file and says what is wrong, within a
per-case time limit.
"""

import functools
import itertools
import json
import math
import struct

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from motionstream_core import load_dit, read_state_dict
from motionstream_core.codecs.taehv import TinyVAE
from motionstream_core.model.weights import read_config_file
from case_time_limit import time_limit
from tiny_models import random_dit, tiny_config

# dim 128: the head count is inferred (one 128-wide head), so files without a config load too.
CONFIG = tiny_config(dim=128, num_heads=1, ffn_dim=32, num_layers=1, text_dim=16, in_channels=4, out_channels=4)
CASE_SECONDS = 10  # a generous bound for one case on a busy 2-core machine; loaders used to hang forever
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
ST_DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "U16",
             "U32", "U64", "C64", "F8_E8M0", "F4", "Q4", ""]
ST_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
            "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8, "C64": 8}
TORCH_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.int64, torch.int32,
                torch.uint8, torch.bool, torch.int8, torch.complex64]

_DIT = {k: v.half() for k, v in random_dit(CONFIG).state_dict().items()}
DIT_KEYS = sorted(_DIT)
VAE_SHAPES = {k: tuple(v.shape) for k, v in TinyVAE(channels_last=False).state_dict().items()}
VAE_KEYS = sorted(VAE_SHAPES)
_names = itertools.count()


LOADERS = {
    "load_dit": lambda path: load_dit(path, dtype=torch.float32),
    "read_state_dict": read_state_dict,
    "tiny_vae": TinyVAE.from_file,
    "config": read_config_file,
}


def check_loader(loader, path, named=None):
    """Runs one loader on one file: it loads, or fails with a ValueError naming `named` (default `path`)."""
    named = str(named or path)
    with time_limit(CASE_SECONDS):
        try:
            LOADERS[loader](path)
        except ValueError as error:
            message = str(error)
            assert named in message, f"{loader}: the message does not name {named}: {message}"
            assert len(message) > len(named) + 20, f"{loader}: the message does not say what is wrong: {message}"
            event(f"{loader}: refused")
            return "refused"
    event(f"{loader}: loaded")
    return "loaded"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def dit_safetensors(workdir):
    path = workdir / "base.safetensors"
    save_file(_DIT, path)
    return path.read_bytes()


def fresh(workdir, suffix):
    """A new file name per case: a file mapped by an earlier case is never overwritten."""
    return workdir / f"case{next(_names)}{suffix}"


# -- safetensors: byte-level mutations of a valid file ------------------------------------------


def mutate(data: bytes, operations) -> bytes:
    data = bytearray(data)
    for operation, position, value in operations:
        position = position % (len(data) + 1)
        if operation == "truncate":
            del data[position:]
        elif operation == "set" and position < len(data):
            data[position] = value[0] if value else 0
        elif operation == "insert":
            data[position:position] = value
        elif operation == "delete":
            del data[position : position + max(1, len(value))]
        elif operation == "length":
            data[:8] = struct.pack("<Q", int.from_bytes(value.ljust(8, b"\0")[:8], "little"))
    return bytes(data)


def operations(header_end):
    near_header = st.integers(0, header_end + 16)
    anywhere = st.integers(0, 2**20)
    return st.lists(
        st.tuples(
            st.sampled_from(["truncate", "set", "set", "insert", "delete", "length"]),
            st.one_of(near_header, near_header, anywhere),
            st.binary(min_size=0, max_size=12),
        ),
        min_size=1,
        max_size=4,
    )


@settings(FUZZ, max_examples=120)
@given(data=st.data(), loader=st.sampled_from(["load_dit", "read_state_dict", "tiny_vae", "config"]))
def test_mutated_safetensors(workdir, dit_safetensors, data, loader):
    header_end = 8 + struct.unpack("<Q", dit_safetensors[:8])[0]
    path = fresh(workdir, ".safetensors")
    path.write_bytes(mutate(dit_safetensors, data.draw(operations(header_end))))
    check_loader(loader, path)
    path.unlink()


# -- safetensors: headers built from random parts ----------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
shapes = st.lists(st.integers(0, 6), max_size=4) | st.sampled_from(list(VAE_SHAPES.values()) + [(1, 400_000, 1, 1)])


@st.composite
def safetensors_files(draw):
    """Headers that are mostly self-consistent (so the loaders' own checks are reached), then perturbed."""
    names = st.sampled_from(DIT_KEYS + VAE_KEYS + ["__metadata__", "", "blocks.99999999999999999999.x"])
    entries, offset = {}, 0
    for name in draw(st.lists(names | st.text(max_size=10), max_size=6, unique=True)):
        dtype = draw(st.sampled_from(ST_DTYPES))
        shape = list(draw(shapes))
        size = math.prod(shape) * ST_SIZES.get(dtype, 1)
        if size > 1 << 16:
            shape[0], size = 0, 0  # a huge tensor of zero elements: shapes that describe a huge model
            shape[1:] = [dim * 10**6 for dim in shape[1:]]
        entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if draw(st.booleans()):
        entries["__metadata__"] = draw(
            st.dictionaries(
                st.sampled_from(["config", "format", "streaming_config"]) | st.text(max_size=6),
                st.text(max_size=30) | json_values.map(json.dumps) | st.sampled_from([json.dumps(CONFIG.to_dict())]),
                max_size=3,
            )
        )
    for _ in range(draw(st.integers(0, 2))):  # perturb one field of one entry
        if entries:
            name = draw(st.sampled_from(sorted(entries)))
            if isinstance(entries[name], dict) and name != "__metadata__":
                entries[name][draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(json_values)
    header = json.dumps(entries).encode()
    if draw(st.integers(0, 9)) == 0:
        header = draw(st.binary(max_size=64))
    header += b" " * draw(st.integers(0, 7))
    body = draw(st.binary(min_size=offset, max_size=offset)) if draw(st.booleans()) else bytes(offset)
    body = body[: draw(st.integers(0, len(body)))] if draw(st.integers(0, 5)) == 0 else body
    return struct.pack("<Q", len(header)) + header + body


@settings(FUZZ, max_examples=110)
@given(contents=safetensors_files(), loader=st.sampled_from(["load_dit", "read_state_dict", "tiny_vae", "config"]))
def test_random_safetensors_headers(workdir, contents, loader):
    path = fresh(workdir, ".safetensors")
    path.write_bytes(contents)
    check_loader(loader, path)
    path.unlink()


# -- valid files of wrong dtypes and shapes ----------------------------------------------------


@functools.lru_cache(maxsize=None)
def vae_zeros():
    return {k: torch.zeros(s, dtype=torch.float16) for k, s in VAE_SHAPES.items()}


@st.composite
def state_dicts(draw):
    """The tiny DiT's (or the Tiny VAE's) names with some dtypes and shapes changed, keys dropped or added."""
    for_vae, every_key = draw(st.booleans()), draw(st.booleans())
    reference = vae_zeros() if for_vae else _DIT
    keys = sorted(reference)
    # A whole Tiny VAE that fits takes seconds to build on a busy CPU, so whole ones always get a change.
    chosen = draw(st.lists(st.sampled_from(keys), min_size=int(for_vae and every_key), max_size=4, unique=True))
    state = {}
    for key in keys if every_key else chosen:
        if key not in chosen:
            state[key] = reference[key]
            continue
        action = draw(st.sampled_from(["dtype", "shape", "drop"]))
        if action == "drop":
            continue
        shape = torch.Size(draw(st.lists(st.integers(0, 5), max_size=4))) if action == "shape" else reference[key].shape
        dtype = draw(st.sampled_from(TORCH_DTYPES)) if action == "dtype" else torch.float16
        state[key] = torch.zeros(shape, dtype=dtype)
    for extra in draw(st.lists(st.text(min_size=1, max_size=10), max_size=2)):
        state[extra] = torch.zeros(draw(st.integers(0, 3)), dtype=draw(st.sampled_from(TORCH_DTYPES)))
    return for_vae, state


@settings(FUZZ, max_examples=60)
@given(case=state_dicts(), suffix=st.sampled_from([".safetensors", ".pt"]))
def test_wrong_dtypes_and_shapes(workdir, case, suffix):
    for_vae, state = case
    path = fresh(workdir, suffix)
    if suffix == ".pt":
        torch.save({"state_dict": state}, path)
    else:
        save_file(state, path)
    outcome = check_loader("tiny_vae" if for_vae else "load_dit", path)
    if any(not v.is_floating_point() for v in state.values()):
        assert outcome == "refused", "an integer, bool or complex tensor was loaded as a weight"
    path.unlink()


# -- pickles: nested checkpoints, cycles, odd keys and values, corrupt archives ----------------

pickle_leaves = st.one_of(
    st.none(), st.integers(-5, 5), st.text(max_size=5), st.floats(allow_nan=False),
    st.builds(lambda dtype, n: torch.zeros(n, dtype=dtype), st.sampled_from(TORCH_DTYPES), st.integers(0, 3)),
)
pickle_keys = st.sampled_from(["generator_ema", "generator", "state_dict", "model", "module", "step"]) | st.text(max_size=6) | st.integers(0, 3)
pickle_trees = st.recursive(
    pickle_leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(pickle_keys, children, max_size=4),
    max_leaves=10,
)


def dicts_in(tree, found=None):
    found = [] if found is None else found
    if isinstance(tree, dict):
        found.append(tree)
        for value in tree.values():
            dicts_in(value, found)
    elif isinstance(tree, list):
        for value in tree:
            dicts_in(value, found)
    return found


@st.composite
def checkpoints(draw):
    tree = {draw(st.sampled_from(["generator_ema", "model", "state_dict", "x"])): draw(pickle_trees)}
    if draw(st.booleans()):  # real weights somewhere inside, so unwrapping can succeed
        holder = draw(st.sampled_from(dicts_in(tree)))
        holder[draw(st.sampled_from(["generator_ema", "model", "module"]))] = {"model." + k: v for k, v in _DIT.items()}
    found = dicts_in(tree)
    for _ in range(draw(st.integers(0, 2))):  # cycles: a dict that holds itself or one of its ancestors
        source, target = draw(st.sampled_from(found)), draw(st.sampled_from(found))
        source[draw(st.sampled_from(["generator_ema", "generator", "state_dict", "model", "module"]))] = target
    return tree


@settings(FUZZ, max_examples=80)
@given(tree=checkpoints(), loader=st.sampled_from(["load_dit", "read_state_dict", "tiny_vae"]))
def test_random_pickled_checkpoints(workdir, tree, loader):
    path = fresh(workdir, ".pt")
    torch.save(tree, path)
    check_loader(loader, path)
    path.unlink()


@settings(FUZZ, max_examples=50)
@given(data=st.data(), legacy=st.booleans(), loader=st.sampled_from(["load_dit", "tiny_vae"]))
def test_mutated_pickles(workdir, data, legacy, loader):
    base = fresh(workdir, ".pt")
    torch.save({"generator": {"model." + k: v for k, v in _DIT.items()}}, base, _use_new_zipfile_serialization=not legacy)
    path = fresh(workdir, ".pth")
    path.write_bytes(mutate(base.read_bytes(), data.draw(operations(1024))))
    check_loader(loader, path)
    base.unlink()
    path.unlink()


# -- sharded folders: hostile and malformed indexes ----------------------------------------------

shard_names = st.sampled_from([
    "shard-1.safetensors", "shard-2.safetensors", "./shard-2.safetensors", "../outside.safetensors",
    "{outside}", "sub/../shard-1.safetensors", "..\\outside.safetensors", "C:\\outside.safetensors",
    "missing.safetensors", "shard-1.safetensors/..", "", "/", "shard-1.safetensors\x00.txt",
]) | st.text(max_size=12)


@pytest.fixture(scope="module")
def sharded(workdir):
    folder = workdir / "sharded"
    folder.mkdir()
    half = len(DIT_KEYS) // 2
    weight_map = {k: "shard-1.safetensors" if i < half else "shard-2.safetensors" for i, k in enumerate(DIT_KEYS)}
    for shard in ("shard-1.safetensors", "shard-2.safetensors"):
        save_file({k: _DIT[k] for k, name in weight_map.items() if name == shard}, folder / shard)
    # Readable weights outside the folder, all 7: if an index could reach them, a loaded model would show it.
    save_file({k: torch.full_like(v, 7) for k, v in _DIT.items()}, workdir / "outside.safetensors")
    return folder, weight_map


@st.composite
def shard_indexes(draw, weight_map):
    kind = draw(st.sampled_from(["names", "names", "names", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    names = dict(weight_map)
    for key in draw(st.lists(st.sampled_from(DIT_KEYS), max_size=4)):
        names[key] = draw(shard_names)
    return json.dumps({"weight_map": names}).encode()


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_hostile_shard_indexes(workdir, sharded, data):
    folder, weight_map = sharded
    index = folder / "model.safetensors.index.json"
    contents = data.draw(shard_indexes(weight_map))
    index.write_bytes(contents.replace(b"{outside}", str(workdir / "outside.safetensors").encode()))
    with time_limit(CASE_SECONDS):
        try:
            model, _ = load_dit(folder, dtype=torch.float32)
        except ValueError as error:
            assert str(folder) in str(error) and len(str(error)) > len(str(folder)) + 20, str(error)
            event("shard index: refused")
            return
    event("shard index: loaded")
    assert not any(bool((p == 7).all()) for p in model.parameters()), "weights were read from outside the folder"


# -- config.json -----------------------------------------------------------------------------

CONFIG_FIELDS = list(CONFIG.to_dict()) + ["num_attention_heads", "attention_head_dim", "in_dim", "out_dim",
                                          "model_type", "rope_max_seq_len", "pos_embed_seq_len", "qk_norm"]


@st.composite
def config_files(draw):
    kind = draw(st.sampled_from(["fields", "fields", "fields", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=48))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    config = CONFIG.to_dict() if draw(st.booleans()) else CONFIG.to_diffusers_config()
    for field in draw(st.lists(st.sampled_from(CONFIG_FIELDS), max_size=3)):
        config[field] = draw(json_values | st.sampled_from([0, -1, 1, 2, 127, 2**62, 10**30, 1.5, "12", None]))
    return json.dumps(config).encode()


@pytest.fixture(scope="module")
def config_folder(workdir):
    folder = workdir / "with_config"
    folder.mkdir()
    save_file(_DIT, folder / "weights.safetensors")
    return folder


@settings(FUZZ, max_examples=110)
@given(contents=config_files(), loader=st.sampled_from(["load_dit", "config"]))
def test_malformed_config_json(config_folder, contents, loader):
    (config_folder / "config.json").write_bytes(contents)
    check_loader(loader, config_folder)
