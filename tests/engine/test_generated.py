"""User cells translated to C++ and run in the native loop (``lstmkit.engine.native.generated``):
the dispatch from the fused engine, a whole layer against the reference loop, what does not
translate, a failed build, and bad input reaching the C++ code. The generated kernels' agreement
with the reference loop for every cell and option is in ``tests/engine/test_conformance.py``.

Each translated kind of cell is compiled once (about 25 s) and then loaded from the cache.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from core_helpers import CIFGCell, PeepholeCIFGCell
from torch import nn

import lstmkit
from lstmkit.engine import compiling, fused, fused_inductor, native
from lstmkit.engine.native import generated, ops
from lstmkit.engine.native.generated import kernels

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not native.is_available(), reason="no C++ toolchain for the native engine"),
]


def kernel(cell: lstmkit.Cell):
    """The cell's compiled kernel, made now (compile setting "1")."""
    made = generated.kernel_for(cell, 1, "1")
    assert made is not None, generated.why_not(cell)
    return made


def test_fused_engine_dispatches_to_the_generated_kernel(monkeypatch) -> None:
    """With compilation on, the fused engine runs a translatable cell natively; off, in Python;
    under "auto" once COMPILE_AFTER_STEPS steps ran with the kind of cell."""
    cell = CIFGCell(3, 5)
    x = torch.randn(6, 2, 3)
    state = cell.initial_state(2, x)

    def runs_native(mode) -> bool:  # whether the native loops' autograd node computed the output
        compiling.set_compile(mode)
        try:
            return ops.is_native_node(fused.run_cell(cell, x, state).output.grad_fn)
        finally:
            compiling.set_compile(None)

    assert runs_native(True)
    assert not runs_native(False)
    monkeypatch.setattr(kernels, "_kernels", compiling.HotCounters())
    monkeypatch.setattr(compiling, "COMPILE_AFTER_STEPS", 10)
    monkeypatch.setattr(fused_inductor, "steps_for", lambda eager, *a: eager)  # no Inductor at 10 steps
    assert not runs_native("auto")  # 6 steps
    assert runs_native("auto")  # 12


def test_layer_with_a_user_cell_matches_reference() -> None:
    """A bidirectional two-layer Recurrent of a user cell: the generated kernel in both directions."""
    torch.manual_seed(0)
    layer = lstmkit.Recurrent(PeepholeCIFGCell, 3, 5, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    compiling.set_compile(True)
    try:
        output, _ = layer(x)
        assert type(output.grad_fn).__name__ != "StackBackward0"
        (output**2).sum().backward()
        grads = [p.grad.clone() for p in layer.parameters()]
    finally:
        compiling.set_compile(None)
    layer.zero_grad()
    layer.engine = "reference"
    expected, _ = layer(x)
    (expected**2).sum().backward()
    torch.testing.assert_close(output, expected, rtol=1e-10, atol=1e-12)
    for grad, parameter in zip(grads, layer.parameters(), strict=True):
        torch.testing.assert_close(grad, parameter.grad, rtol=1e-10, atol=1e-12)


class NormCell(lstmkit.Cell):
    gate_names = ("z", "n")

    def __init__(self, input_size, hidden_size, **kwargs):
        super().__init__(input_size, hidden_size, **kwargs)
        self.norm = nn.LayerNorm(hidden_size, dtype=self.weight_ih.dtype)

    def pointwise(self, xg, hg, state):
        (h,) = state
        z, n = (xg + hg).chunk(2, dim=-1)
        z = torch.sigmoid(z)
        return ((1 - z) * self.norm(n) + z * h,), (z, n)


class DropoutCell(CIFGCell):
    def pointwise(self, xg, hg, state):
        return super().pointwise(F.dropout(xg, 0.3, training=True), hg, state)


class CapturingCell(CIFGCell):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scale = torch.linspace(0.5, 1.5, self.hidden_size)  # a plain attribute, not a buffer

    def pointwise(self, xg, hg, state):
        (h, c), gates = super().pointwise(xg, hg, state)
        return (h * self.scale, c), gates


class ThreeStateCell(CIFGCell):
    state_names = ("h", "c", "m")

    def pointwise(self, xg, hg, state):
        (h, c), gates = super().pointwise(xg, hg, state[:2])
        return (h, c, state[2] + c), gates


class WideStateCell(CIFGCell):
    @property
    def state_sizes(self):
        return (self.hidden_size, 2 * self.hidden_size)


class OwnWeightCell(CIFGCell):
    def pointwise(self, xg, hg, state):
        (h, c), gates = super().pointwise(xg + self.bias_ih, hg, state)
        return (h, c), gates


UNTRANSLATABLE = {
    "layer norm": (NormCell, "native_layer_norm has no C\\+\\+ translation"),
    "dropout": (DropoutCell, "has no C\\+\\+ translation"),
    "captured tensor": (CapturingCell, "does not get as a parameter"),
    "three states": (ThreeStateCell, "one or two of hidden_size"),
    "wide state": (WideStateCell, "one or two of hidden_size"),
    "standard weight": (OwnWeightCell, "pointwise uses bias_ih itself"),
}


@pytest.mark.parametrize("case", list(UNTRANSLATABLE))
def test_untranslatable_cells_say_why_and_stay_on_the_python_loop(case: str) -> None:
    kind, message = UNTRANSLATABLE[case]
    cell = kind(3, 4)
    with pytest.raises(generated.Untranslatable, match=message):
        generated.translate(cell)
    assert generated.kernel_for(cell, 1, "1") is None
    assert generated.why_not(cell)


def test_a_failed_build_warns_once_and_falls_back(monkeypatch) -> None:
    def fail(translation):
        raise RuntimeError("compiler exploded")

    monkeypatch.setattr(kernels, "build", fail)
    monkeypatch.setattr(kernels, "_kernels", compiling.HotCounters())
    monkeypatch.setattr(kernels, "_warn", compiling.WarnOnce())
    with pytest.warns(RuntimeWarning, match="did not build .*compiler exploded.*CIFGCell runs on the Python loop"):
        assert generated.kernel_for(CIFGCell(3, 6), 1, "1") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert generated.kernel_for(CIFGCell(3, 6), 1, "1") is None  # remembered, no second warning


def test_bad_input_to_a_generated_module_raises() -> None:
    """Wrong dtype, shape or a missing parameter reaching the C++ code: a Python error, not a crash."""
    cell = PeepholeCIFGCell(3, 5)
    name, translation = kernel(cell)
    x = torch.randn(4, 2, 3)
    params = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, cell.weight_ci]
    state = [torch.zeros(2, 5), torch.zeros(2, 5)]

    def forward(x=x, params=params, state=state):
        with torch.no_grad():
            op = torch.ops.lstmkit.sequence_forward
            return op(name, x, params, state, None, None, [], 0.0, False, False, 0.0, False)

    assert forward()[0].shape == (4, 2, 5)
    with pytest.raises(TypeError, match="dtype"):
        forward(x=x.double())
    with pytest.raises(ValueError, match="a parameter of the cell must have shape"):
        forward(params=[*params[:4], torch.zeros(7)])
    with pytest.raises(ValueError, match="takes 5 parameters"):
        forward(params=params[:4])
    with pytest.raises(ValueError, match="h0 must have shape"):
        forward(state=[torch.zeros(3, 5), torch.zeros(2, 5)])
