"""Long-lag problems, and the experiment that shows why gated cells beat a plain RNN on them.

* :class:`AddingProblem` (Hochreiter & Schmidhuber 1997; in the form of Le et al. 2015 and Arjovsky
  et al. 2016): a sequence of ``lag`` steps, each a random value in [0, 1) and a marker; two steps
  are marked, one in the first half and one in the second. The target, read at the last step, is the
  sum of the two marked values. Predicting 1 whatever the input (the best memoryless guess) has a
  mean squared error of 1/6, the chance level.
* :class:`CopyMemory` (Arjovsky et al. 2016): ``length`` symbols out of ``symbols``, then ``lag - 1``
  blanks, a delimiter and ``length`` more blanks; the target is blank everywhere except at the last
  ``length`` steps, which must repeat the symbols of the start. Guessing gets 1 symbol in
  ``symbols`` right, the chance level.

:func:`run_long_lag` trains every cell kind on every task and lag for the same fixed budget (the
same data, the same initial seed, the shared :class:`~lstmkit.training.Trainer`) and records the
learning curve on a held-out batch; :func:`long_lag_table` prints what each reached.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cell_kinds import CELL_KINDS, check_cell, recurrent_layer
from ..init import GateInit, initialize
from ..layers import Recurrent
from ..training import TrainConfig, Trainer
from ..training.config import SCHEDULES


def _check_lag(lag: int, minimum: int) -> None:
    if not isinstance(lag, int) or isinstance(lag, bool) or lag < minimum:
        raise ValueError(f"lag must be an integer of at least {minimum}, got {lag!r}")


@dataclass(frozen=True)
class AddingProblem:
    """The adding problem at sequence length ``lag``: inputs ``(count, lag, 2)`` (value, marker),
    targets ``(count,)``, the sum of the two marked values.

        >>> inputs, targets = AddingProblem(6).generate(2, torch.Generator().manual_seed(0))
        >>> tuple(inputs.shape), tuple(targets.shape)
        ((2, 6, 2), (2,))
        >>> bool(torch.allclose((inputs[..., 0] * inputs[..., 1]).sum(1), targets))
        True
    """

    lag: int
    name: ClassVar[str] = "adding"
    input_size: ClassVar[int] = 2
    output_size: ClassVar[int] = 1
    metric: ClassVar[str] = "mse"
    higher_is_better: ClassVar[bool] = False
    chance: ClassVar[float] = 1 / 6  # Var(u1 + u2) for u ~ U(0, 1): the error of always answering 1

    def __post_init__(self) -> None:
        _check_lag(self.lag, 2)

    @property
    def steps(self) -> int:
        """Time steps of one sequence."""
        return self.lag

    def generate(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``count`` sequences and their targets, drawn from ``generator``."""
        half = self.lag // 2
        values = torch.rand(count, self.lag, generator=generator)
        first = torch.randint(0, half, (count,), generator=generator)
        second = torch.randint(half, self.lag, (count,), generator=generator)
        rows = torch.arange(count)
        markers = torch.zeros(count, self.lag)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        return torch.stack([values, markers], dim=-1), values[rows, first] + values[rows, second]

    def outputs(self, readout: Tensor) -> Tensor:
        """The prediction from the readout of every step ``(batch, steps, 1)``: the last step's."""
        return readout[:, -1, 0]

    def loss(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, int]:
        """Summed squared error and the number of items (the Trainer's contract)."""
        return F.mse_loss(outputs, targets, reduction="sum"), targets.numel()

    def final_step_loss(self, last_readout: Tensor, targets: Tensor) -> Tensor:
        """The summed loss made at the last step from its readout ``(batch, 1)``."""
        return F.mse_loss(last_readout[:, 0], targets, reduction="sum")

    def score(self, outputs: Tensor, targets: Tensor) -> float:
        """Mean squared error."""
        return float(F.mse_loss(outputs, targets))


