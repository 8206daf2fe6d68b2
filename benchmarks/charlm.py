"""Character model figures for the README, on the real corpus:

1. training throughput of the Shakespeare model built on lstmkit's LSTM vs the same model built on
   ``torch.nn.LSTM`` (round-robin in one run, medians);
2. RNN vs GRU vs LSTM (and peephole, layer-norm) at an equal parameter count: held-out bits per
   character after the same number of steps.

Usage: ``python benchmarks/charlm.py [--steps 1343] [--threads 2]``; writes
``benchmarks/results_charlm.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from lstmkit.tasks.charlm.model import CharLM, CharLMConfig, cross_entropy_sum
from lstmkit.tasks.charlm.task import configure, train
from lstmkit.tasks.common import CELL_KINDS

HERE = Path(__file__).parent


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


def cell_comparison(steps: int, lstm_hidden: int) -> list[dict[str, float | str | int]]:
    budget = parameters("lstm", lstm_hidden)
    rows = []
    for kind in CELL_KINDS:
        hidden = hidden_for_budget(kind, budget)
        overrides = [f"cell={kind}", f"hidden_size={hidden}", "batch_size=32", "eval_every=1000000", "epochs=1000"]
        data, model_fields, config = configure("full", overrides, max_steps=steps, progress=False)
        config.max_seconds = None
        start = time.perf_counter()
        _, result, figures = train(data, model_fields, config, None)
        rows.append({"cell": kind, "hidden_size": hidden, "parameters": parameters(kind, hidden), "steps": result.steps,
                     "val_bpc": figures["val_bpc"], "unigram_bpc": figures["unigram_bpc"],
                     "seconds": time.perf_counter() - start})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1343, help="training steps per cell kind (1343: one epoch)")
    parser.add_argument("--lstm-hidden", type=int, default=256, help="the LSTM's hidden size; sets the budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    speed = {f"{h}x{b}x{t}": throughput(h, b, t, arguments.repeats) for h, b, t in ((512, 64, 100), (256, 32, 100))}
    for shape, rates in speed.items():
        print(shape, {k: f"{v:,.0f} chars/s" for k, v in rates.items()}, flush=True)
    cells = cell_comparison(arguments.steps, arguments.lstm_hidden)
    results = {"machine": {"torch": torch.__version__, "threads": arguments.threads, "cpu": platform.processor(),
                           "date": time.strftime("%Y-%m-%d")}, "throughput": speed, "cells": cells}  # fmt: skip
    (HERE / "results_charlm.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Character model figures", "", f"`python benchmarks/charlm.py --steps {arguments.steps}`, "
             f"torch {torch.__version__}, {arguments.threads} threads, {results['machine']['date']}.", "",
             "## Training throughput (characters per second, median)", "",
             "| hidden x batch x sequence length | lstmkit | torch.nn.LSTM | lstmkit / torch |",
             "|---|---|---|---|"]  # fmt: skip
    for shape, rates in speed.items():
        ratio = rates["lstmkit"] / rates["torch.nn.LSTM"]
        lines.append(f"| {shape} | {rates['lstmkit']:,.0f} | {rates['torch.nn.LSTM']:,.0f} | {ratio:.2f} |")
    budget = parameters("lstm", arguments.lstm_hidden)
    lines += ["", f"## Cells at an equal parameter count (the LSTM {arguments.lstm_hidden}'s {budget:,} parameters, "
              f"{cells[0]['steps']} steps of 32 x 100 characters)", "",
              "| cell | hidden size | parameters | validation bits/char | seconds |",
              "|---|---|---|---|---|"]  # fmt: skip
    for row in cells:
        lines.append(f"| {row['cell']} | {row['hidden_size']} | {row['parameters']:,} | {row['val_bpc']:.3f} | "
                     f"{row['seconds']:.0f} |")  # fmt: skip
    lines.append(f"\nUnigram baseline: {cells[0]['unigram_bpc']:.3f} bits per character.")
    (HERE / "results_charlm.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
