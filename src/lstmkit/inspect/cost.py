"""Parameters and cost of each cell kind at the same size: how many weights, how long a forward
pass and a training step take.

The textbook claim is that a GRU has three weight blocks where an LSTM has four, so 3/4 of the
parameters, and is faster for it. :func:`measure_cost` counts and times it here, on two engines: the
one lstmkit picks by default (``auto``: torch's fused kernels, the native C++ loops or the
reference loop, whichever runs that cell fastest) and the ``reference`` autograd loop, which runs
every cell through the same Python code, so that the difference between kinds is the arithmetic
of the cell alone. Timings are medians over ``repeats`` rounds, the kinds measured round-robin
within each round so that a busy machine slows all of them alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..cell_kinds import CELL_KINDS, check_cell, recurrent_layer
from ..engine import resolve_engine
from ..layers import Recurrent

ENGINES = ("auto", "reference")


def parameter_count(module: nn.Module) -> int:
    """The number of trainable numbers in ``module``.

    >>> parameter_count(recurrent_layer("gru", 10, 20))  # 3 blocks of 20 x (10 + 20) + 2 biases
    1920
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@dataclass
class CostRow:
    """One cell kind's parameter count and times in milliseconds, per engine: ``forward_ms`` and
    ``train_ms`` (forward, backward and an Adam step) map engine name to the median time."""

    kind: str
    parameters: int
    forward_ms: dict[str, float]
    train_ms: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class CostSettings:
    """The size every kind is measured at: a batch of ``batch_size`` sequences of ``steps`` steps of
    ``input_size`` features through one layer of ``hidden_size`` units."""

    kinds: tuple[str, ...] = tuple(CELL_KINDS)
    input_size: int = 64
    hidden_size: int = 128
    steps: int = 50
    batch_size: int = 32
    repeats: int = 7
    warmup: int = 3
    engines: tuple[str, ...] = ENGINES
    seed: int = 0

    def __post_init__(self) -> None:
        for kind in self.kinds:
            check_cell(kind)
        for engine in self.engines:
            resolve_engine(engine)
        for name in ("input_size", "hidden_size", "steps", "batch_size", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


QUICK = CostSettings(repeats=3, warmup=2)
"""The ``--quick`` budget."""


def _timers(kind: str, engine: str, settings: CostSettings) -> tuple[Callable[[], None], Callable[[], None]]:
    layer = Recurrent(CELL_KINDS[kind], settings.input_size, settings.hidden_size, batch_first=True, engine=engine)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3)
    inputs = torch.randn(settings.batch_size, settings.steps, settings.input_size)

    def forward() -> None:
        with torch.no_grad():
            layer(inputs)

    def train_step() -> None:
        output, _ = layer(inputs)
        optimizer.zero_grad(set_to_none=True)
        output.square().mean().backward()
        optimizer.step()

    return forward, train_step


def _seconds(function: Callable[[], None]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def measure_cost(settings: CostSettings, progress: Callable[[str], None] | None = None) -> list[CostRow]:
    """Count and time every kind of ``settings`` (see the module docstring).

    >>> rows = measure_cost(CostSettings(kinds=("rnn", "lstm"), input_size=4, hidden_size=8, steps=3,
    ...                                  batch_size=2, repeats=1, warmup=0, engines=("reference",)))
    >>> [(row.kind, row.parameters) for row in rows]
    [('rnn', 112), ('lstm', 448)]
    """
    torch.manual_seed(settings.seed)
    timers = {(kind, engine): _timers(kind, engine, settings) for kind in settings.kinds for engine in settings.engines}
    for kind, engine in timers:
        if progress is not None:
            progress(f"warming up {kind} on {engine}")
        for _ in range(settings.warmup):
            for function in timers[kind, engine]:
                function()
    samples: dict[tuple[str, str, int], list[float]] = {key: [] for key in _sample_keys(timers)}
    for _ in range(settings.repeats):
        for (kind, engine), functions in timers.items():
            for which, function in enumerate(functions):
                samples[kind, engine, which].append(_seconds(function))
    rows = []
    for kind in settings.kinds:
        count = parameter_count(recurrent_layer(kind, settings.input_size, settings.hidden_size))
        forward = {engine: 1e3 * statistics.median(samples[kind, engine, 0]) for engine in settings.engines}
        train = {engine: 1e3 * statistics.median(samples[kind, engine, 1]) for engine in settings.engines}
        rows.append(CostRow(kind, count, forward, train))
    return rows


def _sample_keys(timers: dict[tuple[str, str], object]) -> list[tuple[str, str, int]]:
    return [(kind, engine, which) for kind, engine in timers for which in (0, 1)]


def cost_table(rows: Sequence[CostRow], reference_kind: str = "lstm") -> str:
    """A Markdown table of ``rows``: parameters (and their ratio to ``reference_kind``'s), then the
    forward and training-step times per engine.

    >>> print(cost_table([CostRow("gru", 3, {"auto": 1.0}, {"auto": 2.0}), CostRow("lstm", 4, {"auto": 1.5},
    ...                   {"auto": 3.0})]))
    | cell | parameters | vs lstm | forward, auto (ms) | training step, auto (ms) |
    |---|---|---|---|---|
    | gru | 3 | 0.75 | 1.00 | 2.00 |
    | lstm | 4 | 1.00 | 1.50 | 3.00 |
    """
    engines = list(rows[0].forward_ms) if rows else []
    base = next((row.parameters for row in rows if row.kind == reference_kind), None)
    header = ["cell", "parameters", f"vs {reference_kind}"]
    header += [f"forward, {engine} (ms)" for engine in engines] + [
        f"training step, {engine} (ms)" for engine in engines
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        ratio = f"{row.parameters / base:.2f}" if base else "-"
        cells = [row.kind, f"{row.parameters:,}", ratio]
        cells += [f"{row.forward_ms[e]:.2f}" for e in engines] + [f"{row.train_ms[e]:.2f}" for e in engines]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
