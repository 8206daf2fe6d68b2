"""int8 LSTM (or GRU) inference: the integer-product path (AVX512-VNNI, ``lstmkit.engine.int8_vnni``) against
today's dequantizing path of the same ``lstmkit.quantize_int8`` layer (its weights dequantized, then
what ``engine="auto"`` ran before: for the LSTM torch's oneDNN kernel under bfloat16 autocast, reached
with ``engine="torch"``; for the GRU the native loop with bfloat16 products, reached by passing
``lengths=`` of the full length, whose padding checks cost little), torch's dynamically quantized layer
and the float32 layer, forward under ``torch.no_grad``, round-robin in one process, medians.

Usage: ``python benchmarks/int8_vnni.py [--kind lstm|gru] [--rounds 15] [--threads 2]``; prints a Markdown table (not
part of the test suite; no file written).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import lstmkit

SHAPES = [(50, 32, 64, 128), (100, 64, 256, 256), (100, 16, 512, 512), (200, 1, 64, 128), (20, 128, 128, 128)]


def variants(kind: str, steps: int, batch: int, inputs: int, hidden: int) -> tuple[torch.Tensor, dict[str, Callable]]:
    """The input and one forward call per variant, all from the same float32 weights."""
    torch.manual_seed(0)
    layer = (lstmkit.LSTM if kind == "lstm" else lstmkit.GRU)(inputs, hidden).eval()
    vnni = lstmkit.quantize_int8(layer)
    x = torch.randn(steps, batch, inputs)
    dequantized = lstmkit.quantize_int8(layer)
    full = torch.full((batch,), steps)
    if kind == "lstm":
        dequantized.engine = "torch"  # the int8 loop runs under engine "auto" or "native" only
    else:
        dequantized = functools.partial(dequantized, lengths=full)  # the int8 loop takes no lengths=
    torch_class = nn.LSTM if kind == "lstm" else nn.GRU
    reference = torch_class(inputs, hidden).eval()
    reference.load_state_dict(layer.state_dict())
    # quantize_dynamic swaps the children of the module it is given, not the module itself
    dynamic = torch.ao.quantization.quantize_dynamic(nn.Sequential(reference), {torch_class}, dtype=torch.qint8)
    with torch.no_grad():  # the paths the timed calls take
        assert f"{kind}+int8" in lstmkit.engine.explain(vnni, x).reason
        explained = lstmkit.engine.explain(layer_of(dequantized), x, **({} if kind == "lstm" else {"lengths": full}))
        assert "int8 weights dequantized" in explained.reason
    return x, {"int8 VNNI": vnni, "int8 dequantized": dequantized, "torch dynamic qint8": dynamic, "float32": layer}


def layer_of(call: Callable) -> nn.Module:
    """The layer a variant calls."""
    return call.func if isinstance(call, functools.partial) else call


def measure(kind: str, shape: tuple[int, int, int, int], rounds: int) -> dict[str, float]:
    """Median seconds per forward call of each variant: every round calls each once (after a warm-up),
    so that the machine's load falls on all alike."""
    x, calls = variants(kind, *shape)
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        for call in calls.values():
            call(x)
        for _ in range(rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                call(x)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("lstm", "gru"), default="lstm")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.kind}, {args.threads} threads, {args.rounds} rounds, median ms per forward\n")
    print("| T, B, I, H | int8 VNNI | int8 dequantized | torch dynamic qint8 | float32 | dequantized / VNNI "
          "| torch qint8 / VNNI |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for shape in SHAPES:
        found = measure(args.kind, shape, args.rounds)
        ms = {name: 1e3 * seconds for name, seconds in found.items()}
        print(
            f"| {shape} | {ms['int8 VNNI']:.2f} | {ms['int8 dequantized']:.2f} | {ms['torch dynamic qint8']:.2f} "
            f"| {ms['float32']:.2f} | {ms['int8 dequantized'] / ms['int8 VNNI']:.2f} "
            f"| {ms['torch dynamic qint8'] / ms['int8 VNNI']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
