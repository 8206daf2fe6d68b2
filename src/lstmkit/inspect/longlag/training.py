"""One run of the long-lag experiment: the model (:class:`LongLagModel`, one recurrent layer and a
linear readout), its start (:func:`initial_model`, the same weights for the same seed and kind), its
training for the budget of the settings (:func:`train_long_lag`, with the shared
:class:`~lstmkit.training.Trainer`) and what it recorded (:class:`LongLagRun`, the learning curve on
held-out sequences)."""

from __future__ import annotations

import dataclasses
import time
import zlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...cell_kinds import recurrent_layer
from ...init import initialize
from ...layers import Recurrent
from ...training import TrainConfig, Trainer
from .problems import LongLagTask
from .settings import LongLagSettings, init_options


class LongLagModel(nn.Module):
    """One recurrent layer of ``kind`` (see :data:`~lstmkit.cell_kinds.CELL_KINDS`) and a linear
    readout, for a long-lag task. Integer inputs (symbol ids) are one-hot encoded.

        >>> from lstmkit.inspect.longlag.problems import AddingProblem
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
