"""Bad input: every check raises ValueError or TypeError with a message that names what was expected
and what came."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: more intra-op threads only contend

T, B, I, H = 5, 3, 4, 6


def esc(text: str) -> str:
    return re.escape(text)


@pytest.fixture
def lstm() -> lstmkit.LSTM:
    return lstmkit.LSTM(I, H, num_layers=2)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(T, B, I)


# ---------------------------------------------------------------------------------------------
# layer input


def test_wrong_feature_size(lstm) -> None:
    with pytest.raises(ValueError, match=r"expected input feature size 4, got 7 \(input shape \(5, 3, 7\)\)"):
        lstm(torch.randn(T, B, 7))
    with pytest.raises(ValueError, match="expected input feature size 4, got 7"):
        lstm(torch.randn(T, 7))  # unbatched


@pytest.mark.parametrize("shape", [(I,), (2, T, B, I), ()])
def test_wrong_rank(lstm, shape) -> None:
    with pytest.raises(ValueError, match=esc("expected input of rank 3 (seq_len, batch, input_size)") + ".*"):
        lstm(torch.randn(shape))
    with pytest.raises(ValueError, match=esc(f"got shape {tuple(shape)}")):
        lstm(torch.randn(shape))


def test_wrong_rank_batch_first_names_layout() -> None:
    layer = lstmkit.GRU(I, H, batch_first=True)
    with pytest.raises(ValueError, match=esc("rank 3 (batch, seq_len, input_size)") + ".*" + esc("got shape (4,)")):
        layer(torch.randn(I))


def test_non_tensor_input(lstm, x) -> None:
    with pytest.raises(TypeError, match="input must be a torch.Tensor, got list"):
        lstm(x.tolist())
    with pytest.raises(TypeError, match="input must be a torch.Tensor, got ndarray"):
        lstm(x.numpy())


def test_integer_input(lstm) -> None:
    with pytest.raises(TypeError, match="input must be a floating-point tensor, got dtype torch.int64"):
        lstm(torch.ones(T, B, I, dtype=torch.int64))


def test_dtype_mismatch(lstm, x) -> None:
    with pytest.raises(TypeError, match="input has dtype torch.float64 but the parameters are torch.float32"):
        lstm(x.double())
    with pytest.raises(
        TypeError, match="initial state h_0 has dtype torch.float64 but the parameters are torch.float32"
    ):
        lstm(x, (torch.zeros(2, B, H, dtype=torch.float64), torch.zeros(2, B, H)))


def test_empty_batch_gives_empty_outputs_as_torch() -> None:
    """Batch size 0 is not an error in torch.nn: empty outputs and states of the right shapes."""
    for batch_first in (False, True):
        ours = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=batch_first)
        theirs = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=batch_first)
        x = torch.randn(0, T, I) if batch_first else torch.randn(T, 0, I)
        (out, (h, c)), (want, (want_h, want_c)) = ours(x), theirs(x)
        assert out.shape == want.shape and h.shape == want_h.shape and c.shape == want_c.shape
        out.sum().backward()  # differentiable, like torch's


def test_zero_time_steps(lstm) -> None:
    with pytest.raises(ValueError, match="empty sequence: input has 0 time steps"):
        lstm(torch.randn(0, B, I))
    with pytest.raises(ValueError, match="empty sequence: input has 0 time steps"):
        lstm(torch.randn(0, I))


# ---------------------------------------------------------------------------------------------
# initial state


def test_initial_state_wrong_shape(lstm, x) -> None:
    h0, c0 = torch.zeros(2, B, H), torch.zeros(2, B, H)
    with pytest.raises(
        ValueError, match=esc("expected initial state h_0 of shape (2, 3, 6)") + ".*" + esc("got (1, 3, 6)")
    ):
        lstm(x, (h0[:1], c0))
    with pytest.raises(
        ValueError, match=esc("expected initial state c_0 of shape (2, 3, 6)") + ".*" + esc("got (2, 3, 5)")
    ):
        lstm(x, (h0, c0[..., :5]))
    with pytest.raises(
        ValueError, match=esc("expected initial state h_0 of shape (2, 6)") + ".*" + esc("got (2, 3, 6)")
    ):
        lstm(x[:, 0], (h0, c0))  # batched state for an unbatched input


def test_initial_state_wrong_shape_proj() -> None:
    layer = lstmkit.LSTM(I, H, proj_size=2)
    with pytest.raises(
        ValueError, match=esc("expected initial state h_0 of shape (1, 3, 2)") + ".*" + esc("got (1, 3, 6)")
    ):
        layer(torch.randn(T, B, I), (torch.zeros(1, B, H), torch.zeros(1, B, H)))


def test_initial_state_wrong_count(lstm, x) -> None:
    with pytest.raises(ValueError, match=esc("hx must be a tuple ('h', 'c') for LSTMCell, got 1 tensor(s)")):
        lstm(x, torch.zeros(2, B, H))
    with pytest.raises(ValueError, match=esc("hx must be a tensor h_0 for GRUCell, got 2 tensor(s)")):
        lstmkit.GRU(I, H)(x, (torch.zeros(1, B, H), torch.zeros(1, B, H)))


def test_initial_state_not_a_tensor(lstm, x) -> None:
    with pytest.raises(TypeError, match="initial state h_0 must be a torch.Tensor, got list"):
        lstm(x, ([[0.0]], torch.zeros(2, B, H)))


# ---------------------------------------------------------------------------------------------
# lengths


@pytest.mark.parametrize(
    "lengths,message",
    [
        ([5, -1, 2], "lengths must lie in [0, 5] (the padded sequence length), got min -1 and max 5"),
        ([6, 1, 2], "lengths must lie in [0, 5] (the padded sequence length), got min 1 and max 6"),
        (torch.tensor([0, 9, 3]), "lengths must lie in [0, 5] (the padded sequence length), got min 0 and max 9"),
    ],
)
def test_lengths_out_of_range(lstm, x, lengths, message) -> None:
    with pytest.raises(ValueError, match=esc(message)):
        lstm(x, lengths=lengths)


@pytest.mark.parametrize(
    "lengths,got", [([5, 4], "(2,)"), ([5, 4, 3, 2], "(4,)"), (torch.ones(3, 1, dtype=torch.long), "(3, 1)")]
)
def test_wrong_lengths_count(lstm, x, lengths, got) -> None:
    with pytest.raises(ValueError, match=esc(f"expected lengths of shape (3,) (one per sequence), got {got}")):
        lstm(x, lengths=lengths)


@pytest.mark.parametrize(
    "lengths,message",
    [
        (torch.tensor([5.0, 4.0, 3.0]), "lengths must hold integers, got dtype torch.float32"),
        (torch.tensor([True, True, False]), "lengths must hold integers, got dtype torch.bool"),
        ([5, 2.5, 3], "lengths must be a sequence of ints or an integer tensor, got [5, 2.5, 3]"),
        ([5.0, 4.0, 3.0], "lengths must be a sequence of ints or an integer tensor, got [5.0, 4.0, 3.0]"),
        (np.array([5.0, 4.0, 3.0]), "lengths must be a sequence of ints or an integer tensor, got array("),
        (5, "lengths must be a sequence of ints or an integer tensor, got 5"),
        (["5", "4", "3"], "lengths must be a sequence of ints or an integer tensor, got ['5', '4', '3']"),
    ],
)
def test_float_or_non_integer_lengths(lstm, x, lengths, message) -> None:
    with pytest.raises(TypeError, match=esc(message)):
        lstm(x, lengths=lengths)


def test_integer_lengths_of_any_kind_accepted(lstm, x) -> None:
    reference = lstm(x, lengths=[5, 2, 3])[0]
    for lengths in (torch.tensor([5, 2, 3], dtype=torch.int32), np.array([5, 2, 3]), (5, 2, 3)):
        torch.testing.assert_close(lstm(x, lengths=lengths)[0], reference, rtol=0, atol=0)


def test_lengths_and_mask_together(lstm, x) -> None:
    with pytest.raises(ValueError, match=r"pass either lengths= .* or mask= .*, not both"):
        lstm(x, lengths=[5, 5, 5], mask=torch.ones(T, B, dtype=torch.bool))


def test_packed_sequence_with_lengths_or_mask(lstm, x) -> None:
    packed = pack_padded_sequence(x, [5, 3, 2])
    with pytest.raises(ValueError, match="a PackedSequence carries its own lengths; do not pass lengths= or mask="):
        lstm(packed, lengths=[5, 3, 2])
    with pytest.raises(ValueError, match="a PackedSequence carries its own lengths; do not pass lengths= or mask="):
        lstm(packed, mask=torch.ones(T, B, dtype=torch.bool))


def test_packed_sequence_dtype_mismatch(lstm, x) -> None:
    packed = pack_padded_sequence(x.double(), [5, 3, 2])
    with pytest.raises(TypeError, match="input has dtype torch.float64 but the parameters are torch.float32"):
        lstm(packed)


# ---------------------------------------------------------------------------------------------
# mask


def test_mask_wrong_shape(x) -> None:
    with pytest.raises(
        ValueError, match=esc("expected mask of shape (5, 3) (seq_len, batch)") + ".*" + esc("got (3, 5)")
    ):
        lstmkit.LSTM(I, H)(x, mask=torch.ones(B, T, dtype=torch.bool))
    with pytest.raises(
        ValueError, match=esc("expected mask of shape (3, 5) (batch, seq_len)") + ".*" + esc("got (5, 3)")
    ):
        lstmkit.LSTM(I, H, batch_first=True)(x.transpose(0, 1), mask=torch.ones(T, B, dtype=torch.bool))
    with pytest.raises(
        ValueError, match=esc("expected mask of shape (5,) (seq_len,) for an unbatched input, got (5, 1)")
    ):
        lstmkit.LSTM(I, H)(x[:, 0], mask=torch.ones(T, 1, dtype=torch.bool))


def test_mask_not_a_tensor(x) -> None:
    with pytest.raises(TypeError, match="mask must be a torch.Tensor, got list"):
        lstmkit.LSTM(I, H)(x, mask=[[True] * B] * T)


# ---------------------------------------------------------------------------------------------
# constructor arguments


def test_unknown_merge_mode() -> None:
    with pytest.raises(
        ValueError, match=esc("unknown merge_mode 'max': expected one of ('concat', 'sum', 'mul', 'ave')")
    ):
        lstmkit.LSTM(I, H, bidirectional=True, merge_mode="max")
    with pytest.raises(ValueError, match="unknown merge_mode 'max'"):
        lstmkit.merge_directions(torch.zeros(1), torch.zeros(1), "max")


@pytest.mark.parametrize(
    "options,message",
    [
        ({"dropout": 1.5, "num_layers": 2}, "dropout must be a number in [0, 1], got 1.5"),
        ({"dropout": -0.1, "num_layers": 2}, "dropout must be a number in [0, 1], got -0.1"),
        ({"dropout": "0.5", "num_layers": 2}, "dropout must be a number in [0, 1], got '0.5'"),
        ({"dropout": True, "num_layers": 2}, "dropout must be a number in [0, 1], got True"),
        ({"dropout": float("nan"), "num_layers": 2}, "dropout must be a number in [0, 1], got nan"),
        ({"recurrent_dropout": 1.0}, "recurrent_dropout must be a number in [0, 1), got 1.0"),
        ({"recurrent_dropout": -0.5}, "recurrent_dropout must be a number in [0, 1), got -0.5"),
        ({"zoneout": 1}, "zoneout must be a number in [0, 1), got 1"),
        ({"zoneout": 2.0}, "zoneout must be a number in [0, 1), got 2.0"),
        ({"zoneout": None}, "zoneout must be a number in [0, 1), got None"),
    ],
)
def test_bad_probabilities(options, message) -> None:
    with pytest.raises(ValueError, match=esc(message)):
        lstmkit.LSTM(I, H, **options)


@pytest.mark.parametrize("value", [0, -1, 2.0, True])
def test_bad_num_layers(value) -> None:
    with pytest.raises(ValueError, match=esc(f"num_layers must be a positive int, got {value!r}")):
        lstmkit.GRU(I, H, num_layers=value)


@pytest.mark.parametrize("name", ["input_size", "hidden_size"])
@pytest.mark.parametrize("value", [0, -3, 2.5, None])
def test_bad_sizes(name, value) -> None:
    sizes = {"input_size": I, "hidden_size": H, name: value}
    with pytest.raises(ValueError, match=esc(f"{name} must be a positive int, got {value!r}")):
        lstmkit.RNNCell(sizes["input_size"], sizes["hidden_size"])
    with pytest.raises(ValueError, match=esc(f"{name} must be a positive int, got {value!r}")):
        lstmkit.GRU(sizes["input_size"], sizes["hidden_size"])


@pytest.mark.parametrize("proj_size", [-1, 6, 7])
def test_bad_proj_size(proj_size) -> None:
    with pytest.raises(ValueError, match=esc(f"proj_size must be an int in [0, hidden_size=6), got {proj_size!r}")):
        lstmkit.LSTM(I, H, proj_size=proj_size)


def test_unknown_activation() -> None:
    with pytest.raises(ValueError, match=r"unknown activation 'tanhh': expected one of \[.*'tanh'.*\] or a callable"):
        lstmkit.RNN(I, H, nonlinearity="tanhh")


def test_cell_without_gate_names() -> None:
    class Bare(lstmkit.Cell):
        pass

    with pytest.raises(TypeError, match=r"Bare must set gate_names, e.g. \('i', 'f', 'g', 'o'\)"):
        Bare(I, H)


def test_recurrent_needs_a_cell_class() -> None:
    with pytest.raises(TypeError, match="cell must build an lstmkit.Cell, got LSTMCell"):
        lstmkit.Recurrent(torch.nn.LSTMCell, I, H)


# ---------------------------------------------------------------------------------------------
# one-step cell calls


@pytest.fixture
def cell() -> lstmkit.LSTMCell:
    return lstmkit.LSTMCell(I, H)


def test_cell_wrong_feature_size(cell) -> None:
    with pytest.raises(ValueError, match=esc("expected input feature size 4, got 5 (shape (3, 5))")):
        cell(torch.randn(B, 5))


def test_cell_wrong_rank(cell) -> None:
    with pytest.raises(
        ValueError, match=esc("cell input must be 1-D (input_size,) or 2-D (batch, input_size), got shape (5, 3, 4)")
    ):
        cell(torch.randn(T, B, I))


def test_cell_wrong_state(cell) -> None:
    x = torch.randn(B, I)
    with pytest.raises(ValueError, match=esc("expected state c of shape (3, 6), got (2, 6)")):
        cell(x, (torch.zeros(B, H), torch.zeros(2, H)))
    with pytest.raises(ValueError, match=esc("LSTMCell expects 2 state tensor(s) ('h', 'c'), got 1")):
        cell(x, torch.zeros(B, H))
    with pytest.raises(ValueError, match=esc("expected state h of shape (6,), got (3, 6)")):
        cell(x[0], (torch.zeros(B, H), torch.zeros(B, H)))


def test_cell_dtype_and_type(cell) -> None:
    with pytest.raises(TypeError, match="input has dtype torch.float64 but the parameters are torch.float32"):
        cell(torch.randn(B, I, dtype=torch.float64))
    with pytest.raises(TypeError, match="input must be a torch.Tensor, got tuple"):
        cell((1.0, 2.0, 3.0, 4.0))
    with pytest.raises(TypeError, match="state h has dtype torch.float64 but the parameters are torch.float32"):
        cell(torch.randn(B, I), (torch.zeros(B, H, dtype=torch.float64), torch.zeros(B, H)))


def test_cell_empty_batch_as_torch(cell) -> None:
    """torch.nn's cells return empty states for a batch of 0; so do lstmkit's."""
    reference = torch.nn.LSTMCell(I, H)
    states, want = cell(torch.randn(0, I)), reference(torch.randn(0, I))
    assert [tuple(s.shape) for s in states] == [tuple(s.shape) for s in want]


def test_bool_proj_size_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"proj_size must be an int in \[0, hidden_size=6\), got True"):
        lstmkit.LSTM(I, H, proj_size=True)
