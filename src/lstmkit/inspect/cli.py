"""``lstmkit inspect gates|gradients|long-lag|cost|report``."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ..commandline.messages import console, user_errors
from ..commandline.options import Checkpoint, Seed, Threads, intra_op_threads
from ..training.checkpoint import atomic_write

app = typer.Typer(
    help="See inside an LSTM, and why it beats a plain RNN: gate traces, gradient flow, long-lag "
    "experiments, cost, and a report with all of them.",
    no_args_is_help=True,
)

Out = Annotated[Path, typer.Option("--out", "-o", help="Folder for the figures and tables.")]
Quick = Annotated[bool, typer.Option("--quick", help="Small budgets: a couple of minutes on two CPU cores.")]
Kinds = Annotated[str | None, typer.Option(help="Cells, comma-separated: rnn, gru, lstm, peephole, layernorm.")]
Steps = Annotated[int | None, typer.Option("--steps", min=1, help="Optimiser steps per training run.")]
Hidden = Annotated[int | None, typer.Option("--hidden-size", min=1, help="Units of every model.")]
Init = Annotated[
    str | None,
    typer.Option(
        "--init",
        help="Initialisation per cell, KIND=CHOICE[+CHOICE],...: forget_bias:B, chrono (T_max: the sequence "
        "length), chrono:T_MAX, orthogonal, default; e.g. lstm=default,gru=chrono. Cells not named "
        "keep their default start (chrono+orthogonal for the LSTM family, orthogonal for RNN and GRU).",
    ),
]

Jobs = Annotated[
    int,
    typer.Option(min=1, help="Training runs at once, each in its own process with --threads threads (default: "
                 "one per CPU core)."),
]  # fmt: skip
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_list(name: str, text: str, convert: type = str) -> tuple:
    """``"10,50"`` as ``(10, 50)``, or a ``ValueError`` that says what was expected.

    >>> parse_list("lags", "10, 50", int)
    (10, 50)
    """
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError(f"--{name}: expected a comma-separated list, got {text!r}")
    try:
        return tuple(convert(part) for part in parts)
    except ValueError:
        raise ValueError(
            f"--{name}: expected comma-separated {convert.__name__} values such as "
            f"{'10,50' if convert is int else 'a,b'}, got {text!r}"
        ) from None


def parse_init(text: str) -> dict[str, str]:
    """``--init "lstm=chrono+orthogonal,gru=chrono"`` as ``{kind: choices}`` (checked by the settings).

    >>> parse_init("lstm=chrono+orthogonal, gru=forget_bias:2")
    {'lstm': 'chrono+orthogonal', 'gru': 'forget_bias:2'}
    """
    chosen = {}
    for item in parse_list("init", text):
        kind, equals, spec = item.partition("=")
        if not equals or not kind.strip() or not spec.strip():
            raise ValueError(f"--init: expected KIND=CHOICE items such as lstm=chrono, got {item!r}")
        chosen[kind.strip()] = spec.strip()
    return chosen


def unescape(text: str) -> str:
    """A command-line text with ``\\n`` and ``\\t`` typed as two characters turned into a line break
    and a tab (``\\\\`` stays a backslash).

    >>> unescape(r"ROMEO:\\nBut soft") == "ROMEO:" + chr(10) + "But soft"
    True
    """
    return re.sub(r"\\([nt\\])", lambda match: {"n": "\n", "t": "\t", "\\": "\\"}[match[1]], text)


def read_series(path: Path) -> np.ndarray:
    """A series from a text or CSV file: one row per step, columns (features) separated by commas
    or whitespace; a header line that is not numbers is skipped. A value too large for float32
    reads as infinity (which the trace refuses)."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file; expected a text or CSV file of numbers, one row per step")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark must not hide the first row's numbers
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not valid UTF-8 ({error.reason}); expected a text file") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        try:
            values = [float(field) for field in fields]
        except ValueError:
            if rows or number > 1:
                raise ValueError(f"{path}, line {number}: expected numbers, got {line.strip()[:80]!r}") from None
            continue
        if not all(math.isfinite(value) for value in values):
            raise ValueError(f"{path}, line {number}: expected finite numbers, got {line.strip()[:80]!r}")
        rows.append(values)
    if not rows:
        raise ValueError(f"{path}: the series is empty: expected at least one row of numbers")
    if len({len(row) for row in rows}) > 1:
        raise ValueError(f"{path}: rows have different numbers of columns ({sorted({len(row) for row in rows})})")
    return np.array(rows, dtype=np.float32)


