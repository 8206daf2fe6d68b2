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

DPI = 96
"""Pixels per inch of the PNGs: the CSS pixel's, so that a figure shown at its own size (as the report
shows every figure) has its text at the point sizes below, 9 pt being 12 pixels."""
FIGURE_WIDTH = 1280
"""Width of every figure in pixels: what the report's column holds, so that the page never shrinks a
figure, and its text with it."""
SMALL, MEDIUM, LARGE = 9.0, 10.5, 12.0
"""Font sizes in points: tick labels and legends; axis labels and panel titles; figure titles."""
STYLE = {
    "figure.dpi": DPI,  # so that the sizes measured while laying a figure out are its PNG's pixels
    "savefig.dpi": DPI,
    "figure.constrained_layout.use": True,  # keeps every label inside the figure at the width asked for
    "font.size": MEDIUM,
    "axes.titlesize": MEDIUM,
    "axes.labelsize": MEDIUM,
    "xtick.labelsize": SMALL,
    "ytick.labelsize": SMALL,
    "legend.fontsize": SMALL,
    "figure.titlesize": LARGE,
}
"""The matplotlib settings every figure is drawn with (applied only while drawing it)."""
ROW_PX = 14
"""Height of a heatmap row in pixels: room for its 12-pixel label."""
LABELLED_ROWS = 32
"""Beyond this many units a heatmap strip stops growing: its rows get thinner and every few are labelled."""
CHARACTER_PX = 11
"""The narrowest column, in pixels, that still gets its input character as a label (9-point monospace
characters are 7 pixels wide)."""
STRIP_PX = FIGURE_WIDTH - 300
"""About how wide the columns of a strip are: the figure less the row labels and the colour bar."""
MAX_STRIPS = 4
"""At most this many strips per panel; a longer input gets narrower columns and step numbers."""
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
    """Save ``figure`` as a PNG at ``path`` (atomically, its folder created) at its own size, and close it.
    The image is reduced to a 256-colour palette, which looks the same for these plots and takes a
    third of the bytes."""
    rendered, reduced = io.BytesIO(), io.BytesIO()
    figure.savefig(rendered, format="png", dpi=DPI)
    plt.close(figure)
    image = Image.open(rendered).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    image.save(reduced, format="PNG", optimize=True)
    return atomic_write(path, reduced.getvalue())


