"""Distributed data parallel training under ``torchrun``: process group, devices, reductions.

``torchrun --nproc-per-node N -m radseg train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` reads them and starts the process group (NCCL on GPU,
gloo on CPU). A plain ``python -m radseg train`` is a world of one, with no process group.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

from radseg.errors import ConfigError, RadsegError

logger = logging.getLogger(__name__)

_COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job.

    Attributes:
        rank: global rank (0 in a single-process run).
        world_size: number of processes.
        local_rank: rank on this machine (picks the GPU).
        device: the device this process trains on.
        initialised_here: True when :func:`init_distributed` started the process group (and
            :func:`cleanup_distributed` should end it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1


def pick_device(setting: str = "auto", local_rank: int = 0, name: str = "train.device") -> torch.device:
    """The training device for ``train.device``: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.

    Args:
        setting: "auto", "cpu" or "cuda".
        local_rank: picks the GPU under ``torchrun``.
        name: where the setting came from (``train.device``, ``--device``), for the error.

    Raises:
        ConfigError: ``cuda`` is asked for but no GPU is visible.
    """
    require_device(setting, name)
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def require_device(setting: str, name: str = "train.device") -> None:
    """Refuse ``cuda`` where no GPU is visible, naming the flag or setting the user gave.

    Raises:
        ConfigError: ``setting`` is "cuda" but ``torch.cuda.is_available()`` is False.
    """
    if setting == "cuda" and not torch.cuda.is_available():
        given = f"{name} cuda" if name.startswith("--") else f"{name}=cuda"
        fix = f"{name} cpu or {name} auto" if name.startswith("--") else f"{name}=cpu or {name}=auto"
        raise ConfigError(f"{given} asks for a GPU, but no CUDA GPU is visible here (torch.cuda.is_available() "
                          f"is False); pass {fix}, or run where a GPU is")


def describe_device(device: torch.device | str) -> str:
    """``cpu (2 threads)`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``: the device a network runs on."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{device.type} ({torch.get_num_threads()} threads)"


def log_device(device: torch.device | str) -> None:
    """Log, at INFO, the device a command runs its network on (call it once per command)."""
    logger.info("device: %s", describe_device(device))


def init_distributed(device_setting: str = "auto") -> DistInfo:
    """Join the ``torchrun`` job described by the environment, or run as a world of one.

    Args:
        device_setting: ``train.device``.

    Returns:
        This process's :class:`DistInfo`.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_setting, local_rank)
    if world_size <= 1:
        return DistInfo(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    started = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # a rank stuck in a collective fails after this long instead of hanging the job forever
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=_COLLECTIVE_TIMEOUT)
        started = True
        logger.info("rank %d of %d joined the %s process group on %s", rank, world_size, backend, device)
    return DistInfo(rank, world_size, local_rank, device, started)


def cleanup_distributed(info: DistInfo) -> None:
    """End the process group if :func:`init_distributed` started it."""
    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over ranks (in place, returned); unchanged in a single process.

    The tensor is moved to the process-group device (GPU for NCCL) and back.
    """
    if not info.distributed:
        return tensor
    work = tensor.to(info.device)
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    tensor.copy_(work.to(tensor.device))
    return tensor


def broadcast_object(value: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` on every rank (any picklable object)."""
    if not info.distributed:
        return value
    box = [value if info.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def run_on_main(work: Callable[[], Any], info: DistInfo) -> Any:
    """Run ``work`` on rank 0 and give its result to every rank; if it fails, every rank raises.

    Without this, an error on rank 0 (an unreadable case, a full disk) would leave the other ranks
    waiting forever in the next collective call. Rank 0 raises the original error; the others a
    :class:`RadsegError` that names it.
    """
    if not info.distributed:
        return work()
    failure, value = None, None
    if info.is_main:
        try:
            value = work()
        except Exception as err:  # noqa: BLE001 - raised again below, on every rank
            failure = err
    message = None if failure is None else (str(failure) if isinstance(failure, RadsegError) else repr(failure))
    message, value = broadcast_object((message, value), info)
    if failure is not None:
        raise failure
    if message is not None:
        raise RadsegError(f"rank 0 failed, so rank {info.rank} stops too: {message}")
    return value


def split_for_rank(items: Sequence[Any], info: DistInfo) -> list[Any]:
    """A disjoint, unpadded share of ``items``: every item on exactly one rank (round-robin).

    Used for validation cases, so that each case is evaluated exactly once across the job.
    """
    return list(items)[info.rank :: info.world_size]


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside a ``DistributedDataParallel`` wrapper (or the module itself)."""
    return network.module if isinstance(network, torch.nn.parallel.DistributedDataParallel) else network


def wrap_ddp(network: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """Wrap ``network`` in ``DistributedDataParallel`` when there are several processes."""
    if not info.distributed:
        return network
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids)
