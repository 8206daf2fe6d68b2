"""The training loop shared by every task.

A task gives the :class:`Trainer` its model, its training examples, a ``collate`` that turns a list
of examples into a batch, a ``loss`` that returns ``(sum of per-item losses, number of items)`` for a
batch, and optionally an ``evaluate`` that returns held-out metrics. The trainer does the rest:
optimiser and learning-rate schedule, gradient clipping, bucketed batches, early stopping, reduced
precision (``TrainConfig.precision``: each step's forward pass and each evaluation under bf16
autocast, the backward pass and the optimizer step on the float32 weights outside it), a rich
progress bar (plain lines when stdout is not a terminal), metrics in ``metrics.jsonl``, atomic
checkpoints and ``--resume``, curves as a PNG, NaN/inf detection, and data-parallel training across
processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..engine.native.build import load_extension
from ..layers import Recurrent
from ..precision import autocast_for
from . import checkpoint as ckpt
from .batching import batch_indices, epoch_generator
from .config import TrainConfig
from .distributed import all_reduce_sum, init_from_environment, rank_and_world
from .plots import plot_curves
from .progress import progress_display

CHECKPOINT_NAME = "checkpoint.safetensors"
METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"
# Fields that may change when a run resumes: the budget and the display; anything else would make
# the resumed run a different run.
RESUMABLE_CHANGES = {"epochs", "max_steps", "max_seconds", "patience", "progress", "log_every", "checkpoint_every"}

# fit_to_time: the pace is measured from the FIT_STEPS[0]-th step of a run (or of its resumption: the
# first steps load and warm up the engine) to the FIT_STEPS[1]-th, where the schedule is fitted, and
# again at each evaluation after it (evaluations included); the steps get FIT_MARGIN of the time left.
FIT_STEPS = (10, 100)
FIT_MARGIN = 0.98

LossFunction = Callable[[nn.Module, Any], tuple[Tensor, float]]
EvaluateFunction = Callable[[nn.Module], Mapping[str, float]]


def _clock() -> float:
    """Seconds on a monotonic clock: what budgets, rates and ``fit_to_time`` read."""
    return time.perf_counter()


def _record_step(line: str) -> float:
    """The step of a ``metrics.jsonl`` line; infinite for a line cut short by a crash (dropped on resume)."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


# The trainer's position in a checkpoint: each field's JSON types, and their name for messages.
_NUMBER, _NONE = (float, int), type(None)
TRAINER_STATE: dict[str, tuple[tuple[type, ...], str]] = {
    "step": ((int,), "int"),
    "epoch": ((int,), "int"),
    "next_batch": ((int,), "int"),
    "bad_evaluations": ((int,), "int"),
    "best_metric": ((*_NUMBER, _NONE), "float or None"),
    "best_step": ((int, _NONE), "int or None"),
    "elapsed": (_NUMBER, "float"),
    "last_metrics": ((dict,), "object"),
    "scheduled_steps": ((int, _NONE), "int or None"),
}
OPTIONAL_STATE = {"scheduled_steps"}  # fields that checkpoints of older versions lack


