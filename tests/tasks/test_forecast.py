"""The forecasting task: the CO2 and sunspots series, CSV reading with errors that name the line,
baselines and metrics against hand computations, training that beats the naive forecast on CO2,
checkpoints, resume, the plot and the command line."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from task_helpers import assert_clear_error, assert_resume_after_crash_is_exact, flat, runner, tiny, train_tiny

from lstmkit.cli import app
from lstmkit.tasks import load_model
from lstmkit.tasks.forecast import task as forecast_task
from lstmkit.tasks.forecast.data import Series, SeriesDataError, co2_series, read_csv_series, sunspots_series
from lstmkit.tasks.forecast.model import (
    ForecastConfig,
    Forecaster,
    forecast,
    forecast_metrics,
    naive_forecast,
    naive_scale,
    seasonal_naive_forecast,
)
from lstmkit.tasks.forecast.task import (
    ForecastData,
    configure,
    evaluate_part,
    forecast_figure,
    split_series,
    train,
)
from lstmkit.training import read_checkpoint
from lstmkit.training.plots import pyplot

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the series -------------------------------------------------------------------------------------
def test_co2_is_weekly_with_the_missing_weeks_interpolated() -> None:
    from statsmodels.datasets import co2

    raw = co2.load_pandas().data["co2"].to_numpy()
    series = co2_series()
    missing = np.flatnonzero(np.isnan(raw))
    assert len(series) == len(raw) == 2284 and len(missing) == 59
    assert series.notes and "59 of 2284 weeks" in series.notes[0] and "interpolation" in series.notes[0]
    assert np.isfinite(series.target).all() and series.season == 52 and series.unit == "ppm"
    known = ~np.isnan(raw)
    assert np.array_equal(series.target[known], raw[known])
    for index in missing[:5]:
        before = max(i for i in range(index) if known[i])
        after = min(i for i in range(index, len(raw)) if known[i])
        expected = raw[before] + (raw[after] - raw[before]) * (index - before) / (after - before)
        assert series.target[index] == pytest.approx(expected)
    assert (np.diff(series.time) == np.timedelta64(7, "D")).all()
    assert str(series.next_times(2)[0]) == str(series.time[-1] + np.timedelta64(7, "D"))


def test_sunspots_are_yearly_with_an_eleven_year_season() -> None:
    series = sunspots_series()
    assert len(series) == 309 and series.season == 11
    assert series.time[0] == 1700 and series.time[-1] == 2008
    assert series.next_times(3).tolist() == [2009.0, 2010.0, 2011.0]


def test_a_multivariate_csv_with_dates(tmp_path: Path) -> None:
    path = tmp_path / "load.csv"
    path.write_text("date,load,temperature,note\n2024-01-01,10.5,3,a\n\n2024-01-02,11,2.5,b\n2024-01-03,9.25,-1,c\n")
    series = read_csv_series(path, ["load", "temperature"], "date")
    assert series.columns == ["load", "temperature"] and series.time_name == "date" and series.season == 1
    assert series.values.tolist() == [[10.5, 3.0], [11.0, 2.5], [9.25, -1.0]]
    assert [str(t) for t in series.next_times(2)] == ["2024-01-04", "2024-01-05"]
    only = tmp_path / "one.csv"
    only.write_text("y\n1\n2\n4\n")
    numbered = read_csv_series(only)
    assert numbered.columns == ["y"] and numbered.time.tolist() == [0.0, 1.0, 2.0]
    irregular = tmp_path / "irregular.csv"
    irregular.write_text("t,y\n1,1\n2,2\n4,3\n")
    assert read_csv_series(irregular, ["y"], "t").next_times(1) is None


@pytest.mark.parametrize(
    ("text", "columns", "time_column", "message"),
    [
        ("", ["y"], None, "bad.csv: the file is empty"),
        ("y,x\n", ["y"], None, "bad.csv: a header but no rows"),
        ("a,b\n1,2\n", ["y"], None, "bad.csv, line 1: no column 'y'; the file's columns are: a, b"),
        (
            "a,b\n1,2\n",
            [],
            None,
            "name the column(s) to forecast (--column NAME; the first is the target); the file's columns are: a, b",
        ),
        ("a,a\n1,2\n", ["a"], None, "bad.csv, line 1: duplicated columns ['a']"),
        ("t,y\n1,2\n2,abc\n", ["y"], "t", "bad.csv, line 3, column 'y': expected a number, got 'abc'"),
        ("y\n1\n\n2\nnan\n", ["y"], None, "bad.csv, line 5, column 'y': expected a finite number, got 'nan'"),
        ("y\n1\n-inf\n", ["y"], None, "bad.csv, line 3, column 'y': expected a finite number, got '-inf'"),
        ("y,x\n1,2\n,3\n", ["y"], None, "bad.csv, line 3, column 'y': empty value; expected a number"),
        ("y,x\n1,2\n3\n", ["y"], None, "bad.csv, line 3: 1 fields, expected 2"),
        (
            "t,y\n2001,1\n2000,2\n",
            ["y"],
            "t",
            "bad.csv, line 3, column 't': the time '2000' does not come after '2001' (line 2)",
        ),
        ("t,y\n2001-01-01,1\nsoon,2\n", ["y"], "t", "bad.csv, line 3, column 't': expected a number or an ISO date"),
        ("t,y\n2001,1\n2001-01-02,2\n", ["y"], "t", "line 3, column 't': expected a number like line 2's '2001'"),
        ("t,y\n1,2\n", ["t"], "t", "cannot be both the time and a value column"),
    ],
)
def test_malformed_csv_files_are_named_with_the_line(
    tmp_path: Path, text: str, columns: list[str], time_column: str | None, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(SeriesDataError) as caught:
        read_csv_series(path, columns, time_column)
    assert message in str(caught.value)


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(SeriesDataError, match="missing.csv: no such file"):
        read_csv_series(tmp_path / "missing.csv", ["y"])
    latin = tmp_path / "latin.csv"
    latin.write_bytes("y\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(SeriesDataError, match="latin.csv, line 2: not valid UTF-8"):
        read_csv_series(latin, ["y"])


def test_a_series_too_short_for_the_window_and_horizon_says_so() -> None:
    series = Series(np.arange(40.0)[:, None], ["y"], np.arange(40.0), source="short.csv")
    parts = split_series(series, ForecastData(), window=10, horizon=4)
    assert (parts.train_end, parts.validation_end) == (32, 36)
    with pytest.raises(SeriesDataError) as caught:
        split_series(series, ForecastData(), window=30, horizon=5)
    message = str(caught.value)
    assert "short.csv: 40 steps are too short" in message and "needs at least 35 (window 30 + horizon 5" in message
    assert "the validation part (validation_fraction of 40) has 4 steps, needs at least the horizon, 5" in message


# -- baselines and metrics ---------------------------------------------------------------------------
def test_baselines_and_metrics_match_a_loop_by_loop_computation() -> None:
    rng = np.random.default_rng(0)
    target = rng.normal(size=60).cumsum() + 10 * np.sin(np.arange(60) / 2)
    origins, horizon, season = [20, 31, 45], 9, 4
    naive = naive_forecast(target, origins, horizon)
    seasonal = seasonal_naive_forecast(target, origins, horizon, season)
    for row, origin in enumerate(origins):
        for h in range(1, horizon + 1):
            assert naive[row, h - 1] == target[origin]
            back = origin + h - season
            while back > origin:  # the latest value a whole number of seasons before, known at the origin
                back -= season
            assert seasonal[row, h - 1] == target[back]
    history = target[:20]
    scale = sum(abs(history[t] - history[t - 1]) for t in range(1, 20)) / 19
    seasonal_scale = sum(abs(history[t] - history[t - season]) for t in range(season, 20)) / (20 - season)
    assert naive_scale(history) == pytest.approx(scale) and naive_scale(history, season) == pytest.approx(
        seasonal_scale
    )
    truth = np.array([[target[o + h] for h in range(1, horizon + 1)] for o in origins])
    errors = [seasonal[r, c] - truth[r, c] for r in range(3) for c in range(horizon)]
    figures = forecast_metrics(truth, seasonal, scale, seasonal_scale)
    mae = sum(abs(e) for e in errors) / len(errors)
    assert figures["mae"] == pytest.approx(mae)
    assert figures["rmse"] == pytest.approx(math.sqrt(sum(e * e for e in errors) / len(errors)))
    assert figures["mase"] == pytest.approx(mae / scale)
    assert figures["mase_seasonal"] == pytest.approx(mae / seasonal_scale)
    with pytest.raises(ValueError, match="a season"):
        seasonal_naive_forecast(target, [2], 3, season)
    with pytest.raises(ValueError, match="constant"):
        naive_scale(np.ones(5))


def test_evaluation_matches_a_hand_computation_with_standardisation_from_the_training_part() -> None:
    rng = np.random.default_rng(1)
    steps = 80
    values = np.stack([np.sin(np.arange(steps) / 3) * 5 + np.arange(steps) * 0.2, rng.normal(size=steps)], 1)
    series = Series(values, ["y", "x"], np.arange(steps, dtype=float), season=6)
    parts = split_series(series, ForecastData(validation_fraction=0.15, test_fraction=0.2), window=8, horizon=5)
    mean, std = forecast_task.standardisation(parts)
    assert np.allclose(mean, values[:52].mean(0)) and np.allclose(std, values[:52].std(0))
    model = Forecaster(ForecastConfig(["y", "x"], mean, std, window=8, horizon=5, hidden_size=6)).eval()
    evaluation = evaluate_part(model, parts, "test")
    start = 52 + 12  # 80 steps: training 52, validation 12, test 16
    origins = range(start - 1, steps - 5)
    truth, predicted = [], []
    for origin in origins:
        window = (values[origin - 7 : origin + 1] - values[:52].mean(0)) / values[:52].std(0)
        with torch.no_grad():
            z = model(torch.tensor(window, dtype=torch.float32)[None])[0].double().numpy()
        predicted.append(z * values[:52, 0].std() + values[:52, 0].mean())
        truth.append(values[origin + 1 : origin + 6, 0])
    errors = np.array(predicted) - np.array(truth)
    history = values[:52, 0]
    mae = np.abs(errors).mean()
    assert evaluation.origins == len(origins) == 12
    figures = evaluation.metrics["model"]
    assert figures["mae"] == pytest.approx(mae, rel=1e-5)
    assert figures["rmse"] == pytest.approx(np.sqrt((errors**2).mean()), rel=1e-5)
    assert figures["mase"] == pytest.approx(mae / np.abs(np.diff(history)).mean(), rel=1e-5)
    assert figures["mase_seasonal"] == pytest.approx(mae / np.abs(history[6:] - history[:-6]).mean(), rel=1e-5)
    naive_errors = np.array([[values[o + h, 0] - values[o, 0] for h in range(1, 6)] for o in origins])
    assert evaluation.metrics["naive"]["mae"] == pytest.approx(np.abs(naive_errors).mean())


def test_relative_windows_make_the_forecast_follow_the_level() -> None:
    model = Forecaster(ForecastConfig(["y"], [5.0], [2.0], window=6, horizon=3, hidden_size=5)).eval()
    values = np.random.default_rng(2).normal(size=(20, 1))
    shifted = forecast(model, values + 40.0, [10, 19])
    assert np.allclose(shifted, forecast(model, values, [10, 19]) + 40.0)


# -- training ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Forecaster, dict]:
    out = tmp_path_factory.mktemp("tiny")
    model, _, evaluations = train_tiny(configure, train, out)
    return out, model, evaluations


def test_a_short_run_beats_the_naive_forecast_on_co2(tiny_run: tuple[Path, Forecaster, dict]) -> None:
    out, model, evaluations = tiny_run
    test = evaluations["test"].metrics
    assert test["model"]["mae"] < 0.8 * test["naive"]["mae"], test
    assert test["model"]["mase"] < test["naive"]["mase"]
    train_end = 2284 - 2 * round(2284 * 0.1)  # the test and validation parts are 10% each
    assert model.config.mean == pytest.approx([co2_series().target[:train_end].mean()])
    for name in ("model.safetensors", "config.json", "checkpoint.safetensors", "curves.png", "forecast.png"):
        assert (out / name).is_file(), name
    assert (out / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_saved_model_forecasts_the_same(tiny_run: tuple[Path, Forecaster, dict]) -> None:
    out, model, _ = tiny_run
    loaded = load_model(out)
    assert isinstance(loaded, Forecaster) and loaded.config == model.config
    values = co2_series().values
    assert np.array_equal(forecast(loaded, values, [500, 2000]), forecast(model, values, [500, 2000]))


def test_the_forecast_plot_is_labelled(tiny_run: tuple[Path, Forecaster, dict]) -> None:
    _, model, evaluations = tiny_run
    parts = split_series(co2_series(), ForecastData(), model.config.window, model.config.horizon)
    figure = forecast_figure(model, parts, evaluations["test"])
    axis = figure.axes[0]
    labels = [text.get_text() for text in axis.get_legend().get_texts()]
    drawn = next(line.get_ydata() for line in axis.get_lines() if line.get_label().startswith("model (MAE"))
    pyplot().close(figure)
    start, stop, horizon = parts.validation_end, len(parts.series), model.config.horizon
    blocks = [forecast(model, parts.series.values, [origin])[0] for origin in range(start - 1, stop - horizon, horizon)]
    covered = len(blocks) * horizon  # 228 test weeks: 17 blocks of 13, then the last 7 of a block ending at the end
    assert len(drawn) == stop - start == 228 and covered == 221
    assert np.allclose(drawn[:covered], np.concatenate(blocks))
    assert np.allclose(drawn[covered:], forecast(model, parts.series.values, [stop - 1 - horizon])[0, -7:])
    assert axis.get_xlabel() == "date" and axis.get_ylabel() == "co2 (ppm)" and "Mauna Loa" in axis.get_title()
    assert labels[:2] == ["history", "held-out truth"]
    assert any(label.startswith("seasonal naive (MAE") for label in labels) and "model, next 13 steps" in labels


def test_resume_after_a_crash_reaches_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = tiny(configure, "window=26", "horizon=4", "hidden_size=8", epochs=3)
    crash_at = 40  # in the second epoch, after the first epoch's checkpoint
    assert_resume_after_crash_is_exact(train, settings, forecast_task, "mse_sum", crash_at, tmp_path, monkeypatch)
    assert read_checkpoint(tmp_path / "crashed" / "checkpoint.safetensors")["trainer_state"]["step"] > crash_at


# -- the command line --------------------------------------------------------------------------------
def test_command_line_train_predict_evaluate(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["forecast", "train", "--preset", "tiny", "--out", str(out), "--quiet",
                                 "--max-steps", "20"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "59 of 2284 weeks" in flat(result.output) and "seasonal naive" in result.output
    assert "sMASE" in result.output and "(season 52)" in flat(result.output) and (out / "forecast.png").is_file()
    result = runner.invoke(app, ["forecast", "predict", "--checkpoint", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "step\tdate\tco2 (ppm)" and len(lines) == 1 + 13
    assert lines[1].startswith("+1\t2002-01-05\t") and lines[13].startswith("+13\t2002-03-30\t")
    model = Forecaster.from_pretrained(out)
    series = co2_series()
    window = torch.tensor((series.values[-52:] - model.config.mean) / model.config.std, dtype=torch.float32)
    with torch.no_grad():
        expected = model(window[None])[0].double().numpy() * model.config.std[0] + model.config.mean[0]
    printed = np.array([float(line.split("\t")[2]) for line in lines[1:]])
    assert np.allclose(printed, expected, rtol=1e-5)
    result = runner.invoke(app, ["forecast", "evaluate", "--checkpoint", str(out), "--part", "validation",
                                 "--plot", str(tmp_path / "plot.png")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "validation: 216 forecasts of 13 steps" in flat(result.output) and (tmp_path / "plot.png").is_file()


def test_command_line_sunspots_preset(tmp_path: Path) -> None:
    out = tmp_path / "sun"
    result = runner.invoke(app, ["forecast", "train", "--preset", "sunspots", "--out", str(out), "--quiet",
                                 "--max-steps", "5", "--threads", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "(season 11)" in flat(result.output) and "RMSE in sunspot number" in flat(result.output)
    result = runner.invoke(app, ["forecast", "predict", "--checkpoint", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert (
        lines[0] == "step\tyear\tsunspots (sunspot number)" and lines[1].startswith("+1\t2009\t") and len(lines) == 12
    )


def test_command_line_trains_on_csv_columns(tmp_path: Path) -> None:
    steps = np.arange(300)
    days = np.datetime64("2020-01-01") + steps
    load = 50 + 10 * np.sin(2 * np.pi * steps / 7) + 0.05 * steps
    temperature = 5 * np.cos(2 * np.pi * steps / 7)
    path = tmp_path / "load.csv"
    path.write_text("day,temperature,load\n" + "".join(f"{d},{t:.4f},{y:.4f}\n" for d, t, y in
                                                          zip(days, temperature, load, strict=True)))  # fmt: skip
    out = tmp_path / "run"
    result = runner.invoke(app, ["forecast", "train", "--preset", "tiny", "--csv", str(path), "--column", "load",
                                 "--column", "temperature", "--time-column", "day", "--season", "7", "--window", "14",
                                 "--horizon", "7", "--out", str(out), "--quiet", "--max-steps", "15"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "(season 7)" in flat(result.output)
    model = Forecaster.from_pretrained(out)
    assert model.config.columns == ["load", "temperature"] and model.rnn.input_size == 2
    shorter = tmp_path / "recent.csv"
    rows = zip(days[:20], temperature[:20], load[:20], strict=True)
    shorter.write_text("load,temperature,day\n" + "".join(f"{y},{t},{d}\n" for d, t, y in rows))
    result = runner.invoke(app, ["forecast", "predict", "--checkpoint", str(out), "--csv", str(shorter),
                                 "--time-column", "day", "--precision", "fp32"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].startswith("+1\t2020-01-21\t")
    recent = np.stack([load[6:20], temperature[6:20]], 1)  # the last 14 rows, in the model's column order
    window = torch.tensor((recent - model.config.mean) / model.config.std, dtype=torch.float32)
    with torch.no_grad():
        expected = model(window[None])[0].double().numpy() * model.config.std[0] + model.config.mean[0]
    printed = [float(line.split("\t")[2]) for line in result.output.splitlines()[1:]]
    assert np.allclose(printed, expected, rtol=1e-4)
    too_short = tmp_path / "few.csv"
    too_short.write_text("load,temperature\n1,2\n3,4\n")
    result = runner.invoke(app, ["forecast", "predict", "--checkpoint", str(out), "--csv", str(too_short)])
    assert result.exit_code == 2 and "few.csv: 2 steps, the model needs the last 14" in flat(result.output)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "--set", "mean=1"], "--set mean=...: the mean of every column comes from the training part"),
        (["train", "--csv", "/nonexistent/file.csv", "--column", "y"], "/nonexistent/file.csv: no such file"),
        (["train", "--column", "y"], "--column and --time-column read a CSV: give --csv FILE too"),
        (["train", "--window", "2000"], "2284 steps are too short"),
        (["train", "--horizon", "0"], "Invalid value for '--horizon'"),
        (["train", "--set", "test_fraction=0.95"], "must be positive and sum to less than 1"),
        (["predict", "--checkpoint", "/nonexistent"], "no config.json"),
    ],
)
def test_command_line_errors_are_clear(arguments: list[str], message: str) -> None:
    assert_clear_error(["forecast", *arguments], message)


def test_command_line_names_the_columns_of_a_csv(tmp_path: Path) -> None:
    path = tmp_path / "two.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    result = runner.invoke(app, ["forecast", "train", "--csv", str(path), "--column", "c"])
    assert result.exit_code == 2 and "no column 'c'; the file's columns are: a, b" in flat(result.output)
    result = runner.invoke(app, ["forecast", "train", "--csv", str(path), "--column", "a", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "2 steps are too short" in flat(result.output)


def test_evaluate_on_another_part_of_a_saved_run(tiny_run: tuple[Path, Forecaster, dict], tmp_path: Path) -> None:
    out, _, evaluations = tiny_run
    result = runner.invoke(app, ["forecast", "evaluate", "--checkpoint", str(out), "--part", "train"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["forecast", "evaluate", "--checkpoint", str(out), "--part", "dev"])
    assert result.exit_code == 2 and "unknown part 'dev'" in result.output
    test = evaluations["test"].metrics["model"]["mae"]
    result = runner.invoke(app, ["forecast", "evaluate", "--checkpoint", str(out), "--precision", "fp32"])
    assert result.exit_code == 0 and f"{test:.4g}" in result.output, result.output
    assert dataclasses.asdict(forecast_task.read_task_data(out)) == dataclasses.asdict(ForecastData())


def test_evaluate_warns_when_the_series_changed_since_training(tmp_path: Path) -> None:
    values = 10 + np.sin(np.arange(220) / 3) + 0.01 * np.arange(220)
    path = tmp_path / "y.csv"
    path.write_text("y\n" + "".join(f"{value:.6f}\n" for value in values[:200]))
    out = tmp_path / "run"
    result = runner.invoke(app, ["forecast", "train", "--preset", "tiny", "--csv", str(path), "--column", "y",
                                 "--window", "14", "--horizon", "5", "--set", "hidden_size=4", "--out", str(out),
                                 "--quiet", "--max-steps", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "task.json").read_text())["trained_on"]
    assert recorded["counts"] == {"train": 160, "validation": 20, "test": 20}
    evaluate = ["forecast", "evaluate", "--checkpoint", str(out)]
    result = runner.invoke(app, evaluate)
    assert result.exit_code == 0 and result.stderr == "", result.output
    path.write_text(path.read_text().replace("\n", "\r\n"))  # the same values, written otherwise
    assert runner.invoke(app, evaluate).stderr == ""
    with path.open("a") as file:
        file.write("".join(f"{value:.6f}\n" for value in values[200:]))
    result = runner.invoke(app, evaluate)
    assert result.exit_code == 0 and result.stderr.count("\n") == 1, result.output
    assert flat(result.stderr) == (f"warning: {path} has 20 more values than when the run trained on it (train 160, "
                                   "validation 20, test 20 steps then; train 176, validation 22, test 22 now): the "
                                   "split point has moved, so the test part is not the one the run was evaluated "
                                   "on")  # fmt: skip
    path.write_text("y\n" + "".join(f"{value:.6f}\n" for value in values[:199]) + "0\n")
    result = runner.invoke(app, evaluate)
    assert flat(result.stderr) == (f"warning: {path} has changed since the run trained on it (train 160, validation "
                                   "20, test 20 steps then; train 160, validation 20, test 20 now): the figures are "
                                   "for the data as it is now")  # fmt: skip
    other = tmp_path / "other.csv"
    other.write_text("y\n" + "".join(f"{value:.6f}\n" for value in values[:150]))
    result = runner.invoke(app, [*evaluate, "--csv", str(other)])
    assert result.exit_code == 0 and result.stderr == "", "another file on purpose: no warning"
