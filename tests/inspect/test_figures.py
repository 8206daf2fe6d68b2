"""lstmkit.inspect.plots and the report page: every figure legible where the page shows it (a column
of report.COLUMN_WIDTH pixels, a window of 1400): text of 10 pixels or more, nothing cut off or
overlapping, heatmap rows and columns wide enough for their labels, the picked units named; and the
page self-contained. Measured on the figures as drawn, laid out as they are saved."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.text import Text

import lstmkit
from lstmkit.inspect import cost, gradients, longlag, plots, report, traces
from lstmkit.tasks.charlm.model import CharLM, CharLMConfig

MIN_TEXT_PX = 10.0
"""The smallest text, in CSS pixels as the page shows it, that counts as legible."""


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Every figure the plots save, laid out as saving drew it (in the order drawn)."""
    figures: list[Figure] = []
    save = plots.save_figure

    def keep(figure: Figure, path: str | Path) -> Path:
        figures.append(figure)
        return save(figure, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    return figures


def display_scale(png: Path) -> float:
    """How much the page shrinks the PNG: the column less the image's 1-pixel border, over its width."""
    width = matplotlib.image.imread(png).shape[1]
    return min(1.0, (report.COLUMN_WIDTH - 2) / width)


def drawn_tick_labels(axis: Axis) -> list[Text]:
    """The tick labels matplotlib draws: one per located tick inside the view (it keeps older tick
    objects around, undrawn)."""
    low, high = sorted(axis.get_view_interval())
    labels = []
    for ticks, locations in (
        (axis.get_major_ticks, axis.get_majorticklocs()),
        (axis.get_minor_ticks, axis.get_minorticklocs()),
    ):
        for tick, location in zip(ticks(len(locations)), locations, strict=True):
            if low - 1e-9 <= location <= high + 1e-9:
                labels += [label for label in (tick.label1, tick.label2) if label.get_visible() and label.get_text()]
    return labels


def shown_texts(figure: Figure) -> list[Text]:
    """The texts drawn: visible and not empty, tick labels as :func:`drawn_tick_labels`."""
    axes_axis = [axis for axes in figure.axes for axis in (axes.xaxis, axes.yaxis)]
    every_tick_label = {
        id(label)
        for axis in axes_axis
        for tick in axis.majorTicks + axis.minorTicks
        for label in (tick.label1, tick.label2)
    }
    texts = [
        text
        for text in figure.findobj(Text)
        if id(text) not in every_tick_label and text.get_visible() and text.get_text().strip()
    ]
    return texts + [label for axis in axes_axis for label in drawn_tick_labels(axis)]


def assert_legible(figure: Figure, png: Path) -> None:
    """Every text at least MIN_TEXT_PX high as shown, inside the figure, and the tick labels of an
    axis clear of each other."""
    scale = display_scale(png)
    assert figure.dpi == plots.DPI and matplotlib.image.imread(png).shape[1] == round(figure.get_figwidth() * plots.DPI)
    whole = figure.bbox
    texts = shown_texts(figure)
    assert texts, "no text drawn"
    for text in texts:
        size = text.get_fontsize() * figure.dpi / 72 * scale
        assert size >= MIN_TEXT_PX, f"{text.get_text()!r} is {size:.1f} px high on the page in {png.name}"
        box = text.get_window_extent()
        assert (
            box.x0 >= whole.x0 - 1 and box.x1 <= whole.x1 + 1 and box.y0 >= whole.y0 - 1 and box.y1 <= whole.y1 + 1
        ), f"{text.get_text()!r} is cut off at the edge of {png.name}"
    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):
            boxes = sorted((t.get_window_extent() for t in drawn_tick_labels(axis)), key=lambda box: (box.x0, box.y0))
            for index, box in enumerate(boxes):
                for other in boxes[index + 1 :]:
                    assert not box.overlaps(other), f"tick labels overlap in {png.name}: {box} and {other}"


