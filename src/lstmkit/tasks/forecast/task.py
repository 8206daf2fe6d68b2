"""The forecasting task: the three parts of a series, presets, training, evaluation against the
naive and seasonal-naive baselines, the forecast plot, and the forecast beyond the end.

A series is cut by time: the held-out tail (``test_fraction`` of the steps) is the test part, the
``validation_fraction`` before it picks the best model, the rest trains; the standardisation is
fitted on the training part only. The figures of a part are averaged over every forecast origin
whose whole horizon lies in the part (its inputs may reach back into the parts before it). The cut
is by time on purpose (a hash split would put future steps in training), so values appended to the
series move it: a run records the steps of each part and a fingerprint of the values
(``trained_on`` in ``task.json``), and ``evaluate`` says when the series differs now.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...precision import autocast_for
from ...training import TrainConfig, TrainResult
from ...training.plots import pyplot
from ..common import check_held_out
from ..runner import DataField, Preset, TaskSettings, data_change, fit, write_png, write_task_file
from ..splits import describe_series_change, series_record
from .data import CO2, Series, SeriesDataError, load_series
from .model import (
    ForecastConfig,
    Forecaster,
    forecast,
    forecast_metrics,
    input_windows,
    mse_sum,
    naive_forecast,
    naive_scale,
    seasonal_naive_forecast,
    target_windows,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORECAST_FILE = "forecast.png"
PARTS = ("train", "validation", "test")
FORECASTERS = ("model", "naive", "seasonal naive")
DATA_FIELDS = {
    "columns": DataField(["y"], "the columns come from the data settings"),
    "mean": DataField([0.0], "the mean of every column comes from the training part"),
    "std": DataField([1.0], "the std of every column comes from the training part"),
}


@dataclass
class ForecastData:
    """Where the series comes from: ``series`` is ``"co2"``, ``"sunspots"`` or a CSV path (then
    ``columns``, target first, and an optional ``time_column``); ``season`` in steps for the
    seasonal-naive baseline (``None``: the series' own, 52 weeks for CO2, 11 years for sunspots, 1
    for a CSV); the last ``test_fraction`` of the steps is held out, and the ``validation_fraction``
    before it.

        >>> ForecastData(series="data.csv", columns=["load", "temperature"], season=7).test_fraction
        0.1
    """

    series: str = CO2
    columns: list[str] = field(default_factory=list)
    time_column: str | None = None
    season: int | None = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        check_held_out(self.validation_fraction, self.test_fraction)
        if self.season is not None and self.season < 1:
            raise ValueError(f"season must be at least 1 step, got {self.season}")


def load_data(data: ForecastData, columns: list[str] | None = None) -> Series:
    """The series of ``data`` (with ``columns`` instead of ``data.columns`` when given) and its season."""
    series = load_series(data.series, data.columns if columns is None else columns, data.time_column)
    return dataclasses.replace(series, season=data.season) if data.season is not None else series


@dataclass
class Parts:
    """A series cut by time: training ``[0, train_end)``, validation ``[train_end, validation_end)``,
    test ``[validation_end, len(series))``.

        >>> series = Series(np.arange(50.0)[:, None], ["y"], np.arange(50.0))
        >>> parts = Parts(series, 40, 45)
        >>> parts.bounds("test"), parts.origins("validation", window=8, horizon=3).tolist()
        ((45, 50), [39, 40, 41])
    """

    series: Series
    train_end: int
    validation_end: int

    def bounds(self, part: str) -> tuple[int, int]:
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}: expected one of {', '.join(PARTS)}")
        edges = (0, self.train_end, self.validation_end, len(self.series))
        return edges[PARTS.index(part)], edges[PARTS.index(part) + 1]

    def origins(self, part: str, window: int, horizon: int) -> np.ndarray:
        """The forecast origins whose ``horizon`` steps all lie in ``part``, with a full ``window`` before."""
        start, stop = self.bounds(part)
        return np.arange(max(start - 1, window - 1), stop - horizon)


def split_series(series: Series, data: ForecastData, window: int, horizon: int) -> Parts:
    """Cut ``series`` into its parts, or say why it is too short for ``window`` and ``horizon``."""
    steps = len(series)
    test, validation = round(steps * data.test_fraction), round(steps * data.validation_fraction)
    train = steps - test - validation
    problems = []
    if train < window + horizon or train <= series.season:
        need = max(window + horizon, series.season + 1)
        problems.append(f"the training part has {train} steps, needs at least {need} (window {window} + horizon "
                        f"{horizon}, and more than a season of {series.season})")  # fmt: skip
    for name, size in (("validation", validation), ("test", test)):
        if size < horizon:
            problems.append(f"the {name} part ({name}_fraction of {steps}) has {size} steps, needs at least the "
                            f"horizon, {horizon}")  # fmt: skip
    if problems:
        raise SeriesDataError(f"{series.source}: {steps} steps are too short: {'; '.join(problems)}; give a longer "
                              "series or a smaller window or horizon")  # fmt: skip
    return Parts(series, train, train + validation)


PRESETS: dict[str, Preset[ForecastData]] = {
    "co2": Preset(
        ForecastData(),
        {"window": 104, "horizon": 52, "hidden_size": 64},
        TrainConfig(epochs=30, batch_size=64, lr=5e-3, schedule="cosine", warmup_steps=20, log_every=10),
    ),
    "sunspots": Preset(
        ForecastData(series="sunspots"),
        {"window": 40, "horizon": 11, "hidden_size": 16, "cell": "gru", "relative": False},
        TrainConfig(epochs=60, batch_size=32, lr=2e-3, schedule="cosine", log_every=7),
    ),
    "tiny": Preset(
        ForecastData(),
        {"window": 52, "horizon": 13, "hidden_size": 32},
        TrainConfig(epochs=8, batch_size=64, lr=1e-2, schedule="cosine", log_every=7),
    ),
}

SETTINGS = TaskSettings(ForecastData, ForecastConfig, DATA_FIELDS, PRESETS)
configure = SETTINGS.configure
read_task_data = SETTINGS.read_task_data


def standardisation(parts: Parts) -> tuple[list[float], list[float]]:
    """Per-column mean and standard deviation of the training part."""
    train = parts.series.values[: parts.train_end]
    mean, std = train.mean(0), train.std(0)
    constant = [name for name, s in zip(parts.series.columns, std, strict=True) if not s > 0]
    if constant:
        raise SeriesDataError(f"{parts.series.source}: the column(s) {constant} are constant on the training part; "
                              "nothing to learn from them")  # fmt: skip
    return mean.tolist(), std.tolist()


@dataclass
class Evaluation:
    """The figures of the model and of the baselines on one part: ``metrics[forecaster][name]``
    (``mae``, ``rmse`` in the data's units; ``mase``, ``mase_seasonal``), over ``origins`` forecasts
    of ``horizon`` steps.

        >>> figures = {"mae": 1.0, "rmse": 1.5, "mase": 2.0, "mase_seasonal": 0.5}
        >>> Evaluation("test", {"model": figures}, origins=10, horizon=4, season=12).metrics["model"]["mase"]
        2.0
    """

    part: str
    metrics: dict[str, dict[str, float]]
    origins: int
    horizon: int
    season: int


def evaluate_part(model: Forecaster, parts: Parts, part: str) -> Evaluation:
    """The model's and the baselines' figures on ``part``; MASE is scaled by the in-sample naive and
    seasonal-naive errors of the training part."""
    series, (window, horizon) = parts.series, (model.config.window, model.config.horizon)
    origins = parts.origins(part, window, horizon)
    origins = origins[origins >= series.season - 1]  # the seasonal-naive forecast needs a season of history
    if len(origins) == 0:
        raise ValueError(f"{series.source}: the {part} part has no forecast origin for window {window} and horizon "
                         f"{horizon}")  # fmt: skip
    history = series.target[: parts.train_end]
    scales = naive_scale(history), naive_scale(history, series.season)
    truth = target_windows(series.target, origins, horizon)
    predictions = {
        "model": forecast(model, series.values, origins),
        "naive": naive_forecast(series.target, origins, horizon),
        "seasonal naive": seasonal_naive_forecast(series.target, origins, horizon, series.season),
    }
    metrics = {name: forecast_metrics(truth, predicted, *scales) for name, predicted in predictions.items()}
    return Evaluation(part, metrics, len(origins), horizon, series.season)


def _collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def train(data: ForecastData, model_fields: dict[str, Any], config: TrainConfig, out_dir: str | Path | None,
          resume: bool = False) -> tuple[Forecaster, TrainResult, dict[str, Evaluation]]:  # fmt: skip
    """Train a forecaster; returns it (the weights of the best validation MAE), the run's result and
    the validation and test :class:`Evaluation` (with an ``out_dir``, the forecast plot goes there)."""
    series = load_data(data)
    parts = split_series(series, data, model_fields["window"], model_fields["horizon"])
    mean, std = standardisation(parts)
    torch.manual_seed(config.seed)
    model = Forecaster(ForecastConfig(series.columns, mean, std, **model_fields))
    window, horizon = model.config.window, model.config.horizon
    origins = parts.origins("train", window, horizon)
    with torch.no_grad():
        inputs = model.standardise(torch.from_numpy(input_windows(series.values, origins, window)))
        targets = model.standardise(torch.from_numpy(series.values))[:, 0][origins[:, None] + np.arange(1, horizon + 1)]
    write_task_file(out_dir, data, series.source, notes=series.notes, trained_on=trained_on(parts))

    def evaluate(model: Forecaster) -> dict[str, float]:
        figures = evaluate_part(model, parts, "validation").metrics["model"]
        return {"val_mae": figures["mae"], "val_rmse": figures["rmse"]}

    examples = list(zip(inputs, targets, strict=True))
    model, result, rank = fit(model, config, out_dir, resume, train_set=examples, collate=_collate, loss=mse_sum,
                              evaluate=evaluate, metric="val_mae")  # fmt: skip
    with autocast_for(config.precision):
        return model, result, final_evaluations(model, parts, out_dir if rank == 0 else None)


def trained_on(parts: Parts) -> dict[str, Any]:
    """What a run trains and is evaluated on, for its ``task.json``: the steps of each part and a
    fingerprint of the series' values (:func:`~lstmkit.tasks.splits.series_record`)."""
    counts = {part: stop - start for part in PARTS for start, stop in [parts.bounds(part)]}
    return series_record(parts.series.values, parts.series.columns, counts)


def series_change(directory: str | Path, parts: Parts) -> str | None:
    """One line saying that the series of ``parts`` differs from the one the run in ``directory``
    trained on (values appended to it move the split point), or ``None`` when it does not."""
    series = parts.series

    def describe(source: str, then: Any, now: Any) -> str | None:
        return describe_series_change(source, then, now, series.values, series.columns)

    return data_change(directory, series.source, trained_on(parts), describe)


def final_evaluations(model: Forecaster, parts: Parts, out_dir: str | Path | None) -> dict[str, Evaluation]:
    """The validation and test evaluations; with an ``out_dir``, the forecast plot is drawn there."""
    evaluations = {part: evaluate_part(model, parts, part) for part in ("validation", "test")}
    if out_dir is not None:
        plot_forecast(model, parts, evaluations["test"], Path(out_dir) / FORECAST_FILE)
    return evaluations


def predict_next(model: Forecaster, series: Series) -> tuple[np.ndarray | None, np.ndarray]:
    """The times (``None`` when the series is not evenly spaced) and the model's forecast of the
    ``horizon`` steps after the end of ``series``."""
    if list(series.columns) != list(model.config.columns):
        raise ValueError(f"{series.source}: columns {series.columns}, but the model reads {model.config.columns}")
    if len(series) < model.config.window:
        raise SeriesDataError(f"{series.source}: {len(series)} steps, the model needs the last {model.config.window}")
    return series.next_times(model.config.horizon), forecast(model, series.values, [len(series) - 1])[0]


def _tail_path(predict: Callable[[np.ndarray], np.ndarray], start: int, stop: int, horizon: int) -> np.ndarray:
    """Forecasts of the steps ``[start, stop)`` in blocks of ``horizon``, each from the true history
    before it; the last block ends at ``stop`` (and only its steps not yet covered are kept)."""
    path = predict(np.arange(start - 1, stop - horizon, horizon)).reshape(-1)
    missing = stop - start - len(path)
    if missing:
        path = np.concatenate([path, predict(np.array([stop - 1 - horizon]))[0, -missing:]])
    return path


def forecast_figure(model: Forecaster, parts: Parts, evaluation: Evaluation) -> Figure:
    """The held-out tail forecast in blocks of ``horizon`` steps (see :func:`_tail_path`) by the model
    and the two baselines, the history before it, and the model's forecast beyond the end."""
    series, horizon = parts.series, model.config.horizon
    start, stop = parts.bounds("test")
    context = max(0, start - max(3 * (stop - start), 3 * series.season))
    figure, axis = pyplot().subplots(figsize=(11, 4.6))
    axis.plot(series.time[context:start], series.target[context:start], color="0.35", lw=1.2, label="history")
    axis.plot(series.time[start:], series.target[start:], color="black", lw=1.2, label="held-out truth")
    lines = (
        ("model", lambda o: forecast(model, series.values, o), dict(color="C3", lw=1.8)),
        ("naive", lambda o: naive_forecast(series.target, o, horizon), dict(color="C0", lw=1, ls="--")),
        ("seasonal naive", lambda o: seasonal_naive_forecast(series.target, o, horizon, series.season),
         dict(color="C2", lw=1, ls="--")),
    )  # fmt: skip
    for name, predict, style in lines:
        label = f"{name} (MAE {evaluation.metrics[name]['mae']:.3g} {series.unit})".replace(" )", ")")
        axis.plot(series.time[start:stop], _tail_path(predict, start, stop, horizon), label=label, **style)
    times, values = predict_next(model, series)
    if times is not None:
        axis.plot(times, values, color="C3", lw=1.8, ls=":", label=f"model, next {horizon} steps")
    axis.axvline(series.time[start], color="0.5", lw=0.8, ls=":")
    axis.set_xlabel(series.time_name)
    axis.set_ylabel(f"{series.columns[0]} ({series.unit})" if series.unit else series.columns[0])
    axis.set_title(f"{series.source}\n{horizon}-step forecasts of the held-out tail, each from the true history "
                   f"before it; MAE over {evaluation.origins} origins", fontsize=10)  # fmt: skip
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="best")
    figure.tight_layout()
    return figure


def plot_forecast(model: Forecaster, parts: Parts, evaluation: Evaluation, path: str | Path) -> Path:
    """Write :func:`forecast_figure` to the PNG ``path`` (atomically)."""
    return write_png(forecast_figure(model, parts, evaluation), path)
