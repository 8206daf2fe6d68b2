"""Command-line options that the ``lstmkit <task>`` commands share, the number of intra-op threads
they run with, and the way errors reach the user: one red line that says what was expected and what
came, exit code 2."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.markup import escape

from ..precision import autocast_for, resolve_precision
from ..training.trainer import TrainingDiverged

OutDir = Annotated[Path, typer.Option("--out", "-o", help="Folder for checkpoints, metrics, curves and the model.")]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override any data, model or training setting: --set hidden_size=128 (repeat)."),
]
Epochs = Annotated[int | None, typer.Option(min=1, help="Training epochs (default: the preset's).")]
MaxSteps = Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after this many optimizer steps.")]
Seed = Annotated[int | None, typer.Option(help="Random seed (default: the preset's).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.safetensors.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Train into an OUT that holds another run, replacing it.")]
Nproc = Annotated[int, typer.Option("--nproc", min=1, max=64, help="Data-parallel processes (gloo, CPU).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (or progress lines, without a terminal).")]
Cell = Annotated[str | None, typer.Option(help="rnn, gru, lstm, peephole or layernorm.")]
Threads = Annotated[
    int,
    typer.Option(
        min=0,
        max=256,
        help="Intra-op threads (0: torch's default, one per core). Small models are fastest on 1, which is also "
        "immune to other jobs on the machine.",
    ),
]
Precision = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto, bf16 or fp32. bf16 runs the model under bfloat16 autocast (weights and checkpoints stay "
        "float32); auto is bf16 on a CPU with bf16 hardware (AVX512-BF16 or AMX), else fp32.",
    ),
]
Checkpoint = Annotated[
    Path, typer.Option("--checkpoint", "-c", help="A trained model folder (config.json + model.safetensors).")
]

console = Console()
error_console = Console(stderr=True)


def is_main_process() -> bool:
    """False in the processes of a ``torchrun`` launch other than rank 0 (they stay silent)."""
    return os.environ.get("RANK", "0") == "0"


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


@contextlib.contextmanager
def model_session(precision: str) -> Iterator[None]:
    """The body of a command that runs a trained model: its input errors reported as
    :func:`user_errors` does, the model run at ``precision`` (``auto``, ``bf16`` or ``fp32``)."""
    with user_errors(), autocast_for(resolve_precision(precision)):
        yield


def print_note(note: str) -> None:
    """A note on stdout, ``note: <note>`` (brackets from a file shown, not read as markup)."""
    console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


def print_error(message: str, label: str = "error") -> None:
    """One line on stderr, ``<label>: <message>``, the label red (yellow for a ``"warning"``); brackets
    in the message (from a file: a column named ``[/]``) are shown, not read as markup."""
    style = "bold yellow" if label == "warning" else "bold red"
    error_console.print(f"[{style}]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's input errors, and a file or folder that cannot be read or written (a file
    where the output folder goes), into one clear line on stderr and exit code 2; a training run that
    diverged (its message names the step and the checkpoint kept) into one line and exit code 1. The
    line is plain text: brackets that came from a file (a column named ``[/]``) are shown, not read
    as markup. A closed pipe (``lstmkit ... | head``) is no input error: it goes on to the command line,
    which ends quietly."""
    try:
        yield
    except TrainingDiverged as error:
        print_error(str(error), "training stopped")
        raise typer.Exit(1) from None
    except BrokenPipeError:
        raise
    except (ValueError, KeyError, TypeError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        if isinstance(error, OSError) and error.filename is not None:
            message = f"{error.filename}: {error.strerror}"
        print_error(str(message))
        raise typer.Exit(2) from None
