"""Multi-process training through torchrun and FSDP2; the same calls are no-ops in a single process.

    torchrun --nproc_per_node 8 -m motionstream_core.training teacher --config run.json

`init_distributed` reads the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK) and starts
NCCL on GPUs or gloo on CPUs; without them nothing is initialised and every helper below acts on
the local process. Sharding is PyTorch's own FSDP2 (`fully_shard`): one unit per transformer
block, one per cross-attention (its keys/values are computed for the whole prompt before the
blocks run), one for the top-level layers, one for the track head.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import os
import warnings

import torch
import torch.distributed as dist
from torch import nn

from ..model.wan_dit import WanDiT

# Top-level WanDiT methods that the causal engine calls directly instead of `forward`; FSDP must
# gather the top-level parameters around them too.
_DIRECT_METHODS = ("encode_context", "patchify", "embed_timesteps", "run_blocks")


@dataclasses.dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1 or is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_distributed(device: str | None = None) -> DistributedContext:
    """Joins the torchrun process group if there is one; picks the device (cuda:LOCAL_RANK or cpu)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device(device)
    if "WORLD_SIZE" in os.environ and not is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30),
                                device_id=chosen if chosen.type == "cuda" else None)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def shutdown() -> None:
    """Leaves the process group; call after every sharded module and optimizer has been dropped."""
    if is_initialized():
        gc.collect()  # FSDP state held by unreachable modules must go before the group does
        dist.barrier()
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def shard_model(model: nn.Module, mixed_precision: torch.dtype | None = None) -> nn.Module:
    """FSDP2-shards every `WanDiT` and `TrackEncoder` inside `model` (in place); no-op in one process."""
    if not is_initialized():
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    from ..motion.track_head import TrackEncoder

    # Patchify and the per-layer text keys/values return views; nothing here modifies them in place,
    # which is the only case that warning is about.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDP\w+\) returned a view tensor")
    options = {}
    if mixed_precision is not None:
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=mixed_precision, reduce_dtype=torch.float32)
    for module in list(model.modules()):
        if isinstance(module, WanDiT):
            for block in module.blocks:
                fully_shard(block.cross_attn, **options)
                register_fsdp_forward_method(block.cross_attn, "project_context")
                fully_shard(block, **options)
            fully_shard(module, **options)
            for name in _DIRECT_METHODS:
                register_fsdp_forward_method(module, name)
        elif isinstance(module, TrackEncoder):
            fully_shard(module, **options)
            register_fsdp_forward_method(module, "encode_window")
    return model


def all_reduce_mean(value: torch.Tensor | float) -> float:
    """The mean of a scalar over all processes (itself in one process)."""
    tensor = torch.as_tensor(value, dtype=torch.float64).detach().clone()
    if is_initialized():
        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        tensor = tensor.to(backend_device)
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return float(tensor)


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """All of a module's weights, unsharded, on the CPU of rank 0 (empty elsewhere); collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not is_initialized():
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Loads full (unsharded) weights into a possibly sharded module; every rank passes the same dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if not is_initialized():
        module.load_state_dict(state_dict)
        return
    set_model_state_dict(module, state_dict, options=StateDictOptions(full_state_dict=True))


def full_optimizer_state_dict(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state keyed by parameter name, unsharded (on rank 0 when distributed); collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=is_initialized())
    return get_optimizer_state_dict(module, optimizer, options=options)


def load_full_optimizer_state_dict(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a sharded DTensor (collective), or the tensor itself."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` laid out as `like` is: sharded the same way when `like` is a DTensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    full = full.to(device=like.device, dtype=like.dtype)
    if isinstance(like, DTensor):
        return distribute_tensor(full, like.device_mesh, like.placements)
    return full


def checkpoint_activations(model: nn.Module) -> nn.Module:
    """Makes every transformer block recompute its activations in backward instead of keeping them
    (PyTorch's composable activation checkpointing; apply before `shard_model`).

    Only for models whose forward sees the whole clip (the teacher, the ODE-init student, the
    critic): a chunk forward of the self-forcing rollout reads the KV cache, which later chunks
    overwrite before backward, so recomputing it would read different keys.
    """
    from torch.distributed._composable import checkpoint

    from ..model.wan_dit import TransformerBlock

    for module in model.modules():
        if isinstance(module, TransformerBlock):
            checkpoint(module)
    return model
