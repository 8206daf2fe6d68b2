"""The benchmark suite's reports: the targets, each per shape (value, limit, pass / miss), and the
result as ``results.json`` and ``results.md``."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

from . import timing
from .peers import Shape
from .suite import EXTRAS, LARGE_SHAPES, MODES, WARMUP_TEXT, shape_name


def _times(entry: dict, mode: str, key: str) -> list[float]:
    row = entry["modes"].get(mode, {}).get(key) or {}
    return row.get("times_ms") or []


def _ratio(entry: dict, mode: str, key: str) -> float | None:
    return (entry["modes"].get(mode, {}).get(key) or {}).get("ratio")


def _relative(entry: dict, mode: str, key: str, other: str) -> float | None:
    """The median paired time ratio of row ``key`` to row ``other`` (a speed-up when ``key`` is the
    slower one)."""
    ratios = timing.paired_ratios(_times(entry, mode, key), _times(entry, mode, other))
    return statistics.median(ratios) if ratios else None


def targets(result: dict) -> list[dict]:
    """The issue's targets, each per shape: value, limit, and pass / miss (or n/a)."""
    labels = {key: info["label"] for key, info in result["implementations"].items()}
    rows = []

    def add(name: str, limit_of: Callable[[Shape], float | None], value_of, kind: str = "<=") -> None:
        cells = []
        for entry in result["shapes"]:
            shape = tuple(entry["shape"])
            limit, value = limit_of(shape), value_of(entry)
            if value is None or limit is None:
                status = "n/a"
            else:
                status = "pass" if (value <= limit if kind == "<=" else value >= limit) else "miss"
            cells.append({"shape": list(shape), "value": value, "limit": limit, "status": status})
        rows.append({"target": name, "kind": kind, "cells": cells})

    add(
        "lstmkit.LSTM training / nn.LSTM",
        lambda s: 0.9 if s == (100, 64, 256, 256) else 1.0,
        lambda e: _ratio(e, "training", "lstmkit_lstm"),
    )
    add("lstmkit.LSTM inference / nn.LSTM", lambda s: 1.05, lambda e: _ratio(e, "inference", "lstmkit_lstm"))
    add(
        "lstmkit.GRU training / nn.GRU",
        lambda s: 0.3 if s[1] == 1 else 0.8,
        lambda e: _ratio(e, "training", "lstmkit_gru"),
    )
    for key in EXTRAS:
        add(
            f"{labels.get(key, key)} training / nn.LSTM",
            lambda s: 1.2,
            lambda e, key=key: _ratio(e, "training", key),
        )
    add(
        "user-defined cell training / nn.LSTM (large shapes)",
        lambda s: 1.5 if s in LARGE_SHAPES else None,
        lambda e: _ratio(e, "training", "user_lstm"),
    )
    add(
        "naive loop / user-defined cell, training (speed-up)",
        lambda s: 2.0,
        lambda e: _relative(e, "training", "naive_lstm", "user_lstm"),
        kind=">=",
    )
    add(
        "Keras LSTM / lstmkit.LSTM, training (speed-up)",
        lambda s: 2.5,
        lambda e: _relative(e, "training", "keras_lstm", "lstmkit_lstm"),
        kind=">=",
    )
    add(
        "Keras GRU / lstmkit.GRU, training (speed-up)",
        lambda s: 2.5,
        lambda e: _relative(e, "training", "keras_gru", "lstmkit_gru"),
        kind=">=",
    )
    add(
        "lstmkit.LSTM bf16 training / nn.LSTM bf16 (autocast)",
        lambda s: 0.7,
        lambda e: _relative(e, "training", "lstmkit_lstm_bf16", "nn_lstm_bf16"),
    )
    add(
        "lstmkit.LSTM bf16 inference / nn.LSTM bf16 (autocast)",
        lambda s: 1.0,
        lambda e: _relative(e, "inference", "lstmkit_lstm_bf16", "nn_lstm_bf16"),
    )
    add(
        "lstmkit.GRU bf16 training / nn.GRU (autocast)",
        lambda s: 0.5,
        lambda e: _relative(e, "training", "lstmkit_gru_bf16", "nn_gru_bf16"),
    )
    add(
        "lstmkit int8 inference / torch quantized LSTM",
        lambda s: 0.8,
        lambda e: _relative(e, "inference", "lstmkit_lstm_int8", "nn_lstm_int8"),
    )
    add(
        "lstmkit.LSTM peak training memory / nn.LSTM",
        lambda s: 0.8,
        lambda e: (e["memory"].get("lstmkit_lstm") or {}).get("ratio"),
    )
    return rows


# ----------------------------------------------------------------------------------------------
# reports


