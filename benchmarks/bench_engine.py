"""Native LSTM/GRU engine vs torch.nn.LSTM/GRU vs the reference autograd loop, float32, 2 threads.

Timings on a shared machine are noisy, so every implementation is timed round-robin in the same
run: each round times every implementation once (a fixed number of calls each), and the figure
reported per implementation is the median over rounds of its time divided by the torch.nn
module's time in that same round. A "GEMM floor" row times only the matrix multiplies an LSTM cannot avoid (input
projection, one recurrent GEMM per step; in training also the backward's per-step GEMM and the
three weight/input-gradient GEMMs), to show how much of the native time is pointwise and overhead.

    python benchmarks/bench_engine.py [--rounds 15] [--target-ms 40] [--output FILE]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import lstmkit
from lstmkit.engine.native import build, gru_sequence, is_available, lstm_sequence
from lstmkit.engine.reference import run_sequence

SHAPES = [(50, 32, 64, 128), (100, 64, 256, 256), (200, 1, 64, 128), (20, 128, 128, 128)]
HERE = Path(__file__).parent


def make_case(T: int, B: int, I: int, H: int) -> dict[str, Callable[[bool], None]]:
    """Per implementation a function ``run(training)`` doing one forward (and backward)."""
    torch.manual_seed(0)
    torch_lstm = nn.LSTM(I, H)
    cell = lstmkit.LSTMCell(I, H)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(torch_lstm, f"{name}_l0"))
    x = torch.randn(T, B, I)
    h0, c0 = torch.zeros(B, H), torch.zeros(B, H)

    def backward(output: torch.Tensor, h_n: torch.Tensor, c_n: torch.Tensor) -> None:
        (output.sum() + h_n.sum() + c_n.sum()).backward()

    def torch_run(training: bool) -> None:
        with torch.set_grad_enabled(training):
            output, (h_n, c_n) = torch_lstm(x, (h0[None], c0[None]))
        if training:
            backward(output, h_n, c_n)

    def native_run(training: bool) -> None:
        with torch.set_grad_enabled(training):
            output, (h_n, c_n) = lstm_sequence(x, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, h0, c0)
        if training:
            backward(output, h_n, c_n)

    def reference_run(training: bool) -> None:
        with torch.set_grad_enabled(training):
            result = run_sequence(cell, x, (h0, c0))
        if training:
            backward(result.output, *result.state)

    w_ih, w_hh = cell.weight_ih.detach(), cell.weight_hh.detach()
    bias = (cell.bias_ih + cell.bias_hh).detach()
    gates = torch.empty(T, B, 4 * H)
    h = torch.zeros(B, H)
    dgates = torch.randn(T, B, 4 * H)
    dh = torch.zeros(B, H)

    def gemm_floor(training: bool) -> None:
        torch.addmm(bias, x.view(T * B, I), w_ih.t(), out=gates.view(T * B, 4 * H))
        for t in range(T):
            torch.addmm(gates[t], h, w_hh.t(), out=gates[t])
        if training:
            for t in range(T - 1, -1, -1):
                torch.addmm(dh, dgates[t], w_hh, out=dh)
            flat = dgates.view(T * B, 4 * H)
            torch.mm(flat.t(), x.view(T * B, I))
            torch.mm(flat.t(), x.new_empty(T * B, H))
            torch.mm(flat, w_ih)

    return {"nn.LSTM": torch_run, "native": native_run, "reference": reference_run, "GEMM floor": gemm_floor}


def make_gru_case(T: int, B: int, I: int, H: int) -> dict[str, Callable[[bool], None]]:
    """nn.GRU vs native GRU vs the reference loop over lstmkit.GRUCell (no GEMM floor row)."""
    torch.manual_seed(0)
    torch_gru = nn.GRU(I, H)
    cell = lstmkit.GRUCell(I, H)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(torch_gru, f"{name}_l0"))
    x = torch.randn(T, B, I)
    h0 = torch.zeros(B, H)

    def torch_run(training: bool) -> None:
        with torch.set_grad_enabled(training):
            output, h_n = torch_gru(x, h0[None])
        if training:
            (output.sum() + h_n.sum()).backward()

    def native_run(training: bool) -> None:
        with torch.set_grad_enabled(training):
            output, h_n = gru_sequence(x, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, h0)
        if training:
            (output.sum() + h_n.sum()).backward()

    def reference_run(training: bool) -> None:
        with torch.set_grad_enabled(training):
            result = run_sequence(cell, x, (h0,))
        if training:
            (result.output.sum() + result.state[0].sum()).backward()

    return {"nn.GRU": torch_run, "native": native_run, "reference": reference_run}


def calibrate(run: Callable[[bool], None], training: bool, target_ms: float) -> int:
    """Calls per timing so that one timing of ``run`` takes about ``target_ms``."""
    run(training)
    start = time.perf_counter()
    run(training)
    once = time.perf_counter() - start
    return max(1, round(target_ms / 1000 / max(once, 1e-6)))


def measure(case: dict[str, Callable[[bool], None]], training: bool, rounds: int, target_ms: float) -> dict:
    baseline_name = next(iter(case))  # the torch.nn module, first in every case
    calls = calibrate(case[baseline_name], training, target_ms)
    for run in case.values():  # warm up (and build the extension) outside the timed rounds
        for _ in range(2):
            run(training)
    per_call: dict[str, list[float]] = {name: [] for name in case}
    for _ in range(rounds):
        for name, run in case.items():
            start = time.perf_counter()
            for _ in range(calls):
                run(training)
            per_call[name].append((time.perf_counter() - start) / calls)
    baseline = per_call[baseline_name]
    return {
        name: {
            "ms": 1000 * statistics.median(times),
            "ratio": statistics.median(t / b for t, b in zip(times, baseline, strict=True)),
        }
        for name, times in per_call.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--target-ms", type=float, default=40.0, help="duration of one timing of nn.LSTM")
    parser.add_argument("--output", type=Path, default=HERE / "results_engine.md")
    args = parser.parse_args()

    torch.set_num_threads(2)
    if not is_available():
        raise SystemExit(f"native engine unavailable: {build.unavailable_reason()}")
    extension = build.load_extension()

    lines = [
        "# Native engine prototype: speed vs torch.nn.LSTM / torch.nn.GRU",
        "",
        f"{datetime.date.today()}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, float32, extension built for {extension.cpu_capability}. "
        f"Median over {args.rounds} round-robin rounds of (time / nn.LSTM time in the same round); "
        "the machine was shared, so expect ±10-20 % noise. `forward`: inference (no grad); "
        "`training`: forward + backward w.r.t. the parameters. `GEMM floor`: only the unavoidable matrix "
        "multiplies, in a Python loop (so at B=1 it mostly measures Python overhead, ~5 µs a call).",
        "",
        "| T, B, I, H | mode | nn.LSTM ms | native ms | native / nn.LSTM | reference / nn.LSTM "
        "| GEMM floor / nn.LSTM |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape in SHAPES:
        case = make_case(*shape)
        for training in (False, True):
            mode = "training" if training else "forward"
            result = measure(case, training, args.rounds, args.target_ms)
            row = (
                f"| {', '.join(map(str, shape))} | {mode} | {result['nn.LSTM']['ms']:.2f} | "
                f"{result['native']['ms']:.2f} | **{result['native']['ratio']:.2f}** | "
                f"{result['reference']['ratio']:.2f} | {result['GEMM floor']['ratio']:.2f} |"
            )
            print(row, flush=True)
            lines.append(row)
    lines += [
        "",
        "## GRU (reset_after, PyTorch's form): native vs torch.nn.GRU",
        "",
        "| T, B, I, H | mode | nn.GRU ms | native ms | native / nn.GRU | reference / nn.GRU |",
        "|---|---|---|---|---|---|",
    ]
    for shape in SHAPES:
        case = make_gru_case(*shape)
        for training in (False, True):
            mode = "training" if training else "forward"
            result = measure(case, training, args.rounds, args.target_ms)
            row = (
                f"| {', '.join(map(str, shape))} | {mode} | {result['nn.GRU']['ms']:.2f} | "
                f"{result['native']['ms']:.2f} | **{result['native']['ratio']:.2f}** | "
                f"{result['reference']['ratio']:.2f} |"
            )
            print(row, flush=True)
            lines.append(row)
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
