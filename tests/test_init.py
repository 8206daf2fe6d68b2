"""Long-memory initialisations (lstmkit.init): forget_bias, chrono_init, recurrent_init."""

import math

import pytest
import torch

import lstmkit
from lstmkit.init import initialize
from lstmkit.inspect import gradient_flow, longlag
from lstmkit.inspect.longlag import AddingProblem, LongLagModel
from lstmkit.validation import ArgumentError

H = 6
GATED = [
    (lstmkit.LSTMCell, {}, 1),  # gates i, f, g, o: f is block 1
    (lstmkit.LSTMCell, {"proj_size": 3}, 1),
    (lstmkit.PeepholeLSTMCell, {}, 1),
    (lstmkit.LayerNormLSTMCell, {}, 1),
    (lstmkit.GRUCell, {}, 1),  # gates r, z, n: z is block 1
    (lstmkit.GRUCell, {"reset_after": False}, 1),
]
IDS = ["lstm", "lstm-proj", "peephole", "layernorm", "gru", "gru-cho"]


def built(make, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return make(5, H, **kwargs)


def block(tensor: torch.Tensor, index: int, size: int = H) -> torch.Tensor:
    return tensor[index * size : (index + 1) * size]


def total_bias(cell) -> torch.Tensor:
    return (cell.bias_ih + cell.bias_hh).detach()


# -- defaults: torch.nn's draw, bitwise ------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs", "kwargs"),
    [
        (lstmkit.LSTM, torch.nn.LSTM, {"num_layers": 2, "bidirectional": True}),
        (lstmkit.GRU, torch.nn.GRU, {"num_layers": 2}),
        (lstmkit.RNN, torch.nn.RNN, {}),
        (lstmkit.LSTMCell, torch.nn.LSTMCell, {}),
        (lstmkit.GRUCell, torch.nn.GRUCell, {}),
    ],
)
def test_defaults_are_torch_nn_draws_bitwise(ours, theirs, kwargs) -> None:
    reference = built(theirs, **kwargs).state_dict()
    for options in ({}, {"forget_bias": None, "chrono_init": None, "recurrent_init": "uniform"}):
        state = built(ours, **kwargs, **options).state_dict()
        assert list(state) == list(reference)
        assert all(torch.equal(state[name], reference[name]) for name in reference)


# -- forget_bias -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "kwargs", "forget"), GATED, ids=IDS)
def test_forget_bias_sets_the_forget_block_and_nothing_else(make, kwargs, forget) -> None:
    plain, biased = built(make, **kwargs), built(make, **kwargs, forget_bias=1.5)
    assert biased.forget_gate == biased.gate_names[forget]
    assert block(total_bias(biased), forget).tolist() == [1.5] * H  # b = b_ih + b_hh, exactly
    assert block(biased.bias_ih, forget).tolist() == [1.5] * H and block(biased.bias_hh, forget).tolist() == [0.0] * H
    for name, value in plain.named_parameters():  # every other entry is torch's draw, unchanged
        other = getattr(biased, name)
        if name.startswith("bias_"):
            keep = torch.ones(len(value), dtype=torch.bool)
            keep[forget * H : (forget + 1) * H] = False
            value, other = value[keep], other[keep]
        assert torch.equal(value, other), name


def test_gru_forget_bias_keeps_memory_through_the_update_gate() -> None:
    # h = (1 - z) * n + z * h_prev: a large b_z makes z ~ 1, so the GRU keeps its state
    gru = lstmkit.GRUCell(3, 4, forget_bias=8.0)
    h = torch.randn(2, 4)
    assert torch.allclose(gru(torch.randn(2, 3), h), h, atol=1e-2)


# -- chrono_init -----------------------------------------------------------------------------------


