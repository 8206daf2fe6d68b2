"""Cells against independent oracles: ``torch.nn`` cells with copied weights, the NumPy reference
in ``tests/oracles.py`` and ``torch.autograd.gradcheck`` in float64."""

from __future__ import annotations

import math

import numpy as np
import oracles
import pytest
import torch
from core_helpers import CIFGCell
from torch import nn

import lstmkit

# tiny tensors: more intra-op threads only contend (OpenMP spin-waits made layer-norm gradchecks ~50x slower)
pytestmark = pytest.mark.usefixtures("one_thread")

I, H, B = 4, 5, 3

TOL = {torch.float64: {"rtol": 1e-10, "atol": 1e-12}, torch.float32: {"rtol": 1e-5, "atol": 1e-6}}


def randomize(module: nn.Module, scale: float = 0.7) -> nn.Module:
    """Give every parameter (gains, peepholes and biases included) a non-trivial random value."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.uniform_(-scale, scale)
    return module


def as_tuple(result) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def assert_close_np(actual: torch.Tensor, expected: np.ndarray, **tol) -> None:
    np.testing.assert_allclose(oracles.to_numpy(actual), expected, **(tol or {"rtol": 1e-10, "atol": 1e-12}))


# ---------------------------------------------------------------------------------------------
# built-in cells that torch.nn also has


TORCH_CELLS = {
    "rnn_tanh": (
        lambda bias, dtype: lstmkit.RNNCell(I, H, bias=bias, nonlinearity="tanh", dtype=dtype),
        lambda bias, dtype: nn.RNNCell(I, H, bias=bias, nonlinearity="tanh", dtype=dtype),
    ),
    "rnn_relu": (
        lambda bias, dtype: lstmkit.RNNCell(I, H, bias=bias, nonlinearity="relu", dtype=dtype),
        lambda bias, dtype: nn.RNNCell(I, H, bias=bias, nonlinearity="relu", dtype=dtype),
    ),
    "lstm": (
        lambda bias, dtype: lstmkit.LSTMCell(I, H, bias=bias, dtype=dtype),
        lambda bias, dtype: nn.LSTMCell(I, H, bias=bias, dtype=dtype),
    ),
    "gru": (
        lambda bias, dtype: lstmkit.GRUCell(I, H, bias=bias, dtype=dtype),
        lambda bias, dtype: nn.GRUCell(I, H, bias=bias, dtype=dtype),
    ),
}


@pytest.fixture(params=sorted(TORCH_CELLS))
def kind(request) -> str:
    return request.param


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_names_and_shapes_match_torch(kind: str, bias: bool) -> None:
    make_kit, make_ref = TORCH_CELLS[kind]
    kit, ref = make_kit(bias, torch.float32), make_ref(bias, torch.float32)
    assert [(n, tuple(p.shape)) for n, p in kit.named_parameters()] == [
        (n, tuple(p.shape)) for n, p in ref.named_parameters()
    ]
    assert list(kit.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_one_step_matches_torch_cell(kind: str, bias: bool, dtype: torch.dtype) -> None:
    make_kit, make_ref = TORCH_CELLS[kind]
    kit, ref = make_kit(bias, dtype), make_ref(bias, dtype)
    ref.load_state_dict(randomize(kit).state_dict())
    tol = TOL[dtype]
    x = torch.randn(B, I, dtype=dtype)
    state = tuple(torch.randn(B, H, dtype=dtype) for _ in range(2 if kind == "lstm" else 1))
    hx = state if kind == "lstm" else state[0]

    cases = [
        ((x, hx), (x, hx)),  # batched, explicit state
        ((x,), (x,)),  # batched, default zero state
        ((x[1],), (x[1],)),  # unbatched 1-D input, default zero state
        ((x[1], tuple(s[1] for s in state) if kind == "lstm" else state[0][1]),) * 2,  # unbatched with state
    ]
    for kit_args, ref_args in cases:
        got, want = as_tuple(kit(*kit_args)), as_tuple(ref(*ref_args))
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape and g.dtype == dtype
            torch.testing.assert_close(g, w, **tol)


@pytest.mark.parametrize("bias", [True, False])
def test_load_state_dict_both_directions(kind: str, bias: bool) -> None:
    make_kit, make_ref = TORCH_CELLS[kind]
    x = torch.randn(B, I, dtype=torch.float64)

    # torch -> lstmkit
    ref = randomize(make_ref(bias, torch.float64))
    kit = make_kit(bias, torch.float64)
    kit.load_state_dict(ref.state_dict())
    for (name, a), (_, b) in zip(kit.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    for g, w in zip(as_tuple(kit(x)), as_tuple(ref(x)), strict=True):
        torch.testing.assert_close(g, w, **TOL[torch.float64])

    # lstmkit -> torch
    kit = randomize(make_kit(bias, torch.float64))
    ref = make_ref(bias, torch.float64)
    ref.load_state_dict(kit.state_dict())
    for g, w in zip(as_tuple(kit(x)), as_tuple(ref(x)), strict=True):
        torch.testing.assert_close(g, w, **TOL[torch.float64])


# ---------------------------------------------------------------------------------------------
# every cell against the NumPy equations


NUMPY_CELLS = {
    "rnn_tanh": (lambda bias: lstmkit.RNNCell(I, H, bias=bias), oracles.rnn_step, {"nonlinearity": "tanh"}),
    "rnn_relu": (
        lambda bias: lstmkit.RNNCell(I, H, bias=bias, nonlinearity="relu"),
        oracles.rnn_step,
        {"nonlinearity": "relu"},
    ),
    "lstm": (lambda bias: lstmkit.LSTMCell(I, H, bias=bias), oracles.lstm_step, {}),
    "lstm_proj": (lambda bias: lstmkit.LSTMCell(I, H, bias=bias, proj_size=2), oracles.lstm_step, {}),
    "peephole": (lambda bias: lstmkit.PeepholeLSTMCell(I, H, bias=bias), oracles.peephole_lstm_step, {}),
    "gru": (lambda bias: lstmkit.GRUCell(I, H, bias=bias), oracles.gru_step, {"reset_after": True}),
    "gru_reset_before": (
        lambda bias: lstmkit.GRUCell(I, H, bias=bias, reset_after=False),
        oracles.gru_step,
        {"reset_after": False},
    ),
    "layernorm": (lambda bias: lstmkit.LayerNormLSTMCell(I, H, bias=bias), oracles.layernorm_lstm_step, {}),
    "layernorm_eps": (
        lambda bias: lstmkit.LayerNormLSTMCell(I, H, bias=bias, eps=1e-2),
        oracles.layernorm_lstm_step,
        {"eps": 1e-2},
    ),
}


def _state_shapes(cell: lstmkit.Cell) -> list[int]:
    return list(cell.state_sizes)


@pytest.mark.parametrize("name", sorted(NUMPY_CELLS))
@pytest.mark.parametrize("bias", [True, False])
def test_one_step_matches_numpy(name: str, bias: bool) -> None:
    make, step, options = NUMPY_CELLS[name]
    cell = randomize(make(bias).double())
    p = oracles.cell_params(cell)
    assert ("bias_ih" in p) == bias
    x = torch.randn(B, I, dtype=torch.float64)
    state = tuple(torch.randn(B, size, dtype=torch.float64) for size in _state_shapes(cell))

    want, _ = step(p, x.numpy(), tuple(s.numpy() for s in state), **options)
    got = as_tuple(cell(x, state if len(state) > 1 else state[0]))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert_close_np(g, w)

    # default zero state, and one unbatched sequence
    zeros = tuple(np.zeros((B, size)) for size in _state_shapes(cell))
    want, _ = step(p, x.numpy(), zeros, **options)
    for g, w in zip(as_tuple(cell(x)), want, strict=True):
        assert_close_np(g, w)
    unbatched = as_tuple(cell(x[2], tuple(s[2] for s in state) if len(state) > 1 else state[0][2]))
    want, _ = step(p, x.numpy()[2:3], tuple(s.numpy()[2:3] for s in state), **options)
    for g, w in zip(unbatched, want, strict=True):
        assert g.dim() == 1
        assert_close_np(g, w[0])


def test_lstm_proj_state_sizes() -> None:
    cell = lstmkit.LSTMCell(I, H, proj_size=2)
    h, c = cell(torch.randn(B, I))
    assert h.shape == (B, 2) and c.shape == (B, H)
    assert cell.weight_hh.shape == (4 * H, 2) and cell.weight_hr.shape == (2, H)


def test_gru_reset_after_false_differs_from_reset_after_true() -> None:
    """The two candidate formulas really are different functions of the same weights."""
    before = randomize(lstmkit.GRUCell(I, H, reset_after=False).double())
    after = lstmkit.GRUCell(I, H).double()
    after.load_state_dict(before.state_dict())
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    assert not torch.allclose(before(x, h), after(x, h))


@pytest.mark.parametrize("name", sorted(NUMPY_CELLS))
def test_default_initialisation(name: str) -> None:
    """Weights and biases ~ U(-1/sqrt(H), 1/sqrt(H)) like torch.nn; LN gains start at 1, shifts at 0."""
    make, _, _ = NUMPY_CELLS[name]
    cell = make(True)
    bound = 1 / math.sqrt(H)
    for pname, value in cell.named_parameters():
        if pname.startswith("ln_weight"):
            assert torch.all(value == 1), pname
        elif pname.startswith("ln_bias"):
            assert torch.all(value == 0), pname
        else:
            assert torch.isfinite(value).all() and value.abs().max() <= bound, pname
            assert value.std() > 0, pname


# ---------------------------------------------------------------------------------------------
# gradcheck, float64, gradients wrt input, state and every parameter


GRAD_CELLS = {
    **{name: (lambda make=make: make(True)) for name, (make, _, _) in NUMPY_CELLS.items()},
    "gru_reset_before_nobias": lambda: lstmkit.GRUCell(I, H, bias=False, reset_after=False),
    "lstm_proj_nobias": lambda: lstmkit.LSTMCell(I, H, bias=False, proj_size=3),
}


@pytest.mark.parametrize("name", sorted(GRAD_CELLS))
def test_gradcheck_cell(name: str) -> None:
    cell = randomize(GRAD_CELLS[name]().double())
    names = [n for n, _ in cell.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in cell.parameters())
    x = torch.randn(2, I, dtype=torch.float64, requires_grad=True)
    state = tuple(torch.randn(2, size, dtype=torch.float64, requires_grad=True) for size in cell.state_sizes)
    n_state = len(state)

    def fn(x, *rest):
        st, ps = rest[:n_state], rest[n_state:]
        out = torch.func.functional_call(cell, dict(zip(names, ps, strict=True)), (x, st if n_state > 1 else st[0]))
        return as_tuple(out)

    assert torch.autograd.gradcheck(fn, (x, *state, *params))


# ---------------------------------------------------------------------------------------------
# the user-defined cell of examples/custom_cell.py


def test_user_cell_is_initialised_and_steps_like_numpy() -> None:
    cell = CIFGCell(I, H).double()
    bound = 1 / math.sqrt(H)
    for pname, value in cell.named_parameters():
        assert torch.isfinite(value).all() and value.abs().max() <= bound and value.std() > 0, pname
    x = torch.randn(B, I, dtype=torch.float64)
    state = (torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64))
    want, _ = oracles.cifg_step(oracles.cell_params(cell), x.numpy(), tuple(s.numpy() for s in state))
    for g, w in zip(cell(x, state), want, strict=True):
        assert_close_np(g, w)


@pytest.mark.parametrize("with_lengths", [False, True])
def test_user_cell_through_recurrent_matches_numpy(with_lengths: bool) -> None:
    T = 6
    layer = randomize(lstmkit.Recurrent(CIFGCell, I, H, num_layers=2, bidirectional=True, batch_first=True).double())
    assert [n for n, _ in layer.named_parameters()][:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    x = torch.randn(B, T, I, dtype=torch.float64)
    lengths = [6, 2, 4] if with_lengths else None
    out, (h_n, c_n) = layer(x, lengths=lengths)

    params = oracles.layer_params(layer, 2, True)
    valid = oracles.valid_from_lengths(lengths, T) if with_lengths else None
    want, finals, _ = oracles.run_stack(
        oracles.cifg_step,
        params,
        x.numpy().transpose(1, 0, 2),
        num_layers=2,
        bidirectional=True,
        zero_state=lambda index: (np.zeros((B, H)), np.zeros((B, H))),
        valid=valid,
    )
    assert_close_np(out, want.transpose(1, 0, 2))
    assert_close_np(h_n, np.stack([f[0] for f in finals]))
    assert_close_np(c_n, np.stack([f[1] for f in finals]))
