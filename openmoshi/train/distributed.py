"""The process group of a training run: one process, or several launched by torchrun.

`init_distributed(device)` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR...) and
joins the group: NCCL on CUDA, gloo on CPU. Without torchrun it is a single process (rank 0 of 1) and no group
is created. `Dist` carries what the trainers need (rank, world size, the device, whether this rank logs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device: str | None = None) -> Dist:
    """Join torchrun's process group (when launched by it) and choose this rank's device.

    `device` None: cuda:LOCAL_RANK when CUDA is available, else cpu.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    if device is None:
        dev = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local}")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for but CUDA is not available")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return Dist(rank, world, local, dev)


def barrier(d: Dist) -> None:
    if d.distributed:
        dist.barrier()


def all_mean(values: dict[str, float], d: Dist) -> dict[str, float]:
    """The mean over ranks of each value (float64 on CPU for gloo, on the device for NCCL)."""
    if not d.distributed or not values:
        return dict(values)
    keys = sorted(values)
    device = d.device if d.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: v / d.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
