"""torch.distributed set-up for ``torchrun`` (one process per device, any number of nodes).

The trainer never asks how it was launched: :func:`init_distributed` reads the variables
``torchrun`` exports (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``)
and returns a :class:`DistInfo`; a plain ``python`` or ``kospeech train`` run is world size 1 and
touches no process group at all, so single-process training has no distributed overhead.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, and its device index on the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, plots and checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    """The rank layout ``torchrun`` exported, or a single process when it did not."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def backend_for(device: torch.device) -> str:
    """NCCL moves CUDA tensors; gloo is the CPU backend (and what tests use)."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: torch.device, info: DistInfo | None = None) -> DistInfo:
    """Join the process group once (idempotent); a world of one needs no group."""
    info = info or env_info()
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return info
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run with a single process")
    backend = backend_for(device)
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size, **kwargs)
    logger.info("joined process group: rank %d/%d (%s)", info.rank, info.world_size, backend)
    return info


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (a no-op for one process); returns ``tensor``."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _reduce_scalar(value: float, op: Any, dtype: torch.dtype, device: torch.device) -> float:
    """One number reduced over ranks with ``op``; ``value`` itself for one process."""
    if not is_initialized():
        return value
    t = torch.tensor([value], dtype=dtype, device=device)
    dist.all_reduce(t, op=op)
    return t.item()


def all_reduce_min(value: int, device: torch.device) -> int:
    """The smallest ``value`` over ranks, so every rank runs the same number of steps."""
    return int(_reduce_scalar(value, dist.ReduceOp.MIN, torch.long, device))


def any_true(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is set on any rank: all ranks skip a bad batch together, or DDP hangs."""
    return bool(_reduce_scalar(1 if flag else 0, dist.ReduceOp.MAX, torch.long, device))


def all_reduce_max_float(value: float, device: torch.device) -> float:
    """The largest ``value`` over ranks (a no-op for one process)."""
    return float(_reduce_scalar(value, dist.ReduceOp.MAX, torch.float64, device))


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj``, in rank order (validation hypotheses, counters)."""
    if not is_initialized():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()
