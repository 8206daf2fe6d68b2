"""``lstmkit inspect report``: one self-contained HTML page (every image embedded as base64) with
the gate traces of a character model, the gradient flow of RNN, GRU and LSTM, the long-lag
experiments and the cost table, each figure with a short text that says what it shows; the PNGs,
``results.json`` (every number) and ``results.md`` (the tables) next to it.

Without a checkpoint the report trains what it needs: a character LSTM that learns Hamlet's
soliloquy by heart (the ``paragraph`` preset of ``lstmkit charlm``; fewer steps with ``quick``),
so it works from a fresh clone.
"""

from __future__ import annotations

import base64
import html
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..tasks import load_model, task_of
from ..training.checkpoint import atomic_write
from . import cost as cost_module
from . import longlag
from .gradients import GRADIENT_KINDS, compare_gradient_flow
from .plots import (
    FIGURE_WIDTH,
    plot_cost,
    plot_gates,
    plot_gradient_flow,
    plot_learning_curves,
    plot_long_lag,
    plot_unit_states,
)
from .traces import HEATMAP_UNITS, interesting_units, is_character_model, text_features, trace_model

DEFAULT_TEXT = (
    "To be, or not to be: that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
    "Or to take arms (against a sea of troubles)"
)
"""The text traced by default: the soliloquy's opening, which the report's own model knows by heart."""


@dataclass
class ReportSettings:
    """What the report does: ``quick`` picks the small budgets (a couple of minutes on two cores);
    ``checkpoint`` a trained character model to trace (else one is trained); ``text`` the input to
    trace (else :data:`DEFAULT_TEXT`); ``long_lag`` and ``cost`` override the budgets; ``jobs``
    long-lag runs train at once, each in its own process."""

    quick: bool = False
    checkpoint: Path | None = None
    text: str | None = None
    seed: int = 0
    long_lag: longlag.LongLagSettings | None = None
    cost: cost_module.CostSettings | None = None
    charlm_steps: int | None = None
    jobs: int = 1

    def __post_init__(self) -> None:
        if self.text is not None and not self.text:
            raise ValueError("the text is empty: expected at least one character")
        if self.long_lag is None:
            base = longlag.QUICK if self.quick else longlag.LongLagSettings()
            self.long_lag = longlag.LongLagSettings(**{**asdict(base), "seed": self.seed})
        if self.cost is None:
            self.cost = cost_module.QUICK if self.quick else cost_module.CostSettings()


@dataclass
class Section:
    """One part of the page: a title, figures (paths) with their captions, tables (Markdown), text."""

    title: str
    text: str
    figures: list[tuple[Path, str]] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)


def character_model(settings: ReportSettings, out_dir: Path, log: Callable[[str], None]) -> tuple[nn.Module, str]:
    """The model to trace and where it came from: ``settings.checkpoint`` (which must hold a
    character model), else a paragraph-preset character LSTM trained into ``out_dir/charlm``."""
    if settings.checkpoint is not None:
        task = task_of(settings.checkpoint)
        if task != "charlm":
            raise ValueError(
                f"{settings.checkpoint} holds a {task} model; the report traces a character model: "
                "pass a charlm checkpoint (lstmkit charlm train ...) or none to train one"
            )
        model = load_model(settings.checkpoint)
        return model, f"the character model in {settings.checkpoint}"
    from ..tasks.charlm.task import configure, train

    steps = settings.charlm_steps or (150 if settings.quick else 400)
    overrides = ["hidden_size=128"] if settings.quick else []
    data, fields, config = configure("paragraph", overrides, max_steps=steps, seed=settings.seed, progress=False)
    log(f"training a character {fields['cell']} ({fields['hidden_size']} units) on Hamlet's soliloquy, {steps} steps")
    model, result, figures = train(data, fields, config, out_dir / "charlm")
    source = (
        f"a character {fields['cell'].upper()} with {fields['hidden_size']} units trained for {result.steps} "
        f"steps on Hamlet's soliloquy ({figures['val_bpc']:.2f} bits per character on it; the unigram baseline "
        f"is {figures['unigram_bpc']:.2f}), saved in {out_dir / 'charlm'}"
    )
    return model, source


