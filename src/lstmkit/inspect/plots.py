"""The figures of :mod:`lstmkit.inspect`, drawn with matplotlib (Agg) and saved as PNG: gate
heatmaps, chosen units' memory over time, gradient flow, long-lag results and learning curves, and
the cost of each cell kind. Every function returns the path it wrote."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from ..training.checkpoint import atomic_write  # noqa: E402
from .cost import CostRow  # noqa: E402
from .gradients import GradientFlow  # noqa: E402
from .longlag import LongLagRun  # noqa: E402
from .traces import GateTrace, UnitChoice, check_units, display_character, heatmap_units  # noqa: E402

DPI = 90
KIND_COLORS = {"rnn": "C3", "gru": "C2", "lstm": "C0", "peephole": "C1", "layernorm": "C4"}
DESCRIPTIONS = {
    "i": "input gate i",
    "f": "forget gate f",
    "g": "candidate g",
    "o": "output gate o",
    "c": "cell state c",
    "h": "hidden state h",
    "r": "reset gate r",
    "z": "update gate z",
    "n": "candidate n",
}
GATE_RANGE = {"i", "f", "o", "r", "z"}  # sigmoid gates: 0 (closed) .. 1 (open)


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Save ``figure`` as a PNG at ``path`` (atomically, its folder created) with nothing clipped, and
    close it.
    The image is reduced to a 256-colour palette, which looks the same for these plots and takes a
    third of the bytes."""
    rendered, reduced = io.BytesIO(), io.BytesIO()
    figure.savefig(rendered, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    image = Image.open(rendered).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    image.save(reduced, format="PNG", optimize=True)
    return atomic_write(path, reduced.getvalue())


def _step_ticks(axis: plt.Axes, labels: Sequence[str], max_labels: int = 220) -> None:
    """Label the x axis with the input characters (up to ``max_labels`` of them), else step numbers."""
    steps = len(labels)
    if steps <= max_labels and all(len(label) == 1 for label in labels):
        characters = [display_character(label) for label in labels]
        axis.set_xticks(range(steps), characters, fontsize=7 if steps <= 120 else 6, fontfamily="monospace")
        axis.tick_params(axis="x", length=0)
        axis.set_xlabel("input character (one per step)")
    else:
        every = max(1, int(np.ceil(steps / 25)))
        axis.set_xticks(range(0, steps, every), [str(s) for s in range(0, steps, every)], fontsize=8)
        axis.set_xlabel("time step")


def plot_gates(
    trace: GateTrace, path: str | Path, units: Sequence[int] | None = None, title: str | None = None
) -> Path:
    """Heatmaps over time of every gate and state of ``trace``, one panel each (rows: ``units``,
    by default :func:`~lstmkit.inspect.traces.heatmap_units`; columns: steps, labelled with the
    input characters)."""
    units = check_units(units, trace.units) if units is not None else heatmap_units(trace)
    steps = trace.steps
    width = float(np.clip(2.8 + 0.11 * steps, 8.0, 24.0))
    height_per_panel = float(np.clip(0.05 * len(units) + 0.9, 1.2, 3.2))
    figure, axes = plt.subplots(
        len(trace.names), 1, figsize=(width, height_per_panel * len(trace.names) + 0.8), sharex=True, squeeze=False
    )
    for axis, name in zip(axes[:, 0], trace.names, strict=True):
        values = trace.values[name][:, units].numpy().T
        if name in GATE_RANGE:
            cmap, low, high, scale = "viridis", 0.0, 1.0, "0 closed .. 1 open"
        else:
            bound = 1.0 if name != "c" else max(1e-6, float(np.abs(values).max()))
            cmap, low, high, scale = "RdBu_r", -bound, bound, "value"
        image = axis.imshow(values, aspect="auto", cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        axis.set_ylabel("unit", fontsize=8)
        if len(units) <= 24:
            axis.set_yticks(range(len(units)), [str(u) for u in units], fontsize=7 if len(units) <= 12 else 5.5)
        else:
            positions = np.linspace(0, len(units) - 1, 5).round().astype(int)
            axis.set_yticks(positions, [str(units[p]) for p in positions], fontsize=7)
        axis.set_title(f"{DESCRIPTIONS.get(name, name)} ({trace.cell}, layer {trace.layer})", fontsize=9, loc="left")
        bar = figure.colorbar(image, ax=axis, pad=0.01, fraction=0.025)
        bar.set_label(scale, fontsize=7)
        bar.ax.tick_params(labelsize=7)
    _step_ticks(axes[-1, 0], trace.labels)
    figure.suptitle(title or f"gates and states over time, {len(units)} of {trace.units} units", fontsize=11)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_unit_states(
    trace: GateTrace,
    choices: Sequence[UnitChoice],
    path: str | Path,
    name: str | None = None,
    features: Mapping[str, np.ndarray] | None = None,
    title: str | None = None,
) -> Path:
    """The chosen units' memory state (``name``, by default ``c``, else ``h``) over time, one line
    each; steps where a chosen unit's binary feature (inside quotes, brackets) holds are shaded."""
    if not choices:
        raise ValueError("no units chosen: expected at least one UnitChoice")
    check_units([choice.unit for choice in choices], trace.units)
    name = name or trace.memory
    steps = trace.steps
    figure, axis = plt.subplots(figsize=(float(np.clip(3.0 + 0.1 * steps, 8.0, 22.0)), 4.0))
    for index, choice in enumerate(choices):
        axis.plot(trace.unit(choice.unit, name).numpy(), label=choice.describe(), color=f"C{index % 10}", lw=1.4)
    for feature_name, feature in (features or {}).items():
        shaded = any(choice.reason == feature_name for choice in choices)
        if shaded and set(np.unique(feature)) <= {0.0, 1.0}:
            axis.fill_between(
                range(steps),
                0,
                1,
                where=feature > 0,
                transform=axis.get_xaxis_transform(),
                color="0.85",
                zorder=0,
                label=f"{feature_name} (shaded)",
            )
    axis.axhline(0, color="0.6", lw=0.6)
    axis.set_xlim(-0.5, steps - 0.5)
    axis.set_ylabel(f"{DESCRIPTIONS.get(name, name)} (value)")
    _step_ticks(axis, trace.labels)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axis.set_title(title or f"chosen units of {trace.cell} layer {trace.layer} over time", fontsize=11)
    axis.grid(alpha=0.25, axis="y")
    figure.tight_layout()
    return save_figure(figure, path)


def plot_gradient_flow(flows: Sequence[GradientFlow], path: str | Path, title: str | None = None) -> Path:
    """``||dL_T/dh_t||`` against ``t`` on a log axis, one line per kind, one panel per stage
    (initial, trained), the same y range in both; dotted: ``||dL_T/dc_t||`` of cells with a cell
    state. Zero norms (underflow) are left out of the log axis."""
    if not flows:
        raise ValueError("no gradient flows to plot")
    stages = list(dict.fromkeys(flow.stage for flow in flows))
    figure, axes = plt.subplots(1, len(stages), figsize=(5.2 * len(stages) + 0.6, 4.2), sharey=True, squeeze=False)
    for axis, stage in zip(axes[0], stages, strict=True):
        for flow in (f for f in flows if f.stage == stage):
            t = np.arange(1, flow.steps + 1)
            color = KIND_COLORS.get(flow.kind, "C7")
            hidden = np.asarray(flow.hidden)
            axis.plot(t, np.where(hidden > 0, hidden, np.nan), color=color, lw=1.8, label=f"{flow.kind}: h")
            if flow.cell is not None:
                cell = np.asarray(flow.cell)
                axis.plot(t, np.where(cell > 0, cell, np.nan), color=color, lw=1.2, ls=":", label=f"{flow.kind}: c")
        axis.set_yscale("log")
        axis.set_xlabel("time step t (the loss is made at the last step T)")
        axis.set_title(f"{stage}", fontsize=10)
        axis.grid(alpha=0.3, which="major")
        axis.legend(fontsize=8, loc="lower right")
    axes[0, 0].set_ylabel("‖∂L_T / ∂state_t‖ (mean over the batch)")
    figure.suptitle(title or "gradient flow: how much of the last step's error reaches step t", fontsize=11)
    figure.tight_layout()
    return save_figure(figure, path)


def _task_axis(axis: plt.Axes, some: LongLagRun) -> None:
    if some.metric == "mse":
        axis.set_yscale("log")
        axis.set_ylabel("held-out mean squared error (lower is better)")
    else:
        axis.set_ylim(-0.02, 1.02)
        axis.set_ylabel("held-out accuracy on recalled symbols")


def plot_long_lag(runs: Sequence[LongLagRun], path: str | Path, title: str | None = None) -> Path:
    """What each kind reached at the end of its budget against the lag, one panel per task, the
    chance level dashed."""
    if not runs:
        raise ValueError("no long-lag runs to plot")
    tasks = list(dict.fromkeys(run.task for run in runs))
    figure, axes = plt.subplots(1, len(tasks), figsize=(5.4 * len(tasks) + 0.6, 4.2), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        task_runs = [run for run in runs if run.task == task]
        lags = sorted({run.lag for run in task_runs})
        for kind in dict.fromkeys(run.kind for run in task_runs):
            points = sorted((run.lag, run.final) for run in task_runs if run.kind == kind)
            axis.plot(*zip(*points, strict=True), marker="o", color=KIND_COLORS.get(kind, "C7"), label=kind)
        axis.axhline(task_runs[0].chance, color="0.3", ls="--", lw=1.2, label=f"chance ({task_runs[0].chance:.3g})")
        axis.set_xscale("log")
        axis.set_xticks(lags, [str(lag) for lag in lags])
        axis.minorticks_off()
        axis.set_xlabel("lag T (time steps the first item must be remembered)")
        _task_axis(axis, task_runs[0])
        axis.set_title(f"{task} problem" if task == "adding" else f"{task} task", fontsize=10)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title or "long-lag problems after a fixed training budget", fontsize=11)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_learning_curves(runs: Sequence[LongLagRun], path: str | Path, title: str | None = None) -> Path:
    """Held-out metric against the optimiser step for every run: one row per task, one column per
    lag, one line per kind, the chance level dashed."""
    if not runs:
        raise ValueError("no long-lag runs to plot")
    tasks = list(dict.fromkeys(run.task for run in runs))
    lags = sorted({run.lag for run in runs})
    figure, axes = plt.subplots(
        len(tasks), len(lags), figsize=(3.3 * len(lags) + 0.6, 2.9 * len(tasks) + 0.6), squeeze=False
    )
    for row, task in enumerate(tasks):
        for column, lag in enumerate(lags):
            axis = axes[row, column]
            panel = [run for run in runs if run.task == task and run.lag == lag]
            if not panel:
                axis.set_axis_off()
                continue
            for run in panel:
                axis.plot(*zip(*run.curve, strict=True), color=KIND_COLORS.get(run.kind, "C7"), lw=1.4, label=run.kind)
            axis.axhline(panel[0].chance, color="0.3", ls="--", lw=1.0, label="chance")
            _task_axis(axis, panel[0])
            axis.set_ylabel(axis.get_ylabel().replace(" (lower is better)", "") if column == 0 else "", fontsize=8)
            axis.set_xlabel("optimiser step", fontsize=8)
            axis.set_title(f"{task}, lag {lag}", fontsize=9)
            axis.tick_params(labelsize=7)
            axis.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    figure.suptitle(title or "learning curves (held-out, every evaluation)", fontsize=11)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_cost(rows: Sequence[CostRow], path: str | Path, title: str | None = None) -> Path:
    """Parameters per kind, and the forward and training-step times per engine, as bars."""
    if not rows:
        raise ValueError("no cost rows to plot")
    kinds = [row.kind for row in rows]
    engines = list(rows[0].forward_ms)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11.5, 3.9), gridspec_kw={"width_ratios": [1, 2]})
    colors = [KIND_COLORS.get(kind, "C7") for kind in kinds]
    left.bar(kinds, [row.parameters for row in rows], color=colors)
    for x, row in enumerate(rows):
        left.annotate(f"{row.parameters:,}", (x, row.parameters), ha="center", va="bottom", fontsize=8)
    left.set_ylabel("parameters (one layer)")
    left.set_xlabel("cell")
    left.tick_params(axis="x", labelrotation=30)
    left.set_title("parameters", fontsize=10)
    left.margins(y=0.15)
    bars = [(f"forward, {e}", [row.forward_ms[e] for row in rows]) for e in engines]
    bars += [(f"training step, {e}", [row.train_ms[e] for row in rows]) for e in engines]
    width = 0.8 / len(bars)
    for index, (label, values) in enumerate(bars):
        positions = np.arange(len(kinds)) + (index - (len(bars) - 1) / 2) * width
        right.bar(positions, values, width, label=label, color=f"C{index}", alpha=0.85)
    right.set_xticks(range(len(kinds)), kinds)
    right.set_xlabel("cell")
    right.set_ylabel("median time (ms)")
    right.set_title("time per call", fontsize=10)
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    right.grid(alpha=0.3, axis="y")
    figure.suptitle(title or "parameters and cost at the same size", fontsize=11)
    figure.tight_layout()
    return save_figure(figure, path)
