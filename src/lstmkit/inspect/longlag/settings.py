"""What the long-lag experiment trains, and how: :class:`LongLagSettings` (the grid of tasks, lags
and cell kinds, the budget, the learning rates and the starts), :func:`init_options` (a start named
as text, as the layer options of :mod:`lstmkit.init`) and :data:`QUICK`, the ``--quick`` budget."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...cell_kinds import CELL_KINDS, check_cell
from ...init import GateInit
from ...training.config import SCHEDULES
from .problems import TASK_NAMES, check_lag, make_task

LONG_MEMORY_INIT = {
    "rnn": "orthogonal",
    "gru": "orthogonal",
    "lstm": "chrono+orthogonal",
    "peephole": "chrono+orthogonal",
    "layernorm": "chrono+orthogonal",
}
"""The default starts of :class:`LongLagSettings` (see its docstring)."""


@dataclass
class LongLagSettings:
    """What :func:`~lstmkit.inspect.longlag.grid.run_long_lag` trains: every ``kind`` on every task
    and lag (and the ``extra_runs``, ``(task, lag, kind)`` triples, e.g. the longest lags for the
    gated cells only), ``steps`` optimiser steps of ``batch_size`` fresh sequences (``steps_by_task``
    overrides per task: every cell of a task gets the same budget), Adam at ``lr`` (``lr_by_kind``
    overrides per cell kind, the rate tuned for it) on a ``schedule``, gradient norm clipped to 1 (a
    step whose gradient is not finite is skipped), scored every ``eval_every`` steps on
    ``eval_size`` held-out sequences. ``gradient_lag``: the adding problem's lag at which
    :mod:`~lstmkit.inspect.gradients` measures the gradient flow.

    ``init``: per kind, the long-memory initialisation of :mod:`lstmkit.init` to start from (see
    :func:`init_options`: ``"chrono"``, ``"chrono:500"``, ``"forget_bias:2"``, ``"orthogonal"``,
    ``"default"``, joined with ``+``); by default the LSTM-family cells start chrono-initialised
    with orthogonal recurrent blocks (Tallec & Ollivier 2018), and the RNN and GRU with orthogonal
    recurrent weights, the best start the literature gives each. ``forget_bias``: the initial
    forget-gate bias of LSTM-family kinds that ``init`` does not name (0 leaves torch's draw).
    ``copy_length``: symbols the copy task asks to remember (5 of 8; Arjovsky et al. use 10, which
    no cell learns within a budget of minutes)."""

    tasks: tuple[str, ...] = TASK_NAMES
    lags: tuple[int, ...] = (10, 50, 100, 200)
    kinds: tuple[str, ...] = ("rnn", "gru", "lstm", "peephole")
    extra_runs: tuple[tuple[str, int, str], ...] = (("adding", 500, "gru"), ("adding", 500, "lstm"))
    hidden_size: int = 64
    steps: int = 1500
    steps_by_task: dict[str, int] = field(default_factory=lambda: {"copy": 10000})
    batch_size: int = 32
    lr: float = 1e-2
    lr_by_kind: dict[str, float] = field(default_factory=dict)
    schedule: str = "constant"
    eval_every: int = 100
    eval_size: int = 256
    gradient_lag: int = 100
    forget_bias: float = 1.0
    init: dict[str, str] = field(default_factory=lambda: dict(LONG_MEMORY_INIT))
    copy_length: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("tasks", "lags", "kinds"):
            if not getattr(self, name):
                raise ValueError(f"{name} is empty: expected at least one")
        for task in self.tasks:
            make_task(task, 10)
        for kind in self.kinds:
            check_cell(kind)
        for lag in self.lags:
            check_lag(lag, 2)
        for name in ("hidden_size", "steps", "batch_size", "eval_every", "eval_size", "copy_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for task, steps in self.steps_by_task.items():
            make_task(task, 10)
            if steps < 1:
                raise ValueError(f"steps_by_task[{task!r}] must be at least 1, got {steps}")
        for kind, lr in {"": self.lr, **self.lr_by_kind}.items():
            if kind:
                check_cell(kind)
            if not lr > 0:
                raise ValueError(f"lr{f'_by_kind[{kind!r}]' if kind else ''} must be positive, got {lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: expected one of {SCHEDULES}")
        for task, lag, kind in self.extra_runs:
            make_task(task, 10)
            check_lag(lag, 2)
            check_cell(kind)
        for kind, spec in self.init.items():
            check_cell(kind)
            GateInit(**init_options(spec, steps=10)).check(CELL_KINDS[kind](1, 1))

    def steps_for(self, task: str) -> int:
        """The optimiser steps every cell gets on ``task``."""
        return self.steps_by_task.get(task, self.steps)

    def lr_for(self, kind: str) -> float:
        """Adam's learning rate for cell ``kind``."""
        return self.lr_by_kind.get(kind, self.lr)

    def grid(self) -> list[tuple[str, int, str]]:
        """Every ``(task, lag, kind)`` run: the full grid in task, lag, kind order, then the
        ``extra_runs`` of its tasks and kinds not in it, each task's after its own."""
        runs = [(task, lag, kind) for task in self.tasks for lag in self.lags for kind in self.kinds]
        extra = [run for run in self.extra_runs if run not in runs and run[0] in self.tasks and run[2] in self.kinds]
        return sorted(runs + extra, key=lambda run: (self.tasks.index(run[0]), run[1]))


def init_options(spec: str, steps: int) -> dict[str, object]:
    """The layer options (:mod:`lstmkit.init`) a run's init ``spec`` names: ``+``-joined choices of
    ``forget_bias:B``, ``chrono`` (``T_max`` = the task's sequence length ``steps``), ``chrono:T_MAX``,
    ``orthogonal`` (per-gate orthogonal ``W_hh``) and ``default`` (torch's draw).

    >>> init_options("chrono+orthogonal", steps=200)
    {'chrono_init': 200, 'recurrent_init': 'orthogonal'}
    >>> init_options("forget_bias:2", steps=200)
    {'forget_bias': 2.0}
    """
    options: dict[str, object] = {}
    for part in spec.split("+"):
        name, _, value = part.strip().partition(":")
        try:
            if name == "default" and not value:
                continue
            if name == "orthogonal" and not value:
                options["recurrent_init"] = "orthogonal"
            elif name == "chrono":
                options["chrono_init"] = int(value) if value else steps
            elif name == "forget_bias" and value:
                options["forget_bias"] = float(value)
            else:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"unknown init {part.strip()!r} in {spec!r}: expected forget_bias:B, chrono, chrono:T_MAX, "
                "orthogonal or default, joined with +"
            ) from None
    GateInit(**options)  # type: ignore[arg-type]  # refuses a combination that does not go together
    return options


QUICK = LongLagSettings(
    lags=(10, 50, 100), kinds=("rnn", "gru", "lstm"), extra_runs=(), steps=600, steps_by_task={}, eval_every=50
)
"""The ``--quick`` budget: about a minute and a half on one core."""