def gate_section(model: nn.Module, source: str, text: str, out_dir: Path) -> tuple[Section, dict]:
    if not is_character_model(model):
        raise ValueError(f"the report traces a character model, got {type(model).__name__}")
    trace = trace_model(model, text)["l0"]
    chosen = interesting_units(trace, 6)
    gates = plot_gates(
        trace,
        out_dir / "gates.png",
        chosen=chosen,
        title=f"gates and states of {trace.cell} layer l0 while reading the text (rows: units, why picked in brackets)",
    )
    states = plot_unit_states(trace, chosen, out_dir / "cell_states.png", features=text_features(text))
    forget = trace.values["f"].mean().item() if "f" in trace.values else None
    picked = "; ".join(choice.describe() for choice in chosen)
    text_gates = (
        f"Every gate and state of {source}, reading {len(text)} characters (columns; the text wraps into strips "
        f"like lines, each character under its column), for {min(HEATMAP_UNITS, trace.units)} of its "
        f"{trace.units} units (rows: the units picked below first, labelled with why, then, under the white "
        "line, those whose memory varies most). Gates run from 0 (closed, dark) to 1 (open, yellow); "
        "the candidate and hidden state from -1 (blue) to 1 (red); the cell state on its own symmetric scale. "
        + (
            f"The forget gate is open {forget:.0%} on average: most units keep most of their memory from one "
            "character to the next, and vertical stripes show characters (spaces, line ends, punctuation) at "
            "which many units reset at once."
            if forget is not None
            else ""
        )
    )
    text_states = (
        f"The memory ({'cell state c' if trace.memory == 'c' else 'hidden state h'}) of six units picked "
        f"automatically: {picked}. A unit correlated with the position in the line counts characters and "
        "drops at each line end (the model has to know when to break the line); the highest-variance units "
        "are the ones that swing most over the text. Shaded: characters inside brackets or quotes, when a "
        "unit was picked for them."
    )
    section = Section("1. Gate traces: inside an LSTM reading text", "", [(gates, text_gates), (states, text_states)])
    return section, {"text": text, "units": [asdict(choice) for choice in chosen], "mean_forget_gate": forget}


def long_lag_and_gradient_sections(
    settings: longlag.LongLagSettings, out_dir: Path, log: Callable[[str], None], jobs: int = 1
) -> tuple[list[Section], dict]:
    """Train the long-lag grid, then measure the gradient flow of the adding problem's RNN, GRU and
    LSTM at ``settings.gradient_lag`` before and after that training."""
    gradient_lag = settings.gradient_lag if settings.gradient_lag in settings.lags else max(settings.lags)
    gradient_kinds = [kind for kind in GRADIENT_KINDS if kind in settings.kinds]
    track = "adding" in settings.tasks and gradient_kinds

    def keep(run: longlag.LongLagRun) -> bool:
        return bool(track) and run.task == "adding" and run.lag == gradient_lag and run.kind in gradient_kinds

    def progress(run: longlag.LongLagRun) -> None:
        log(f"  {run.task:6} lag {run.lag:4} {run.kind:9} {run.metric} {run.final:.4f} ({run.seconds:.0f} s)")

    budgets = ", ".join(f"{task} {settings.steps_for(task)} steps" for task in settings.tasks)
    log(f"long-lag runs: {len(settings.grid())} ({budgets}), {jobs} at a time")
    runs, models = longlag.run_long_lag(settings, keep=keep, progress=progress, jobs=jobs)
    table = longlag.long_lag_table(runs)
    final = plot_long_lag(runs, out_dir / "long_lag.png")
    curves = plot_learning_curves(runs, out_dir / "long_lag_curves.png")
    recipes = longlag.recipe_table(settings)
    adding_chance, copy_chance = 1 / 6, longlag.CopyMemory(10, length=settings.copy_length).chance
    text_final = (
        "What each cell reaches within its task's budget, against the lag. Every cell of a task gets the same "
        f"number of Adam steps of {settings.batch_size} fresh sequences, {settings.hidden_size} units, the same data "
        "and seed; each starts from the initialisation for long memory the literature gives it (forget gates "
        "chrono-initialised, recurrent blocks orthogonal) at a learning rate tuned for it (the second table). "
        "Plotted: "
        f"the adding problem's mean squared error (log axis, chance {adding_chance:.3f}: always answering 1) and the "
        f"copy task's accuracy on the {settings.copy_length} recalled symbols (chance {copy_chance:.3f}: a guess). "
        "A cell that stays on the dashed line has learnt nothing that spans the lag. Learnt within this budget "
        "(a mean squared error below a tenth of chance; an accuracy more than halfway from chance to perfect): "
        f"{longlag.learnt_summary(runs)} Longer budgets move every line; the order of the cells is the point."
    )
    text_curves = (
        "The held-out metric during training, one panel per task and lag: how fast each cell leaves "
        "the chance level, if it does within the budget."
    )
    sections = [
        Section(
            "3. Long-lag problems: the adding problem and the copy task",
            "",
            [(final, text_final), (curves, text_curves)],
            [table, recipes],
        )
    ]
    results: dict = {
        "settings": asdict(settings),
        "runs": [run.as_dict() for run in runs],
        "table": table,
        "recipes": recipes,
    }
    if track:
        gradient_settings = longlag.LongLagSettings(**{**asdict(settings), "gradient_lag": gradient_lag})
        trained = {kind: models[("adding", gradient_lag, kind)] for kind in gradient_kinds}
        flows = compare_gradient_flow(gradient_settings, gradient_kinds, trained)
        figure = plot_gradient_flow(
            flows,
            out_dir / "gradient_flow.png",
            title=f"gradient flow on the adding problem, T = {gradient_lag}, {settings.hidden_size} units",
        )
        ratios = {f"{flow.kind}, {flow.stage}": flow.ratio() for flow in flows}
        described = "; ".join(f"{name}: {ratio:.1e}" for name, ratio in ratios.items())
        solved = [run.kind for run in runs if run.task == "adding" and run.lag == gradient_lag and longlag.learnt(run)]
        outcome = (
            f"Of these, {' and '.join(solved)} learnt the adding problem at this lag within the budget"
            if solved
            else "None of them learnt the adding problem at this lag within the budget"
        )
        text_flow = (
            f"The norm of the gradient of the loss made at the last step T = {gradient_lag} with respect to each "
            f"hidden state h_t (solid) and, for the LSTM, cell state c_t (dotted), averaged over 64 held-out "
            f"sequences of the adding problem, log axis, computed in float64. Left: the untrained models; right: "
            f"the same models after the long-lag training above. How much of the gradient at h_T reaches h_1, "
            f"|dL/dh_1| / |dL/dh_T|: {described}. Through the plain RNN the error shrinks by a roughly constant "
            "factor per step, exponentially in the distance; through the LSTM's cell state it is multiplied only "
            "by the forget gates, and through the GRU's state by its update gates, so it can survive the lag. "
            f"{outcome}: learning a lag needs the gradient from the end to reach its start."
        )
        sections.insert(
            0, Section("2. Gradient flow: why a plain RNN cannot learn long lags", "", [(figure, text_flow)])
        )
        results["gradient_flow"] = {"lag": gradient_lag, "flows": [flow.as_dict() for flow in flows]}
    return sections, results