def _check_trainer_state(state: Mapping[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose trainer state has unknown or missing fields or values of the wrong
    type: resuming sets them as the trainer's attributes."""
    unknown = sorted(set(state) - set(TRAINER_STATE))
    missing = sorted(set(TRAINER_STATE) - set(state) - OPTIONAL_STATE)
    if unknown or missing:
        raise ckpt.CheckpointError(f"{path}: trainer_state: unknown fields {unknown}, missing fields {missing}")
    for name, (types, expected) in TRAINER_STATE.items():
        if name not in state:
            continue
        value = state[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ckpt.CheckpointError(f"{path}: trainer_state field {name!r} must be {expected}, got {value!r}")


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or infinite (``on_nonfinite="stop"``)."""


def seed_everything(seed: int) -> None:
    """Seed torch (and with it every lstmkit random draw) for a repeatable run."""
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    """What a run did: steps, where it stopped and why, the best held-out metric."""

    steps: int
    epochs_completed: int
    stopped: str
    best_metric: float | None
    best_step: int | None
    last_metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    out_dir: str | None = None


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate at ``step``: linear warm-up, then constant, cosine or linear decay to
    ``lr * min_lr_ratio`` at ``total_steps``.

        >>> config = TrainConfig(lr=1.0, schedule="cosine", warmup_steps=10, min_lr_ratio=0.0)
        >>> [round(learning_rate(config, s, 110), 3) for s in (0, 9, 10, 60, 110)]
        [0.1, 1.0, 1.0, 0.5, 0.0]
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if config.schedule == "cosine" else 1 - progress
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * shape)


class Trainer:
    """Trains ``model`` on ``train_set`` (see the module docstring for the contract).

    Args:
        model: the module to train (wrapped in ``DistributedDataParallel`` when distributed).
        config: a :class:`TrainConfig`.
        train_set: a sequence of examples; ``collate(list_of_examples)`` makes a batch.
        loss: ``loss(model, batch) -> (sum of item losses, number of items)``.
        evaluate: ``evaluate(model) -> {"name": value}``, run in eval mode without gradients.
        metric, mode: the key of ``evaluate``'s result that early stopping and the best model
            follow, and whether lower (``"min"``) or higher (``"max"``) is better.
        lengths: per-example lengths; batches are then bucketed by length.
        out_dir: where checkpoints, ``metrics.jsonl``, curves and the best model go (``None``: nothing
            is written).
        task, model_config: recorded in checkpoints and ``config.json``.

        >>> import torch
        >>> data = [(torch.randn(3), torch.tensor(1.0)) for _ in range(64)]
        >>> model = torch.nn.Linear(3, 1)
        >>> def loss(model, batch):
        ...     x, y = batch
        ...     return ((model(x).squeeze(1) - y) ** 2).sum(), len(y)
        >>> collate = lambda items: (torch.stack([x for x, _ in items]), torch.stack([y for _, y in items]))
        >>> result = Trainer(model, TrainConfig(epochs=2, progress=False), train_set=data, collate=collate,
        ...                  loss=loss).fit()
        >>> result.steps, result.stopped
        (4, 'completed')
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        *,
        train_set: Sequence[Any],
        collate: Callable[[list[Any]], Any],
        loss: LossFunction,
        evaluate: EvaluateFunction | None = None,
        metric: str = "val_loss",
        mode: str = "min",
        lengths: Sequence[int] | None = None,
        out_dir: str | Path | None = None,
        task: str = "model",
        model_config: Mapping[str, Any] | None = None,
        console: Console | None = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if len(train_set) == 0:
            raise ValueError("the training set is empty: nothing to train on")
        self.model, self.config, self.train_set = model, config, train_set
        self.collate, self.loss_function, self.evaluate_function = collate, loss, evaluate
        self.metric, self.mode, self.lengths = metric, mode, lengths
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.task, self.model_config = task, dict(model_config or {})
        init_from_environment()
        self.rank, self.world = rank_and_world()
        self.console = console or Console(stderr=True)
        self.step = self.epoch = self.next_batch = self.bad_evaluations = 0
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.scheduled_steps: int | None = None  # the steps fit_to_time fitted the schedule to
        self.last_metrics: dict[str, float] = {}
        self.elapsed = 0.0
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optimizer_class(self.parameters, lr=config.lr, weight_decay=config.weight_decay)
        self.network: nn.Module = DistributedDataParallel(model) if self.world > 1 else model

    # -- files -----------------------------------------------------------------------------------
    @property
    def writes(self) -> bool:
        return self.out_dir is not None and self.rank == 0

    def _log(self, record: dict[str, Any]) -> None:
        if self.writes:
            with open(self.out_dir / METRICS_NAME, "a", encoding="utf-8") as file:  # type: ignore[operator]
                file.write(json.dumps(record) + "\n")

    def _trainer_state(self) -> dict[str, Any]:
        names = (
            "step",
            "epoch",
            "next_batch",
            "bad_evaluations",
            "best_metric",
            "best_step",
            "elapsed",
            "scheduled_steps",
        )
        return {name: getattr(self, name) for name in names} | {"last_metrics": self.last_metrics}

    def save_checkpoint(self) -> None:
        """Write the complete training state to ``out_dir/checkpoint.safetensors`` (atomically)."""
        if self.writes:
            ckpt.save_checkpoint(
                self.out_dir / CHECKPOINT_NAME,  # type: ignore[operator]
                self.model,
                self.optimizer,
                task=self.task,
                model_config=self.model_config,
                train_config=dataclasses.asdict(self.config),
                trainer_state=self._trainer_state(),
            )

    def _save_model(self) -> None:
        if self.writes:
            ckpt.save_pretrained(self.out_dir, self.model, task=self.task, config=self.model_config)  # type: ignore[arg-type]

    def _resume(self) -> None:
        path = self.out_dir / CHECKPOINT_NAME if self.out_dir else None
        if path is None or not path.exists():
            raise ckpt.CheckpointError(f"cannot resume: no {CHECKPOINT_NAME} in {self.out_dir}")
        saved = ckpt.read_checkpoint(path, task=self.task)
        ours = dataclasses.asdict(self.config)
        # a field newer than the checkpoint had its default then (precision: fp32)
        theirs = dataclasses.asdict(TrainConfig()) | saved["train_config"]
        changed = {k for k in ours if k not in RESUMABLE_CHANGES and theirs.get(k) != ours[k]}
        if changed:
            details = ", ".join(f"{k}: {theirs.get(k)!r} -> {ours[k]!r}" for k in sorted(changed))
            raise ValueError(f"cannot resume {path}: the run was started with other settings ({details})")
        _check_trainer_state(saved["trainer_state"], path)
        ckpt.restore_checkpoint(saved, self.model, self.optimizer)
        for name, value in saved["trainer_state"].items():
            setattr(self, name, value)
        self._truncate_metrics()

    def _truncate_metrics(self) -> None:
        """Drop the metric records written after the checkpoint (a crash happened after it)."""
        path = self.out_dir / METRICS_NAME if self.writes else None  # type: ignore[operator]
        if path is None or not path.exists():
            return
        kept = [line for line in path.read_text().splitlines() if _record_step(line) <= self.step]
        ckpt.atomic_write(path, "".join(line + "\n" for line in kept).encode())

    # -- the loop --------------------------------------------------------------------------------
    def _batches(self, epoch: int) -> list[list[int]]:
        batches = batch_indices(
            len(self.train_set), self.config.batch_size, epoch_generator(self.config.seed, epoch), self.lengths
        )
        return [batch for batch in batches if len(batch) >= self.world]

    def _nonfinite(self, what: str, value: float) -> bool:
        """Whether to skip this step; raises when the policy is to stop."""
        flagged = all_reduce_sum(0.0 if math.isfinite(value) else 1.0) > 0
        if flagged and self.config.on_nonfinite == "stop":
            where = f"the last good checkpoint is {self.out_dir / CHECKPOINT_NAME}" if self.out_dir else "no checkpoint"
            raise TrainingDiverged(
                f"{what} is {value} at step {self.step + 1} (epoch {self.epoch + 1}); training stopped and {where}; "
                "lower the learning rate, keep gradient clipping on, or set on_nonfinite='skip'"
            )
        return flagged

    def _train_step(self, indices: list[int], total_steps: int) -> tuple[float, float] | None:
        """One optimiser step on the batch ``indices``; returns ``(summed loss, items)`` over all
        processes, or ``None`` when the step was skipped as non-finite."""
        lr = learning_rate(self.config, self.step, total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self.collate([self.train_set[i] for i in indices[self.rank :: self.world]])
        self.network.train()
        with autocast_for(self.config.precision):
            loss_sum, count = self.loss_function(self.network, batch)
        global_count = all_reduce_sum(float(count))
        global_loss = all_reduce_sum(float(loss_sum.detach()))
        if global_count <= 0:
            raise ValueError("a training batch has no items to learn from (loss count 0)")
        if self._nonfinite("the training loss", global_loss):
            return None
        self.optimizer.zero_grad(set_to_none=True)
        (loss_sum * (self.world / global_count)).backward()
        if self.config.clip_grad_norm is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, self.config.clip_grad_norm))
            if self._nonfinite("the gradient norm", norm):
                self.optimizer.zero_grad(set_to_none=True)
                return None
        self.optimizer.step()
        return global_loss, global_count

    def _evaluate(self) -> bool:
        """Run ``evaluate``; record it; save the model when it improved. Returns whether to stop."""
        if self.evaluate_function is None:
            return False
        self.model.eval()
        with torch.no_grad(), autocast_for(self.config.precision):
            metrics = {name: float(value) for name, value in self.evaluate_function(self.model).items()}
        if self.metric not in metrics:
            raise KeyError(f"evaluate returned {sorted(metrics)}, which lacks the tracked metric {self.metric!r}")
        self.last_metrics = metrics | {"step": self.step}
        self._log({"step": self.step, "epoch": self.epoch, "split": "val", **metrics})
        value = metrics[self.metric]
        best = self.best_metric
        better = best is None or (value < best if self.mode == "min" else value > best)
        if better and math.isfinite(value):
            self.best_metric, self.best_step, self.bad_evaluations = value, self.step, 0
            self._save_model()
        else:
            self.bad_evaluations += 1
        return self.config.patience is not None and self.bad_evaluations >= self.config.patience

    def fit(self, resume: bool = False) -> TrainResult:
        """Train until the budget is spent or early stopping triggers; returns a :class:`TrainResult`.
        Refused under ``torch.autocast``: autocast keeps its bf16 copies of the weights until it is
        left, so the steps would run on the first step's weights (set ``precision="bf16"`` instead)."""
        if torch.is_autocast_enabled("cpu"):
            raise RuntimeError("Trainer.fit called under torch.autocast, whose cached bf16 copies of the weights would "
                               "not follow training; set TrainConfig.precision='bf16' instead")  # fmt: skip
        if self.writes:
            self.out_dir.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            ckpt.remove_stale_temporaries(self.out_dir)  # type: ignore[arg-type]
        if resume:
            self._resume()
        else:
            seed_everything(self.config.seed)
            if self.writes:
                (self.out_dir / METRICS_NAME).unlink(missing_ok=True)  # type: ignore[operator]
        per_epoch = len(self._batches(0))
        if per_epoch == 0:
            raise ValueError(f"no batch of at least {self.world} examples: the training set is too small")
        if any(isinstance(module, Recurrent) for module in self.model.modules()):
            load_extension()  # built (the first time, about a minute) before the clock starts, not on its time
        total_steps = self.config.epochs * per_epoch
        for limit in (self.config.max_steps, self.scheduled_steps):
            if limit is not None:
                total_steps = min(total_steps, limit)
        stopped = self._loop(total_steps)
        if stopped in ("max_steps", "max_seconds") and self.last_metrics.get("step") != self.step:
            self._evaluate()
            self.save_checkpoint()
        if self.evaluate_function is None or self.best_step is None:
            self._save_model()
        if self.writes:
            plot_curves(self.out_dir / METRICS_NAME, self.out_dir / CURVES_NAME, title=self.task)  # type: ignore[operator]
        return TrainResult(
            steps=self.step,
            epochs_completed=self.epoch,
            stopped=stopped,
            best_metric=self.best_metric,
            best_step=self.best_step,
            last_metrics=self.last_metrics,
            seconds=self.elapsed,
            out_dir=str(self.out_dir) if self.out_dir else None,
        )

    def _loop(self, total_steps: int) -> str:
        config = self.config
        started = _clock() - self.elapsed
        fitting = config.fit_to_time and config.max_seconds is not None and config.schedule != "constant"
        pace_from: tuple[float, int] | None = None  # (time, step) where fit_to_time's pace is measured from
        first_step = self.step
        window_loss = window_items = 0.0
        window_start = time.perf_counter()
        shown = self.config.progress and self.rank == 0
        with progress_display(self.console, shown, sys.stdout.isatty()) as progress:
            bar = progress.add_task("training", total=total_steps, completed=self.step, loss="-", metric="", rate="")
            while self.epoch < config.epochs:
                batches = self._batches(self.epoch)
                while self.next_batch < len(batches):
                    if self.step >= total_steps:
                        return "max_steps"
                    if config.max_seconds is not None and self._out_of_time(_clock() - started):
                        return "max_seconds"
                    outcome = self._train_step(batches[self.next_batch], total_steps)
                    self.next_batch += 1
                    self.step += 1
                    self.elapsed = _clock() - started
                    if fitting and self.step == first_step + FIT_STEPS[0]:
                        pace_from = (_clock(), self.step)
                    if pace_from is not None and self.step == first_step + FIT_STEPS[1]:
                        total_steps = self._fit_to_time(total_steps, pace_from, _clock() - started, progress, bar)
                    if outcome is not None:
                        window_loss, window_items = window_loss + outcome[0], window_items + outcome[1]
                        progress.update(bar, loss=f"{window_loss / window_items:.4f}")  # the log window's so far
                    if self.step % config.log_every == 0 and window_items:
                        rate = window_items / max(1e-9, time.perf_counter() - window_start)
                        loss = window_loss / window_items
                        self._log({"step": self.step, "epoch": self.epoch, "split": "train", "loss": loss,
                                   "lr": self.optimizer.param_groups[0]["lr"], "items_per_second": rate})  # fmt: skip
                        progress.update(bar, rate=f"{rate:,.0f} items/s")
                        window_loss = window_items = 0.0
                        window_start = time.perf_counter()
                    progress.update(bar, completed=self.step, description=f"epoch {self.epoch + 1}/{config.epochs}")
                    if config.eval_every is not None and self.step % config.eval_every == 0:
                        stop = self._evaluate()
                        progress.update(bar, metric=self._metric_text())
                        if stop:
                            self.save_checkpoint()
                            return "early_stopping"
                        if pace_from is not None and self.step > first_step + FIT_STEPS[1]:  # the pace with evaluations
                            total_steps = self._fit_to_time(total_steps, pace_from, _clock() - started, progress, bar)
                    if config.checkpoint_every is not None and self.step % config.checkpoint_every == 0:
                        self.save_checkpoint()
                self.epoch, self.next_batch = self.epoch + 1, 0
                stop = config.eval_every is None and self._evaluate()
                progress.update(bar, metric=self._metric_text())
                if pace_from is not None and self.step > first_step + FIT_STEPS[1]:
                    total_steps = self._fit_to_time(total_steps, pace_from, _clock() - started, progress, bar)
                self.save_checkpoint()
                if stop:
                    return "early_stopping"
        return "completed"

    def _out_of_time(self, seconds: float) -> bool:
        """Whether ``max_seconds`` is spent on any process: all stop at the same step, or the others
        would wait for it in their next step's all-reduce."""
        return all_reduce_sum(float(seconds >= self.config.max_seconds)) > 0  # type: ignore[operator]

    def _fit_to_time(
        self, total_steps: int, pace_from: tuple[float, int], elapsed: float, progress: Any, bar: int
    ) -> int:
        """``total_steps``, or fewer: the steps that fit in what is left of ``max_seconds`` after
        ``elapsed`` seconds at the pace since ``pace_from`` (time, step), evaluations included; the
        same on every process. The progress ``bar`` is given the new total."""
        seconds = all_reduce_sum(_clock() - pace_from[0]) / self.world
        left = self.config.max_seconds - all_reduce_sum(elapsed) / self.world  # type: ignore[operator]
        fitted = self.step + max(1, math.floor(FIT_MARGIN * left * (self.step - pace_from[1]) / max(seconds, 1e-9)))
        if fitted >= total_steps:
            return total_steps
        self.scheduled_steps = fitted
        progress.update(bar, total=fitted)
        self._log({"step": self.step, "epoch": self.epoch, "split": "schedule", "scheduled_steps": fitted})
        if self.rank == 0 and self.config.progress:
            cap = self.config.max_seconds
            self.console.print(
                f"at this pace, {fitted:,} of the {total_steps:,} steps fit in the {cap:g} s time cap: "
                "the learning-rate schedule now ends there",
                highlight=False,
            )
        return fitted

    def _metric_text(self) -> str:
        value = self.last_metrics.get(self.metric)
        return "" if value is None else f"{self.metric} {value:.4f}"
