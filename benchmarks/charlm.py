"""Character model figures for docs/tasks.md, on the real corpus:

1. training throughput of the Shakespeare model built on lstmkit's LSTM vs the same model built on
   ``torch.nn.LSTM`` (round-robin in one run, medians);
2. RNN vs GRU vs LSTM (and peephole, layer-norm) at an equal parameter count: held-out bits per
   character after the same number of steps, over several seeds (mean and spread).

Usage: ``python benchmarks/charlm.py [--steps N] [--seeds 3] [--threads 2]``; writes
``benchmarks/results_charlm.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lstmkit.cell_kinds import CELL_KINDS
from lstmkit.tasks.charlm.model import CharLM, CharLMConfig, cross_entropy_sum
from lstmkit.tasks.charlm.task import PRESETS, configure, train

HERE = Path(__file__).parent
STEPS = 1000  # 3 seeds of the 5 cells (15 runs) in about 45 minutes on one busy core
# The pilots' changes to the full preset (PILOTS): windows of 100 characters (batches of 32, the same characters
# per step), and lr 0.04 for the LSTM and the peephole LSTM (the others keep 0.008).
SETTINGS = ["all:seq_len=100", "all:batch_size=32", "lstm:lr=0.04", "peephole:lr=0.04"]
PILOTS = """\
How these settings were chosen: single pilot runs (seed 0, 1 thread) of the full preset ended at 300 or 600
steps, validation bits per character (lower is better):

| run | 300 steps | 600 steps |
|---|---|---|
| rnn, preset (64 x 50 characters, lr 0.008) | 2.539 | 2.414 |
| rnn, lr 0.02 | 2.594 | |
| rnn, 32 x 100 characters | | 2.439 |
| gru, preset | 2.505 | |
| gru, lr 0.02 | 2.545 | |
| lstm, preset | 2.639 | 2.482 |
| lstm, lr 0.02 | 2.548 | |
| lstm, lr 0.04 | 2.524 | 2.444 |
| lstm, forget_bias=1 | 2.688 | |
| lstm, lr 0.02, forget_bias=1 | 2.577 | |
| lstm, lr 0.04, 32 x 100 characters | | 2.435 |

