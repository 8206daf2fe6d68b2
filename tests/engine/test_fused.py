"""What is particular to the fused engine for any cell (``lstmkit.engine.fused``): a
``pointwise`` that draws random numbers, partial and unused gradients, determinism, double
backward, whole layers against the reference loop, dispatch and errors, all uncompiled (the steps
compiled by Inductor: ``tests/engine/test_fused_inductor.py``). Its agreement with the reference loop
for every cell and option is in ``tests/engine/test_conformance.py``.
"""

from __future__ import annotations

import core_helpers
import pytest
import torch
import torch.nn.functional as F
from core_helpers import CIFGCell, PeepholeCIFGCell, make_valid

import lstmkit
from lstmkit import engine
from lstmkit.engine import compiling, fused, reference
from lstmkit.engine.reference import run_sequence

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: more intra-op threads only contend


class DropoutCIFGCell(CIFGCell):
    """Draws random numbers inside pointwise: the backward must replay the same draws."""

    def pointwise(self, xg, hg, state):
        h, c = state
        i, g, o = (xg + hg).chunk(3, dim=-1)
        i, o = torch.sigmoid(i), torch.sigmoid(o)
        g = F.dropout(torch.tanh(g), 0.3, training=self.training)
        c = (1 - i) * c + i * g
        return (o * torch.tanh(c), c), (i, g, o)


@pytest.fixture(autouse=True)
def _uncompiled():
    """Eager steps (compiling costs seconds per shape) and never the generated native kernels
    (tests/engine/test_generated.py), so that the Python loop is what runs."""
    compiling.set_compile(False)
    yield
    compiling.set_compile(None)


def run_both(cell: lstmkit.Cell, steps: int = 6, batch: int = 4, **options) -> tuple[dict, dict]:
    """The reference loop and the fused engine from identical inputs (see :func:`core_helpers.run_both`)."""
    return core_helpers.run_both(fused.run_cell, cell, steps, batch, **options)


def assert_same(expected: dict, actual: dict, dtype: torch.dtype = torch.float64) -> None:
    core_helpers.assert_same(expected, actual, **core_helpers.ENGINE_TOLERANCE[dtype])


def test_random_pointwise_replays_its_draws() -> None:
    cell = DropoutCIFGCell(3, 5, dtype=torch.float64)
    expected, actual = run_both(cell, valid=make_valid("holes", 6, 4), zoneout=0.2, training=True)
    assert_same(expected, actual)
    with torch.random.fork_rng():  # and a forward-only call draws the same numbers as the reference
        torch.manual_seed(3)
        x, state = torch.randn(6, 2, 3, dtype=torch.float64), cell.initial_state(2, torch.zeros(1, dtype=torch.float64))
        with torch.no_grad():
            torch.manual_seed(4)
            want = run_sequence(cell, x, state).output
            torch.manual_seed(4)
            got = fused.run_cell(cell, x, state).output
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_no_bias_and_only_some_gradients() -> None:
    """No biases; gradients only for the input and one parameter (the rest are constants)."""
    cell = PeepholeCIFGCell(3, 5, bias=False, dtype=torch.float64)
    for name, parameter in cell.named_parameters():
        parameter.requires_grad_(name == "weight_ci")
    x = torch.randn(6, 4, 3, dtype=torch.float64, requires_grad=True)
    state = cell.initial_state(4, x)
    grads = []
    for run in (run_sequence, fused.run_cell):
        result = run(cell, x, state, valid=make_valid("lengths", 6, 4))
        grads.append(torch.autograd.grad(result.output.sum() + result.state[1].sum(), [x, cell.weight_ci]))
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, **core_helpers.ENGINE_TOLERANCE[torch.float64])


