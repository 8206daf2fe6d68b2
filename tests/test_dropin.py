"""The drop-in surface of lstmkit.LSTM/GRU/RNN against torch.nn's: the attributes code written for
torch.nn reads, and for each bad call an exception of the class torch.nn raises (lstmkit's own
message). torch.nn itself is the oracle: each case runs there first."""

from __future__ import annotations

import pytest
import torch

import lstmkit

PAIRS = [(lstmkit.LSTM, torch.nn.LSTM), (lstmkit.GRU, torch.nn.GRU), (lstmkit.RNN, torch.nn.RNN)]
x = torch.randn(5, 3, 4)


def hidden(cls, *shape):
    state = torch.zeros(*shape)
    return (state, state.clone()) if cls in (lstmkit.LSTM, torch.nn.LSTM) else state


BAD_CALLS = {
    "input feature size": lambda cls: cls(4, 6)(torch.randn(5, 3, 7)),
    "input of rank 4": lambda cls: cls(4, 6)(torch.randn(5, 3, 4, 1)),
    "h_0 of the wrong layers": lambda cls: cls(4, 6)(x, hidden(cls, 2, 3, 6)),
    "h_0 of the wrong batch": lambda cls: cls(4, 6)(x, hidden(cls, 1, 2, 6)),
    "batched h_0 for unbatched input": lambda cls: cls(4, 6)(torch.randn(5, 4), hidden(cls, 1, 1, 6)),
    "float64 input, float32 weights": lambda cls: cls(4, 6)(x.double()),
    "float input_size": lambda cls: cls(3.0, 5),
    "float hidden_size": lambda cls: cls(3, 5.0),
    "zero hidden_size": lambda cls: cls(3, 0),
    "zero num_layers": lambda cls: cls(3, 5, num_layers=0),
    "dropout 2": lambda cls: cls(3, 5, dropout=2.0),
    "proj_size not below hidden_size": lambda cls: cls(3, 5, proj_size=5),
    "string batch_first": lambda cls: cls(3, 5, batch_first="False"),
    "int bias": lambda cls: cls(3, 5, bias=1),
    "zero time steps": lambda cls: cls(4, 6)(torch.randn(0, 3, 4)),
    "zero hidden_size with proj_size": lambda cls: cls(5, 0, proj_size=0),
}

CELLS = [
    (lstmkit.LSTMCell, torch.nn.LSTMCell),
    (lstmkit.GRUCell, torch.nn.GRUCell),
    (lstmkit.RNNCell, torch.nn.RNNCell),
]


def cell_state(cls, *shape):
    state = torch.zeros(*shape)
    return (state, state.clone()) if cls in (lstmkit.LSTMCell, torch.nn.LSTMCell) else state


BAD_CELL_CALLS = {
    "input feature size": lambda cls: cls(4, 6)(torch.randn(3, 7)),
    "state batch": lambda cls: cls(4, 6)(torch.randn(3, 4), cell_state(cls, 1, 6)),
    "state size": lambda cls: cls(4, 6)(torch.randn(3, 4), cell_state(cls, 3, 5)),
    "input of rank 3": lambda cls: cls(4, 6)(torch.randn(2, 3, 4)),
    "float64 input": lambda cls: cls(4, 6)(torch.randn(3, 4, dtype=torch.float64)),
}


def outcome(call, cls):
    try:
        call(cls)
    except Exception as error:  # noqa: BLE001 - the class is what is compared
        return error
    return None


@pytest.mark.parametrize("case", list(BAD_CALLS))
@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=["LSTM", "GRU", "RNN"])
def test_bad_calls_raise_torchs_exception_class(case, ours, theirs) -> None:
    want = outcome(BAD_CALLS[case], theirs)
    got = outcome(BAD_CALLS[case], ours)
    if want is None:
        assert got is None, f"torch.nn accepts {case}, lstmkit raised {got!r}"
        return
    assert got is not None, f"torch.nn raises {type(want).__name__} for {case}, lstmkit accepted it"
    assert isinstance(got, type(want)), f"{case}: torch.nn raises {type(want).__name__}, lstmkit {type(got).__mro__}"
    assert str(got), "lstmkit's message says what was expected"


@pytest.mark.parametrize("case", list(BAD_CELL_CALLS))
@pytest.mark.parametrize(("ours", "theirs"), CELLS, ids=["LSTMCell", "GRUCell", "RNNCell"])
def test_bad_cell_calls_raise_torchs_exception_class(case, ours, theirs) -> None:
    want, got = outcome(BAD_CELL_CALLS[case], theirs), outcome(BAD_CELL_CALLS[case], ours)
    assert (want is None) == (got is None), f"{case}: torch.nn {want!r}, lstmkit {got!r}"
    if want is not None:
        assert isinstance(got, type(want)), f"{case}: torch.nn raises {type(want).__name__}, lstmkit {got!r}"


def test_proj_size_is_refused_on_gru_and_rnn_as_torch() -> None:
    for ours, theirs in PAIRS[1:]:
        with pytest.raises(ValueError):
            theirs(3, 5, proj_size=2)
        with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
            ours(3, 5, proj_size=2)


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=["LSTM", "GRU", "RNN"])
def test_torch_attributes(ours, theirs) -> None:
    a, b = ours(4, 6, num_layers=2, bidirectional=True), theirs(4, 6, num_layers=2, bidirectional=True)
    assert a.mode == b.mode
    assert a._flat_weights_names == b._flat_weights_names
    assert a._all_weights == b._all_weights
    b.load_state_dict(a.state_dict())
    for mine, theirs_weight in zip(a._flat_weights, b._flat_weights, strict=True):
        assert torch.equal(mine, theirs_weight)


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=["LSTM", "GRU", "RNN"])
def test_reset_parameters_reinitialises_like_torch(ours, theirs) -> None:
    layer = ours(4, 6, num_layers=2)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    for module in torch.nn.Sequential(layer).modules():  # the usual re-initialisation loop
        if hasattr(module, "reset_parameters") and module is layer:
            module.reset_parameters()
    bound = 1 / 6**0.5
    for key, value in layer.state_dict().items():
        assert not torch.equal(value, before[key]), key
        assert value.abs().max() <= bound  # torch.nn's U(-1/sqrt(H), 1/sqrt(H))


def test_reset_parameters_reaches_a_parametrised_weight() -> None:
    layer = lstmkit.GRU(4, 6)
    torch.nn.utils.parametrizations.spectral_norm(layer, "weight_ih_l0")
    torch.nn.utils.parametrizations.weight_norm(layer, "weight_hh_l0")
    originals = [p.clone() for p in layer.parametrizations.parameters()]
    layer.reset_parameters()
    for before, after in zip(originals, layer.parametrizations.parameters(), strict=True):
        assert not torch.equal(before, after)
    assert layer(x)[0].shape == (5, 3, 6)


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=["LSTM", "GRU", "RNN"])
def test_weight_gradients_are_contiguous_as_torchs(ours, theirs) -> None:
    layer = ours(4, 6, num_layers=2)
    xx = x.clone().requires_grad_()
    weights = list(layer.parameters())
    found = torch.autograd.grad(layer(xx)[0].sum(), weights)
    assert all(g.is_contiguous() for g in found)
    torch.nn.utils.parameters_to_vector(found)  # fails on non-contiguous gradients
