"""What the long-lag experiment says in text: how each cell was trained (:func:`recipe_table`), what
each reached at every lag (:func:`long_lag_table`), and at which lags each learnt its task
(:func:`learnt`, :func:`learnt_summary`)."""

from __future__ import annotations

from collections.abc import Sequence

from ...cell_kinds import CELL_KINDS
from .settings import LongLagSettings
from .training import LongLagRun


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