def test_chrono_lstm_biases_are_log_uniform_with_input_opposite() -> None:
    t_max, units = 200, 512
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(3, units, chrono_init=t_max)
    torch.manual_seed(0)
    plain = lstmkit.LSTM(3, units)
    bias = total_bias(lstm.cell())
    b_i, b_f = block(bias, 0, units), block(bias, 1, units)
    assert b_f.min() >= math.log(1) and b_f.max() <= math.log(t_max - 1)  # b_f ~ log(U([1, T_max - 1]))
    assert torch.equal(b_i, -b_f)  # b_i = -b_f
    assert b_f.std() > 0.5  # spread, not a constant
    memory = 1 / (1 - torch.sigmoid(b_f))  # forgetting time 1 + u, u ~ U([1, T_max - 1])
    assert memory.min() >= 2 - 1e-3 and memory.max() <= t_max + 1e-3
    assert abs(float(memory.mean()) - (t_max + 2) / 2) < 10  # mean of 1 + U([1, 199]) is 101
    assert torch.equal(bias[2 * units :], total_bias(plain.cell())[2 * units :])  # g, o: torch's draw


@pytest.mark.parametrize("reset_after", [True, False])
def test_chrono_gru_sets_the_update_gate_only(reset_after: bool) -> None:
    torch.manual_seed(0)
    gru = lstmkit.GRU(3, 256, chrono_init=100, reset_after=reset_after)
    torch.manual_seed(0)
    plain = lstmkit.GRU(3, 256, reset_after=reset_after)
    bias, reference = total_bias(gru.cell()), total_bias(plain.cell())
    b_z = block(bias, 1, 256)
    assert b_z.min() >= 0 and b_z.max() <= math.log(99) and b_z.std() > 0.5  # b_z ~ log(U([1, T_max - 1]))
    assert torch.equal(block(bias, 0, 256), block(reference, 0, 256))  # r: torch's draw
    assert torch.equal(block(bias, 2, 256), block(reference, 2, 256))  # n: torch's draw


# -- recurrent_init="orthogonal" -------------------------------------------------------------------


@pytest.mark.parametrize(("make", "kwargs", "forget"), GATED + [(lstmkit.RNNCell, {}, None)], ids=IDS + ["rnn"])
def test_orthogonal_makes_every_gate_block_of_w_hh_orthogonal(make, kwargs, forget) -> None:
    cell, plain = built(make, **kwargs, recurrent_init="orthogonal"), built(make, **kwargs)
    weight = cell.weight_hh.detach()
    rows, cols = weight.shape[0] // cell.gate_count, weight.shape[1]
    for gate in range(cell.gate_count):
        w = block(weight, gate, rows)
        product, eye = (w @ w.T, torch.eye(rows)) if rows <= cols else (w.T @ w, torch.eye(cols))
        assert torch.allclose(product, eye, atol=1e-5), cell.gate_names[gate]
    # per block, not one matrix for all gates (Keras' recurrent_initializer="orthogonal")
    if cell.gate_count > 1 and rows == cols:
        assert torch.allclose(weight.T @ weight, cell.gate_count * torch.eye(cols), atol=1e-4)
    assert torch.equal(cell.weight_ih, plain.weight_ih)


# -- reset_parameters, initialize, refusals --------------------------------------------------------


def test_reset_parameters_reapplies_every_option() -> None:
    lstm = lstmkit.LSTM(3, H, num_layers=2, bidirectional=True, chrono_init=50, recurrent_init="orthogonal")
    before = lstm.bias_ih_l1_reverse.detach().clone()
    with torch.no_grad():
        for parameter in lstm.parameters():
            parameter.fill_(0.3)
    lstm.reset_parameters()
    for cell in lstm.cells:
        bias = total_bias(cell)
        assert torch.equal(block(bias, 0), -block(bias, 1)) and block(bias, 1).std() > 0
        w = block(cell.weight_hh.detach(), 2)
        assert torch.allclose(w @ w.T, torch.eye(H), atol=1e-5)
    assert not torch.equal(lstm.bias_ih_l1_reverse, before)  # a new draw

    cell = lstmkit.GRUCell(3, H, forget_bias=2.0)
    with torch.no_grad():
        cell.bias_ih.zero_()
    cell.reset_parameters()
    assert block(total_bias(cell), 1).tolist() == [2.0] * H


