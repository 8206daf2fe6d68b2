"""int8 LSTM and GRU inference: the integer-product path (AVX512-VNNI or AVX2, ``lstmkit.engine.int8_loop``), the
same with ``lengths=`` (every sequence full: the cost of the valid-step mask), what the dequantizing path
computes (the layer with the int8 weights dequantized to float32, under bfloat16 autocast: torch's oneDNN
kernel for the LSTM, the native loop with bfloat16 products for the GRU; the path itself also
dequantizes at every call), torch's dynamically quantized layer and the float32 layer, forward under
``torch.no_grad``, round-robin in one process (each round starting at the next variant), medians.

Usage: ``python benchmarks/int8.py [--kind lstm|gru|both] [--rounds 15] [--threads 2] [--out FILE]``;
prints Markdown tables and writes them to ``benchmarks/results_int8_<kernel>.md`` (``avx512_vnni`` or
``avx2``: the instruction set of the integer kernel; not part of the test suite).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import lstmkit
from lstmkit.bench.suite import machine_info
from lstmkit.engine.int8_loop import kernel_isa

ISA = kernel_isa()  # "AVX512-VNNI", "AVX2" or None

# the suite's shapes, then one step and a short sequence of a single stream (streaming inference)
SHAPES = [
    (50, 32, 64, 128),
    (100, 64, 256, 256),
    (100, 16, 512, 512),
    (200, 1, 64, 128),
    (20, 128, 128, 128),
    (1, 1, 256, 512),
    (50, 1, 256, 512),
]


def variants(kind: str, steps: int, batch: int, inputs: int, hidden: int) -> tuple[torch.Tensor, dict[str, Callable]]:
    """The input and one forward call per variant, all from the same float32 weights."""
    torch.manual_seed(0)
    layer = (lstmkit.LSTM if kind == "lstm" else lstmkit.GRU)(inputs, hidden).eval()
    integer = lstmkit.quantize_int8(layer)
    x = torch.randn(steps, batch, inputs)
    full = torch.full((batch,), steps)
    dequantized = (lstmkit.LSTM if kind == "lstm" else lstmkit.GRU)(inputs, hidden).eval()
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0"):
            getattr(dequantized, name).copy_(getattr(integer, name))  # the int8 values times their scales
        for name in ("bias_ih_l0", "bias_hh_l0"):
            getattr(dequantized, name).copy_(getattr(layer, name))
    torch_class = nn.LSTM if kind == "lstm" else nn.GRU
    reference = torch_class(inputs, hidden).eval()
    reference.load_state_dict(layer.state_dict())
    # quantize_dynamic swaps the children of the module it is given, not the module itself
    dynamic = torch.ao.quantization.quantize_dynamic(nn.Sequential(reference), {torch_class}, dtype=torch.qint8)
    with torch.no_grad():  # the paths the timed calls take
        assert f"{kind}+int8" in lstmkit.engine.explain(integer, x).reason
        assert f"{kind}+int8" in lstmkit.engine.explain(integer, x, lengths=full).reason

    def dequantized_call(x: torch.Tensor) -> tuple:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return dequantized(x)

    return x, {
        "int8 integer": integer,
        "int8 integer, lengths": functools.partial(integer, lengths=full),
        "int8 dequantized": dequantized_call,
        "torch dynamic qint8": dynamic,
        "float32": layer,
    }


def measure(kind: str, shape: tuple[int, int, int, int], rounds: int) -> dict[str, float]:
    """Median seconds per forward call of each variant: every round calls each once (after a warm-up),
    so that the machine's load falls on all alike."""
    x, calls = variants(kind, *shape)
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        for call in calls.values():
            call(x)
        names = list(calls)
        for round_number in range(rounds):
            for name in names[round_number % len(names) :] + names[: round_number % len(names)]:
                start = time.perf_counter()
                calls[name](x)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def table(kind: str, rounds: int) -> list[str]:
    """The Markdown table of one layer kind, printed row by row as it is measured."""
    lines = [
        f"### {kind.upper()}",
        "",
        f"| T, B, I, H | int8 {ISA} | int8 {ISA}, lengths | int8 dequantized | torch dynamic qint8 | float32 "
        f"| dequantized / {ISA} | torch qint8 / {ISA} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for shape in SHAPES:
        ms = {name: 1e3 * seconds for name, seconds in measure(kind, shape, rounds).items()}
        integer = ms["int8 integer"]
        row = (
            f"| {', '.join(map(str, shape))} | {ms['int8 integer']:.2f} | {ms['int8 integer, lengths']:.2f} "
            f"| {ms['int8 dequantized']:.2f} | {ms['torch dynamic qint8']:.2f} | {ms['float32']:.2f} "
            f"| {ms['int8 dequantized'] / integer:.2f} | {ms['torch dynamic qint8'] / integer:.2f} |"
        )
        print(row, flush=True)
        lines.append(row)
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("lstm", "gru", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if ISA is None:
        raise SystemExit("this CPU has no int8 kernel (AVX512-VNNI or AVX2), or the native engine does not build")
    out = args.out or Path(__file__).resolve().parent / f"results_int8_{ISA.lower().replace('-', '_')}.md"
    torch.set_num_threads(args.threads)
    machine = machine_info(args.threads)
    header = [
        "# int8 inference on integer products",
        "",
        f"{machine['date']}; {machine['cpu']} ({machine['cpu_count']} CPUs), {args.threads} threads; "
        f"{machine['reduced_precision']}; torch {machine['torch']}; {args.rounds} round-robin rounds, median ms "
        f"per forward under `torch.no_grad` (`python benchmarks/int8.py`), integer kernel: {ISA}; load average "
        f"{'/'.join(f'{value:.1f}' for value in machine['load_average_start'])} at the start.",
        "",
    ]
    lines = list(header)
    for kind in ("lstm", "gru") if args.kind == "both" else (args.kind,):
        lines += table(kind, args.rounds)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