def strips(steps: int, width: int = STRIP_PX, most: int = MAX_STRIPS) -> list[range]:
    """The steps cut into strips drawn one under the other, like the lines of a text: as few as give
    each step :data:`CHARACTER_PX` of the ``width`` pixels, at most ``most``, all as long as the first
    but the last.

    >>> [(strip.start, strip.stop) for strip in strips(172)]
    [(0, 86), (86, 172)]
    >>> [len(strip) for strip in strips(1000)]
    [250, 250, 250, 250]
    """
    fitting = max(1, width // CHARACTER_PX)
    length = -(-steps // min(most, -(-steps // fitting)))
    return [range(start, min(start + length, steps)) for start in range(0, steps, length)]


def _nice_step(span: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least ``span``."""
    magnitude = 10 ** max(0, int(np.floor(np.log10(max(span, 1.0)))))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= span)


def _shows_characters(labels: Sequence[str], length: int) -> bool:
    """Whether strips of ``length`` steps are labelled with their characters: the labels are
    characters, and the columns are wide enough for them."""
    return length * CHARACTER_PX <= STRIP_PX and all(len(label) == 1 for label in labels)


def _step_ticks(axis: plt.Axes, labels: Sequence[str], strip: range, length: int) -> None:
    """Show ``length`` columns from the strip's first step (a short last strip keeps the others'
    column width) and label them with the input characters when :func:`_shows_characters`, else with
    step numbers about every 60 pixels."""
    axis.set_xlim(strip.start - 0.5, strip.start + length - 0.5)
    if _shows_characters(labels, length):
        axis.set_xticks(list(strip), [display_character(labels[step]) for step in strip], fontfamily="monospace")
        axis.tick_params(axis="x", length=0)
    else:
        every = _nice_step(length * 60 / STRIP_PX)
        axis.set_xticks(range(-(-strip.start // every) * every, strip.stop, every))


def _colour_scale(name: str, values: np.ndarray) -> tuple[str, float, list[float], list[str], str]:
    """Colour map, bound (the scale runs from -bound, or 0 for a gate, to bound), colour-bar ticks,
    their labels and the bar's label, which together say what a colour means."""
    if name in GATE_RANGE:
        return "viridis", 1.0, [0.0, 0.5, 1.0], ["0 closed", "0.5", "1 open"], "sigmoid gate"
    if name == "c":  # unbounded: its own symmetric scale, so the sign stays white-centred
        bound = max(1e-6, float(np.abs(values).max()))
        return "RdBu_r", bound, [-bound, 0.0, bound], [f"{-bound:.3g}", "0", f"{bound:.3g}"], "cell state (unbounded)"
    return "RdBu_r", 1.0, [-1.0, 0.0, 1.0], ["-1", "0", "+1"], "tanh range"


def _unit_ticks(axis: plt.Axes, units: Sequence[int], reasons: Mapping[int, UnitChoice]) -> None:
    """Label the rows with their unit index and, for a picked unit, why; a white line under the
    picked units when they come first."""
    every = -(-len(units) // LABELLED_ROWS)
    rows = range(0, len(units), every)
    axis.set_yticks(rows, [reasons[units[row]].tag() if units[row] in reasons else f"u{units[row]}" for row in rows])
    picked = next((row for row, unit in enumerate(units) if unit not in reasons), len(units))
    if 0 < picked < len(units):
        axis.axhline(picked - 0.5, color="white", lw=2)


@matplotlib.rc_context(STYLE)
def plot_gates(
    trace: GateTrace,
    path: str | Path,
    units: Sequence[int] | None = None,
    title: str | None = None,
    chosen: Sequence[UnitChoice] = (),
) -> Path:
    """Heatmaps over time of every gate and state of ``trace``, one panel each, the input wrapped into
    strips drawn one under the other (:func:`strips`), each column labelled with its input character.
    Rows: ``units`` (by default :func:`~lstmkit.inspect.traces.heatmap_units` of ``chosen``), labelled
    by index and, for the ``chosen`` ones, why they were picked; each colour bar says what its colours
    mean."""
    units = check_units(units, trace.units) if units is not None else heatmap_units(trace, chosen)
    reasons = {choice.unit: choice for choice in chosen}
    cut = strips(trace.steps)
    strip_px = ROW_PX * min(len(units), LABELLED_ROWS)
    # per strip: its rows and the characters under them; per panel: its title
    height = 60 + len(trace.names) * (30 + len(cut) * (strip_px + 30))
    # one grid for every strip of every panel, so that the columns line up from panel to panel
    figure, grid = plt.subplots(
        len(trace.names) * len(cut), 1, figsize=(FIGURE_WIDTH / DPI, height / DPI), squeeze=False
    )
    for index, name in enumerate(trace.names):
        axes = grid[index * len(cut) : (index + 1) * len(cut), 0]
        values = trace.values[name][:, units].numpy().T
        cmap, bound, ticks, tick_labels, meaning = _colour_scale(name, values)
        for axis, strip in zip(axes, cut, strict=True):
            image = axis.imshow(
                values[:, strip.start : strip.stop],
                extent=(strip.start - 0.5, strip.stop - 0.5, len(units) - 0.5, -0.5),
                aspect="auto",
                cmap=cmap,
                vmin=0.0 if name in GATE_RANGE else -bound,
                vmax=bound,
                interpolation="nearest",
            )
            _unit_ticks(axis, units, reasons)
            _step_ticks(axis, trace.labels, strip, len(cut[0]))
        bar = figure.colorbar(image, ax=list(axes), pad=0.01, fraction=0.03, aspect=12 * len(cut))
        bar.set_ticks(ticks, labels=tick_labels)
        bar.set_label(meaning)
        axes[0].set_title(f"{DESCRIPTIONS.get(name, name)} ({trace.cell}, layer {trace.layer})", loc="left")
    grid[-1, 0].set_xlabel(
        "input character (one per step)" if _shows_characters(trace.labels, len(cut[0])) else "time step"
    )
    figure.suptitle(
        title or f"gates and states over time, {len(units)} of {trace.units} units (rows; why picked, in brackets)"
    )
    return save_figure(figure, path)


@matplotlib.rc_context(STYLE)
def plot_unit_states(
    trace: GateTrace,
    choices: Sequence[UnitChoice],
    path: str | Path,
    name: str | None = None,
    features: Mapping[str, np.ndarray] | None = None,
    title: str | None = None,
) -> Path:
    """The chosen units' memory state (``name``, by default ``c``, else ``h``) over time, one line
    each, wrapped into the same strips as :func:`plot_gates`; steps where a chosen unit's binary
    feature (inside quotes, brackets) holds are shaded."""
    if not choices:
        raise ValueError("no units chosen: expected at least one UnitChoice")
    check_units([choice.unit for choice in choices], trace.units)
    name = name or trace.memory
    steps, cut = trace.steps, strips(trace.steps)
    shaded = {
        feature_name: feature
        for feature_name, feature in (features or {}).items()
        if any(choice.reason == feature_name for choice in choices) and set(np.unique(feature)) <= {0.0, 1.0}
    }
    legend_rows = -(-(len(choices) + len(shaded)) // 3)
    height = 70 + 22 * legend_rows + len(cut) * 250
    figure, axes = plt.subplots(len(cut), 1, figsize=(FIGURE_WIDTH / DPI, height / DPI), sharey=True, squeeze=False)
    for axis, strip in zip(axes[:, 0], cut, strict=True):
        # every strip draws the whole lines and shows its own steps, so a line runs on across strips
        for index, choice in enumerate(choices):
            axis.plot(trace.unit(choice.unit, name).numpy(), label=choice.describe(), color=f"C{index % 10}", lw=1.6)
        for feature_name, feature in shaded.items():
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
        _step_ticks(axis, trace.labels, strip, len(cut[0]))
        axis.grid(alpha=0.25, axis="y")
    axes[-1, 0].set_xlabel(
        "input character (one per step)" if _shows_characters(trace.labels, len(cut[0])) else "time step"
    )
    figure.supylabel(f"{DESCRIPTIONS.get(name, name)} (value)", fontsize=MEDIUM)
    axes[0, 0].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, frameon=False)
    figure.suptitle(title or f"chosen units of {trace.cell} layer {trace.layer} over time")
    return save_figure(figure, path)


@matplotlib.rc_context(STYLE)
def plot_gradient_flow(flows: Sequence[GradientFlow], path: str | Path, title: str | None = None) -> Path:
    """``||dL_T/dh_t||`` against ``t`` on a log axis, one line per kind, one panel per stage
    (initial, trained), the same y range in both; dotted: ``||dL_T/dc_t||`` of cells with a cell
    state. Zero norms (underflow) are left out of the log axis."""
    if not flows:
        raise ValueError("no gradient flows to plot")
    stages = list(dict.fromkeys(flow.stage for flow in flows))
    figure, axes = plt.subplots(1, len(stages), figsize=(FIGURE_WIDTH / DPI, 460 / DPI), sharey=True, squeeze=False)
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
        axis.set_title(stage)
        axis.grid(alpha=0.3, which="major")
        axis.legend(loc="lower right")
    axes[0, 0].set_ylabel("‖∂L_T / ∂state_t‖ (mean over the batch)")
    figure.suptitle(title or "gradient flow: how much of the last step's error reaches step t")
    return save_figure(figure, path)


def _task_axis(axis: plt.Axes, some: LongLagRun) -> None:
    if some.metric == "mse":
        axis.set_yscale("log")
        axis.set_ylabel("held-out mean squared error (lower is better)")
    else:
        axis.set_ylim(-0.02, 1.02)
        axis.set_ylabel("held-out accuracy on recalled symbols")


@matplotlib.rc_context(STYLE)
def plot_long_lag(runs: Sequence[LongLagRun], path: str | Path, title: str | None = None) -> Path:
    """What each kind reached at the end of its budget against the lag, one panel per task, the
    chance level dashed."""
    if not runs:
        raise ValueError("no long-lag runs to plot")
    tasks = list(dict.fromkeys(run.task for run in runs))
    figure, axes = plt.subplots(1, len(tasks), figsize=(FIGURE_WIDTH / DPI, 460 / DPI), squeeze=False)
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
        axis.set_title(f"{task} problem" if task == "adding" else f"{task} task")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title or "long-lag problems after a fixed training budget")
    return save_figure(figure, path)


@matplotlib.rc_context(STYLE)
def plot_learning_curves(runs: Sequence[LongLagRun], path: str | Path, title: str | None = None) -> Path:
    """Held-out metric against the optimiser step for every run: one row per task, one column per
    lag, one line per kind, the chance level dashed."""
    if not runs:
        raise ValueError("no long-lag runs to plot")
    tasks = list(dict.fromkeys(run.task for run in runs))
    lags = sorted({run.lag for run in runs})
    figure, axes = plt.subplots(
        len(tasks), len(lags), figsize=(FIGURE_WIDTH / DPI, (320 * len(tasks) + 50) / DPI), squeeze=False
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
            # the row's first panel names the metric; "lower is better" would not fit its height
            axis.set_ylabel(axis.get_ylabel().replace(" (lower is better)", "") if column == 0 else "")
            axis.set_xlabel("optimiser step")
            axis.set_title(f"{task}, lag {lag}")
            axis.grid(alpha=0.3)
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    figure.suptitle(title or "learning curves (held-out, every evaluation)")
    return save_figure(figure, path)


@matplotlib.rc_context(STYLE)
def plot_cost(rows: Sequence[CostRow], path: str | Path, title: str | None = None) -> Path:
    """Parameters per kind, and the forward and training-step times per engine, as bars."""
    if not rows:
        raise ValueError("no cost rows to plot")
    kinds = [row.kind for row in rows]
    engines = list(rows[0].forward_ms)
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(FIGURE_WIDTH / DPI, 440 / DPI), gridspec_kw={"width_ratios": [1, 2]}
    )
    colors = [KIND_COLORS.get(kind, "C7") for kind in kinds]
    left.bar(kinds, [row.parameters for row in rows], color=colors)
    for x, row in enumerate(rows):
        left.annotate(f"{row.parameters:,}", (x, row.parameters), ha="center", va="bottom", fontsize=SMALL)
    left.set_ylabel("parameters (one layer)")
    left.set_xlabel("cell")
    left.tick_params(axis="x", labelrotation=30)
    left.set_title("parameters")
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
    right.set_title("time per call")
    right.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    right.grid(alpha=0.3, axis="y")
    figure.suptitle(title or "parameters and cost at the same size")
    return save_figure(figure, path)
