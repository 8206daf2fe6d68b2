"""The native (C++) LSTM and GRU engine against its oracle, the reference loop ``run_sequence``.

Forward outputs, final states and every gradient must agree (float64 to ~1e-12, float32 to 1e-5)
with and without masks, in both directions; gradcheck on tiny shapes; bad arguments raise Python
errors. The module is skipped when the extension cannot be built here.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lstmkit
from lstmkit.engine import native
from lstmkit.engine.reference import run_sequence

if not native.is_available():  # compiles once per user and torch version (~30 s), then cached
    pytest.skip("the native engine cannot be built on this machine", allow_module_level=True)

TOLERANCE = {torch.float64: {"rtol": 1e-10, "atol": 1e-12}, torch.float32: {"rtol": 1e-5, "atol": 1e-5}}


def make_valid(kind: str, steps: int, batch: int) -> torch.Tensor | None:
    if kind == "none":
        return None
    if kind == "lengths":  # padded batch: each sequence valid for a prefix, one of length 0
        lengths = torch.tensor([steps, 1, 0, steps - 2, 3][:batch])
        return torch.arange(steps)[:, None] < lengths[None, :]
    return torch.rand(steps, batch) > 0.35  # arbitrary holes (Keras-style masks)


def make_cell(kind: str, input_size: int, hidden_size: int, dtype: torch.dtype, bias: bool = True) -> lstmkit.Cell:
    cell_type = {"lstm": lstmkit.LSTMCell, "gru": lstmkit.GRUCell}[kind]
    return cell_type(input_size, hidden_size, bias=bias, dtype=dtype)


def run_both(cell: lstmkit.Cell, steps: int, batch: int, seed: int = 1, **options) -> tuple[dict, dict]:
    """Run reference and native engines from identical inputs and RNG state; return for each
    the output, final states and the gradients of input, initial states and every parameter."""
    dtype = cell.weight_ih.dtype
    x = torch.randn(steps, batch, cell.input_size, dtype=dtype, requires_grad=True)
    state = tuple(torch.randn(batch, size, dtype=dtype, requires_grad=True) for size in cell.state_sizes)
    weights = torch.randn(cell.hidden_size, dtype=dtype)  # makes every output unit matter differently
    results = []
    for engine in (run_sequence, native.run_cell):
        torch.manual_seed(seed)  # zoneout draws its masks from the global generator
        result = engine(cell, x, state, **options)
        loss = (result.output * weights).sum() + (result.state[0] ** 2).sum() + (result.state[-1] * weights).sum()
        names = ["input", *(f"{name}0" for name in cell.state_names), *(n for n, _ in cell.named_parameters())]
        grads = torch.autograd.grad(loss, [x, *state, *cell.parameters()])
        values = {"output": result.output}
        values |= {f"{name}_n": value for name, value in zip(cell.state_names, result.state, strict=True)}
        values |= {f"grad {name}": grad for name, grad in zip(names, grads, strict=True)}
        results.append(values)
    return results[0], results[1]


def assert_same(expected: dict, actual: dict, dtype: torch.dtype) -> None:
    assert expected.keys() == actual.keys()
    for name, want in expected.items():
        torch.testing.assert_close(actual[name], want, **TOLERANCE[dtype], msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("valid", ["none", "lengths", "holes"])
@pytest.mark.parametrize("hidden", [5, 19])  # below and across the SIMD width (tail handling)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_matches_reference(kind: str, dtype: torch.dtype, reverse: bool, valid: str, hidden: int) -> None:
    cell = make_cell(kind, 4, hidden, dtype)
    expected, actual = run_both(cell, 7, 5, valid=make_valid(valid, 7, 5), reverse=reverse)
    assert_same(expected, actual, dtype)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_batch_split_across_threads(kind: str) -> None:
    """Enough rows for the pointwise pass to be split between threads (at::parallel_for)."""
    cell = make_cell(kind, 8, 32, torch.float64)
    valid = make_valid("holes", 4, 96)
    expected, actual = run_both(cell, 4, 96, valid=valid, carry_output=True, reverse=True)
    assert_same(expected, actual, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_carry_output(kind: str, dtype: torch.dtype, reverse: bool) -> None:
    """Keras masks: a masked step repeats the previous output."""
    cell = make_cell(kind, 3, 11, dtype)
    valid = make_valid("holes", 8, 4)
    expected, actual = run_both(cell, 8, 4, valid=valid, carry_output=True, reverse=reverse)
    assert_same(expected, actual, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("valid", ["none", "holes"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_mask(kind: str, dtype: torch.dtype, valid: str) -> None:
    cell = make_cell(kind, 3, 10, dtype)
    mask = (torch.rand(4, 10) > 0.4).to(dtype) / 0.6
    expected, actual = run_both(cell, 6, 4, valid=make_valid(valid, 6, 4), recurrent_mask=mask, reverse=True)
    assert_same(expected, actual, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_zoneout(kind: str, dtype: torch.dtype, training: bool) -> None:
    """Training: the same masks as the reference (same draws from the same seed); evaluation: the expectation."""
    cell = make_cell(kind, 3, 9, dtype)
    valid = make_valid("lengths", 6, 4)
    expected, actual = run_both(cell, 6, 4, valid=valid, zoneout=0.3, training=training)
    assert_same(expected, actual, dtype)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_everything_at_once(kind: str) -> None:
    cell = make_cell(kind, 3, 9, torch.float64)
    mask = (torch.rand(5, 9) > 0.5).double() * 2
    options = {"valid": make_valid("holes", 6, 5), "carry_output": True, "reverse": True}
    expected, actual = run_both(cell, 6, 5, recurrent_mask=mask, zoneout=0.25, training=True, **options)
    assert_same(expected, actual, torch.float64)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_without_bias(kind: str) -> None:
    cell = make_cell(kind, 4, 6, torch.float64, bias=False)
    expected, actual = run_both(cell, 5, 3, valid=make_valid("lengths", 5, 3))
    assert_same(expected, actual, torch.float64)


def test_matches_torch_lstm_float32() -> None:
    """A longer float32 run against torch.nn.LSTM itself (oneDNN)."""
    torch_lstm = nn.LSTM(16, 64)
    x = torch.randn(60, 8, 16)
    output, (h_n, c_n) = torch_lstm(x)
    weights = [getattr(torch_lstm, f"{name}_l0") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    zeros = torch.zeros(8, 64)
    native_output, (native_h, native_c) = native.lstm_sequence(x, *weights, zeros, zeros)
    for want, got in ((output, native_output), (h_n[0], native_h), (c_n[0], native_c)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    expected = torch.autograd.grad(output.sum() + c_n.sum(), weights)
    actual = torch.autograd.grad(native_output.sum() + native_c.sum(), weights)
    for want, got in zip(expected, actual, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_matches_torch_gru_float32() -> None:
    torch_gru = nn.GRU(16, 40)
    x = torch.randn(60, 8, 16)
    h0 = torch.randn(1, 8, 40)
    output, h_n = torch_gru(x, h0)
    weights = [getattr(torch_gru, f"{name}_l0") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    native_output, native_h = native.gru_sequence(x, *weights, h0[0], reverse=False)
    torch.testing.assert_close(native_output, output, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(native_h, h_n[0], rtol=1e-5, atol=1e-5)
    expected = torch.autograd.grad(output.sum() + (h_n**2).sum(), weights)
    actual = torch.autograd.grad(native_output.sum() + (native_h**2).sum(), weights)
    for want, got in zip(expected, actual, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_no_grad_and_partial_grads() -> None:
    cell = lstmkit.LSTMCell(4, 6, dtype=torch.float64)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    state = (torch.zeros(3, 6, dtype=torch.float64), torch.zeros(3, 6, dtype=torch.float64))
    with torch.no_grad():
        result = native.run_cell(cell, x, state)
    assert not result.output.requires_grad
    torch.testing.assert_close(result.output, run_sequence(cell, x, state).output.detach())
    # input and initial state need no gradient: only the parameters get one
    native_grads = torch.autograd.grad(native.run_cell(cell, x, state).output.sum(), list(cell.parameters()))
    reference_grads = torch.autograd.grad(run_sequence(cell, x, state).output.sum(), list(cell.parameters()))
    for want, got in zip(reference_grads, native_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_bias_grads_are_separate_tensors() -> None:
    cell = lstmkit.LSTMCell(2, 3, dtype=torch.float64)
    result = native.run_cell(cell, torch.randn(4, 2, 2, dtype=torch.float64), cell.initial_state(2, cell.weight_ih))
    result.output.sum().backward()
    torch.testing.assert_close(cell.bias_ih.grad, cell.bias_hh.grad)
    assert cell.bias_ih.grad.data_ptr() != cell.bias_hh.grad.data_ptr()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"reverse": True},
        {"valid": "holes", "carry_output": True},
        {"valid": "lengths", "reverse": True, "recurrent_mask": True},
        {"zoneout_masks": True, "valid": "holes"},
        {"zoneout_rate": 0.3, "reverse": True},
    ],
    ids=["plain", "reverse", "carry", "lengths-reverse-rmask", "zoneout-train", "zoneout-eval"],
)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gradcheck(kind: str, options: dict) -> None:
    steps, batch, inputs, hidden = 4, 3, 2, 3
    gates = 4 if kind == "lstm" else 3

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    args = (
        rand(steps, batch, inputs),
        rand(gates * hidden, inputs),
        rand(gates * hidden, hidden),
        rand(gates * hidden),
        rand(gates * hidden),
        *(rand(batch, hidden) for _ in range(2 if kind == "lstm" else 1)),
    )
    kwargs = dict(options)
    if "valid" in kwargs:
        kwargs["valid"] = make_valid(kwargs["valid"], steps, batch)
    if kwargs.pop("recurrent_mask", False):
        kwargs["recurrent_mask"] = (torch.rand(batch, hidden) > 0.5).double() * 2
    if kwargs.pop("zoneout_masks", False):
        masks = tuple(torch.rand(steps, batch, hidden) < 0.4 for _ in range(2))
        kwargs |= {"zoneout_masks": masks} if kind == "lstm" else {"zoneout_mask": masks[0]}

    def function(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if kind == "gru":
            return native.gru_sequence(*tensors, **kwargs)
        output, (h_n, c_n) = native.lstm_sequence(*tensors, **kwargs)
        return output, h_n, c_n

    assert torch.autograd.gradcheck(function, args)


def valid_args(dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    steps, batch, inputs, hidden = 3, 2, 4, 5
    return {
        "input": torch.randn(steps, batch, inputs, dtype=dtype),
        "weight_ih": torch.randn(4 * hidden, inputs, dtype=dtype),
        "weight_hh": torch.randn(4 * hidden, hidden, dtype=dtype),
        "bias_ih": torch.randn(4 * hidden, dtype=dtype),
        "bias_hh": torch.randn(4 * hidden, dtype=dtype),
        "h0": torch.zeros(batch, hidden, dtype=dtype),
        "c0": torch.zeros(batch, hidden, dtype=dtype),
    }


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"input": torch.randn(3, 2, 4, dtype=torch.float64)}, TypeError, "dtype"),
        ({"h0": torch.zeros(2, 5, dtype=torch.float64)}, TypeError, "h0"),
        ({"input": torch.randn(3, 2, 4).to(torch.int64)}, TypeError, "float32 or float64"),
        ({"input": torch.randn(2, 3, 4).transpose(0, 1)}, ValueError, "contiguous"),
        ({"weight_hh": torch.randn(5, 20).t()}, ValueError, "contiguous"),
        ({"input": torch.randn(3, 2, 7)}, ValueError, "weight_ih"),
        ({"input": torch.randn(3, 4)}, ValueError, "3-D"),
        ({"h0": torch.zeros(3, 5)}, ValueError, "h0"),
        ({"c0": torch.zeros(2, 6)}, ValueError, "c0"),
        ({"weight_hh": torch.randn(20, 4)}, ValueError, "weight_hh"),
        ({"bias_ih": torch.randn(19)}, ValueError, "bias_ih"),
        ({"bias_hh": None}, ValueError, "bias"),
    ],
)
def test_bad_arguments_raise(change: dict, error: type[Exception], message: str) -> None:
    args = valid_args() | change
    with pytest.raises(error, match=message):
        native.lstm_sequence(*args.values())


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"valid": torch.ones(3, 2)}, TypeError, "bool"),
        ({"valid": torch.ones(2, 3, dtype=torch.bool)}, ValueError, "valid"),
        ({"recurrent_mask": torch.ones(2, 4)}, ValueError, "recurrent_mask"),
        ({"recurrent_mask": torch.ones(2, 5, dtype=torch.float64)}, TypeError, "recurrent_mask"),
        ({"zoneout_masks": (torch.ones(3, 2, 5), torch.ones(3, 2))}, ValueError, "zoneout_c"),
        ({"zoneout_rate": 1.5}, ValueError, "zoneout_rate"),
    ],
)
def test_bad_options_raise(options: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        native.lstm_sequence(*valid_args().values(), **options)


def test_bad_gru_arguments_raise() -> None:
    x, w_ih, w_hh = torch.randn(3, 2, 4), torch.randn(15, 4), torch.randn(15, 5)
    native.gru_sequence(x, w_ih, w_hh, None, None, torch.zeros(2, 5))  # the valid call
    with pytest.raises(ValueError, match=r"weight_hh must have shape \(3H, H\)"):
        native.gru_sequence(x, w_ih, torch.randn(20, 5), None, None, torch.zeros(2, 5))
    with pytest.raises(TypeError, match="h0"):
        native.gru_sequence(x, w_ih, w_hh, None, None, torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous"):
        native.gru_sequence(x, w_ih, w_hh, None, None, torch.zeros(5, 2).t())
    with pytest.raises(ValueError, match="zoneout_h"):
        native.gru_sequence(x, w_ih, w_hh, None, None, torch.zeros(2, 5), zoneout_mask=torch.zeros(3, 2, 4))


def test_supports() -> None:
    assert native.supports(lstmkit.LSTMCell(2, 3))
    assert native.supports(lstmkit.LSTMCell(2, 3, dtype=torch.float64))
    assert not native.supports(lstmkit.LSTMCell(2, 3), trace=True)
    assert not native.supports(lstmkit.LSTMCell(2, 4, proj_size=2))
    assert not native.supports(lstmkit.LSTMCell(2, 3, activation="relu"))
    assert not native.supports(lstmkit.LSTMCell(2, 3, dtype=torch.float16))
    assert not native.supports(lstmkit.PeepholeLSTMCell(2, 3))
    assert native.supports(lstmkit.GRUCell(2, 3))
    assert not native.supports(lstmkit.GRUCell(2, 3, reset_after=False))
    assert not native.supports(lstmkit.GRUCell(2, 3, gate_activation="hard_sigmoid"))
    assert not native.supports(lstmkit.RNNCell(2, 3))
    assert not native.supports(lstmkit.LSTMCell(2, 3), torch.randn(1, 1, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="does not support"):
        native.run_cell(lstmkit.PeepholeLSTMCell(2, 3), torch.randn(2, 1, 2), (torch.zeros(1, 3),) * 2)