def test_gradient_of_unused_outputs() -> None:
    """Only the final cell state feeds the loss: no gradient arrives for the outputs or h_n."""
    cell = CIFGCell(3, 5, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    state = cell.initial_state(2, x)
    grads = [torch.autograd.grad(run(cell, x, state).state[1].sum(), x) for run in (run_sequence, fused.run_cell)]
    torch.testing.assert_close(grads[1], grads[0], **core_helpers.ENGINE_TOLERANCE[torch.float64])


def test_deterministic() -> None:
    cell = PeepholeCIFGCell(3, 5)
    x = torch.randn(9, 4, 3, requires_grad=True)
    valid = make_valid("holes", 9, 4)
    runs = []
    for _ in range(2):
        result = fused.run_cell(cell, x, cell.initial_state(4, x), valid=valid)
        grads = torch.autograd.grad(result.output.square().sum(), [x, *cell.parameters()])
        runs.append([result.output, *result.state, *grads])
    for first, second in zip(*runs, strict=True):
        assert torch.equal(first, second)


def test_double_backward_matches_reference() -> None:
    """A gradient penalty through the fused engine: d/dW_hh of ||dL/dx||^2 equals the reference loop's."""
    cell = CIFGCell(3, 4, dtype=torch.float64)
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    found = []
    for run in (fused.run_cell, reference.run_sequence):
        result = run(cell, x, cell.initial_state(2, x), zoneout=0.3, training=False)
        (grad,) = torch.autograd.grad(result.output.pow(2).sum(), x, create_graph=True)
        found.append(torch.autograd.grad(grad.pow(2).sum(), cell.weight_hh)[0])
    torch.testing.assert_close(found[0], found[1])


@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
@pytest.mark.parametrize("inputs", ["lengths", "mask"])
def test_bidirectional_stack_through_recurrent(inputs: str, merge_mode: str) -> None:
    """A whole two-layer bidirectional layer: fused vs reference, outputs, states, all gradients."""
    options = dict(num_layers=2, bidirectional=True, batch_first=True, merge_mode=merge_mode, dtype=torch.float64)
    models = {
        name: lstmkit.Recurrent(PeepholeCIFGCell, 3, 5, engine=name, **options) for name in ("fused", "reference")
    }
    models["reference"].load_state_dict(models["fused"].state_dict())
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    hx = tuple(torch.randn(4, 4, 5, dtype=torch.float64) for _ in range(2))
    extra = {"lengths": [6, 2, 5, 1]} if inputs == "lengths" else {"mask": torch.rand(4, 6) > 0.3}
    results = {}
    for name, model in models.items():
        out, (h_n, c_n) = model(x, hx, **extra)
        (out.sin().sum() + h_n.square().sum() + c_n.sum()).backward()
        results[name] = {"output": out, "h_n": h_n, "c_n": c_n} | {n: p.grad for n, p in model.named_parameters()}
    assert_same(results["reference"], results["fused"])


def test_recurrent_training_options_match_reference() -> None:
    """Recurrent dropout and zoneout in training mode draw the same masks under both engines."""
    options = dict(num_layers=2, recurrent_dropout=0.3, zoneout=0.1, dtype=torch.float64)
    fused_layer = lstmkit.Recurrent(CIFGCell, 3, 5, engine="fused", **options)
    reference_layer = lstmkit.Recurrent(CIFGCell, 3, 5, engine="reference", **options)
    reference_layer.load_state_dict(fused_layer.state_dict())
    x = torch.randn(7, 3, 3, dtype=torch.float64)
    results = []
    for model in (fused_layer, reference_layer):
        torch.manual_seed(5)
        out, (h_n, c_n) = model(x)
        (out.square().sum() + c_n.sum()).backward()
        results.append({"output": out, "h_n": h_n} | {n: p.grad for n, p in model.named_parameters()})
    assert_same(results[1], results[0])


# ----------------------------------------------------------------------------------------------
# dispatch


def test_auto_runs_user_cells_on_the_fused_engine(monkeypatch) -> None:
    calls = []
    original = fused.run_cell
    monkeypatch.setattr(fused, "run_cell", lambda *a, **k: calls.append(type(a[0]).__name__) or original(*a, **k))
    x = torch.randn(5, 2, 3)
    lstmkit.Recurrent(CIFGCell, 3, 4, engine="auto")(x)
    lstmkit.Recurrent(CIFGCell, 3, 4, engine="auto")(x, return_gates=True)  # tracing: the reference loop
    lstmkit.Recurrent(CIFGCell, 3, 4, engine="reference")(x)
    lstmkit.Recurrent(lstmkit.LayerNormLSTMCell, 3, 4, engine="auto")(x)  # overrides project_*: not fused
    lstmkit.GRU(3, 4, reset_after=False, engine="auto")(x)  # overrides step: not fused
    assert calls == ["CIFGCell"]


def test_engine_fused_is_an_engine_name(monkeypatch) -> None:
    assert "fused" in engine.ENGINES
    monkeypatch.setenv(engine.ENGINE_VARIABLE, "fused")
    model = lstmkit.Recurrent(CIFGCell, 3, 4)
    assert model(torch.randn(5, 2, 3))[0].shape == (5, 2, 4)


def test_fused_forced_on_an_unsupported_call_says_why() -> None:
    x = torch.randn(5, 2, 3)
    with pytest.raises(
        ValueError, match="engine='fused' cannot be used: LayerNormLSTMCell overrides Cell.project_input"
    ):
        lstmkit.Recurrent(lstmkit.LayerNormLSTMCell, 3, 4, engine="fused")(x)
    with pytest.raises(ValueError, match="engine='fused' cannot be used: GRUCell overrides Cell.step"):
        lstmkit.GRU(3, 4, reset_after=False, engine="fused")(x)
    with pytest.raises(ValueError, match="engine='fused' cannot be used: gate tracing runs on the reference loop"):
        lstmkit.Recurrent(CIFGCell, 3, 4, engine="fused")(x, return_gates=True)


# ----------------------------------------------------------------------------------------------
# bad input


def test_bad_arguments_raise_clear_errors() -> None:
    cell = CIFGCell(3, 4)
    x = torch.randn(5, 2, 3)
    state = cell.initial_state(2, x)
    with pytest.raises(ValueError, match=r"expected inputs of shape \(T, B, 3\) for CIFGCell\(3, 4\), got \(5, 2, 7\)"):
        fused.run_cell(cell, torch.randn(5, 2, 7), state)
    with pytest.raises(ValueError, match=r"CIFGCell has states \('h', 'c'\), got 1 state tensor"):
        fused.run_cell(cell, x, state[:1])
    with pytest.raises(ValueError, match=r"expected state c of shape \(2, 4\), torch.float32 on cpu; got \(3, 4\)"):
        fused.run_cell(cell, x, (state[0], torch.zeros(3, 4)))
    with pytest.raises(ValueError, match=r"valid must be a \(T, B\) = \(5, 2\) tensor, got \(2, 5\)"):
        fused.run_cell(cell, x, state, valid=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"recurrent_mask must be a \(2, 4\) tensor, got \(2, 3\)"):
        fused.run_cell(cell, x, state, recurrent_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"zoneout must be a number in \[0, 1\), got 1.5"):
        fused.run_cell(cell, x, state, zoneout=1.5)
    with pytest.raises(ValueError, match="the fused engine cannot run CIFGCell.*the input is torch.float64"):
        fused.run_cell(cell, x.double(), tuple(s.double() for s in state))
    with pytest.raises(TypeError, match="inputs must be a tensor"):
        fused.run_cell(cell, x.tolist(), state)


def test_a_pointwise_returning_wrong_shapes_is_named() -> None:
    class Broken(CIFGCell):
        def pointwise(self, xg, hg, state):
            (h, c), gates = super().pointwise(xg, hg, state)
            return (h, c[:, :2]), gates

    cell = Broken(3, 4)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"Broken.pointwise returned states of shapes \[\(2, 4\), \(2, 2\)\]"):
        fused.run_cell(cell, x, cell.initial_state(2, x))
