"""``lstmkit forecast train|evaluate|predict``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from rich.table import Table

from ...training.distributed import launch
from ..options import Checkpoint, Epochs, MaxSteps, Nproc, OutDir, Overrides, Quiet, Resume, Seed, console, user_errors
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
Threads = Annotated[
    int,
    typer.Option(
        min=1, max=256, help="Intra-op threads. The models are small: 1 is fastest, and immune to other jobs."
    ),
]
TimeColumn = Annotated[str | None, typer.Option("--time-column", help="A CSV column of times (numbers or ISO dates).")]


def _train_worker(data: ForecastData, model_fields: dict[str, Any], config: Any, out: Path, resume: bool) -> None:
    train(data, model_fields, config, out, resume)


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
def train_command(
    preset: Annotated[str, typer.Option(help=f"Series, model and budget: {', '.join(PRESETS)}.")] = "co2",
    csv: CsvFile = None,
    column: Columns = None,
    time_column: TimeColumn = None,
    season: Annotated[int | None, typer.Option(min=1, help="Season in steps, for the seasonal-naive baseline.")] = None,
    window: Annotated[int | None, typer.Option(min=1, help="Input window in steps.")] = None,
    horizon: Annotated[int | None, typer.Option(min=1, help="Steps predicted at once.")] = None,
    cell: Annotated[str | None, typer.Option(help="rnn, gru, lstm, peephole or layernorm.")] = None,
    out: OutDir = Path("runs/forecast"),
    overrides: Overrides = None,
    epochs: Epochs = None,
    max_steps: MaxSteps = None,
    seed: Seed = None,
    resume: Resume = False,
    nproc: Nproc = 1,
    quiet: Quiet = False,
    threads: Threads = 1,
) -> None:
    """Train a forecaster; compare it with the naive and seasonal-naive baselines on the held-out
    tail and draw the forecast plot."""
    with user_errors():
        torch.set_num_threads(threads)
        if column and csv is None:
            raise ValueError("--column and --time-column read a CSV: give --csv FILE too")
        given = (("series", csv), ("time_column", time_column), ("season", season), ("window", window),
                 ("horizon", horizon), ("cell", cell))  # fmt: skip
        extra = [f"{name}={value}" for name, value in given if value is not None]
        if column:
            extra.append(f"columns={','.join(column)}")
        settings, model_fields, config = configure(preset, [*(overrides or []), *extra], epochs=epochs,
                                                   max_steps=max_steps, seed=seed,
                                                   progress=False if quiet else None)  # fmt: skip
        series = load_data(settings)
        split_series(series, settings, model_fields["window"], model_fields["horizon"])
        console.print(f"[bold]forecast[/] preset {preset}: {model_fields['cell']} {model_fields['num_layers']}x"
                      f"{model_fields['hidden_size']}, window {model_fields['window']} -> horizon "
                      f"{model_fields['horizon']}, {config.max_steps or config.epochs} "
                      f"{'steps' if config.max_steps else 'epochs'} of batch {config.batch_size} on "
                      f"{series.source} ({len(series)} steps, columns {', '.join(series.columns)}) -> {out}",
                      highlight=False)  # fmt: skip
        for note in series.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
        if nproc > 1:
            launch(_train_worker, nproc, settings, model_fields, config, out, resume)
            model = Forecaster.from_pretrained(out)
            parts = split_series(series, settings, model.config.window, model.config.horizon)
            evaluations = final_evaluations(model, parts, out)
        else:
            _, result, evaluations = train(settings, model_fields, config, out, resume)
            console.print(f"stopped after {result.steps} steps ({result.stopped}, {result.seconds:.0f} s); "
                          f"best validation MAE at step {result.best_step}")  # fmt: skip
        for evaluation in evaluations.values():
            console.print(_table(evaluation, series))
        console.print(f"model, checkpoint, metrics.jsonl, curves.png and {FORECAST_FILE} in {out}")


@app.command("evaluate")
def evaluate_command(
    checkpoint: Checkpoint = Path("runs/forecast"),
    part: Annotated[str, typer.Option("--part", help="test (the held-out tail), validation or train.")] = "test",
    csv: Annotated[Path | None, typer.Option("--csv", help="Evaluate on the tail of this CSV instead.")] = None,
    time_column: TimeColumn = None,
    plot: Annotated[Path | None, typer.Option(help="Also draw the forecast plot into this PNG.")] = None,
) -> None:
    """MAE, RMSE and MASE of a trained model and of the baselines on a part of its series (or of a
    CSV with the model's columns, cut the same way)."""
    with user_errors():
        model = Forecaster.from_pretrained(checkpoint)
        data = _data_settings(checkpoint, csv, time_column)
        series = load_data(data, model.config.columns)
        parts = split_series(series, data, model.config.window, model.config.horizon)
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
) -> None:
    """Print the forecast of the next ``horizon`` steps after the end of the series (tab-separated)."""
    with user_errors():
        model = Forecaster.from_pretrained(checkpoint)
        series = load_data(_data_settings(checkpoint, csv, time_column), model.config.columns)
        times, values = predict_next(model, series)
        unit = f" ({series.unit})" if series.unit else ""
        typer.echo(f"step\t{series.time_name}\t{series.columns[0]}{unit}")
        for step, value in enumerate(values, start=1):
            typer.echo(f"+{step}\t{'-' if times is None else _time_text(times[step - 1])}\t{value:.6g}")
