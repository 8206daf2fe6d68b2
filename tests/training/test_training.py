"""The Trainer: schedule, batching, resume bit for bit, checkpoints that never corrupt, NaN policy,
early stopping, files, and data-parallel training equal to one process."""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import re
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import save_file
from torch import nn

import lstmkit
from lstmkit.training import (
    CheckpointError,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    apply_overrides,
    batch_indices,
    config_from_dict,
    learning_rate,
    pad_sequences,
    read_checkpoint,
)
from lstmkit.training import checkpoint as ckpt
from lstmkit.training import progress as progress_module
from lstmkit.training import trainer as trainer_module
from lstmkit.training.batching import epoch_generator
from lstmkit.training.distributed import launch
from lstmkit.training.progress import progress_display


class SequenceRegressor(nn.Module):
    """An lstmkit LSTM with dropout between layers and a linear read-out of the last valid step."""

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()
        self.rnn = lstmkit.LSTM(2, 8, num_layers=2, batch_first=True, dropout=dropout)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(x, lengths=lengths)
        last = output[torch.arange(len(lengths)), (lengths - 1).clamp(min=0)]
        return self.head(last).squeeze(-1)


def make_data(count: int = 48, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    data = []
    for _ in range(count):
        length = int(torch.randint(2, 9, (1,), generator=generator))
        x = torch.randn(length, 2, generator=generator)
        data.append((x, x[:, 0].sum()))
    return data


def collate(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, lengths = pad_sequences([x for x, _ in items])
    return x, lengths, torch.stack([y for _, y in items])


def squared_error(model: nn.Module, batch: tuple) -> tuple[torch.Tensor, int]:
    x, lengths, y = batch
    return ((model(x, lengths) - y) ** 2).sum(), len(y)


def make_trainer(out_dir: Path | None, config: TrainConfig, data=None, loss=squared_error, **kwargs) -> Trainer:
    torch.manual_seed(0)
    data = data or make_data()
    model = SequenceRegressor(kwargs.pop("dropout", 0.3))
    val = make_data(16, seed=2)

    def evaluate(model: nn.Module) -> dict[str, float]:
        total, count = squared_error(model, collate(val))
        return {"val_loss": float(total) / count}

    return Trainer(model, config, train_set=data, collate=collate, loss=loss, evaluate=evaluate,
                   lengths=[len(x) for x, _ in data], out_dir=out_dir, task="regressor", **kwargs)  # fmt: skip


def quiet(**overrides) -> TrainConfig:
    return TrainConfig(**({"progress": False, "batch_size": 8, "log_every": 2, "lr": 1e-2} | overrides))


def test_learning_rate_matches_hand_computation() -> None:
    config = TrainConfig(lr=0.5, schedule="linear", warmup_steps=4, min_lr_ratio=0.2)
    assert learning_rate(config, 0, 20) == pytest.approx(0.5 / 4)
    assert learning_rate(config, 3, 20) == pytest.approx(0.5)
    assert learning_rate(config, 12, 20) == pytest.approx(0.5 * (0.2 + 0.8 * 0.5))
    cosine = TrainConfig(lr=1.0, schedule="cosine", min_lr_ratio=0.0)
    assert learning_rate(cosine, 25, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


@pytest.mark.parametrize("optimizer", ["adamw", "adam"])
def test_weight_decay_is_decoupled_in_adamw_and_a_gradient_term_in_adam(tmp_path: Path, optimizer: str) -> None:
    """With no gradient from the loss, one AdamW step only shrinks every weight by ``lr * weight_decay``
    (Loshchilov & Hutter); Adam's weight decay is an L2 gradient ``weight_decay * w``, which Adam's first
    step turns into ``lr * sign(w)``."""

    def no_gradient(model: nn.Module, batch: tuple) -> tuple[torch.Tensor, int]:
        return sum(p.sum() for p in model.parameters()) * 0.0, len(batch[2])

    config = quiet(epochs=1, max_steps=1, optimizer=optimizer, lr=0.1, weight_decay=0.5, clip_grad_norm=None)
    trainer = make_trainer(tmp_path, config, loss=no_gradient)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    for old, new in zip(before, trainer.model.parameters(), strict=True):
        expected = old * (1 - 0.1 * 0.5) if optimizer == "adamw" else old - 0.1 * old.sign()
        torch.testing.assert_close(new.detach(), expected, atol=1e-4, rtol=1e-5)  # eps where w ~ 0


def test_batches_cover_every_example_once_and_bucket_by_length() -> None:
    lengths = [int(v) for v in torch.randint(1, 50, (103,))]
    batches = batch_indices(103, 10, epoch_generator(3, 1), lengths, pool_batches=10)
    assert sorted(i for b in batches for i in b) == list(range(103))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    shuffled = batch_indices(103, 10, epoch_generator(3, 1))
    unbucketed = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in shuffled) / len(shuffled)
    assert spread < unbucketed / 2
    assert batches == batch_indices(103, 10, epoch_generator(3, 1), lengths, pool_batches=10)
    assert batches != batch_indices(103, 10, epoch_generator(3, 2), lengths, pool_batches=10)


def test_pad_sequences_pads_and_keeps_lengths() -> None:
    padded, lengths = pad_sequences([torch.ones(3, 2), torch.ones(0, 2), torch.ones(1, 2)], padding_value=-1)
    assert lengths.tolist() == [3, 0, 1]
    assert padded.shape == (3, 3, 2)
    assert (padded[1] == -1).all() and (padded[2, 1:] == -1).all() and (padded[0] == 1).all()
    with pytest.raises(ValueError, match="empty batch"):
        pad_sequences([])


def test_training_lowers_the_validation_loss(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, quiet(epochs=6))
    with torch.no_grad():
        before = trainer.evaluate_function(trainer.model.eval())["val_loss"]
    result = trainer.fit()
    assert result.stopped == "completed" and result.steps == 6 * 6
    assert result.best_metric < before / 2
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"train", "val"}
    assert len([r for r in records if r["split"] == "val"]) == 6
    image = __import__("matplotlib.pyplot").pyplot.imread(tmp_path / "curves.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    loaded = read_checkpoint(tmp_path / "checkpoint.safetensors", task="regressor")
    assert loaded["trainer_state"]["step"] == 36


class Crash(RuntimeError):
    pass


def crashing_loss(at_call: int):
    calls = {"n": 0}

    def loss(model: nn.Module, batch: tuple) -> tuple[torch.Tensor, int]:
        calls["n"] += 1
        if calls["n"] == at_call:
            raise Crash("simulated crash")
        return squared_error(model, batch)

    return loss


@pytest.mark.parametrize("crash_at", [5, 13])
def test_resume_after_a_crash_reaches_the_same_weights_bit_for_bit(tmp_path: Path, crash_at: int) -> None:
    config = quiet(epochs=3, checkpoint_every=4, schedule="cosine")
    reference = make_trainer(tmp_path / "a", config)
    reference.fit()
    crashed = make_trainer(tmp_path / "b", config, loss=crashing_loss(crash_at))
    with pytest.raises(Crash):
        crashed.fit()
    resumed = make_trainer(tmp_path / "b", config)
    resumed.fit(resume=True)
    for (name, want), got in zip(
        reference.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(want, got), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps), "records written after the checkpoint must be dropped on resume"


def fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A clock for the trainer that only moves when told; fit_to_time measures from step 2 to step 6."""
    now = [0.0]
    monkeypatch.setattr(trainer_module, "_clock", lambda: now[0])
    monkeypatch.setattr(trainer_module, "FIT_STEPS", (2, 6))
    return now


def one_second_per_step(now: list[float], loss=squared_error):
    def timed_loss(model: nn.Module, batch: tuple) -> tuple[torch.Tensor, int]:
        now[0] += 1.0
        return loss(model, batch)

    return timed_loss


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, want), got in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(want, got), name


def test_fit_to_time_ends_the_schedule_within_the_time_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # One second per step and 20 s: at step 6, 14 s are left, and 98% of them fit 13 more steps.
    now = fake_clock(monkeypatch)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    config = quiet(epochs=20, schedule="cosine", max_seconds=20, fit_to_time=True, progress=True)
    fitted = make_trainer(tmp_path / "fitted", config, loss=one_second_per_step(now))
    result = fitted.fit()
    assert (result.steps, result.stopped) == (19, "max_steps")
    shown = capsys.readouterr()
    assert "at this pace, 19 of the 120 steps fit in the 20 s time cap" in " ".join(shown.err.split())
    assert "step 19/19:" in shown.out.splitlines()[-1], "the progress line counts to the fitted end"
    assert fitted.optimizer.param_groups[0]["lr"] == pytest.approx(learning_rate(config, 18, 19))
    records = [json.loads(line) for line in (tmp_path / "fitted" / "metrics.jsonl").read_text().splitlines()]
    assert [r["scheduled_steps"] for r in records if r["split"] == "schedule"] == [19]
    # Without fit_to_time the cap cuts the same schedule at 20 s, its learning rate far from decayed.
    now[0] = 0.0
    capped = make_trainer(tmp_path / "capped", quiet(epochs=20, schedule="cosine", max_seconds=20),
                          loss=one_second_per_step(now))  # fmt: skip
    assert capped.fit().steps == 20
    assert capped.optimizer.param_groups[0]["lr"] > 0.9 * config.lr


def test_fit_to_time_fits_again_after_each_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Steps of 1 s, evaluations of 3 s every 4 steps, 20 s. At step 6 (9 s, 7 s since step 2) the pace
    # is 1.75 s a step: 12 steps. After the evaluation at step 8 (14 s, 12 s since step 2) it is 2 s
    # a step, and 6 s are left: 10 steps.
    now = fake_clock(monkeypatch)
    config = quiet(epochs=20, schedule="cosine", max_seconds=20, fit_to_time=True, eval_every=4)
    trainer = make_trainer(tmp_path, config, loss=one_second_per_step(now))
    evaluate = trainer.evaluate_function

    def slow_evaluate(model: nn.Module) -> dict[str, float]:
        now[0] += 3.0
        return evaluate(model)

    trainer.evaluate_function = slow_evaluate
    steps = trainer.fit().steps
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["scheduled_steps"]) for r in records if r["split"] == "schedule"] == [(6, 12), (8, 10)]
    assert steps == 10


def test_the_native_engine_is_built_before_the_time_cap_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now, builds = fake_clock(monkeypatch), []

    def slow_first_build() -> None:
        builds.append(now[0])
        now[0] += 100.0  # far beyond the cap: a build inside the budget would leave no step

    monkeypatch.setattr(trainer_module, "load_extension", slow_first_build)
    trainer = make_trainer(tmp_path, quiet(epochs=2, max_seconds=20), loss=one_second_per_step(now))
    assert (trainer.fit().steps, builds) == (12, [0.0])


def test_a_fitted_schedule_survives_a_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = fake_clock(monkeypatch)
    config = quiet(epochs=20, schedule="cosine", max_seconds=20, fit_to_time=True, checkpoint_every=4)
    reference = make_trainer(tmp_path / "a", config, loss=one_second_per_step(now))
    assert reference.fit().steps == 19
    now[0] = 100.0
    crashed = make_trainer(tmp_path / "b", config, loss=one_second_per_step(now, crashing_loss(11)))
    with pytest.raises(Crash):
        crashed.fit()
    assert read_checkpoint(tmp_path / "b" / "checkpoint.safetensors")["trainer_state"]["scheduled_steps"] == 19
    resumed = make_trainer(tmp_path / "b", config, loss=one_second_per_step(now))
    assert resumed.fit(resume=True).steps == 19
    assert_same_weights(reference.model, resumed.model)


def test_fit_to_time_leaves_a_schedule_that_fits_or_has_no_time_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = fake_clock(monkeypatch)
    for cap in (1000, None):
        config = quiet(epochs=2, schedule="cosine", max_seconds=cap, fit_to_time=True)
        trainer = make_trainer(tmp_path / str(cap), config, loss=one_second_per_step(now))
        assert (trainer.fit().steps, trainer.scheduled_steps) == (12, None)


def test_resume_refuses_changed_settings_and_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint.safetensors"):
        make_trainer(tmp_path, quiet(epochs=1)).fit(resume=True)
    make_trainer(tmp_path, quiet(epochs=1)).fit()
    with pytest.raises(ValueError, match=r"lr: 0.01 -> 0.02"):
        make_trainer(tmp_path, quiet(epochs=2, lr=0.02)).fit(resume=True)


def test_a_crash_while_writing_leaves_the_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = make_trainer(tmp_path, quiet(epochs=1))
    trainer.fit()
    path = tmp_path / "checkpoint.safetensors"
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    trainer.step += 1
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """Atomic writes go through a temporary file, which mkstemp creates 0600."""
    before = os.umask(umask)
    try:
        path = ckpt.atomic_write(tmp_path / "new" / "file.bin", b"data")
        first = stat.S_IMODE(path.stat().st_mode)
        ckpt.atomic_write(path, b"again")
    finally:
        os.umask(before)
    assert first == stat.S_IMODE(path.stat().st_mode) == mode
    assert os.umask(before) == before, "the umask is left as it was"


def test_every_file_of_a_run_is_readable_by_others_under_umask_022(tmp_path: Path) -> None:
    before = os.umask(0o022)
    try:
        make_trainer(tmp_path, quiet(epochs=1)).fit()
    finally:
        os.umask(before)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
    assert {"checkpoint.safetensors", "model.safetensors", "config.json", "metrics.jsonl", "curves.png"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes


def test_broken_checkpoints_give_errors_that_name_the_problem(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, quiet(epochs=1))
    trainer.fit()
    good = (tmp_path / "checkpoint.safetensors").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="task 'regressor', expected 'charlm'"):
        read_checkpoint(tmp_path / "checkpoint.safetensors", task="charlm")
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="format None"):
        read_checkpoint(plain)
    saved = read_checkpoint(tmp_path / "checkpoint.safetensors")
    saved["model"].pop("head.bias")
    saved["model"]["head.weight"] = torch.zeros(3, 3)
    saved["model"]["stray"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing tensors \['head.bias'\].*unexpected tensors \['stray'\].*"
                       r"head.weight has shape \(3, 3\), the model expects \(1, 8\)"):  # fmt: skip
        ckpt.restore_checkpoint(saved, trainer.model, trainer.optimizer)


def test_pretrained_folder_round_trip_and_bad_configs(tmp_path: Path) -> None:
    model = SequenceRegressor()
    ckpt.save_pretrained(tmp_path, model, task="regressor", config={"dropout": 0.3})
    loaded = ckpt.load_pretrained(tmp_path, "regressor", lambda config: SequenceRegressor(**config))
    for want, got in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(want, got)
    assert not loaded.training
    with pytest.raises(CheckpointError, match="a model of task 'regressor', expected 'charlm'"):
        ckpt.read_pretrained_config(tmp_path, "charlm")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ckpt.read_pretrained_config(tmp_path, "regressor")
    with pytest.raises(CheckpointError, match="no config.json"):
        ckpt.read_pretrained_config(tmp_path / "nowhere", "regressor")


def nan_after(step: int):
    calls = {"n": 0}

    def loss(model: nn.Module, batch: tuple) -> tuple[torch.Tensor, int]:
        calls["n"] += 1
        total, count = squared_error(model, batch)
        return (total * float("nan") if calls["n"] > step else total), count

    return loss


def test_nonfinite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, quiet(epochs=3), loss=nan_after(8))
    with pytest.raises(TrainingDiverged, match=r"the training loss is nan at step 9 \(epoch 2\).*last good checkpoint"):
        trainer.fit()
    saved = read_checkpoint(tmp_path / "checkpoint.safetensors")
    assert saved["trainer_state"]["step"] == 6
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


def test_nonfinite_loss_can_be_skipped(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, quiet(epochs=2, on_nonfinite="skip"), loss=nan_after(3))
    result = trainer.fit()
    assert result.steps == 12
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_early_stopping_after_patience(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, quiet(epochs=50, patience=2, lr=0.5, clip_grad_norm=None))
    scores = iter([3.0, 2.0, 2.5, 2.4, 1.0])
    trainer.evaluate_function = lambda model: {"val_loss": next(scores)}
    result = trainer.fit()
    assert result.stopped == "early_stopping"
    assert result.steps == 4 * 6 and result.best_metric == 2.0 and result.best_step == 12


def test_config_overrides_are_typed_and_checked() -> None:
    config = apply_overrides(TrainConfig(), ["lr=0.5", "max_steps=none", "progress=false", "patience=3"])
    assert (config.lr, config.max_steps, config.progress, config.patience) == (0.5, None, False, 3)
    with pytest.raises(ValueError, match="unknown TrainConfig fields \\['learning_rate'\\]"):
        apply_overrides(TrainConfig(), ["learning_rate=1"])
    with pytest.raises(ValueError, match="batch_size: expected an integer, got 'ten'"):
        apply_overrides(TrainConfig(), ["batch_size=ten"])
    with pytest.raises(ValueError, match="expected key=value"):
        apply_overrides(TrainConfig(), ["lr"])
    with pytest.raises(ValueError, match="unknown optimizer 'sgdx'"):
        config_from_dict(TrainConfig, {"optimizer": "sgdx"})
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"need 0 < lr <= 1e\+06, .* got 1e\+38"):
        apply_overrides(TrainConfig(), ["lr=1e38"])


def test_empty_training_set_is_refused() -> None:
    with pytest.raises(ValueError, match="training set is empty"):
        Trainer(nn.Linear(1, 1), quiet(), train_set=[], collate=list, loss=squared_error)


def distributed_run(out_dir: str, batch_size: int, world: int) -> None:
    trainer = make_trainer(Path(out_dir), quiet(epochs=2, batch_size=batch_size, schedule="cosine"), dropout=0.0)
    assert trainer.world == world and isinstance(trainer.network, torch.nn.parallel.DistributedDataParallel) == (
        world > 1
    )
    trainer.fit()


def test_two_processes_reach_the_weights_of_one(tmp_path: Path) -> None:
    launch(distributed_run, 1, str(tmp_path / "one"), 8, 1)
    launch(distributed_run, 2, str(tmp_path / "two"), 8, 2)
    one = ckpt.read_checkpoint(tmp_path / "one" / "checkpoint.safetensors")["model"]
    two = ckpt.read_checkpoint(tmp_path / "two" / "checkpoint.safetensors")["model"]
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    moved = any(not torch.equal(one[name], SequenceRegressor(0.0).state_dict()[name]) for name in one)
    assert moved


def late_second_process_run(out_dir: str) -> None:
    """Process 1 starts 0.3 s after process 0, which meanwhile waits for it at the first step: process
    0's clock reaches the 0.6 s time cap 0.3 s before process 1's."""
    rank = torch.distributed.get_rank()

    def loss(model: nn.Module, batch: tuple) -> tuple[torch.Tensor, int]:
        time.sleep(0.02)
        return squared_error(model, batch)

    trainer = make_trainer(Path(out_dir), quiet(epochs=100, max_seconds=0.6), loss=loss, dropout=0.0)
    if rank == 1:
        time.sleep(0.3)
    result = trainer.fit()
    (Path(out_dir) / f"steps_of_process_{rank}").write_text(f"{result.steps} {result.stopped}")


def test_processes_stop_at_the_same_step_when_one_reaches_the_time_cap_first(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            launch(late_second_process_run, 2, str(tmp_path))
        except BaseException as error:  # noqa: BLE001 (reported below, in the test's thread)
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(120)
    if thread.is_alive():  # the bug this guards against: one process waits for the other forever
        for child in multiprocessing.active_children():
            child.kill()
        pytest.fail("the two processes did not finish within 120 s: one stopped while the other waits for it")
    assert not errors, errors
    first, second = ((tmp_path / f"steps_of_process_{rank}").read_text() for rank in (0, 1))
    assert first == second
    assert first.endswith("max_seconds") and int(first.split()[0]) < 600


@pytest.mark.parametrize("width", [80, 120])
def test_the_progress_bar_fits_the_terminal_with_its_steps_and_labelled_times(width: int) -> None:
    screen = io.StringIO()
    console = Console(file=screen, width=width, force_terminal=True, color_system=None)
    progress = progress_display(console, shown=True, terminal=True)
    progress.add_task("epoch 10/40", total=13440, completed=1200, loss="2.3412", metric="val_loss 0.9123",
                      rate="1,234 items/s")  # fmt: skip
    console.print(progress.make_tasks_table(progress.tasks))
    (line,) = screen.getvalue().splitlines()
    assert len(line) <= width and "\u2026" not in line, line
    assert re.search(r"epoch 10/40 .*1200/13440 loss 2\.3412 val_loss 0\.9123 .*elapsed \d:\d\d:\d\d eta \S+$", line)
    assert ("items/s" in line) == ("\u2501" in line) == (width >= 120), line


def test_without_a_terminal_progress_is_plain_lines(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    make_trainer(None, quiet(epochs=2, progress=True)).fit()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, "the first step and the end, within 10 s"
    assert re.fullmatch(r"epoch 1/2, step 1/12: loss \d+\.\d{4}, elapsed 0:00:\d\d, eta \d:\d\d:\d\d", lines[0]), lines
    assert re.fullmatch(r"epoch 2/2, step 12/12: loss \d+\.\d{4}, val_loss \d+\.\d{4}, [\d,]+ items/s, "
                        r"elapsed 0:00:\d\d, eta 0:00:00", lines[1]), lines  # fmt: skip
    monkeypatch.setattr(progress_module, "PLAIN_SECONDS", 0.0)
    make_trainer(None, quiet(epochs=2, progress=True)).fit()
    assert [int(re.search(r"step (\d+)/", line)[1]) for line in capsys.readouterr().out.splitlines()] == list(
        range(1, 13)
    ), "every step when the interval is 0"