@dataclass(frozen=True)
class CopyMemory:
    """The copy-memory task with delay ``lag``: inputs ``(count, lag + 2 * length)`` of symbol ids
    (0 blank, 1..``symbols`` the symbols, ``symbols + 1`` the delimiter), targets of the same shape
    (blank, then the first ``length`` inputs again at the end).

        >>> task = CopyMemory(5, length=3)
        >>> inputs, targets = task.generate(1, torch.Generator().manual_seed(0))
        >>> tuple(inputs.shape), int(inputs[0, 3 + 4]) == task.delimiter
        ((1, 11), True)
        >>> bool(torch.equal(targets[0, -3:], inputs[0, :3])), int(targets[0, :-3].abs().sum())
        (True, 0)
    """

    lag: int
    symbols: int = 8
    length: int = 10
    name: ClassVar[str] = "copy"
    metric: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_lag(self.lag, 1)
        if self.symbols < 2 or self.length < 1:
            raise ValueError(
                f"need at least 2 symbols and length >= 1, got symbols={self.symbols}, length={self.length}"
            )

    @property
    def steps(self) -> int:
        """Time steps of one sequence: the symbols, the delay, the delimiter's step and the recall."""
        return self.lag + 2 * self.length

    @property
    def delimiter(self) -> int:
        return self.symbols + 1

    @property
    def input_size(self) -> int:
        """One-hot size of the inputs: blank, the symbols, the delimiter."""
        return self.symbols + 2

    @property
    def output_size(self) -> int:
        """Classes of the outputs: blank and the symbols."""
        return self.symbols + 1

    @property
    def chance(self) -> float:
        """Accuracy on the recalled symbols of a guess."""
        return 1 / self.symbols

    def generate(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``count`` input sequences of ids and their target ids, drawn from ``generator``."""
        memory = torch.randint(1, self.symbols + 1, (count, self.length), generator=generator)
        inputs = torch.zeros(count, self.steps, dtype=torch.long)
        inputs[:, : self.length] = memory
        inputs[:, self.length + self.lag - 1] = self.delimiter
        targets = torch.zeros(count, self.steps, dtype=torch.long)
        targets[:, -self.length :] = memory
        return inputs, targets

    def outputs(self, readout: Tensor) -> Tensor:
        """Logits of every step, ``(batch, steps, symbols + 1)``."""
        return readout

    def loss(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, int]:
        """Summed cross-entropy over every step and the number of steps (as Arjovsky et al.)."""
        loss = F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1), reduction="sum")
        return loss, targets.numel()

    def final_step_loss(self, last_readout: Tensor, targets: Tensor) -> Tensor:
        """The summed cross-entropy of the last step."""
        return F.cross_entropy(last_readout, targets[:, -1], reduction="sum")

    def score(self, outputs: Tensor, targets: Tensor) -> float:
        """Accuracy on the recalled symbols (the last ``length`` steps)."""
        recalled = outputs[:, -self.length :].argmax(-1)
        return float((recalled == targets[:, -self.length :]).float().mean())


LongLagTask = AddingProblem | CopyMemory
TASK_NAMES = ("adding", "copy")
LONG_MEMORY_INIT = {
    "rnn": "orthogonal",
    "gru": "orthogonal",
    "lstm": "chrono+orthogonal",
    "peephole": "chrono+orthogonal",
    "layernorm": "chrono+orthogonal",
}
"""The default starts of :class:`LongLagSettings` (see its docstring)."""


def make_task(name: str, lag: int, copy_length: int = 10) -> LongLagTask:
    """The task called ``name`` (``"adding"`` or ``"copy"``, remembering ``copy_length`` symbols) at
    ``lag``.

    >>> make_task("copy", 10).steps, make_task("copy", 10, copy_length=5).steps
    (30, 20)
    """
    if name == "adding":
        return AddingProblem(lag)
    if name == "copy":
        return CopyMemory(lag, length=copy_length)
    raise ValueError(f"unknown long-lag task {name!r}: expected one of {TASK_NAMES}")


class LongLagModel(nn.Module):
    """One recurrent layer of ``kind`` (see :data:`~lstmkit.cell_kinds.CELL_KINDS`) and a linear
    readout, for a long-lag task. Integer inputs (symbol ids) are one-hot encoded.

        >>> model = LongLagModel("gru", AddingProblem(8), hidden_size=4)
        >>> tuple(model(torch.rand(3, 8, 2)).shape)
        (3,)
    """

    def __init__(self, kind: str, task: LongLagTask, hidden_size: int) -> None:
        super().__init__()
        self.kind, self.task = kind, task
        self.rnn = recurrent_layer(kind, task.input_size, hidden_size)
        self.head = nn.Linear(hidden_size, task.output_size)

    def encode(self, inputs: Tensor) -> Tensor:
        """The recurrent layer's input: float inputs as they are, symbol ids one-hot."""
        if inputs.is_floating_point():
            return inputs
        return F.one_hot(inputs, self.task.input_size).to(self.head.weight.dtype)

    def forward(self, inputs: Tensor) -> Tensor:
        hidden, _ = self.rnn(self.encode(inputs))
        return self.task.outputs(self.head(hidden))


@dataclass
class LongLagSettings:
    """What :func:`run_long_lag` trains: every ``kind`` on every task and lag (and the
    ``extra_runs``, ``(task, lag, kind)`` triples, e.g. the longest lags for the gated cells only),
    ``steps`` optimiser steps of ``batch_size`` fresh sequences (``steps_by_task`` overrides per
    task: every cell of a task gets the same budget), Adam at ``lr`` (``lr_by_kind`` overrides per
    cell kind, the rate tuned for it) on a ``schedule``, gradient norm clipped to 1 (a step whose
    gradient is not finite is skipped), scored every ``eval_every`` steps on ``eval_size``
    held-out sequences. ``gradient_lag``: the adding problem's lag at which
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
            _check_lag(lag, 2)
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
            _check_lag(lag, 2)
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


@dataclass
class LongLagRun:
    """One training run: the held-out ``metric`` every ``eval_every`` steps (``curve``, step 0
    first) and the last value (``final``), next to the task's chance level."""

    task: str
    lag: int
    kind: str
    metric: str
    chance: float
    curve: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def final(self) -> float:
        return self.curve[-1][1]

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self) | {"final": self.final}


