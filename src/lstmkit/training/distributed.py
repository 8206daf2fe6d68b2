"""Data-parallel training on CPU: torch.distributed with the gloo backend.

Two ways in: ``torchrun --nproc_per_node N lstmkit ...`` (the trainer finds ``WORLD_SIZE`` and
``RANK`` in the environment), or :func:`launch` (``--nproc N`` on the command line), which spawns the
processes itself on a free local port.

Each process draws the same global batch (same seed) and keeps its share, ``indices[rank::world]``;
the trainer scales each process's summed loss by ``world / global_count``, so DDP's gradient average
equals the gradient of the global mean, as on one process.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_environment() -> bool:
    """Join the process group that ``torchrun`` (or :func:`launch`) describes in the environment.
    Returns whether this process is part of a group of more than one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return True


def leave_process_group() -> None:
    """Wait for every process, then tear the group down (nothing when not distributed). Call it once
    the work succeeded: a process that exits while another still works, or without tearing its
    group down, can abort at exit ("terminate called without an active exception", seen in CI).
    After a failure there is no teardown: the launcher stops the other processes."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(value: float) -> float:
    """The sum of ``value`` over all processes (``value`` itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(rank: int, world: int, port: int, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    init_from_environment()
    function(*args)
    leave_process_group()


def launch(function: Callable[..., Any], nproc: int, *args: Any) -> None:
    """Run ``function(*args)`` in ``nproc`` processes joined in one gloo group (``function`` must be
    importable: a module-level function). With ``nproc == 1`` it runs here, undistributed."""
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    if nproc == 1:
        function(*args)
        return
    mp.start_processes(_worker, args=(nproc, _free_port(), function, args), nprocs=nproc, start_method="spawn")
