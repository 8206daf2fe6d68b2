"""The ``train`` command every task has: the options they share, given to the command as one
:class:`TrainRun` (:func:`train_options`), the training itself (in this process, in spawned
processes, or as one ``torchrun`` rank) and the lines that report it."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ..commandline.messages import console, print_note, user_errors
from ..commandline.options import Seed, Threads, intra_op_threads
from ..precision import detect_cpu, resolve_precision
from ..training import TrainConfig, TrainResult
from ..training.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from ..training.distributed import launch, leave_process_group
from ..training.trainer import CHECKPOINT_NAME
from .options import (
    Cell,
    Epochs,
    MaxSteps,
    Nproc,
    OutDir,
    Overrides,
    Overwrite,
    Precision,
    Quiet,
    Resume,
    is_main_process,
)

Settings = tuple[Any, dict[str, Any], TrainConfig]
"""What a task's ``configure`` returns: data settings, model fields, training configuration."""
RUN_FILES = (CONFIG_NAME, WEIGHTS_NAME, CHECKPOINT_NAME)
"""The files that say a folder holds a run (any one of them): a run killed before it saved anything
left only its metrics and ``task.json``, nothing to keep."""
Trained = tuple[Any, TrainResult, Any]
"""What a task's ``train`` returns: the model, the run's result and the task's figures."""
TrainFunction = Callable[[Any, dict[str, Any], TrainConfig, Path, bool], Trained]


@dataclass(frozen=True)
class TrainRun:
    """The options every ``lstmkit <task> train`` command shares, as the command line gave them; the
    annotations after ``preset`` are their command-line options (see :func:`train_options`)."""

    task: str
    preset: str
    out: OutDir
    cell: Cell = None
    overrides: Overrides = None
    epochs: Epochs = None
    max_steps: MaxSteps = None
    seed: Seed = None
    resume: Resume = False
    overwrite: Overwrite = False
    nproc: Nproc = 1
    quiet: Quiet = False
    threads: Threads = 0
    precision: Precision = "auto"

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Run the command's body on the chosen number of threads, its input errors reported in one
        line (exit code 2)."""
        with intra_op_threads(self.threads), user_errors():
            yield

    def configure(self, configure_task: Callable[..., Settings], **given: Any) -> Settings:
        """The settings of the run from the task's ``configure``: the preset, the ``--set``
        overrides, then the cell and the task's own options (``given``, ``None`` when not given)
        as overrides, then the training options."""
        named = {"cell": self.cell, **given}
        given_settings = [f"{name}={value}" for name, value in named.items() if value is not None]
        overrides = [*(self.overrides or []), *given_settings]
        progress = False if self.quiet else None
        return configure_task(self.preset, overrides, epochs=self.epochs, max_steps=self.max_steps, seed=self.seed,
                              precision=resolve_precision(self.precision), progress=progress)  # fmt: skip

    def train(
        self, train: TrainFunction, settings: Settings, model: str, data: str | None = None, *,
        notes: Sequence[str] = (), metric: str = "validation loss",
    ) -> Trained | None:  # fmt: skip
        """Say what is trained (``model`` on ``data``, with ``notes``), then train: in this process
        (returns what ``train`` returns, after saying where it stopped and at which step ``metric``
        was best) or in ``nproc`` spawned processes (returns ``None``: the model is in ``out``). A
        ``torchrun`` process other than rank 0 trains in silence and ends the command."""
        if not is_main_process():
            train(*settings, self.out, self.resume)
            leave_process_group()
            raise typer.Exit()
        self.check_out()
        console.print(self.headline(model, settings[2], data), highlight=False)
        for note in notes:
            print_note(note)
        if self.nproc > 1:
            launch(train, self.nproc, *settings, self.out, self.resume)
            return None
        trained = train(*settings, self.out, self.resume)
        leave_process_group()
        console.print(stopped_line(trained[1], metric))
        return trained

    def check_out(self) -> None:
        """Refuse to train into an ``out`` folder that holds another run's files unless ``--overwrite``
        (replace it) or ``--resume`` (continue it) is given, and refuse both at once."""
        if self.resume and self.overwrite:
            raise ValueError("--resume continues the run in --out and --overwrite replaces it: give one of them")
        found = [name for name in RUN_FILES if (self.out / name).exists()] if self.out.is_dir() else []
        if found and not (self.resume or self.overwrite):
            raise ValueError(f"{self.out} holds another run ({', '.join(found)}); pass --overwrite to replace it, "
                             "--resume to continue it, or choose another --out")  # fmt: skip

    def headline(self, model: str, config: TrainConfig, data: str | None = None) -> str:
        """What the run trains: the task, the preset, the ``model``, the budget, the ``data``, the
        folder, and the precision with what the CPU offers for it."""
        budget = f"{config.max_steps} steps" if config.max_steps else f"{config.epochs} epochs"
        source = f" on {data}" if data else ""
        return (f"[bold]{self.task}[/] preset {self.preset}: {model}, {budget} of batch {config.batch_size}{source} "
                f"-> {self.out}; precision {config.precision} (CPU: {detect_cpu().description})")  # fmt: skip

    def saved_line(self, *extra: str) -> str:
        """The files a run leaves in its folder (the ``extra`` ones after the usual)."""
        files = ["model", "checkpoint", "metrics.jsonl", "curves.png", *extra]
        return f"{', '.join(files[:-1])} and {files[-1]} in {self.out}"


def stopped_line(result: TrainResult, metric: str) -> str:
    """Where a run stopped and why, and at which step ``metric`` was best (when it was measured).

    >>> stopped_line(TrainResult(40, 2, "completed", 0.5, 30, seconds=12.3), "validation loss")
    'stopped after 40 steps (completed, 12 s); best validation loss at step 30'
    """
    best = f"; best {metric} at step {result.best_step}" if result.best_step is not None else ""
    return f"stopped after {result.steps} steps ({result.stopped}, {result.seconds:.0f} s){best}"


def _shared_options(task: str, threads: int) -> list[inspect.Parameter]:
    """The options every ``train`` command has (the fields of :class:`TrainRun` after ``preset``), with
    the task's folder as the default of ``--out`` and ``threads`` as the default of ``--threads``."""
    options = typing.get_type_hints(TrainRun, include_extras=True)
    defaults = {"out": Path("runs") / task, "threads": threads}
    return [
        inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, annotation=options[field.name],
                          default=defaults.get(field.name, field.default))
        for field in dataclasses.fields(TrainRun)[2:]
    ]  # fmt: skip


