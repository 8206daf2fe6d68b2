"""What the four tasks share: the options of every ``train`` command, the intra-op threads they run
with, the refusal of bad arguments in one clear line, the settings of a run and its ``task.json``,
and the reading of the files users give."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from task_helpers import assert_clear_error, flat, runner

from lstmkit.cli import app
from lstmkit.tasks import TASKS
from lstmkit.tasks.files import read_csv, read_text
from lstmkit.tasks.runner import DataField, Preset, TaskSettings, write_task_file
from lstmkit.training import TrainConfig
from lstmkit.training.trainer import TrainingDiverged

SHARED_OPTIONS = ("--preset", "--cell", "--out", "--set", "--epochs", "--max-steps", "--seed", "--resume", "--nproc",
                  "--quiet", "--threads", "--precision", "--overwrite")  # fmt: skip


class FileError(ValueError):
    pass


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
def test_every_train_command_has_the_shared_options(task: str) -> None:
    result = runner.invoke(app, [task, "train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert all(option in result.output for option in SHARED_OPTIONS), result.output


@pytest.mark.parametrize("task", TASKS)
def test_threads_apply_to_the_command_and_are_restored_after_it(task: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def configure(*_: object, **__: object) -> None:
        seen.append(torch.get_num_threads())
        raise ValueError("stopped before training")

    monkeypatch.setattr(f"lstmkit.tasks.{task}.cli.configure", configure)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for arguments in ([], ["--threads", "3"], ["--threads", "0"]):
            result = runner.invoke(app, [task, "train", *arguments])
            assert result.exit_code == 2 and "stopped before training" in result.output, result.output
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1 if task == "forecast" else 2, 3, 2], "forecast runs on one thread unless told otherwise"


@pytest.mark.parametrize("task", TASKS)
def test_a_diverged_run_ends_in_one_line_and_exit_code_1(task: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def configure(*_: object, **__: object) -> None:
        raise TrainingDiverged("the training loss is nan at step 9 (epoch 2); the last good checkpoint is kept")

    monkeypatch.setattr(f"lstmkit.tasks.{task}.cli.configure", configure)
    result = runner.invoke(app, [task, "train"])
    assert result.exit_code == 1, result.output
    assert "training stopped: the training loss is nan at step 9" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), "a clean exit, no traceback"


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


def test_training_refuses_an_out_folder_with_another_run_unless_told(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("a folder with other files is no run, nor one with the metrics of a run killed")
    (out / "metrics.jsonl").write_text('{"step": 1, "split": "train", "loss": 2.0}\n')  # before it saved anything
    corpus = tmp_path / "small.txt"
    corpus.write_text("To be, or not to be: that is the question.\n" * 6)
    train = ["charlm", "train", "--preset", "sentence", "--corpus", str(corpus), "--max-steps", "2", "--sample", "0",
             "-q", "--out", str(out)]  # fmt: skip
    assert runner.invoke(app, train).exit_code == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    result = runner.invoke(app, train)
    assert result.exit_code == 2, result.output
    assert flat(result.stderr) == (f"error: {out} holds another run (config.json, model.safetensors, checkpoint."
                                   "safetensors); pass --overwrite to replace it, --resume to continue it, or choose "
                                   "another --out")  # fmt: skip
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before, "the run is left as it was"
    result = runner.invoke(app, [*train, "--resume", "--overwrite"])
    assert result.exit_code == 2 and "give one of them" in result.stderr, result.output
    assert runner.invoke(app, [*train, "--max-steps", "3", "--resume"]).exit_code == 0  # the last --max-steps counts
    assert runner.invoke(app, [*train, "--overwrite"]).exit_code == 0


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


def test_text_files_are_read_as_utf8_or_refused_with_the_line(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_bytes("\ufeffcafé\r\nthé\n".encode())
    assert read_text(good, FileError, "text") == "café\r\nthé\n", "the byte-order mark goes, the rest stays"
    cases = {
        "missing.txt": (None, "missing.txt: no such file"),
        "empty.txt": (b" \n\n", "empty.txt: the file is empty; expected some words"),
        "binary.txt": (b"a\nb\nc\x00d", "binary.txt, line 3: a NUL byte (a binary file?)"),
        "latin.txt": ("a\nb\ncaf\xe9\n".encode("latin-1"), "latin.txt, line 3: not valid UTF-8"),
    }
    for name, (content, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(FileError) as caught:
            read_text(tmp_path / name, FileError, "some words")
        assert message in str(caught.value)
    with pytest.raises(FileError, match=f"^{tmp_path}: is a directory, expected a file$"):
        read_text(tmp_path, FileError, "some words")


@pytest.mark.parametrize("task", TASKS)
def test_a_folder_given_as_data_is_named_a_directory(task: str, tmp_path: Path) -> None:
    data = {"charlm": ["--corpus"], "forecast": ["--column", "y", "--csv"]}.get(task, ["--data"])
    assert_clear_error(
        [task, "train", *data, str(tmp_path), "--out", str(tmp_path / "out")],
        f"{tmp_path}: is a directory, expected a file",
    )


def test_csv_files_give_their_columns_and_rows_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("\n a , b\n1,2\n\n3,4\n")
    assert read_csv(path, FileError, "rows") == (["a", "b"], [(3, ["1", "2"]), (5, ["3", "4"])])
    cases = {
        "a,b,a\n1,2,3\n": "line 1: duplicated columns ['a']",
        "a,b\n1,2\n3\n": "line 3: 1 fields, expected 2",
        "a,b\n\n": "a header but no rows",
        ",,\n": "no column names; expected rows",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(FileError) as caught:
            read_csv(path, FileError, "rows")
        assert message in flat(str(caught.value))
