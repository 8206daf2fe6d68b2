"""Command-line options that only the ``lstmkit <task>`` commands take, whether this process speaks
(a ``torchrun`` rank other than 0 does not) and :func:`model_session`, the body of a command that runs
a trained model. The options the other command groups take too, and the way errors reach the user,
are in :mod:`lstmkit.commandline`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from ..commandline.messages import user_errors
from ..precision import autocast_for, resolve_precision

OutDir = Annotated[Path, typer.Option("--out", "-o", help="Folder for checkpoints, metrics, curves and the model.")]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override any data, model or training setting: --set hidden_size=128 (repeat)."),
]
Epochs = Annotated[int | None, typer.Option(min=1, help="Training epochs (default: the preset's).")]
MaxSteps = Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after this many optimizer steps.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.safetensors.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Train into an OUT that holds another run, replacing it.")]
Nproc = Annotated[int, typer.Option("--nproc", min=1, max=64, help="Data-parallel processes (gloo, CPU).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (or progress lines, without a terminal).")]
Cell = Annotated[str | None, typer.Option(help="rnn, gru, lstm, peephole or layernorm.")]
Precision = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto, bf16 or fp32. bf16 runs the model under bfloat16 autocast (weights and checkpoints stay "
        "float32); auto is bf16 on a CPU with bf16 hardware (AVX512-BF16 or AMX), else fp32.",
    ),
]


def is_main_process() -> bool:
    """False in the processes of a ``torchrun`` launch other than rank 0 (they stay silent)."""
    return os.environ.get("RANK", "0") == "0"


@contextlib.contextmanager
def model_session(precision: str) -> Iterator[None]:
    """The body of a command that runs a trained model: its input errors reported as
    :func:`~lstmkit.commandline.messages.user_errors` does, the model run at ``precision`` (``auto``,
    ``bf16`` or ``fp32``)."""
    with user_errors(), autocast_for(resolve_precision(precision)):
        yield
