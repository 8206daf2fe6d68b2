"""What the tests of the four tasks share: runs of the tiny presets, the command line's output read as
one line, the weights two runs saved compared bit for bit, a run that crashes and is resumed, and the
warning of ``evaluate`` when the data file changed after training."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from lstmkit.cli import app
from lstmkit.training import read_checkpoint

runner = CliRunner()


class Crash(RuntimeError):
    """The failure injected into a training run."""


def tiny(configure: Callable[..., tuple], *overrides: str, **options: Any) -> tuple:
    """The settings of a task's ``tiny`` preset with ``overrides`` and training ``options``, without a
    progress bar."""
    return configure("tiny", list(overrides), progress=False, **options)


def train_tiny(configure: Callable[..., tuple], train: Callable[..., tuple], folder: Path) -> tuple:
    """A task's ``tiny`` preset trained into ``folder`` to the end of its budget; returns the model,
    the run's result and the task's figures."""
    model, result, figures = train(*tiny(configure), folder)
    assert result.stopped == "completed"
    return model, result, figures


def flat(text: str) -> str:
    """``text`` with every run of white space made one space (rich wraps long lines)."""
    return " ".join(text.split())


def assert_same_weights(first: Path, second: Path) -> None:
    """The checkpoints of the runs in the folders ``first`` and ``second`` hold the same weights."""
    one = read_checkpoint(first / "checkpoint.safetensors")["model"]
    other = read_checkpoint(second / "checkpoint.safetensors")["model"]
    assert one.keys() == other.keys()
    for name in one:
        assert torch.equal(one[name], other[name]), name


def assert_resume_after_crash_is_exact(
    train: Callable[..., Any],
    settings: tuple,
    task: ModuleType,
    loss: str,
    crash_at: int,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Train ``settings`` once into ``folder/whole``; train them again into ``folder/crashed`` with
    the task module's ``loss`` function raising :class:`Crash` on its ``crash_at``-th call, and
    resume that run: both end with the same weights, bit for bit."""
    train(*settings, folder / "whole")
    calls = {"n": 0}
    original = getattr(task, loss)

    def crashing(model: torch.nn.Module, batch: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise Crash("simulated crash")
        return original(model, batch)

    monkeypatch.setattr(task, loss, crashing)
    with pytest.raises(Crash):
        train(*settings, folder / "crashed")
    monkeypatch.setattr(task, loss, original)
    train(*settings, folder / "crashed", resume=True)
    assert_same_weights(folder / "whole", folder / "crashed")


def assert_command_line_resume_is_exact(arguments: list[str], folder: Path, stop: int, steps: int) -> None:
    """``lstmkit <arguments>`` run once into ``folder/whole``, and into ``folder/split`` stopped
    after ``stop`` steps then resumed to its end (``steps`` in all): the same weights, bit for bit."""
    assert runner.invoke(app, [*arguments, "--out", str(folder / "whole")]).exit_code == 0
    first = runner.invoke(app, [*arguments, "--out", str(folder / "split"), "--max-steps", str(stop)])
    assert first.exit_code == 0 and f"stopped after {stop} steps" in first.output, first.output
    second = runner.invoke(app, [*arguments, "--out", str(folder / "split"), "--resume"])
    assert second.exit_code == 0 and f"stopped after {steps} steps" in second.output, second.output
    assert_same_weights(folder / "whole", folder / "split")


def assert_clear_error(arguments: list[str], message: str) -> None:
    """``lstmkit <arguments>`` exits with code 2 and says ``message``."""
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert message in flat(result.output), result.output


def train_in_two_processes(arguments: list[str], out: Path) -> tuple[str, list[str]]:
    """Run ``lstmkit <arguments> --nproc 2 --out OUT --quiet``, which must succeed; returns what it
    printed and the records of OUT/metrics.jsonl."""
    result = runner.invoke(app, [*arguments, "--nproc", "2", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return result.output, (out / "metrics.jsonl").read_text().splitlines()


def assert_evaluate_warns_once_the_data_changed(
    task: str, data: Path, out: Path, options: list[str], counts: dict[str, int], split: str, more: str
) -> None:
    """``lstmkit <task> train`` of the tiny preset (two steps, ``options``) on the file ``data`` into
    ``out`` records the split ``counts`` it trained on; ``lstmkit <task> evaluate`` of ``split`` warns
    of nothing until the rows ``more`` are appended to ``data``, then in one line that the file has
    changed since the run trained on it."""
    result = runner.invoke(app, [task, "train", "--preset", "tiny", "--data", str(data), "--out", str(out),
                                 "--quiet", "--max-steps", "2", *options])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "task.json").read_text())["trained_on"]["counts"] == counts
    evaluate = [task, "evaluate", "-c", str(out), "--split", split]
    result = runner.invoke(app, evaluate)
    assert result.exit_code == 0 and result.stderr == "", result.output
    with data.open("a") as file:
        file.write(more)
    result = runner.invoke(app, evaluate)
    assert result.exit_code == 0 and result.stderr.count("\n") == 1, result.output
    assert flat(result.stderr).startswith(f"warning: {data} has changed since the run trained on it (train "
                                          f"{counts['train']}, validation")  # fmt: skip
    assert "the figures are for the data as it is now" in flat(result.stderr)
