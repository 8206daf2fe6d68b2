"""The fused engine's steps compiled by TorchInductor (``lstmkit.engine.fused_inductor``), for cells
whose step does not translate to C++: one small shape against the reference loop and the cache,
when "auto" compiles, and the cells that stay uncompiled. Compiling costs seconds per shape, so
these tests are few and small.
"""

from __future__ import annotations

import warnings

import core_helpers
import pytest
import torch
import torch.nn.functional as F
from core_helpers import CIFGCell, PeepholeCIFGCell, make_valid
from torch import nn

from lstmkit.engine import compiling, fused, fused_inductor

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: more intra-op threads only contend


@pytest.fixture(autouse=True)
def _no_generated_kernels(monkeypatch):
    """Never the generated native kernels (tests/engine/test_generated.py), so that compiling means
    Inductor; the compile setting back to the environment's afterwards."""
    monkeypatch.setattr(fused, "_generated_kernel", lambda cell, inputs: None)
    yield
    compiling.set_compile(None)


def run_both(cell, steps: int = 6, batch: int = 4, **options) -> tuple[dict, dict]:
    return core_helpers.run_both(fused.run_cell, cell, steps, batch, **options)


def assert_same(expected: dict, actual: dict) -> None:
    core_helpers.assert_same(expected, actual, **core_helpers.ENGINE_TOLERANCE[torch.float64])


def test_compiled_steps_match_reference_and_are_cached() -> None:
    """One small shape, compiled at first use (a few seconds): same numbers as the reference loop,
    and another cell of the same kind and sizes (the other direction of a layer) reuses the compiled code."""
    compiling.set_compile(True)
    fused_inductor._compiled.clear()
    cell = PeepholeCIFGCell(3, 5, dtype=torch.float64)
    options = dict(valid=make_valid("holes", 6, 4), carry_output=True, reverse=True, zoneout=0.2, training=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed compile warns: fail instead
        expected, actual = run_both(cell, **options)
        assert_same(expected, actual)
        assert len(fused_inductor._compiled) == 1
        (entry,) = fused_inductor._compiled.values()
        compiled = entry.compiled
        assert compiled is not None and compiled._forward is not None and len(compiled._backward) == 1
        other = PeepholeCIFGCell(3, 5, dtype=torch.float64)
        expected, actual = run_both(other, seed=2, **options)
        assert_same(expected, actual)
    assert len(fused_inductor._compiled) == 1 and entry.compiled is compiled and len(compiled._backward) == 1


def test_auto_compiles_once_enough_steps_ran(monkeypatch) -> None:
    """Under "auto" short runs stay eager; compilation (stubbed out here) starts once
    COMPILE_AFTER_STEPS steps ran with the same kind of cell and shape."""
    compiling.set_compile("auto")
    fused_inductor._compiled.clear()
    made = []
    monkeypatch.setattr(fused_inductor, "_CompiledSteps", lambda options: made.append(options) or None)
    monkeypatch.setattr(compiling, "COMPILE_AFTER_STEPS", 10)
    x = torch.randn(4, 2, 3)
    for _ in range(2):
        cell = CIFGCell(3, 4)  # any cell of the kind counts
        fused.run_cell(cell, x, cell.initial_state(2, x))
    assert made == []
    fused.run_cell(cell, x, cell.initial_state(2, x))
    assert len(made) == 1


def test_parametrized_cell_runs_uncompiled() -> None:
    """A parametrised weight is computed on access, so a traced step would freeze it: eager steps."""

    class Positive(nn.Module):
        def forward(self, weight):
            return F.softplus(weight)

    compiling.set_compile(True)
    fused_inductor._compiled.clear()
    cell = PeepholeCIFGCell(3, 5, dtype=torch.float64)
    torch.nn.utils.parametrize.register_parametrization(cell, "weight_ci", Positive())
    expected, actual = run_both(cell, valid=make_valid("lengths", 6, 4))
    assert_same(expected, actual)
    assert not fused_inductor._compiled


def test_untraceable_cell_falls_back_with_one_warning() -> None:
    """Data-dependent Python control flow cannot be traced: eager steps, the right numbers, one warning."""

    class Branchy(CIFGCell):
        def pointwise(self, xg, hg, state):
            if bool((xg > 0).any()):
                xg = xg * 0.5
            return super().pointwise(xg, hg, state)

    compiling.set_compile(True)
    fused_inductor._warn.warned.discard("Branchy")
    cell = Branchy(3, 4, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="could not compile the steps of Branchy"):
        expected, actual = run_both(cell)
    assert_same(expected, actual)