def test_initialize_applies_to_a_built_layer_and_sticks() -> None:
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(3, H)
    weights = lstm.weight_ih_l0.detach().clone()
    initialize(lstm, forget_bias=1.0)
    assert block(total_bias(lstm.cell()), 1).tolist() == [1.0] * H and torch.equal(lstm.weight_ih_l0, weights)
    assert "forget_bias=1.0" in repr(lstm)
    lstm.reset_parameters()
    assert block(total_bias(lstm.cell()), 1).tolist() == [1.0] * H


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: lstmkit.RNN(3, 4, forget_bias=1.0), ValueError, "RNNCell has none"),
        (lambda: lstmkit.RNNCell(3, 4, chrono_init=10), ValueError, "needs a forget gate"),
        (lambda: lstmkit.LSTM(3, 4, bias=False, forget_bias=1.0), ValueError, "bias=True"),
        (lambda: lstmkit.LSTM(3, 4, forget_bias=1.0, chrono_init=10), ValueError, "not both"),
        (lambda: lstmkit.GRU(3, 4, chrono_init=1), ValueError, "at least 2"),
        (lambda: lstmkit.GRU(3, 4, chrono_init=20.0), ArgumentError, "must be an int"),
        (lambda: lstmkit.LSTMCell(3, 4, forget_bias="1"), TypeError, "must be a number"),
        (lambda: lstmkit.LSTMCell(3, 4, forget_bias=math.inf), ValueError, "finite"),
        (lambda: lstmkit.LSTM(3, 4, recurrent_init="xavier"), ValueError, "unknown recurrent_init"),
        (lambda: initialize(torch.nn.Linear(2, 2), forget_bias=1.0), TypeError, "lstmkit cell or layer"),
    ],
)
def test_refusals_say_why(build, error, message) -> None:
    with pytest.raises(error, match=message):
        build()


def test_options_survive_the_native_and_reference_engines() -> None:
    x = torch.randn(2, 7, 3)
    torch.manual_seed(0)
    auto = lstmkit.LSTM(3, H, batch_first=True, chrono_init=20, recurrent_init="orthogonal")
    torch.manual_seed(0)
    reference = lstmkit.LSTM(3, H, batch_first=True, chrono_init=20, recurrent_init="orthogonal", engine="reference")
    assert torch.allclose(auto(x)[0], reference(x)[0], atol=1e-6)
    theirs = torch.nn.LSTM(3, H, batch_first=True)
    theirs.load_state_dict(auto.state_dict())
    assert torch.allclose(auto(x)[0], theirs(x)[0], atol=1e-6)


# -- why it matters: the gradient reaches step 1 ---------------------------------------------------

GRADIENT_STEPS = 200


@pytest.fixture(scope="module")
def lstm_flows() -> dict[str, float]:
    """|dL_T/dh_1| / |dL_T/dh_T| of an untrained 64-unit LSTM on the adding problem at T = 200
    (lstmkit.inspect.gradient_flow, the gradient-flow table of docs/cells_and_layers.md), per initialisation."""
    task = AddingProblem(GRADIENT_STEPS)
    inputs, targets = task.generate(16, torch.Generator().manual_seed(0))
    ratios = {}
    for name, options in (
        ("default", {}),
        ("forget_bias=1", {"forget_bias": 1.0}),
        ("chrono", {"chrono_init": GRADIENT_STEPS}),
    ):
        torch.manual_seed(0)
        model = LongLagModel("lstm", task, hidden_size=64)
        if options:
            initialize(model.rnn, **options)
        ratios[name] = gradient_flow(model, task, inputs, targets, "at initialisation").ratio()
    return ratios


def test_forget_bias_and_chrono_let_the_gradient_reach_step_one(lstm_flows) -> None:
    default, biased, chrono = lstm_flows["default"], lstm_flows["forget_bias=1"], lstm_flows["chrono"]
    assert 0 < default < 1e-30  # vanished: 200 steps at a forget gate of about 0.5
    assert biased > 1e15 * default  # sigmoid(1) = 0.73 per step
    assert chrono > 1e8 * biased and chrono > 1e-5  # memory times up to T_max = 200 steps


