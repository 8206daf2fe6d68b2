"""The float32 per-step product kernel of AMD CPUs with AVX-512 (``csrc/fp32_gemm.h``), alone and in
the layers.

``fp32_product(a, w, c, accumulate)`` packs ``w`` as the native loop does and returns ``c + a w`` (or
``a w``). The oracle is the float64 product: the kernel sums float32 products in float32, so it agrees
to float32 rounding of the sums. The shapes cross every edge of the kernel: rows around its blocks of
4 and the row blocks of threads (64), k odd, n inside a vector (16), a slab (64) and past it, and the
weight in each layout the packing tells apart (rows contiguous, transposed, neither). In the layers the
kernel replaces MKL's packed products: a training step agrees with the same step on MKL's
(``LSTMKIT_FP32_KERNEL=0``, in another process) and with torch.nn.LSTM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from engine.test_bf16_products import weight_layouts

from lstmkit.engine import native
from lstmkit.engine.native.build import load_extension

EXTENSION = load_extension() if native.is_available() else None
pytestmark = pytest.mark.skipif(
    EXTENSION is None or not getattr(EXTENSION, "fp32_kernel", False),
    reason="needs the native engine on an AMD CPU with AVX-512",
)


@pytest.mark.parametrize("rows", [1, 3, 4, 5, 17, 130])
def test_products_match_float64(rows: int) -> None:
    generator = torch.Generator().manual_seed(rows)
    for inner in (1, 7, 64, 100):
        for columns in (5, 16, 64, 100, 200):
            a = torch.randn(rows, inner, generator=generator)
            c = torch.randn(rows, columns, generator=generator)
            for layout, w in weight_layouts(inner, columns, generator).items():
                scale = (a.double().abs() @ w.double().abs() + c.double().abs()) * torch.finfo(torch.float32).eps
                for accumulate in (False, True):
                    for threads in (False, True):
                        want = a.double() @ w.double() + (c.double() if accumulate else 0)
                        got = EXTENSION.fp32_product(a, w, c, accumulate, threads).double()
                        error = ((got - want).abs() / scale).max().item()
                        assert error <= inner + 1, f"{layout} k={inner} n={columns} accumulate={accumulate}: {error}"


SCRIPT = """
import json, sys, torch
torch.manual_seed(0)
torch.set_num_threads(2)
import lstmkit
from lstmkit.engine.native.build import load_extension
lstm = lstmkit.LSTM(48, 96, num_layers=2)
x = torch.randn(30, 20, 48)
out, (h, c) = lstm(x)
(out.square().mean() + c.sum()).backward()
print(json.dumps({"kernel": bool(load_extension().fp32_kernel), "out": out.flatten().tolist(),
                  "grad": lstm.weight_hh_l0.grad.flatten().tolist()}))
"""


def _step(kernel: str) -> dict:
    env = {**os.environ, "LSTMKIT_FP32_KERNEL": kernel}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_training_step_agrees_with_mkl_s_products() -> None:
    ours, mkl = _step("1"), _step("0")
    assert ours["kernel"] and not mkl["kernel"]
    for name in ("out", "grad"):
        got, want = torch.tensor(ours[name]), torch.tensor(mkl[name])
        assert not torch.equal(got, want), f"{name}: the same bits: the kernel did not run"
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
