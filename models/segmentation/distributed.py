"""torchrun / DistributedDataParallel helpers (gloo on CPU, nccl on GPU); single-process runs need none."""
from __future__ import annotations

import os
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["init", "is_dist", "rank", "world", "is_main", "wrap", "unwrap", "allreduce_grads",
           "allreduce_mean", "barrier", "cleanup"]


def init(device: str = "cpu") -> None:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1 in the environment)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def wrap(model: nn.Module, device: str) -> nn.Module:
    """DDP-wrap ``model`` when distributed (parameters and buffers are broadcast from rank 0)."""
    if not is_dist():
        return model
    ids = [torch.device(device).index or 0] if device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def allreduce_grads(params: Iterable[torch.Tensor]) -> None:
    """Average the gradients of ``params`` over processes (for passes that bypass DDP's hooks:
    discriminators and the partial-network steps of ADR)."""
    if not is_dist():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world()
    off = 0
    for g in grads:
        g.copy_(flat[off:off + g.numel()].view_as(g))
        off += g.numel()


def broadcast_params(module: nn.Module) -> None:
    """Make every process start from rank 0's parameters (for modules not wrapped in DDP)."""
    if is_dist():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, 0)


def allreduce_mean(x: float) -> float:
    if not is_dist():
        return x
    t = torch.tensor([float(x)], dtype=torch.float64)
    dist.all_reduce(t)
    return (t / world()).item()


def barrier() -> None:
    if is_dist():
        dist.barrier()


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
