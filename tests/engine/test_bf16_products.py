"""The bfloat16 product kernels of bf16 GEMMs (``csrc/bf16_gemm.h``, ``csrc/amx_gemm.h``), alone.

``bf16_product(a, w, c, accumulate)`` packs ``w`` as the native loop does and returns ``c + a w`` (or
``a w``) from the kernel that runs on this CPU: AMX tiles where the CPU has AMX-BF16, else AVX512-BF16's
pairs. The oracle is a float64 product of the operands rounded to bfloat16 by torch: both kernels
multiply bfloat16 values exactly and sum them in float32, so they agree with it to float32 rounding of
the sums. The shapes cross every edge of the kernels: rows around a tile (16) and the row blocks of
threads (64), k odd and around a tile's 32, n inside a vector (16), a slab (64) and past it, and the
weight in each layout the packing tells apart (rows contiguous, transposed, neither). On an AMX
CPU the AVX512-BF16 kernel is checked too, in a process with ``LSTMKIT_AMX_KERNEL=0``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from lstmkit.engine import native
from lstmkit.engine.native.build import load_extension

EXTENSION = load_extension() if native.is_available() else None
pytestmark = pytest.mark.skipif(
    EXTENSION is None or not EXTENSION.avx512_bf16, reason="needs the native engine on a CPU with AVX512-BF16"
)

ROWS = [1, 5, 16, 17, 40, 130]
INNER = [1, 7, 32, 33, 64, 100]
COLUMNS = [5, 16, 64, 100, 200]


def worst_errors() -> dict[str, float]:
    """The largest error of each kernel call over the shapes above, relative to float32 rounding of a
    sum of the absolute products (``|a| |w| eps``): at most about the number of terms summed."""
    generator = torch.Generator().manual_seed(0)
    worst: dict[str, float] = {}
    for rows in ROWS:
        for inner in INNER:
            for columns in COLUMNS:
                a = torch.randn(rows, inner, generator=generator)
                c = torch.randn(rows, columns, generator=generator)
                for layout, w in weight_layouts(inner, columns, generator).items():
                    a16, w16 = a.bfloat16().double(), w.bfloat16().double()
                    scale = (a16.abs() @ w16.abs() + c.double().abs()) * torch.finfo(torch.float32).eps
                    for accumulate in (False, True):
                        for threads in (False, True):
                            want = a16 @ w16 + (c.double() if accumulate else 0)
                            got = EXTENSION.bf16_product(a, w, c, accumulate, threads).double()
                            error = ((got - want).abs() / scale).max().item()
                            key = f"{layout} accumulate={accumulate} threads={threads}"
                            worst[key] = max(worst.get(key, 0.0), error)
    return worst


def weight_layouts(inner: int, columns: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The weight (inner, columns) as the loops pass it, each packed its own way: rows contiguous
    (W_ih, the backward's W_hh), the transpose of a row-major matrix (the forward's W_hh^T), and
    neither (every other column of a wider matrix)."""
    return {
        "rows": torch.randn(inner, columns, generator=generator),
        "transposed": torch.randn(columns, inner, generator=generator).t(),
        "strided": torch.randn(inner, 2 * columns, generator=generator)[:, ::2],
    }


SCRIPT = """
import json, sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(2)
from engine.test_bf16_products import EXTENSION, worst_errors
print(json.dumps({{"amx": bool(EXTENSION.amx_bf16), "errors": worst_errors()}}))
"""


def errors_in_a_process(amx_kernel: str) -> dict:
    """worst_errors() in a fresh process (the kernel choice is read once), on two threads."""
    env = {**os.environ, "LSTMKIT_AMX_KERNEL": amx_kernel}
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(tests=tests)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("amx_kernel", ["1", "0"])
def test_products_match_float64_of_the_rounded_operands(amx_kernel: str) -> None:
    if amx_kernel == "0" and not EXTENSION.amx_bf16:
        pytest.skip("no AMX here: the default run is already the AVX512-BF16 kernel")
    result = errors_in_a_process(amx_kernel)
    assert result["amx"] == (amx_kernel == "1" and bool(EXTENSION.amx_bf16))
    for call, error in result["errors"].items():
        assert error <= 64, f"{call}: {error:.1f} float32 roundings off the float64 product"


def test_products_are_bf16_not_float32() -> None:
    """The oracle would also pass a float32 product of unrounded operands at loose tolerance: the
    kernel's result is far closer to the rounded operands' product than to the float32 one."""
    generator = torch.Generator().manual_seed(1)
    a, w = torch.randn(40, 100, generator=generator), torch.randn(100, 200, generator=generator)
    got = EXTENSION.bf16_product(a, w, torch.zeros(40, 200), False, True).double()
    rounded = a.bfloat16().double() @ w.bfloat16().double()
    exact = a.double() @ w.double()
    assert (got - rounded).norm() * 100 < (got - exact).norm()