def _long_lag_settings(quick: bool, seed: int | None, **given: object):
    from .longlag import QUICK, LongLagSettings

    base = dataclasses.asdict(QUICK if quick else LongLagSettings())
    chosen = {name: value for name, value in given.items() if value is not None}
    if "steps" in chosen:  # a budget asked for is every task's
        chosen["steps_by_task"] = {}
    if "lr" in chosen:  # a rate asked for is every cell's
        chosen["lr_by_kind"] = {}
    if "lags" in chosen:  # the lags asked for are all
        chosen["extra_runs"] = ()
    if "init" in chosen:  # kinds not named keep their default start
        chosen["init"] = {**base["init"], **chosen["init"]}
    return LongLagSettings(**{**base, **chosen, **({} if seed is None else {"seed": seed})})


@app.command("gates")
def gates_command(
    checkpoint: Checkpoint = Path("runs/charlm"),
    text: Annotated[str | None, typer.Option(help="The text a character model reads (\\n: a line break).")] = None,
    series: Annotated[Path | None, typer.Option(help="A file of numbers (one row per step) for other models.")] = None,
    values: Annotated[str | None, typer.Option(help="A univariate series inline: 0.1,0.5,0.9.")] = None,
    layer: Annotated[str, typer.Option(help="Layer and direction: l0, l0_reverse, l1, ...")] = "l0",
    units: Annotated[str | None, typer.Option(help="Units to plot, comma-separated (default: picked).")] = None,
    count: Annotated[int, typer.Option(min=1, max=64, help="How many units to pick automatically.")] = 6,
    out: Out = Path("runs/inspect"),
) -> None:
    """Trace every gate and state of a trained model on one input; draw heatmaps and chosen units."""
    from ..tasks import load_model
    from .plots import plot_gates, plot_unit_states
    from .traces import UnitChoice, check_units, heatmap_units, interesting_units, text_features, trace_model

    with user_errors():
        given = [
            name for name, value in (("--text", text), ("--series", series), ("--values", values)) if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                f"expected exactly one input: --text (a character model), --series FILE or --values "
                f"LIST, got {', '.join(given) if given else 'none'}"
            )
        text = None if text is None else unescape(text)
        data = text if text is not None else read_series(series) if series is not None else None
        if values is not None:
            data = np.array(parse_list("values", values, float), dtype=np.float32)
        model = load_model(checkpoint)
        traces = trace_model(model, data)  # type: ignore[arg-type]
        if layer not in traces:
            raise ValueError(f"unknown layer {layer!r}: this model has {', '.join(traces)}")
        trace = traces[layer]
        if units is not None:
            chosen = [
                UnitChoice(unit, "chosen", 0.0) for unit in check_units(parse_list("units", units, int), trace.units)
            ]
        else:
            chosen = interesting_units(trace, count)
        features = text_features(text) if text is not None else None
        shown = [choice.unit for choice in chosen] if units else heatmap_units(trace, chosen)
        heatmap = plot_gates(trace, out / "gates.png", units=shown, chosen=chosen)
        states = plot_unit_states(trace, chosen, out / "cell_states.png", features=features)
        for choice in chosen:
            console.print(f"  {choice.describe()}")
        console.print(f"wrote {heatmap} and {states}")


@app.command("gradients")
def gradients_command(
    lag: Annotated[int | None, typer.Option(min=2, help="Sequence length T of the adding problem.")] = None,
    kinds: Kinds = "rnn,gru,lstm",
    steps: Steps = None,
    hidden_size: Hidden = None,
    init: Init = None,
    seed: Seed = None,
    quick: Quick = False,
    out: Out = Path("runs/inspect"),
    threads: Threads = 1,
) -> None:
    """||dL_T/dh_t|| for t = T..1 for RNN, GRU and LSTM of equal size, before and after training."""
    from .gradients import compare_gradient_flow
    from .plots import plot_gradient_flow

    with intra_op_threads(threads), user_errors():
        kind_list = parse_list("kinds", kinds or "rnn,gru,lstm")
        settings = _long_lag_settings(
            quick,
            seed,
            steps=steps,
            hidden_size=hidden_size,
            gradient_lag=lag,
            kinds=kind_list,
            tasks=("adding",),
            init=parse_init(init) if init else None,
        )
        flows = compare_gradient_flow(settings, kind_list, progress=console.print)
        path = plot_gradient_flow(
            flows,
            out / "gradient_flow.png",
            title=f"gradient flow on the adding problem, T = {settings.gradient_lag}, {settings.hidden_size} units",
        )
        for flow in flows:
            console.print(f"  {flow.kind:9} {flow.stage:28} |dL/dh_1| / |dL/dh_T| = {flow.ratio():.2e}")
        atomic_write(out / "gradient_flow.json", json.dumps([f.as_dict() for f in flows], indent=1).encode())
        console.print(f"wrote {path}")


