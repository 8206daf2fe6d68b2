"""How a training run shows its progress: a rich bar on a terminal, laid out to fit 80 columns, or
plain lines when stdout is not a terminal (``lstmkit charlm train > log``), where a bar would show
nothing until the end."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PLAIN_SECONDS = 10.0
"""Seconds between two plain progress lines."""
WIDE = 120
"""Terminal columns from which the bar and the training speed are drawn too."""


def clock(seconds: float | None) -> str:
    """``seconds`` as ``h:mm:ss`` (``-:--:--`` when unknown), as rich's time columns show them.

    >>> clock(3725.4), clock(None)
    ('1:02:05', '-:--:--')
    """
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class PlainProgress:
    """Progress as plain lines on stdout: one at the first step, then one every :data:`PLAIN_SECONDS`,
    and one at the end. Takes the calls of a rich :class:`~rich.progress.Progress` with one task
    (``add_task``, ``update``, the ``with`` block) and the fields the trainer gives it: ``loss``,
    ``metric`` and ``rate`` (text; empty or ``"-"`` when not known yet).

        >>> import io
        >>> out = io.StringIO()
        >>> with PlainProgress(out) as progress:
        ...     task = progress.add_task("training", total=4, completed=0, loss="-", metric="", rate="")
        ...     progress.update(task, completed=1, description="epoch 1/2", loss="2.5000")
        ...     progress.update(task, completed=4, metric="val_loss 1.2000")
        >>> print(out.getvalue().replace("0:00:00", "T"), end="")
        epoch 1/2, step 1/4: loss 2.5000, elapsed T, eta T
        epoch 1/2, step 4/4: loss 2.5000, val_loss 1.2000, elapsed T, eta T
    """

    def __init__(self, file: Any = None) -> None:
        self.file = file
        self.description, self.total, self.completed, self.first = "", 0, 0, 0
        self.fields: dict[str, str] = {}
        self.started = self.printed_at = time.perf_counter()
        self.printed: int | None = None

    def __enter__(self) -> PlainProgress:
        self.started = time.perf_counter()
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None and self.printed != self.completed:
            self._print()

    def add_task(self, description: str, total: int, completed: int = 0, **fields: str) -> int:
        self.description, self.total, self.completed, self.first = description, total, completed, completed
        self.fields = dict(fields)
        return 0

    def update(
        self,
        task: int,
        *,
        completed: int | None = None,
        total: int | None = None,
        description: str | None = None,
        **fields: str,
    ) -> None:
        self.description = self.description if description is None else description
        self.total = self.total if total is None else total
        self.fields.update(fields)
        if completed is None or completed == self.completed:
            return
        self.completed = completed
        if self.printed is None or time.perf_counter() - self.printed_at >= PLAIN_SECONDS:
            self._print()

    def line(self) -> str:
        """The progress now: where the run is, its figures, the time spent and the time left."""
        elapsed = time.perf_counter() - self.started
        done = self.completed - self.first
        left = elapsed / done * (self.total - self.completed) if done > 0 else None
        figures = [f"loss {self.fields['loss']}" if self.fields.get("loss", "-") != "-" else "",
                   self.fields.get("metric", ""), self.fields.get("rate", ""),
                   f"elapsed {clock(elapsed)}", f"eta {clock(left)}"]  # fmt: skip
        return f"{self.description}, step {self.completed}/{self.total}: {', '.join(f for f in figures if f)}"

    def _print(self) -> None:
        print(self.line(), file=self.file or sys.stdout, flush=True)
        self.printed, self.printed_at = self.completed, time.perf_counter()


def progress_display(console: Console, shown: bool, terminal: bool) -> Progress | PlainProgress:
    """What shows a run's progress: nothing when not ``shown``; a rich bar on ``console`` when stdout
    is a ``terminal`` (on fewer than :data:`WIDE` columns without the bar itself and the speed, so that
    the step, the loss, the metric and the labelled times fit in 80); else :class:`PlainProgress`."""
    if shown and not terminal:
        return PlainProgress()
    wide = console.width >= WIDE
    return Progress(
        TextColumn("[bold]{task.description}"),
        *([BarColumn(bar_width=20)] if wide else []),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[metric]}"),
        *([TextColumn("{task.fields[rate]}")] if wide else []),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not shown,
    )