def cost_section(settings: cost_module.CostSettings, out_dir: Path, log: Callable[[str], None]) -> tuple[Section, dict]:
    log(f"timing {len(settings.kinds)} cells ({settings.repeats} rounds)")
    rows = cost_module.measure_cost(settings)
    table = cost_module.cost_table(rows)
    figure = plot_cost(rows, out_dir / "cost.png")
    by_kind = {row.kind: row for row in rows}
    claim = ""
    if "gru" in by_kind and "lstm" in by_kind:
        gru, lstm = by_kind["gru"], by_kind["lstm"]
        ratios = [f"{gru.train_ms[e] / lstm.train_ms[e]:.2f} times on the {e} engine" for e in settings.engines]
        claim = (
            f" The GRU has {gru.parameters / lstm.parameters:.2f} times the LSTM's parameters; its training step "
            f"takes {' and '.join(ratios)} the LSTM's time."
        )
    text = (
        f"Parameters of one layer and median times over {settings.repeats} round-robin rounds for a batch of "
        f"{settings.batch_size} sequences of {settings.steps} steps, {settings.input_size} inputs and "
        f"{settings.hidden_size} units, with {torch.get_num_threads()} intra-op thread(s): a forward pass without "
        "gradients, and a training step (forward, backward, Adam). 'auto' is the engine lstmkit picks by default "
        "(torch's fused kernels or lstmkit's compiled loops where they run that cell, else the reference loop); "
        "'reference' runs every cell through the same Python loop, so that the difference is the cell's "
        "arithmetic." + claim + " Times depend on the machine and on what else runs on it."
    )
    section = Section("4. Parameters and cost", "", [(figure, text)], [table])
    return section, {"settings": asdict(settings), "rows": [row.as_dict() for row in rows], "table": table}


