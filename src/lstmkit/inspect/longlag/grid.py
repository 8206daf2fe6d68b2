"""Every run of the long-lag experiment, :func:`run_long_lag`: the grid of the settings trained one
after the other, or ``jobs`` at a time in worker processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import torch
from torch import Tensor

from .problems import LongLagTask, make_task
from .settings import LongLagSettings
from .training import LongLagModel, LongLagRun, initial_model, train_long_lag


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
