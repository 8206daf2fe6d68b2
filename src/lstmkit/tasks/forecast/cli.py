"""``lstmkit forecast train|evaluate|predict``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from ...commandline.messages import console, print_error
from ...commandline.options import Checkpoint
from ...precision import autocast_for
from ..commands import TrainRun, stack_shape, train_options
from ..options import Precision, model_session
from .data import Series
from .model import Forecaster
from .task import (
    FORECAST_FILE,
    FORECASTERS,
    PRESETS,
    Evaluation,
    ForecastData,
    configure,
    evaluate_part,
    final_evaluations,
    load_data,
    plot_forecast,
    predict_next,
    read_task_data,
    series_change,
    split_series,
    train,
)

app = typer.Typer(
    help="Time-series forecasting (default series: weekly Mauna Loa CO2; also yearly sunspots or a CSV).",
    no_args_is_help=True,
)

CsvFile = Annotated[Path | None, typer.Option("--csv", help="A CSV with a header and one row per time step.")]
Columns = Annotated[
    list[str] | None,
    typer.Option("--column", help="A CSV column to read (repeat; the first is the target, the others extra inputs)."),
]
TimeColumn = Annotated[str | None, typer.Option("--time-column", help="A CSV column of times (numbers or ISO dates).")]


def _table(evaluation: Evaluation, series: Series) -> Table:
    unit = f" in {series.unit}" if series.unit else ""
    title = (f"{evaluation.part}: {evaluation.origins} forecasts of {evaluation.horizon} steps; MAE and RMSE{unit}; "
             f"MASE over the training part's naive error, sMASE over its seasonal-naive error (season "
             f"{evaluation.season})")  # fmt: skip
    table = Table("forecaster", "MAE", "RMSE", "MASE", "sMASE", title=title)
    for name in FORECASTERS:
        figures = evaluation.metrics[name]
        table.add_row(name, *(f"{figures[key]:.4g}" for key in ("mae", "rmse", "mase", "mase_seasonal")))
    return table


def _data_settings(checkpoint: Path, csv: Path | None, time_column: str | None) -> ForecastData:
    data = read_task_data(checkpoint)
    if csv is not None:
        data = dataclasses.replace(data, series=str(csv), time_column=time_column)
    return data


@app.command("train")
@train_options("forecast", PRESETS, "co2", preset_help="Series, model and budget", threads=1)
def train_command(
    run: TrainRun,
    csv: CsvFile = None,
    column: Columns = None,
    time_column: TimeColumn = None,
    season: Annotated[int | None, typer.Option(min=1, help="Season in steps, for the seasonal-naive baseline.")] = None,
    window: Annotated[int | None, typer.Option(min=1, help="Input window in steps.")] = None,
    horizon: Annotated[int | None, typer.Option(min=1, help="Steps predicted at once.")] = None,
) -> None:
    """Train a forecaster; compare it with the naive and seasonal-naive baselines on the held-out
    tail and draw the forecast plot."""
    with run.session():
        if column and csv is None:
            raise ValueError("--column and --time-column read a CSV: give --csv FILE too")
        settings = run.configure(configure, series=csv, columns=",".join(column) if column else None,
                                 time_column=time_column, season=season, window=window, horizon=horizon)  # fmt: skip
        data_settings, model_fields, _ = settings
        series = load_data(data_settings)
        split_series(series, data_settings, model_fields["window"], model_fields["horizon"])
        shape = f"{stack_shape(model_fields)}, window {model_fields['window']} -> horizon {model_fields['horizon']}"
        source = f"{series.source} ({len(series)} steps, columns {', '.join(series.columns)})"
        trained = run.train(train, settings, shape, source, notes=series.notes, metric="validation MAE")
        if trained is None:  # trained in other processes: the model is in the folder
            model = Forecaster.from_pretrained(run.out)
            parts = split_series(series, data_settings, model.config.window, model.config.horizon)
            with autocast_for(settings[2].precision):
                evaluations = final_evaluations(model, parts, run.out)
        else:
            _, _, evaluations = trained
        for evaluation in evaluations.values():
            console.print(_table(evaluation, series))
        console.print(run.saved_line(FORECAST_FILE))


@app.command("evaluate")
def evaluate_command(
    checkpoint: Checkpoint = Path("runs/forecast"),
    part: Annotated[str, typer.Option("--part", help="test (the held-out tail), validation or train.")] = "test",
    csv: Annotated[Path | None, typer.Option("--csv", help="Evaluate on the tail of this CSV instead.")] = None,
    time_column: TimeColumn = None,
    plot: Annotated[Path | None, typer.Option(help="Also draw the forecast plot into this PNG.")] = None,
    precision: Precision = "auto",
) -> None:
    """MAE, RMSE and MASE of a trained model and of the baselines on a part of its series (or of a
    CSV with the model's columns, cut the same way)."""
    with model_session(precision):
        model = Forecaster.from_pretrained(checkpoint)
        data = _data_settings(checkpoint, csv, time_column)
        series = load_data(data, model.config.columns)
        parts = split_series(series, data, model.config.window, model.config.horizon)
        change = series_change(checkpoint, parts) if csv is None else None
        if change:
            print_error(change, "warning")
        evaluation = evaluate_part(model, parts, part)
        console.print(_table(evaluation, series))
        if plot is not None:
            test = evaluation if part == "test" else evaluate_part(model, parts, "test")
            console.print(f"forecast plot in {plot_forecast(model, parts, test, plot)}")


def _time_text(time: Any) -> str:
    return f"{time:g}" if isinstance(time, float | np.floating) else str(time)


@app.command("predict")
def predict_command(
    checkpoint: Checkpoint = Path("runs/forecast"),
    csv: Annotated[Path | None, typer.Option("--csv", help="Forecast after the end of this CSV instead.")] = None,
    time_column: TimeColumn = None,
    precision: Precision = "auto",
) -> None:
    """Print the forecast of the next ``horizon`` steps after the end of the series (tab-separated)."""
    with model_session(precision):
        model = Forecaster.from_pretrained(checkpoint)
        series = load_data(_data_settings(checkpoint, csv, time_column), model.config.columns)
        times, values = predict_next(model, series)
        unit = f" ({series.unit})" if series.unit else ""
        typer.echo(f"step\t{series.time_name}\t{series.columns[0]}{unit}")
        for step, value in enumerate(values, start=1):
            typer.echo(f"+{step}\t{'-' if times is None else _time_text(times[step - 1])}\t{value:.6g}")