def char_trace(text: str, hidden_size: int = 16) -> traces.GateTrace:
    torch.manual_seed(0)
    model = CharLM(CharLMConfig("".join(sorted(set(text))), cell="lstm", hidden_size=hidden_size, embedding_size=4))
    return traces.trace_model(model, text)["l0"]


def heatmaps(figure: Figure) -> list[AxesImage]:
    return [image for image in figure.findobj(AxesImage) if image.axes is not None]


def test_strips_wrap_long_inputs_and_keep_short_ones_whole() -> None:
    assert [(s.start, s.stop) for s in plots.strips(40)] == [(0, 40)]
    for steps in (1, 87, 172, 400, 5000):
        cut = plots.strips(steps)
        assert [step for strip in cut for step in strip] == list(range(steps))
        assert len(cut) <= plots.MAX_STRIPS and len({len(strip) for strip in cut[:-1]}) <= 1
        assert len(cut) == 1 or len(cut[0]) * plots.CHARACTER_PX > plots.STRIP_PX / 2  # no needless strips


def test_gate_heatmap_of_the_report_text_is_legible(drawn: list[Figure], tmp_path: Path) -> None:
    """The report's own case: the soliloquy's 172 characters, the picked units first."""
    text = report.DEFAULT_TEXT
    trace = char_trace(text)
    chosen = traces.interesting_units(trace, 6)
    png = plots.plot_gates(trace, tmp_path / "gates.png", chosen=chosen)
    (figure,) = drawn
    assert_legible(figure, png)
    scale = display_scale(png)
    assert scale == 1.0, "the page shrinks the heatmap"
    images = heatmaps(figure)
    assert len(images) == len(trace.names) * len(plots.strips(len(text))) > len(trace.names)  # wrapped
    shown_steps = []
    for image in images:
        axes = image.axes
        box = axes.get_window_extent()
        rows = abs(np.diff(axes.get_ylim())[0])
        columns = abs(np.diff(axes.get_xlim())[0])
        assert rows == traces.HEATMAP_UNITS
        assert box.height / rows * scale >= 12, f"heatmap rows are {box.height / rows * scale:.1f} px"
        assert box.width / columns * scale >= plots.CHARACTER_PX - 1, f"columns are {box.width / columns:.1f} px"
        labels = [label.get_text() for label in axes.get_yticklabels()]
        assert labels[: len(chosen)] == [choice.tag() for choice in chosen]
        assert all(re.fullmatch(r"u\d+", label) for label in labels[len(chosen) :])
        if image in images[: len(plots.strips(len(text)))]:  # the first panel's strips, in order
            shown_steps += [label.get_text() for label in drawn_tick_labels(axes.xaxis)]
    assert "".join(shown_steps) == "".join(traces.display_character(c) for c in text)
    assert all(re.fullmatch(r"u\d+ \(.+\)", choice.tag()) for choice in chosen if choice.reason != "chosen")
    bars = [axes for axes in figure.axes if axes.get_label() == "<colorbar>"]
    assert len(bars) == len(trace.names)
    bar_labels = {axes.get_ylabel(): [t.get_text() for t in axes.get_yticklabels()] for axes in bars}
    assert bar_labels["sigmoid gate"] == ["0 closed", "0.5", "1 open"] and bar_labels["tanh range"] == ["-1", "0", "+1"]
    assert "cell state (unbounded)" in bar_labels


@pytest.mark.parametrize(
    ("make", "all_units", "label"),
    [
        (lambda: char_trace(("To be, or not to be: that is the question.\n" * 14)[:600]), False, "time step"),
        (lambda: traces.trace_model(lstmkit.GRU(2, 40), torch.randn(30, 2))["l0"], True, "time step"),
        (lambda: char_trace("abc (ab) 'c'\nab c", hidden_size=6), True, "input character (one per step)"),
    ],
    ids=["600 characters", "series, 40 units", "short text, 6 units"],
)
def test_gate_heatmaps_of_other_inputs_stay_legible(
    make: Callable[[], traces.GateTrace], all_units: bool, label: str, drawn: list[Figure], tmp_path: Path
) -> None:
    """A text too long for character labels gets step numbers; more units than can be labelled get
    thinner rows, every few labelled."""
    trace = make()
    png = plots.plot_gates(trace, tmp_path / "gates.png", units=list(range(trace.units)) if all_units else None)
    (figure,) = drawn
    assert_legible(figure, png)
    assert label in {axes.get_xlabel() for axes in figure.axes}
    for image in heatmaps(figure):
        rows = abs(np.diff(image.axes.get_ylim())[0])
        assert image.axes.get_window_extent().height / rows >= plots.ROW_PX * min(1, plots.LABELLED_ROWS / rows) - 2