# -- the long-lag experiments' settings ------------------------------------------------------------


def test_long_lag_without_init_biases_the_forget_gates() -> None:
    settings = longlag.LongLagSettings(hidden_size=4, init={})
    task = AddingProblem(5)
    model = longlag.initial_model("lstm", task, settings)
    torch.manual_seed(longlag.stream_seed(settings.seed, "init", "lstm"))
    expected = LongLagModel("lstm", task, 4)
    with torch.no_grad():  # the recipe the experiments used before the options existed
        expected.rnn.bias_ih_l0[4:8] = 1.0
        expected.rnn.bias_hh_l0[4:8] = 0.0
    ours, recipe = model.state_dict(), expected.state_dict()
    assert list(ours) == list(recipe) and all(torch.equal(ours[name], recipe[name]) for name in recipe)


def test_long_lag_default_starts_are_the_long_memory_ones() -> None:
    settings, task = longlag.LongLagSettings(hidden_size=16), AddingProblem(50)
    plain = longlag.LongLagSettings(hidden_size=16, init={}, forget_bias=0.0)
    for kind in ("rnn", "gru", "lstm", "peephole"):
        cell = longlag.initial_model(kind, task, settings).rnn.cell()
        drawn = longlag.initial_model(kind, task, plain).rnn.cell()
        for gate in range(len(cell.gate_names)):  # every gate block of W_hh orthogonal
            w = block(cell.weight_hh.detach(), gate, 16)
            assert torch.allclose(w @ w.T, torch.eye(16), atol=1e-5), (kind, gate)
        assert torch.equal(cell.weight_ih, drawn.weight_ih)
        if kind in ("rnn", "gru"):  # biases as drawn
            assert torch.equal(total_bias(cell), total_bias(drawn))
        else:  # chrono: b_f = log(u), u ~ U([1, T - 1]); b_i = -b_f
            b_f, b_i = block(total_bias(cell), 1, 16), block(total_bias(cell), 0, 16)
            assert b_f.min() >= 0 and b_f.max() <= math.log(task.steps - 1) and b_f.std() > 0.3
            assert torch.equal(b_i, -b_f)


def test_long_lag_init_per_cell() -> None:
    settings = longlag.LongLagSettings(hidden_size=64, init={"lstm": "chrono+orthogonal", "gru": "forget_bias:2"})
    task = AddingProblem(30)
    lstm = longlag.initial_model("lstm", task, settings).rnn.cell()
    b_f = block(total_bias(lstm), 1, 64)
    assert b_f.max() <= math.log(task.steps - 1) and b_f.std() > 0.3  # T_max: the sequence length
    w = block(lstm.weight_hh.detach(), 0, 64)
    assert torch.allclose(w @ w.T, torch.eye(64), atol=1e-5)
    gru = longlag.initial_model("gru", task, settings).rnn.cell()
    assert block(total_bias(gru), 1, 64).tolist() == [2.0] * 64
    peephole = longlag.initial_model("peephole", task, settings).rnn.cell()  # not named: forget_bias=1
    assert block(total_bias(peephole), 1, 64).tolist() == [1.0] * 64
    chosen = longlag.init_options("chrono:500+orthogonal", steps=30)
    assert chosen == {"chrono_init": 500, "recurrent_init": "orthogonal"}


@pytest.mark.parametrize(
    ("init", "message"),
    [
        ({"rnn": "chrono"}, "needs a forget gate"),
        ({"lstm": "chrono+forget_bias:1"}, "not both"),
        ({"lstm": "xavier"}, "unknown init 'xavier'"),
        ({"lstm": "forget_bias:high"}, "unknown init"),
        ({"transformer": "chrono"}, "unknown cell"),
    ],
)
def test_long_lag_init_refusals(init, message) -> None:
    with pytest.raises(ValueError, match=message):
        longlag.LongLagSettings(init=init)