def stream_seed(seed: int, *parts: object) -> int:
    """A seed for one data stream, the same in every process and run.

    >>> stream_seed(0, "adding", 10) == stream_seed(0, "adding", 10) != stream_seed(0, "adding", 50)
    True
    """
    return zlib.crc32(repr((seed, *parts)).encode())


def set_forget_bias(rnn: Recurrent, value: float) -> None:
    """Start every LSTM forget gate ``f`` of ``rnn`` at ``sigmoid(value)`` (``forget_bias=value`` of
    :mod:`lstmkit.init`: its input bias block ``value``, its recurrent bias block 0); cells without
    an ``f`` gate (RNN, GRU) and without biases are left alone.

        >>> layer = recurrent_layer("lstm", 2, 3)
        >>> set_forget_bias(layer, 1.0)
        >>> layer.bias_ih_l0[3:6].tolist(), layer.bias_hh_l0[3:6].tolist()
        ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    """
    for cell in rnn.cells:
        if cell.forget_gate == "f" and cell.bias:
            initialize(cell, forget_bias=value)


def initial_model(kind: str, task: LongLagTask, settings: LongLagSettings) -> LongLagModel:
    """The untrained model of a run: the same weights for the same ``settings.seed`` and kind, then
    ``settings.init[kind]`` applied if given (``chrono``'s ``T_max``: the task's sequence length),
    else the LSTM forget gates biased by ``settings.forget_bias``."""
    torch.manual_seed(stream_seed(settings.seed, "init", kind))
    model = LongLagModel(kind, task, settings.hidden_size)
    if kind in settings.init:
        initialize(model.rnn, **init_options(settings.init[kind], task.steps))  # type: ignore[arg-type]
    elif settings.forget_bias:
        set_forget_bias(model.rnn, settings.forget_bias)
    return model


def held_out(task: LongLagTask, settings: LongLagSettings) -> tuple[Tensor, Tensor]:
    """The sequences a run is scored on (never trained on)."""
    return task.generate(settings.eval_size, torch.Generator().manual_seed(stream_seed(settings.seed, "eval", task)))