def test_every_other_figure_is_legible(drawn: list[Figure], tmp_path: Path) -> None:
    text = 'To be, or not to be: "that" is (the question)\n' * 3
    trace = char_trace(text)
    chosen = traces.interesting_units(trace, 6)
    runs = [
        longlag.LongLagRun(task, lag, kind, metric, chance, [(step, start * 0.99**step) for step in range(0, 600, 50)])
        for task, metric, chance, start in (("adding", "mse", 1 / 6, 0.9), ("copy", "accuracy", 0.125, 0.1))
        for lag in (10, 50, 100, 200)
        for kind in ("rnn", "gru", "lstm", "peephole")
    ]
    flows = [
        gradients.GradientFlow(kind, stage, list(np.logspace(-40, 0, 100)), [1.0] * 100 if kind == "lstm" else None)
        for stage in ("at initialisation", "after 600 training steps")
        for kind in ("rnn", "gru", "lstm")
    ]
    rows = [
        cost.CostRow(kind, 99_328, {"auto": 8.9, "reference": 12.9}, {"auto": 27.9, "reference": 50.3})
        for kind in ("rnn", "gru", "lstm", "peephole", "layernorm")
    ]
    written = [
        plots.plot_unit_states(trace, chosen, tmp_path / "states.png", features=traces.text_features(text)),
        plots.plot_gradient_flow(flows, tmp_path / "gradient_flow.png"),
        plots.plot_long_lag(runs, tmp_path / "long_lag.png"),
        plots.plot_learning_curves(runs, tmp_path / "curves.png"),
        plots.plot_cost(rows, tmp_path / "cost.png"),
    ]
    assert len(drawn) == len(written)
    for figure, png in zip(drawn, written, strict=True):
        assert display_scale(png) == 1.0, f"the page shrinks {png.name}"
        assert_legible(figure, png)
    legend = [t.get_text() for t in drawn[0].findobj(Text) if t.get_text().startswith("unit ")]
    assert legend == [choice.describe() for choice in chosen]


def test_page_is_self_contained_and_shows_figures_at_their_size(tmp_path: Path) -> None:
    pngs = []
    for name, width in (("a.png", plots.FIGURE_WIDTH), ("b.png", 300)):
        pngs.append(tmp_path / name)
        matplotlib.image.imsave(pngs[-1], np.random.default_rng(0).random((20, width, 3)))
    section = report.Section("figures", "text <b>", [(png, "caption") for png in pngs], ["| a |\n|---|\n| 1 |"])
    page = report.render_html("title", "introduction", [section], "footer")
    sources = re.findall(r"""\b(?:src|href)\s*=\s*['"]?([^'" >]*)""", page, flags=re.IGNORECASE)
    assert len(sources) == len(pngs) and all(source.startswith("data:image/png;base64,") for source in sources)
    assert [base64.b64decode(source.split(",", 1)[1]) for source in sources] == [png.read_bytes() for png in pngs]
    assert not re.search(r"url\(|@import|<script|<link", page, flags=re.IGNORECASE)
    # the column holds the widest figure and its border; text lines stay short enough to read
    assert f"max-width:{report.COLUMN_WIDTH}px" in report.STYLE and report.COLUMN_WIDTH >= plots.FIGURE_WIDTH + 2
    assert "img{max-width:100%;height:auto;box-sizing:border-box;" in report.STYLE.replace("\n", "")
    assert report.COLUMN_WIDTH + 2 * 16 <= 1400, "a 1400-pixel window would shrink the figures"