Part of why the LSTM lost to the plain RNN is its learning rate: the preset's 0.008 (tuned for the LSTM 512)
is too small for the LSTM 256, which gained 0.09-0.11 bits per character at 0.02-0.04 after 300 steps (0.04
after 600), while the RNN and the GRU lost 0.04-0.06 at 0.02; hence lr 0.04 for the LSTM and the peephole LSTM
only (the layer-norm LSTM was not screened and keeps 0.008). Windows of 100 characters rather than 50 (the
same characters per step) cost the RNN 0.025 and bought the LSTM 0.009, as if the LSTM used the longer context
and the RNN could not. A forget gate starting at bias 1 (`forget_bias=1`, lstmkit.init) cost the LSTM
0.03-0.05 at 300 steps and is not used.
"""


class TorchCharLM(nn.Module):
    """The same model with ``torch.nn.LSTM`` as its recurrent layer."""

    def __init__(self, reference: CharLM) -> None:
        super().__init__()
        config = reference.config
        self.embedding, self.head = reference.embedding, reference.head
        self.rnn = nn.LSTM(config.embedding_size, config.hidden_size, config.num_layers, batch_first=True)
        self.rnn.load_state_dict(reference.rnn.state_dict())

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, object]:
        output, state = self.rnn(self.embedding(ids))
        return self.head(output), state


def throughput(hidden_size: int, batch_size: int, seq_len: int, repeats: int) -> dict[str, float]:
    """Training characters per second of both models, measured alternately."""
    characters = "".join(chr(32 + i) for i in range(80))
    ours = CharLM(CharLMConfig(characters, hidden_size=hidden_size))
    models = {"lstmkit": ours, "torch.nn.LSTM": TorchCharLM(ours)}
    optimizers = {name: torch.optim.Adam(model.parameters()) for name, model in models.items()}
    batch = torch.randint(1, 81, (batch_size, seq_len + 1))
    times: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(repeats + 2):
        for name, model in models.items():
            start = time.perf_counter()
            loss, count = cross_entropy_sum(model, batch)
            optimizers[name].zero_grad()
            (loss / count).backward()
            optimizers[name].step()
            if repeat >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: batch_size * seq_len / statistics.median(values) for name, values in times.items()}


def parameters(kind: str, hidden_size: int, embedding_size: int = 64, vocab: int = 80) -> int:
    model = CharLM(CharLMConfig("".join(chr(32 + i) for i in range(vocab - 1)), cell=kind, hidden_size=hidden_size,
                                embedding_size=embedding_size))  # fmt: skip
    return sum(p.numel() for p in model.parameters())


def hidden_for_budget(kind: str, budget: int) -> int:
    """The hidden size whose model has the parameter count closest to ``budget``."""
    low, high = 1, 4096
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if parameters(kind, middle) <= budget else (low, middle)
    return min((low, high), key=lambda h: abs(parameters(kind, h) - budget))


# Why the LSTM still loses with the default settings (written into the results when it does).
WHY_NOT = """\
Why the LSTM still does not beat the plain RNN here, plainly: the plain LSTM 256, started from torch.nn's
initialisation, learns less per step on this task than the RNN with the same parameters, which has twice
the hidden units (523 against 256), and nothing screened within this budget closed the gap. Its gates
are not the problem: the same gates with normalised pre-activations, the layer-norm LSTM, are the best
cell at the preset's lr, 0.10 below the RNN, and the GRU beats the RNN in every seed (the peephole
LSTM's range overlaps the RNN's). lr 0.04 bought the plain LSTM 0.04-0.11 bits per character in the
pilots, windows of 100 characters 0.01, forget_bias=1 nothing (it cost 0.03-0.05). A longer budget
did not close it either: at 2,000 steps (1.5 epochs; seed 0, the same settings, one run each) the LSTM
was at 2.368 and the RNN at 2.332, a gap of 0.036 against 0.020 for seed 0 at 1,000 steps. Not screened
for lack of time: orthogonal or chrono initialisation of the LSTM, and training to convergence, where
published equal-parameter comparisons find the LSTM ahead.
"""


def cell_settings(given: list[str]) -> dict[str, list[str]]:
    """``KIND:key=value`` items (``--set``; KIND ``all``: every kind) as each cell kind's ``key=value``
    overrides of the preset.

    >>> cell_settings(["all:seq_len=100", "lstm:lr=0.02", "gru:forget_bias=1"])["lstm"]
    ['seq_len=100', 'lr=0.02']
    """
    settings: dict[str, list[str]] = {kind: [] for kind in CELL_KINDS}
    for item in given:
        kind, colon, override = item.partition(":")
        if not colon or kind not in (*CELL_KINDS, "all") or "=" not in override:
            raise ValueError(f"--set {item!r}: expected KIND:key=value with KIND all or one of {list(CELL_KINDS)}")
        for each in CELL_KINDS if kind == "all" else (kind,):
            settings[each].append(override)
    return settings


def cell_comparison(steps: int, lstm_hidden: int, seeds: int, cells: list[str],
                    settings: dict[str, list[str]]) -> list[dict[str, Any]]:  # fmt: skip
    """Every cell kind at the LSTM's parameter count, trained ``seeds`` times (seeds 0, 1, ...) on the
    ``full`` preset ended at ``steps`` (with the kind's ``settings``): held-out bits per character
    per seed, their mean and spread."""
    budget = parameters("lstm", lstm_hidden)
    rows = []
    for kind in cells:
        hidden = hidden_for_budget(kind, budget)
        runs = []
        for seed in range(seeds):
            overrides = [f"cell={kind}", f"hidden_size={hidden}", f"seed={seed}", "eval_every=1000000", "epochs=1000"]
            data, model_fields, config = configure("full", overrides + settings[kind], max_steps=steps,
                                                   progress=False)  # fmt: skip
            config.max_seconds = None  # the steps, not the clock, end every run
            start = time.perf_counter()
            _, result, figures = train(data, model_fields, config, None)
            runs.append({"seed": seed, "steps": result.steps, "val_bpc": figures["val_bpc"],
                         "seconds": time.perf_counter() - start})  # fmt: skip
            print(kind, runs[-1], flush=True)
        values = [run["val_bpc"] for run in runs]
        rows.append({"cell": kind, "hidden_size": hidden, "parameters": parameters(kind, hidden),
                     "settings": settings[kind], "steps": runs[0]["steps"], "batch_size": config.batch_size,
                     "seq_len": data.seq_len, "lr": config.lr, "forget_bias": model_fields["forget_bias"],
                     "val_bpc_mean": statistics.fmean(values), "val_bpc_min": min(values), "val_bpc_max": max(values),
                     "val_bpc_std": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "seconds_mean": statistics.fmean(run["seconds"] for run in runs),
                     "unigram_bpc": figures["unigram_bpc"], "runs": runs})  # fmt: skip
    return rows


def verdict(cells: list[dict[str, Any]], better: str, than: str = "rnn") -> str | None:
    """One sentence: does cell ``better`` beat ``than`` on mean, on every seed, and with no overlap?"""
    rows = {row["cell"]: row for row in cells}
    if better not in rows or than not in rows:
        return None
    a, b = rows[better], rows[than]
    gap = b["val_bpc_mean"] - a["val_bpc_mean"]
    wins = sum(x["val_bpc"] < y["val_bpc"] for x, y in zip(a["runs"], b["runs"], strict=True))
    separate = a["val_bpc_max"] < b["val_bpc_min"]
    if gap > 0 and wins == len(a["runs"]):
        how = "its worst seed better than the " + than + "'s best" if separate else "but the ranges overlap"
        return (f"The {better} beats the {than} by {gap:.3f} bits per character on average, seed for seed "
                f"({wins} of {len(a['runs'])}), {how}.")  # fmt: skip
    if gap > 0:
        return (f"The {better} is better than the {than} on average, by {gap:.3f} bits per character, but only in "
                f"{wins} of {len(a['runs'])} seeds: not a stable ranking at this budget.")  # fmt: skip
    return (f"The {better} does NOT beat the {than} at this budget: mean {a['val_bpc_mean']:.3f} vs "
            f"{b['val_bpc_mean']:.3f} bits per character, better in {wins} of {len(a['runs'])} seeds.")  # fmt: skip


def verdicts(cells: list[dict[str, Any]]) -> list[str]:
    """The verdict of every gated cell against the plain RNN (those both run)."""
    return [line for line in (verdict(cells, kind) for kind in ("lstm", "gru", "peephole", "layernorm")) if line]


def markdown(results: dict[str, Any]) -> str:
    """``results_charlm.md`` from the figures of ``results_charlm.json``."""
    machine, speed, cells = results["machine"], results["throughput"], results["cells"]
    lines = ["# Character model figures", "", f"`{results['command']}`, torch {machine['torch']}, "
             f"{machine['threads']} thread(s), {machine['date']}.", "",
             "## Training throughput (characters per second, median)", "",
             "| hidden x batch x sequence length | lstmkit | torch.nn.LSTM | lstmkit / torch |",
             "|---|---|---|---|"]  # fmt: skip
    for shape, rates in speed.items():
        ratio = rates["lstmkit"] / rates["torch.nn.LSTM"]
        lines.append(f"| {shape} | {rates['lstmkit']:,.0f} | {rates['torch.nn.LSTM']:,.0f} | {ratio:.2f} |")
    first, preset = cells[0], PRESETS["full"]
    lstm_hidden = results.get("lstm_hidden") or next(row["hidden_size"] for row in cells if row["cell"] == "lstm")
    budget = parameters("lstm", lstm_hidden)
    lines += ["", f"## Cells at an equal parameter count (the LSTM {lstm_hidden}'s {budget:,} parameters)", "",
              f"The `full` preset, ended at {first['steps']:,} steps: batches of {preset.train.batch_size} windows of "
              f"{preset.data.seq_len} characters, Adam at lr {preset.train.lr:g} with {preset.train.warmup_steps} "
              f"warmup steps and a cosine schedule that ends at the last step, gradient norm clipped at "
              f"{preset.train.clip_grad_norm:g}, torch.nn's initialisation; a cell's changes to it are in the "
              f"table. {len(first['runs'])} seeds per cell (0, 1, ...: the initialisation and the batch order); "
              f"validation bits per character on {preset.data.eval_chars:,} characters of the two validation "
              "plays: mean, spread (min-max and standard deviation) and each seed's.", "",
              "| cell | hidden size | parameters | changes to the preset | validation bits/char, mean | min-max | "
              "std | per seed | seconds per run |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in sorted(cells, key=lambda row: row["val_bpc_mean"]):
        per_seed = ", ".join(f"{run['val_bpc']:.3f}" for run in row["runs"])
        changes = ", ".join(row["settings"]) or "none"
        lines.append(f"| {row['cell']} | {row['hidden_size']} | {row['parameters']:,} | {changes} | "
                     f"{row['val_bpc_mean']:.3f} | {row['val_bpc_min']:.3f}-{row['val_bpc_max']:.3f} | "
                     f"{row['val_bpc_std']:.3f} | {per_seed} | {row['seconds_mean']:.0f} |")  # fmt: skip
    lines += ["", *verdicts(cells), "", f"Unigram baseline: {first['unigram_bpc']:.3f} bits per character."]
    defaults = cell_settings(SETTINGS)
    if all(row["settings"] == defaults[row["cell"]] for row in cells):
        lines += ["", PILOTS.rstrip()]
        lines += ["", WHY_NOT.rstrip()] if any(line.startswith("The lstm does NOT") for line in verdicts(cells)) else []
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS, help=f"training steps per run (default {STEPS})")
    parser.add_argument("--seeds", type=int, default=3, help="runs per cell kind, seeds 0, 1, ... (default 3)")
    parser.add_argument("--set", action="append", dest="settings", metavar="KIND:key=value",
                        help=f"a cell kind's change to the full preset, e.g. gru:forget_bias=1 (repeatable; default: "
                             f"{' '.join(SETTINGS)})")  # fmt: skip
    parser.add_argument("--cells", nargs="+", default=list(CELL_KINDS), choices=list(CELL_KINDS))
    parser.add_argument("--lstm-hidden", type=int, default=256, help="the LSTM's hidden size; sets the budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--markdown-only", action="store_true",
                        help="only rewrite results_charlm.md from results_charlm.json")  # fmt: skip
    arguments = parser.parse_args()
    if arguments.markdown_only:
        results = json.loads((HERE / "results_charlm.json").read_text())
        (HERE / "results_charlm.md").write_text(markdown(results))
        return
    if arguments.seeds < 1 or arguments.steps < 1:
        parser.error("--seeds and --steps must be positive")
    try:
        settings = cell_settings(SETTINGS if arguments.settings is None else arguments.settings)
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(arguments.threads)
    speed = {f"{h}x{b}x{t}": throughput(h, b, t, arguments.repeats) for h, b, t in ((512, 64, 100), (256, 32, 100))}
    for shape, rates in speed.items():
        print(shape, {k: f"{v:,.0f} chars/s" for k, v in rates.items()}, flush=True)
    cells = cell_comparison(arguments.steps, arguments.lstm_hidden, arguments.seeds, arguments.cells, settings)
    results = {"machine": {"torch": torch.__version__, "threads": arguments.threads, "cpu": platform.processor(),
                           "date": time.strftime("%Y-%m-%d")}, "command": " ".join(["python benchmarks/charlm.py",
               *sys.argv[1:]]), "lstm_hidden": arguments.lstm_hidden, "throughput": speed, "cells": cells,
               "verdicts": verdicts(cells)}  # fmt: skip
    (HERE / "results_charlm.json").write_text(json.dumps(results, indent=2) + "\n")
    (HERE / "results_charlm.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