def write_json(result: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    return path


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _bf16_peak(gemm: dict) -> str:
    peak = gemm.get("bf16_peak_gflops")
    return "not timed (no bf16 hardware: emulated products)" if peak is None else f"{peak:.1f} GFLOP/s"


def markdown(result: dict) -> str:
    """The readable report: machine, GEMM peak, targets, one table per shape."""
    machine, config, gemm = result["machine"], result["config"], result["gemm"]
    load = "/".join(f"{x:.1f}" for x in machine.get("load_average_start", []))
    load_end = "/".join(f"{x:.1f}" for x in machine.get("load_average_end", []))
    lines = [
        "# lstmkit benchmark suite",
        "",
        f"{machine['date']}; {machine['cpu']} ({machine['cpu_count']} CPUs), {config['threads']} threads; "
        f"torch {machine['torch']}, lstmkit {machine['lstmkit']}, Keras {machine.get('keras') or '–'}; "
        f"native engine {'available' if machine.get('native_engine') else 'unavailable'}"
        f" (built for {machine.get('native_isa', '?')}); reduced precision: "
        f"{machine.get('reduced_precision', '?')}; "
        f"load average {load} at the start, {load_end} at the end; the run took {result['duration_s']:.0f} s.",
        "",
        'Float32 except the rows marked bf16 (the forward under `torch.autocast("cpu", torch.bfloat16)`, '
        "float32 weights) and int8 (dynamic quantization, inference only); their targets compare them with "
        "torch.nn in the same precision. "
        f"Every implementation is timed round-robin in each of {config['repeats']} repetitions "
        f"(after warm-up; {WARMUP_TEXT[bool(config['steady_state'])]}); "
        "times are medians over repetitions, ratios the median of the per-repetition ratio to torch.nn.LSTM "
        "(torch.nn.GRU for GRU rows) of the same repetition. GFLOP/s counts only the matrix multiplies "
        "(`2·T·B·(I+H)·G·H` per forward, 3× for a training step); `% peak` is that against "
        f"the best rate of torch.mm 1024³ float32 in this run (timed at the start and within every "
        f"round-robin, under the same load as the rows): **{gemm['peak_gflops']:.1f} GFLOP/s** "
        f"(median {gemm['median_gflops']:.1f}); bf16 rows against torch.mm 1024³ bfloat16: "
        f"{_bf16_peak(gemm)}. Inference: `eval()`, `no_grad`. "
        "Training: one step, gradients reset, `output.sum().backward()`. "
        "Memory: peak resident memory of one training step above the model "
        "and its input, each in a fresh process (VmHWM after resetting it through /proc/self/clear_refs; "
        "`LSTMKIT_COMPILE=auto` becomes `1` there, so that a user cell runs compiled as in the timed rows). "
        "`graph (training)`: what computed a warmed-up training step's output, lstmkit's engine (its autograd "
        "operator or Function: lstmkit::sequence_forward native, including user cells compiled into the native loop, "
        "FusedSequenceFunction fused) or the top autograd node.",
        "",
    ]
    if result.get("skipped"):
        for key, reason in result["skipped"].items():
            lines.append(f"- skipped `{key}`: {reason}")
        lines.append("")
    if result.get("memory_skipped"):
        lines += [f"- memory not measured: {result['memory_skipped']}", ""]
    lines += _targets_markdown(result)
    for entry in result["shapes"]:
        lines += _shape_markdown(result, entry)
    notes = [f"- {info['label']}: {info['note']}" for info in result["implementations"].values() if info.get("note")]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


def _targets_markdown(result: dict) -> list[str]:
    shapes = [shape_name(entry["shape"]) for entry in result["shapes"]]
    lines = [
        "## Targets",
        "",
        "Figures to report, not assertions: **miss** marks a figure outside its target on this run.",
        "",
        "| target | limit | " + " | ".join(shapes) + " |",
        "|---|---|" + "---|" * len(shapes),
    ]
    for row in result["targets"]:
        limits = sorted({cell["limit"] for cell in row["cells"] if cell["limit"] is not None})
        limit_text = " / ".join(f"{row['kind']} {limit:g}" for limit in limits) or "–"
        cells = []
        for cell in row["cells"]:
            value = _number(cell["value"])
            if cell["status"] == "pass":
                value += " pass"
            elif cell["status"] == "miss":
                value = f"**{value} miss**"
            cells.append(value)
        lines.append(f"| {row['target']} | {limit_text} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _shape_markdown(result: dict, entry: dict) -> list[str]:
    T, B, I, H = entry["shape"]
    implementations = result["implementations"]
    lines = [
        f"## T={T}, B={B}, I={I}, H={H}",
        "",
        "| implementation | graph (training) | inference ms | × base | GFLOP/s | % peak "
        "| training ms | × base | GFLOP/s | % peak | memory MB | × base |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, info in implementations.items():
        cells = [f"**{info['label']}**" if key == info["baseline"] else info["label"], entry["graph"].get(key, "–")]
        for mode in MODES:
            row = entry["modes"].get(mode, {}).get(key) or {}
            if row.get("median_ms") is None:
                cells += ["failed" if row.get("error") else "–", "–", "–", "–"]
                continue
            fraction = row.get("peak_fraction")
            cells += [
                _number(row["median_ms"]),
                _number(row.get("ratio")),
                _number(row.get("gflops"), 1),
                _number(None if fraction is None else 100 * fraction, 0),
            ]
        figures = entry["memory"].get(key) or {}
        if figures.get("error"):
            cells += ["failed", "–"]
        else:
            cells += [_number(figures.get("peak_mb"), 1), _number(figures.get("ratio"))]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [
        f"- {implementations[key]['label']} ({mode}): {row['error']}"
        for mode in MODES
        for key, row in entry["modes"].get(mode, {}).items()
        if row.get("error")
    ]
    errors += [
        f"- {implementations[key]['label']} (memory): {figures['error']}"
        for key, figures in entry["memory"].items()
        if figures.get("error")
    ]
    return [*lines, "", *errors, *([""] if errors else [])]


def write_markdown(result: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(result))
    return path