def train_options(
    task: str, presets: Iterable[str], default_preset: str, preset_help: str, threads: int = 0
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a ``train`` command ``--preset`` (one of ``presets``; ``preset_help`` says what they
    choose) before its own options and the options every task's ``train`` has after them; the
    command receives all these as its first argument, a :class:`TrainRun`. ``threads``: the default
    of ``--threads`` (0: torch's)."""
    preset_option = Annotated[str, typer.Option(help=f"{preset_help}: {', '.join(presets)}.")]
    shared = _shared_options(task, threads)

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]
        keyword = inspect.Parameter.KEYWORD_ONLY
        parameters = [
            inspect.Parameter("preset", keyword, default=default_preset, annotation=preset_option),
            *(parameter.replace(kind=keyword) for parameter in own),
            *shared,
        ]

        @functools.wraps(command)
        def with_run(preset: str, **options: Any) -> None:
            run = TrainRun(task, preset, **{option.name: options.pop(option.name) for option in shared})
            command(run, **options)

        with_run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        with_run.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        return with_run

    return decorate


def stack_shape(model_fields: dict[str, Any]) -> str:
    """The recurrent stack of a model: its cell, layers and hidden size.

    >>> stack_shape({"cell": "gru", "num_layers": 2, "hidden_size": 64})
    'gru 2x64'
    """
    return f"{model_fields['cell']} {model_fields['num_layers']}x{model_fields['hidden_size']}"
