"""The long-lag experiments' budgets: per-task steps, per-cell learning rates, the extra runs of the
longest lags, the recipe table, the CLI's overrides, and worker processes that change nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lstmkit.cli import app
from lstmkit.inspect import longlag

TINY = longlag.LongLagSettings(
    tasks=("adding", "copy"), lags=(6,), kinds=("rnn", "lstm"), extra_runs=(("adding", 9, "lstm"),), hidden_size=4,
    steps=4, steps_by_task={"copy": 6}, batch_size=4, eval_every=2, eval_size=8, lr_by_kind={"rnn": 3e-3},
)  # fmt: skip


def test_grid_adds_the_extra_runs_of_its_tasks_and_kinds_only() -> None:
    assert TINY.grid() == [
        ("adding", 6, "rnn"), ("adding", 6, "lstm"), ("adding", 9, "lstm"), ("copy", 6, "rnn"), ("copy", 6, "lstm"),
    ]  # fmt: skip
    only_rnn = longlag.LongLagSettings(**{**TINY.__dict__, "kinds": ("rnn",)})
    assert ("adding", 9, "lstm") not in only_rnn.grid()
    only_copy = longlag.LongLagSettings(**{**TINY.__dict__, "tasks": ("copy",)})
    assert all(task == "copy" for task, _, _ in only_copy.grid())


def test_budgets_per_task_and_rates_per_cell_reach_the_trainer() -> None:
    assert (TINY.steps_for("adding"), TINY.steps_for("copy")) == (4, 6)
    assert (TINY.lr_for("rnn"), TINY.lr_for("lstm")) == (3e-3, 1e-2)
    runs, _ = longlag.run_long_lag(TINY)
    assert [run.curve[-1][0] for run in runs] == [4, 4, 4, 6, 6]
    model = longlag.initial_model("rnn", longlag.AddingProblem(6), TINY)
    with pytest.raises(ValueError, match="must be positive"):
        longlag.LongLagSettings(lr_by_kind={"rnn": 0.0})
    with pytest.raises(ValueError, match="unknown cell 'transformer'"):
        longlag.LongLagSettings(lr_by_kind={"transformer": 1e-3})
    with pytest.raises(ValueError, match=r"steps_by_task\['copy'\] must be at least 1"):
        longlag.LongLagSettings(steps_by_task={"copy": 0})
    with pytest.raises(ValueError, match="unknown long-lag task 'sort'"):
        longlag.LongLagSettings(extra_runs=(("sort", 500, "lstm"),))
    with pytest.raises(ValueError, match="unknown schedule 'cyclic'"):
        longlag.LongLagSettings(schedule="cyclic")
    assert model.rnn.cell().weight_hh.shape == (4, 4)


def test_worker_processes_give_the_same_runs_and_models() -> None:
    keep = lambda run: run.kind == "lstm"  # noqa: E731
    alone, alone_models = longlag.run_long_lag(TINY, keep=keep)
    seen = []
    shared, shared_models = longlag.run_long_lag(TINY, keep=keep, jobs=2, progress=lambda run: seen.append(run.lag))
    assert [run.curve for run in shared] == [run.curve for run in alone]
    assert seen == [run.lag for run in alone]  # progress in grid order
    kept = [("adding", 6, "lstm"), ("adding", 9, "lstm"), ("copy", 6, "lstm")]
    assert list(shared_models) == list(alone_models) == kept
    for key, model in alone_models.items():
        for name, value in model.state_dict().items():
            assert torch.equal(value, shared_models[key].state_dict()[name]), (key, name)
    with pytest.raises(ValueError, match="jobs must be at least 1, got 0"):
        longlag.run_long_lag(TINY, jobs=0)


def test_recipe_table_names_each_cells_start_rate_and_budget() -> None:
    table = longlag.recipe_table(TINY)
    assert "| rnn | orthogonal | 0.003 |" in table and "| lstm | chrono+orthogonal | 0.01 |" in table
    assert "adding: 4 steps; copy: 6 steps" in table
    unbiased = longlag.LongLagSettings(kinds=("lstm", "gru"), init={}, forget_bias=1.0)
    assert "| lstm | forget_bias:1 |" in longlag.recipe_table(unbiased)
    assert "| gru | default |" in longlag.recipe_table(unbiased)


def test_cli_budget_options_replace_the_per_task_and_per_cell_defaults(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["inspect", "long-lag", "--tasks", "copy", "--lags", "4", "--kinds", "lstm",
                                      "--steps", "2", "--lr", "0.005", "--hidden-size", "3", "--init", "rnn=default",
                                      "--jobs", "1", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads((out / "long_lag.json").read_text())
    settings = document["settings"]
    assert settings["steps_by_task"] == {} and settings["lr_by_kind"] == {} and settings["extra_runs"] == []
    assert settings["init"]["rnn"] == "default" and settings["init"]["lstm"] == "chrono+orthogonal"
    assert [run["curve"][-1][0] for run in document["runs"]] == [2]
    assert "| lstm | chrono+orthogonal | 0.005 |" in (out / "long_lag.md").read_text()
