"""What the four tasks share: the command line's refusal of bad arguments, in one clear line, the
settings of a run and its ``task.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from task_helpers import assert_clear_error

from lstmkit.tasks import TASKS
from lstmkit.tasks.runner import DataField, Preset, TaskSettings, write_task_file
from lstmkit.training import TrainConfig


@dataclass
class ToyData:
    dataset: str = "toy"
    columns: list[str] = field(default_factory=list)


@dataclass
class ToyModel:
    columns: list[str]
    mean: list[float]
    hidden_size: int = 4


TOY_FIELDS = {
    "columns": DataField(["y"], "the columns come from the data"),
    "mean": DataField([0.0], "the mean comes from the training data"),
}
TOY_PRESETS = {"small": Preset(ToyData(), {"hidden_size": 8}, TrainConfig(epochs=2, lr=0.5))}
TOY = TaskSettings(ToyData, ToyModel, TOY_FIELDS, TOY_PRESETS)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "--preset", "huge"], "unknown preset 'huge'"),
        (["train", "--set", "hiden_size=3"], "unknown setting 'hiden_size'"),
        (["train", "--cell", "transformer"], "unknown cell 'transformer'"),
        (["evaluate", "--checkpoint", "/nonexistent"], "no config.json"),
    ],
)
def test_every_task_refuses_bad_arguments_in_one_clear_line(task: str, arguments: list[str], message: str) -> None:
    assert_clear_error([task, *arguments], message)


def test_a_run_takes_the_preset_then_the_overrides_then_the_options() -> None:
    data, model, train = TOY.configure("small", ["dataset=other", "hidden_size=16", "lr=0.1"], epochs=5, seed=None)
    assert data == ToyData("other") and model == {"hidden_size": 16}
    assert (train.epochs, train.lr, train.seed) == (5, 0.1, 0)
    data, _, _ = TOY.configure("small", ["columns=a,b"])
    assert data.columns == ["a", "b"], "a data setting of the same name is set, not refused"
    with pytest.raises(ValueError, match=r"--set mean=\.\.\.: the mean comes from the training data; it cannot be set"):
        TOY.configure("small", ["mean=1"])
    with pytest.raises(ValueError, match=r"unknown preset 'large': expected one of \['small'\]"):
        TOY.configure("large")


def test_the_task_file_records_the_data_settings(tmp_path: Path) -> None:
    assert TOY.read_task_data(tmp_path) == ToyData(), "no task.json: the defaults"
    write_task_file(tmp_path, ToyData("other", ["a"]), "somewhere", notes=["filled"])
    assert json.loads((tmp_path / "task.json").read_text()) == {
        "data": {"dataset": "other", "columns": ["a"]}, "source": "somewhere", "notes": ["filled"]
    }  # fmt: skip
    assert TOY.read_task_data(tmp_path) == ToyData("other", ["a"])
    (tmp_path / "task.json").write_text('{"data": {"dataset": "x", "size": 3}}')
    with pytest.raises(ValueError, match=r"task.json: unknown ToyData fields \['size'\]"):
        TOY.read_task_data(tmp_path)
    (tmp_path / "task.json").write_text("{")
    with pytest.raises(ValueError, match="task.json: not a valid task file"):
        TOY.read_task_data(tmp_path)
