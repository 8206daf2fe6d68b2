"""Command-line options that more than one command group takes (``lstmkit <task>``, ``lstmkit
inspect``), and :func:`intra_op_threads`, which runs a command on the ``--threads`` it was given."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import torch
import typer

Seed = Annotated[int | None, typer.Option(help="Random seed (default: the preset's).")]
Threads = Annotated[
    int,
    typer.Option(
        min=0,
        max=256,
        help="Intra-op threads (0: torch's default, one per core). Small models are fastest on 1, which is also "
        "immune to other jobs on the machine.",
    ),
]
Checkpoint = Annotated[
    Path, typer.Option("--checkpoint", "-c", help="A trained model folder (config.json + model.safetensors).")
]


@contextlib.contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` intra-op threads (0: as many as now), then restore the number there was."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