def markdown_table_html(table: str) -> str:
    """A Markdown table (as this package writes them) as an HTML table.

    >>> markdown_table_html("| a | b |\\n|---|---|\\n| 1 | <2> |")
    '<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>&lt;2&gt;</td></tr></table>'
    """
    lines = [line.strip().strip("|").split("|") for line in table.strip().splitlines()]
    header, body = lines[0], [line for line in lines[2:]]
    cells = "".join(f"<th>{html.escape(c.strip())}</th>" for c in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><tr>{cells}</tr>{rows}</table>"


COLUMN_WIDTH = FIGURE_WIDTH + 20
"""Width of the page's column in CSS pixels: wide enough for every figure and its border, so that a window
of 1,350 pixels or more shows each figure at its own size (a narrower one shrinks them to fit)."""

STYLE = f"""body{{font-family:sans-serif;max-width:{COLUMN_WIDTH}px;margin:2em auto;padding:0 1em;color:#222;
line-height:1.45}}img{{max-width:100%;height:auto;box-sizing:border-box;border:1px solid #ddd}}
figure{{margin:1.5em 0}}figcaption{{font-size:0.95em;color:#333;margin-top:.4em}}p,figcaption{{max-width:70em}}
table{{border-collapse:collapse;margin:1em 0;font-size:0.9em}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
th{{background:#f3f3f3}}td:first-child,td:nth-child(2){{text-align:left}}code{{background:#f5f5f5;padding:0 3px}}"""


def render_html(title: str, introduction: str, sections: Sequence[Section], footer: str) -> str:
    """The page: every figure embedded as a base64 PNG data URI, so the file stands alone."""
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(introduction)}</p>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        for path, caption in section.figures:
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{html.escape(Path(path).name)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        parts.extend(markdown_table_html(table) for table in section.tables)
    parts.append(f"<hr><p><small>{html.escape(footer)}</small></p></body></html>")
    return "\n".join(parts)


def build_report(out_dir: str | Path, settings: ReportSettings, log: Callable[[str], None] = print) -> Path:
    """Run everything and write ``out_dir/report.html`` with the PNGs, ``results.json`` and
    ``results.md``; returns the HTML's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    torch.manual_seed(settings.seed)

    clock = time.perf_counter()
    model, source = character_model(settings, out_dir, log)
    gates, gate_results = gate_section(model, source, settings.text or DEFAULT_TEXT, out_dir)
    seconds["gate traces"] = time.perf_counter() - clock

    clock = time.perf_counter()
    assert settings.long_lag is not None and settings.cost is not None
    lag_sections, lag_results = long_lag_and_gradient_sections(settings.long_lag, out_dir, log, settings.jobs)
    seconds["long-lag and gradient flow"] = time.perf_counter() - clock

    clock = time.perf_counter()
    cost, cost_results = cost_section(settings.cost, out_dir, log)
    seconds["cost"] = time.perf_counter() - clock
    seconds["total"] = time.perf_counter() - started

    budget = "quick" if settings.quick else "default"
    introduction = (
        "What happens inside an LSTM, and why it learns long lags that a plain RNN cannot. Every figure below "
        f"was computed by `lstmkit inspect report{' --quick' if settings.quick else ''}` on this machine "
        f"({budget} budget, seed {settings.seed})."
    )
    footer = (
        f"lstmkit inspect report, {budget} budget, seed {settings.seed}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op thread(s), {platform.machine()}; took "
        + ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
    )
    sections = [gates, *lag_sections, cost]
    page = render_html("lstmkit: inside an LSTM", introduction, sections, footer)
    path = atomic_write(out_dir / "report.html", page.encode("utf-8"))
    results = {
        "budget": budget,
        "seed": settings.seed,
        "seconds": seconds,
        "gate_traces": gate_results,
        **{k: v for k, v in lag_results.items() if k == "gradient_flow"},
        "long_lag": {k: v for k, v in lag_results.items() if k != "gradient_flow"},
        "cost": cost_results,
    }
    atomic_write(out_dir / "results.json", json.dumps(results, indent=1, default=str).encode())
    markdown = [
        f"# lstmkit inspect report ({budget} budget)",
        "",
        "## Long-lag problems",
        "",
        lag_results["table"],
        "",
        lag_results["recipes"],
        "",
        "## Parameters and cost",
        "",
        cost_results["table"],
        "",
    ]
    if "gradient_flow" in lag_results:
        markdown += ["## Gradient flow: |dL_T/dh_1| / |dL_T/dh_T|", "", "| cell | stage | ratio |", "|---|---|---|"]
        markdown += [
            f"| {f['kind']} | {f['stage']} | {f['ratio_first_to_last']:.2e} |"
            for f in lag_results["gradient_flow"]["flows"]
        ]
    atomic_write(out_dir / "results.md", ("\n".join(markdown) + "\n").encode())
    log(f"report: {path} ({seconds['total']:.0f} s)")
    return path