def train_long_lag(kind: str, task: LongLagTask, settings: LongLagSettings) -> tuple[LongLagModel, LongLagRun]:
    """Train a fresh model of ``kind`` on ``task`` for the budget of ``settings``; returns it and its run."""
    started = time.perf_counter()
    model = initial_model(kind, task, settings)
    generator = torch.Generator().manual_seed(stream_seed(settings.seed, "train", task))
    steps = settings.steps_for(task.name)
    inputs, targets = task.generate(steps * settings.batch_size, generator)
    eval_inputs, eval_targets = held_out(task, settings)
    run = LongLagRun(task.name, task.lag, kind, task.metric, task.chance)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {task.metric: task.score(model(eval_inputs), eval_targets)}

    def evaluate_and_record(model: nn.Module) -> dict[str, float]:
        metrics = evaluate(model)
        run.curve.append((trainer.step, metrics[task.metric]))
        return metrics

    def loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, int]:
        return task.loss(model(batch[0]), batch[1])

    def collate(items: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    config = TrainConfig(
        epochs=1,
        max_steps=steps,
        batch_size=settings.batch_size,
        lr=settings.lr_for(kind),
        schedule=settings.schedule,
        on_nonfinite="skip",  # a rare exploding gradient at long lags costs one step, not the whole grid
        eval_every=settings.eval_every,
        log_every=settings.eval_every,
        seed=settings.seed,
        progress=False,
    )
    trainer = Trainer(
        model,
        config,
        train_set=list(zip(inputs, targets, strict=True)),
        collate=collate,
        loss=loss,
        evaluate=evaluate_and_record,
        metric=task.metric,
        mode="max" if task.higher_is_better else "min",
    )
    with torch.no_grad():
        evaluate_and_record(model.eval())
    result = trainer.fit()
    if run.curve[-1][0] != result.steps:
        with torch.no_grad():
            evaluate_and_record(model.eval())
    run.seconds = time.perf_counter() - started
    return model.eval(), run


def _train_in_worker(
    kind: str, task: LongLagTask, settings: LongLagSettings, threads: int
) -> tuple[dict[str, Tensor], LongLagRun]:
    """:func:`train_long_lag` in a worker process; the trained weights travel back as a state dict."""
    torch.set_num_threads(threads)
    model, run = train_long_lag(kind, task, settings)
    return model.state_dict(), run


def run_long_lag(
    settings: LongLagSettings,
    *,
    keep: Callable[[LongLagRun], bool] = lambda run: False,
    progress: Callable[[LongLagRun], None] | None = None,
    jobs: int = 1,
) -> tuple[list[LongLagRun], dict[tuple[str, int, str], LongLagModel]]:
    """Train every run of ``settings.grid()``, ``jobs`` at a time in worker processes (each with
    this process's number of intra-op threads; every run seeds itself, so the results do not
    depend on ``jobs``). Returns the runs (grid order) and the trained models of the runs ``keep``
    selects, keyed by ``(task, lag, kind)``; ``progress`` is called after each run, in grid order."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    grid = [(kind, make_task(task, lag, settings.copy_length)) for task, lag, kind in settings.grid()]
    runs: list[LongLagRun] = []
    models: dict[tuple[str, int, str], LongLagModel] = {}

    def record(kind: str, task: LongLagTask, model: LongLagModel, run: LongLagRun) -> None:
        runs.append(run)
        if keep(run):
            models[(task.name, task.lag, kind)] = model
        if progress is not None:
            progress(run)

    if jobs == 1:
        for kind, task in grid:
            record(kind, task, *train_long_lag(kind, task, settings))
        return runs, models
    context = multiprocessing.get_context("spawn")  # a fork would copy this process's thread pools
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        threads = torch.get_num_threads()
        futures = [pool.submit(_train_in_worker, kind, task, settings, threads) for kind, task in grid]
        for (kind, task), future in zip(grid, futures, strict=True):
            state, run = future.result()
            model = initial_model(kind, task, settings)
            model.load_state_dict(state)
            record(kind, task, model.eval(), run)
    return runs, models


def _format(metric: str, value: float) -> str:
    return f"{value:.1%}" if metric == "accuracy" else f"{value:.4f}"


def recipe_table(settings: LongLagSettings) -> str:
    """A Markdown table of how each cell of ``settings`` is trained: its start and learning rate,
    then every task's budget.

    >>> print(recipe_table(LongLagSettings(kinds=("rnn", "lstm"), tasks=("adding",), lr_by_kind={"rnn": 3e-3})))
    | cell | initialisation | Adam's learning rate |
    |---|---|---|
    | rnn | orthogonal | 0.003 |
    | lstm | chrono+orthogonal | 0.01 |
    <BLANKLINE>
    Every cell: 64 units, batches of 32 fresh sequences, gradient norm clipped to 1; adding: 1500 steps.
    """
    lines = ["| cell | initialisation | Adam's learning rate |", "|---|---|---|"]
    for kind in settings.kinds:
        biased = settings.forget_bias and CELL_KINDS[kind](1, 1).forget_gate == "f"  # as initial_model does
        start = settings.init.get(kind) or (f"forget_bias:{settings.forget_bias:g}" if biased else "default")
        lines.append(f"| {kind} | {start} | {settings.lr_for(kind):g} |")
    budgets = "; ".join(f"{task}: {settings.steps_for(task)} steps" for task in settings.tasks)
    lines += ["", f"Every cell: {settings.hidden_size} units, batches of {settings.batch_size} fresh sequences, "
              f"gradient norm clipped to 1; {budgets}."]  # fmt: skip
    return "\n".join(lines)


def long_lag_table(runs: Sequence[LongLagRun]) -> str:
    """A Markdown table: one row per task and kind, one column per lag, the final metric in each
    cell, and the chance level.

    >>> run = LongLagRun("adding", 10, "lstm", "mse", 1 / 6, [(0, 0.3), (100, 0.01)])
    >>> print(long_lag_table([run]))
    | task (metric) | cell | lag 10 | chance |
    |---|---|---|---|
    | adding (mse, lower is better) | lstm | 0.0100 | 0.1667 |
    """
    lags = sorted({run.lag for run in runs})
    lines = [
        "| task (metric) | cell | " + " | ".join(f"lag {lag}" for lag in lags) + " | chance |",
        "|---|---|" + "---|" * len(lags) + "---|",
    ]
    rows: dict[tuple[str, str], dict[int, LongLagRun]] = {}
    for run in runs:
        rows.setdefault((run.task, run.kind), {})[run.lag] = run
    for (task, kind), by_lag in rows.items():
        some = next(iter(by_lag.values()))
        better = "higher" if some.metric == "accuracy" else "lower"
        cells = [_format(some.metric, by_lag[lag].final) if lag in by_lag else "-" for lag in lags]
        lines.append(
            f"| {task} ({some.metric}, {better} is better) | {kind} | "
            + " | ".join(cells)
            + f" | {_format(some.metric, some.chance)} |"
        )
    return "\n".join(lines)


def learnt(run: LongLagRun) -> bool:
    """Whether a run learnt its task within the budget: a mean squared error below a tenth of the
    chance level, or an accuracy more than halfway from chance to perfect.

    >>> learnt(LongLagRun("adding", 10, "lstm", "mse", 1 / 6, [(0, 0.2), (100, 0.01)]))
    True
    """
    if run.metric == "accuracy":
        return run.final > run.chance + 0.5 * (1 - run.chance)
    return run.final < 0.1 * run.chance


def learnt_summary(runs: Sequence[LongLagRun]) -> str:
    """One sentence per task: the lags at which each kind :func:`learnt` it.

    >>> runs = [LongLagRun("adding", lag, "rnn", "mse", 1 / 6, [(0, 0.2), (9, mse)]) for lag, mse in
    ...         ((10, 0.001), (50, 0.16))]
    >>> learnt_summary(runs + [LongLagRun("adding", 10, "gru", "mse", 1 / 6, [(0, 0.2), (9, 0.2)])])
    'adding problem, rnn: lag 10; gru: none.'
    """
    sentences = []
    for task in dict.fromkeys(run.task for run in runs):
        parts = []
        for kind in dict.fromkeys(run.kind for run in runs if run.task == task):
            lags = [str(run.lag) for run in runs if run.task == task and run.kind == kind and learnt(run)]
            parts.append(
                f"{kind}: {'lag' if len(lags) == 1 else 'lags'} {', '.join(lags)}" if lags else f"{kind}: none"
            )
        sentences.append(f"{task} {'problem' if task == 'adding' else 'task'}, {'; '.join(parts)}.")
    return " ".join(sentences)