@app.command("long-lag")
def long_lag_command(
    tasks: Annotated[str | None, typer.Option(help="adding, copy (comma-separated).")] = None,
    lags: Annotated[str | None, typer.Option(help="Lags, comma-separated, e.g. 10,50,100,200.")] = None,
    kinds: Kinds = None,
    steps: Steps = None,
    hidden_size: Hidden = None,
    lr: Annotated[float | None, typer.Option(min=1e-6, help="Adam's learning rate.")] = None,
    init: Init = None,
    seed: Seed = None,
    quick: Quick = False,
    out: Out = Path("runs/inspect"),
    threads: Threads = 1,
    jobs: Jobs = CORES,
) -> None:
    """The adding problem and the copy task at several lags, each cell trained for the same budget."""
    from .longlag import long_lag_table, recipe_table, run_long_lag
    from .plots import plot_learning_curves, plot_long_lag

    with intra_op_threads(threads), user_errors():
        settings = _long_lag_settings(
            quick,
            seed,
            steps=steps,
            hidden_size=hidden_size,
            lr=lr,
            tasks=parse_list("tasks", tasks) if tasks else None,
            lags=parse_list("lags", lags, int) if lags else None,
            kinds=parse_list("kinds", kinds) if kinds else None,
            init=parse_init(init) if init else None,
        )

        def progress(run) -> None:  # noqa: ANN001
            console.print(
                f"  {run.task:6} lag {run.lag:4} {run.kind:9} {run.metric} {run.final:.4f} ({run.seconds:.0f} s)"
            )

        recipes = recipe_table(settings)
        console.print(recipes, highlight=False)
        runs, _ = run_long_lag(settings, progress=progress, jobs=jobs)
        table = long_lag_table(runs)
        console.print(table, highlight=False)
        plot_long_lag(runs, out / "long_lag.png")
        plot_learning_curves(runs, out / "long_lag_curves.png")
        atomic_write(out / "long_lag.md", f"{table}\n\n{recipes}\n".encode())
        document = {"settings": dataclasses.asdict(settings), "runs": [run.as_dict() for run in runs]}
        atomic_write(out / "long_lag.json", json.dumps(document, indent=1).encode())
        console.print(f"wrote {out / 'long_lag.png'}, {out / 'long_lag_curves.png'} and the table in {out}")


@app.command("cost")
def cost_command(
    kinds: Kinds = None,
    input_size: Annotated[int | None, typer.Option("--input-size", min=1, help="Input features.")] = None,
    hidden_size: Hidden = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Time steps per sequence.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Sequences per batch.")] = None,
    repeats: Annotated[int | None, typer.Option(min=1, help="Timing rounds (median).")] = None,
    quick: Quick = False,
    out: Out = Path("runs/inspect"),
    threads: Threads = 1,
) -> None:
    """Parameter count, forward and training-step time of each cell kind at the same size."""
    from .cost import QUICK, CostSettings, cost_table, measure_cost
    from .plots import plot_cost

    with intra_op_threads(threads), user_errors():
        given = {
            "kinds": parse_list("kinds", kinds) if kinds else None,
            "input_size": input_size,
            "hidden_size": hidden_size,
            "steps": steps,
            "batch_size": batch_size,
            "repeats": repeats,
        }
        base = dataclasses.asdict(QUICK if quick else CostSettings())
        settings = CostSettings(**{**base, **{k: v for k, v in given.items() if v is not None}})
        rows = measure_cost(settings, progress=console.print)
        table = cost_table(rows)
        console.print(table, highlight=False)
        path = plot_cost(rows, out / "cost.png")
        atomic_write(out / "cost.md", (table + "\n").encode())
        console.print(f"wrote {path}")


@app.command("report")
def report_command(
    out: Out = Path("runs/inspect"),
    quick: Quick = False,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", "-c", help="A trained charlm model to trace (default: train one).")
    ] = None,
    text: Annotated[
        str | None, typer.Option(help="The text to trace (default: the soliloquy's opening; \\n: a line break).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every training run.")] = 0,
    threads: Threads = 1,
    jobs: Jobs = CORES,
) -> None:
    """Everything above in one self-contained HTML page (OUT/report.html), plus the PNGs and tables."""
    from .report import ReportSettings, build_report

    with intra_op_threads(threads), user_errors():
        text = None if text is None else unescape(text)
        settings = ReportSettings(quick=quick, checkpoint=checkpoint, text=text, seed=seed, jobs=jobs)
        build_report(out, settings, log=console.print)
