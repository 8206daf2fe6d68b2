"""What every task's ``task`` module shares: named presets, the settings of a run (a preset, then
``--set`` overrides, then explicit training options), the ``task.json`` a run leaves next to its
model, the training of a task model with the :class:`~lstmkit.training.Trainer`, and the PNG files
of the figures some tasks draw."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..training import TrainConfig, Trainer, TrainResult, config_from_dict
from ..training.checkpoint import atomic_write
from ..training.plots import pyplot
from .common import TaskModel, split_overrides, train_config
from .splits import describe_change

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TASK_FILE = "task.json"

D = TypeVar("D")
M = TypeVar("M", bound=TaskModel)


@dataclass
class Preset(Generic[D]):
    """A named starting point of a task: the data settings, the model fields and the training budget.

    >>> Preset({"dataset": "toy"}, {"hidden_size": 8}, TrainConfig(epochs=2)).train.epochs
    2
    """

    data: D
    model: dict[str, Any]
    train: TrainConfig


@dataclass(frozen=True)
class DataField:
    """A model field that the data sets, never a preset or ``--set``: a ``placeholder`` the model
    config accepts until the data is read, and where the real value comes from (``origin``)."""

    placeholder: Any
    origin: str


@dataclass(frozen=True)
class TaskSettings(Generic[D]):
    """How the runs of a task are set: its data settings (``data_class``), its model config
    (``model_config``) less the fields its data sets (``data_fields``), and its named ``presets``."""

    data_class: type[D]
    model_config: type
    data_fields: Mapping[str, DataField]
    presets: Mapping[str, Preset[D]]

    def configure(
        self, preset: str, overrides: Sequence[str] = (), **train_options: Any
    ) -> tuple[D, dict[str, Any], TrainConfig]:
        """The settings of a run: the data settings, the model fields and the training budget of the
        ``preset``, then the ``--set key=value`` overrides (each applied to whichever of the three
        has the field), then explicit training options (``epochs=...``; ``None`` ignored)."""
        if preset not in self.presets:
            raise ValueError(f"unknown preset {preset!r}: expected one of {sorted(self.presets)}")
        chosen = self.presets[preset]
        self._refuse_data_fields(overrides)
        placeholders = {name: field.placeholder for name, field in self.data_fields.items()}
        template = self.model_config(**placeholders, **chosen.model)
        data, model, train = split_overrides(overrides, chosen.data, template, chosen.train)
        model_fields = {key: value for key, value in dataclasses.asdict(model).items() if key not in self.data_fields}
        return data, model_fields, train_config(train, **train_options)

    def _refuse_data_fields(self, overrides: Sequence[str]) -> None:
        """Refuse an override of a model field the data sets (unless the data settings have it too)."""
        data_settings = {field.name for field in dataclasses.fields(self.data_class)}  # type: ignore[arg-type]
        for override in overrides:
            name = override.partition("=")[0].strip()
            if name in self.data_fields and name not in data_settings:
                raise ValueError(f"--set {name}=...: {self.data_fields[name].origin}; it cannot be set")

    def read_task_data(self, directory: str | Path) -> D:
        """The data settings a run recorded in ``task.json`` in ``directory`` (the defaults when it has
        none)."""
        path = Path(directory) / TASK_FILE
        if not path.is_file():
            return self.data_class()
        try:
            return config_from_dict(self.data_class, json.loads(path.read_text())["data"], str(path))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a valid task file ({error})") from None


def write_task_file(out_dir: str | Path | None, data: Any, source: str, **extra: Any) -> None:
    """Record the data settings of a run, where its data came from (and any ``extra`` entries) in
    ``out_dir/task.json``; nothing without an ``out_dir``."""
    if out_dir is not None:
        document = {"data": dataclasses.asdict(data), "source": source, **extra}
        atomic_write(Path(out_dir) / TASK_FILE, json.dumps(document, indent=2).encode())


def data_change(directory: str | Path, source: str, now: Mapping[str, Any],
                describe: Callable[[str, Mapping[str, Any], Mapping[str, Any]], str | None] = describe_change,
                ) -> str | None:  # fmt: skip
    """One line saying that the data ``source`` differs from what the run in ``directory`` trained on
    (the ``trained_on`` record of its ``task.json``; ``now``: the same record made of the data as it is
    now, see :func:`~lstmkit.tasks.splits.data_record`), or ``None`` when it does not or the run has
    no record; ``describe(source, then, now)`` writes the line."""
    path = Path(directory) / TASK_FILE
    try:
        then = json.loads(path.read_text(encoding="utf-8")).get("trained_on") if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise ValueError(f"{path}: not a valid task file ({error})") from None
    return describe(source, then, now) if isinstance(then, dict) else None


def fit(
    model: M, config: TrainConfig, out_dir: str | Path | None, resume: bool, **trainer_options: Any
) -> tuple[M, TrainResult, int]:
    """Train ``model`` with the :class:`~lstmkit.training.Trainer` (``trainer_options``: its data,
    loss and evaluation); returns the model (with its best weights when the run saved them), the
    run's result and the rank of this process (0 when not distributed)."""
    trainer = Trainer(model, config, out_dir=out_dir, task=model.task, model_config=model.config_dict(),
                      **trainer_options)  # fmt: skip
    result = trainer.fit(resume=resume)
    if out_dir is not None and result.best_step is not None and trainer.rank == 0:
        model = type(model).from_pretrained(out_dir)
    return model, result, trainer.rank


def write_png(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` to the PNG ``path`` (atomically) and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot().close(figure)
    return atomic_write(path, buffer.getvalue())
