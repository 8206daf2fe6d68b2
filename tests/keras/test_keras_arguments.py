"""lstmkit.keras arguments Keras takes and the layers once refused or got wrong: regularizers and
``layer.losses``, ``unroll``/``implementation``, per-gate dropout masks, NumPy states, ``RNN(cell)``
and model configs in ``from_keras``, ``reset_state`` and dtype names. Checked against formulas,
NumPy references and statistics; against Keras itself where it is installed (skipped otherwise)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import lstmkit.keras.base as keras_base
from lstmkit.keras import GRU, LSTM, Bidirectional, SimpleRNN, from_keras

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras-internal

BATCH, STEPS, FEATURES, UNITS = 3, 5, 2, 4
KINDS = {
    "lstm": lambda **kw: LSTM(UNITS, input_size=FEATURES, **kw),
    "gru": lambda **kw: GRU(UNITS, input_size=FEATURES, **kw),
    "gru_reset_before": lambda **kw: GRU(UNITS, input_size=FEATURES, reset_after=False, **kw),
    "simple_rnn": lambda **kw: SimpleRNN(UNITS, input_size=FEATURES, **kw),
}


def keras_module():
    return pytest.importorskip("keras")


def randomized(layer):
    """The layer with N(0, 0.5) weights, biases too (so that no penalty or gate is trivially zero)."""
    rng = np.random.default_rng(1)
    layer.set_weights([0.5 * rng.standard_normal(w.shape).astype("float32") for w in layer.get_weights()])
    return layer


def copy_of(layer, **changes):
    """A layer of the same config (with ``changes``) and the same weights."""
    copy = type(layer)(**{**layer.get_config(), **changes})
    copy.set_weights(layer.get_weights())
    return copy


# -- 10: unroll, implementation, regularizers ----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_unroll_and_implementation_are_accepted_and_change_nothing(kind) -> None:
    layer = randomized(KINDS[kind](return_sequences=True))
    changes = {"unroll": True} | ({} if kind == "simple_rnn" else {"implementation": 1})
    other = copy_of(layer, **changes)
    assert {key: other.get_config()[key] for key in changes} == changes
    x = torch.randn(BATCH, STEPS, FEATURES)
    torch.testing.assert_close(other(x), layer(x), rtol=0, atol=0)
    with pytest.raises(TypeError, match="unroll must be True or False, got 'yes'"):
        KINDS[kind](unroll="yes")
    if kind == "simple_rnn":  # Keras' SimpleRNN refuses it too
        with pytest.raises(TypeError, match="implementation"):
            SimpleRNN(UNITS, implementation=1)
    else:
        for bad in (3, 0, True, "1"):
            with pytest.raises(ValueError, match="implementation must be 1 or 2"):
                KINDS[kind](implementation=bad)


@pytest.mark.parametrize("kind", KINDS)
def test_weight_penalties_follow_the_formulas_from_current_weights(kind) -> None:
    layer = randomized(
        KINDS[kind](
            kernel_regularizer="l2",
            recurrent_regularizer={"class_name": "L1", "config": {"l1": 0.3}},
            bias_regularizer={"l1": 0.1, "l2": 0.2},
        )
    )
    kernel, recurrent, bias = layer.get_weights()  # Keras layout, GRU reset-after bias (2, 3 * units)
    expected = [
        0.01 * np.sum(kernel**2),
        0.3 * np.sum(np.abs(recurrent)),
        0.1 * np.sum(np.abs(bias)) + 0.2 * np.sum(bias**2),
    ]
    losses = layer.losses
    assert all(loss.dim() == 0 for loss in losses)
    np.testing.assert_allclose([loss.item() for loss in losses], expected, rtol=1e-5)
    with torch.no_grad():  # recomputed from the weights as they are now
        layer.cell.weight_ih.mul_(2)
    assert layer.losses[0].item() == pytest.approx(4 * expected[0], rel=1e-5)


def test_weight_penalties_are_differentiable() -> None:
    layer = randomized(LSTM(UNITS, input_size=FEATURES, kernel_regularizer={"l2": 0.5}, recurrent_regularizer="l1"))
    sum(layer.losses).backward()
    cell = layer.cell
    torch.testing.assert_close(cell.weight_ih.grad, 2 * 0.5 * cell.weight_ih.detach())  # d(l2 w^2)/dw
    torch.testing.assert_close(cell.weight_hh.grad, 0.01 * cell.weight_hh.detach().sign())  # d(l1 |w|)/dw
    assert cell.bias_ih.grad is None


def test_activity_penalty_is_of_the_last_call_per_returned_tensor_over_the_batch() -> None:
    layer = randomized(
        LSTM(UNITS, input_size=FEATURES, return_sequences=True, return_state=True, activity_regularizer="l2")
    )
    assert layer.losses == []  # not called yet, and no weight regularizer
    x = torch.randn(BATCH, STEPS, FEATURES, requires_grad=True)
    outputs = layer(x)
    assert len(layer.losses) == 3  # sequence, h, c: Keras regularizes every returned tensor
    for loss, tensor in zip(layer.losses, outputs, strict=True):
        assert loss.item() == pytest.approx(0.01 * tensor.detach().square().sum().item() / BATCH, rel=1e-5)
    sum(layer.losses).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    _, _, c = layer(x[:1])  # the next call replaces them, divided by its batch size
    assert layer.losses[2].item() == pytest.approx(0.01 * c.detach().square().sum().item(), rel=1e-5)


@pytest.mark.parametrize(
    ("value", "l1", "l2"),
    [
        ("l1", 0.01, 0.0),
        ("l2", 0.0, 0.01),
        ("L1L2", 0.0, 0.0),  # Keras 3's class defaults
        ("l1_l2", 0.01, 0.01),  # as Keras documents the name (tf.keras' l1_l2)
        ({"class_name": "keras.regularizers.L1L2", "config": {"l1": 0.2, "l2": None}}, 0.2, 0.0),
        (SimpleNamespace(l2=0.3), 0.0, 0.3),  # a Keras regularizer object: its factors
    ],
)
def test_regularizer_forms(value, l1, l2) -> None:
    layer = randomized(SimpleRNN(UNITS, input_size=FEATURES, kernel_regularizer=value))
    kernel = layer.get_weights()[0]
    expected = l1 * np.sum(np.abs(kernel)) + l2 * np.sum(kernel**2)
    assert layer.losses[0].item() == pytest.approx(expected, rel=1e-5, abs=1e-12)
    assert layer.get_config()["kernel_regularizer"] is value


def test_callable_regularizer_and_bad_ones() -> None:
    layer = randomized(GRU(UNITS, input_size=FEATURES, recurrent_regularizer=lambda w: w.sum()))
    assert layer.losses[0].item() == pytest.approx(layer.get_weights()[1].sum(), rel=1e-5)
    with pytest.raises(ValueError, match=r"kernel_regularizer='orthogonal_regularizer' is not supported"):
        LSTM(UNITS, kernel_regularizer="orthogonal_regularizer")
    with pytest.raises(ValueError, match="l2 must be a non-negative finite number, got -1"):
        LSTM(UNITS, bias_regularizer={"class_name": "L2", "config": {"l2": -1}})
    with pytest.raises(ValueError, match="is not supported"):
        LSTM(UNITS, bias_regularizer={"l3": 1.0})


def test_bidirectional_losses_are_both_directions() -> None:
    bi = Bidirectional(LSTM(UNITS, input_size=FEATURES, kernel_regularizer="l2", activity_regularizer="l1"))
    bi(torch.randn(BATCH, STEPS, FEATURES))
    forward, backward = bi.forward_layer, bi.backward_layer
    expected = [*forward.losses[:1], *backward.losses[:1], *forward.losses[1:], *backward.losses[1:]]
    assert [loss.item() for loss in bi.losses] == [loss.item() for loss in expected]


def test_from_keras_carries_regularizers() -> None:
    weights = [np.ones((FEATURES, 3 * UNITS)), np.ones((UNITS, 3 * UNITS)), np.ones((2, 3 * UNITS))]
    config = {
        "units": UNITS,
        "reset_after": True,
        "kernel_regularizer": {"module": "keras.regularizers", "class_name": "L2", "config": {"l2": 0.5}},
        "bias_regularizer": {"class_name": "L1", "config": {"l1": 0.25}},
        "unroll": True,
        "implementation": 1,
    }
    gru = from_keras(config, weights)
    assert gru.unroll and gru.implementation == 1
    assert [loss.item() for loss in gru.losses] == [0.5 * FEATURES * 3 * UNITS, 0.25 * 2 * 3 * UNITS]


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn", "bidirectional"])
def test_losses_match_keras(kind) -> None:
    keras = keras_module()
    options = {
        "kernel_regularizer": keras.regularizers.L1L2(0.01, 0.02),
        "recurrent_regularizer": "l2",
        "bias_regularizer": keras.regularizers.L1(0.05),
        "activity_regularizer": "l2",
        "return_state": True,
        "return_sequences": True,
    }
    make = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "simple_rnn": keras.layers.SimpleRNN}
    layer = make.get(kind, keras.layers.LSTM)(UNITS, **options)
    if kind == "bidirectional":
        layer = keras.layers.Bidirectional(layer)
    x = np.random.default_rng(0).standard_normal((BATCH, STEPS, FEATURES)).astype("float32")
    layer(x)
    randomized(layer)
    ours = from_keras(keras.saving.serialize_keras_object(layer), layer.get_weights())
    layer(x)
    ours(torch.as_tensor(x))
    expected = [float(keras.ops.convert_to_numpy(loss)) for loss in layer.losses]
    assert len(expected) == len(ours.losses)
    np.testing.assert_allclose([loss.item() for loss in ours.losses], expected, rtol=1e-5)


# -- 11: Keras' per-gate dropout masks -----------------------------------------------------------


def distinct(values: torch.Tensor) -> int:
    return len(np.unique(np.round(values.detach().numpy().ravel(), 5)))


def _one_unit(kind: str, **options):
    make = {"lstm": LSTM, "gru": GRU, "gru_reset_before": GRU, "simple_rnn": SimpleRNN}
    extra = {"reset_after": False} if kind == "gru_reset_before" else {}
    return make[kind](1, input_size=FEATURES, **options, **extra)


def _keras_or_none():
    try:
        import keras
    except ImportError:  # pragma: no cover - Keras is optional
        return None
    return keras


def keras_distinct(keras, kind: str, layer, x: np.ndarray, **options) -> int:
    make = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "gru_reset_before": keras.layers.GRU}
    make["simple_rnn"] = keras.layers.SimpleRNN
    extra = {"reset_after": False} if kind == "gru_reset_before" else {}
    theirs = make[kind](layer.units, **options, **extra)
    theirs(x[:1])
    theirs.set_weights(layer.get_weights())
    return len(np.unique(np.round(keras.ops.convert_to_numpy(theirs(x, training=True)).ravel(), 5)))


@pytest.mark.parametrize(
    ("kind", "count"),
    [("lstm", 16), ("gru", 8), ("gru_reset_before", 6), ("simple_rnn", 2)],
)
def test_recurrent_dropout_draws_one_mask_per_gate(kind, count) -> None:
    # 4000 equal sequences through one unit: the outputs differ only by the masks drawn, 2**gates
    # combinations (one shared mask: 2). A reset-before GRU whose candidate's mask drops h has no
    # use for the reset gate's mask: 2 * 2 + 2 combinations.
    layer = randomized(_one_unit(kind, recurrent_dropout=0.5))
    x = np.ones((4000, 3, FEATURES), "float32")
    out = layer(torch.as_tensor(x), training=True).detach().numpy()
    _, frequencies = np.unique(np.round(out.ravel(), 5), return_counts=True)
    assert len(frequencies) == count
    assert frequencies.min() > 4000 / 2 ** (layer.gates + 1)  # each combination has probability >= 2**-gates
    if (keras := _keras_or_none()) is not None:
        assert keras_distinct(keras, kind, layer, x, recurrent_dropout=0.5) == count


@pytest.mark.parametrize(("kind", "recurrent_dropout", "count"), [("lstm", 0.5, 8), ("lstm", 0.0, 2), ("gru", 0.5, 8)])
def test_input_dropout_is_per_gate_with_recurrent_dropout(kind, recurrent_dropout, count) -> None:
    # one step from zero states: only the input masks matter, one per gate when recurrent_dropout puts
    # Keras in its implementation 1, else one shared (2 outcomes). LSTM: 2**3, as the forget gate has
    # no memory to scale at the first step; GRU: 2**3.
    layer = randomized(_one_unit(kind, dropout=0.5, recurrent_dropout=recurrent_dropout))
    x = np.ones((4000, 1, FEATURES), "float32")
    x[:, :, 1] = 0  # one feature: each gate's input is kept or dropped
    assert distinct(layer(torch.as_tensor(x), training=True)) == count
    if (keras := _keras_or_none()) is not None:
        options = {"dropout": 0.5, "recurrent_dropout": recurrent_dropout}
        assert keras_distinct(keras, kind, layer, x, **options) == count


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_reset_before"])
def test_evaluation_is_deterministic_and_dropout_free(kind) -> None:
    layer = randomized(KINDS[kind](dropout=0.3, recurrent_dropout=0.4, return_sequences=True))
    plain = copy_of(layer, dropout=0.0, recurrent_dropout=0.0)
    x = torch.randn(BATCH, STEPS, FEATURES)
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x), rtol=0, atol=0)
    torch.testing.assert_close(layer(x), plain(x), rtol=0, atol=0)
    layer.train()
    assert not torch.equal(layer(x, training=True), plain(x))
    torch.testing.assert_close(layer(x, training=False), plain(x), rtol=0, atol=0)


def numpy_keras_implementation_1(kind, weights, x, input_masks, recurrent_masks) -> np.ndarray:
    """Keras' implementation-1 cell equations in NumPy, masks given per gate in Keras' gate order
    (LSTM i, f, c, o; GRU z, r, h); returns the output sequence (B, T, units)."""
    kernel, recurrent, *bias = (w.astype(np.float64) for w in weights)
    units = recurrent.shape[0]
    gates = kernel.shape[1] // units
    block = [slice(k * units, (k + 1) * units) for k in range(gates)]
    input_bias, recurrent_bias = (bias[0][0], bias[0][1]) if bias[0].ndim == 2 else (bias[0], np.zeros_like(bias[0]))

    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    h, c, outputs = np.zeros((x.shape[0], units)), np.zeros((x.shape[0], units)), []
    for t in range(x.shape[1]):
        xs = [(x[:, t] * input_masks[k]) @ kernel[:, block[k]] + input_bias[block[k]] for k in range(gates)]
        hs = [h * recurrent_masks[k] for k in range(gates)]
        if kind == "lstm":
            i, f, g, o = (xs[k] + hs[k] @ recurrent[:, block[k]] for k in range(4))
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
        else:
            z = sigmoid(xs[0] + hs[0] @ recurrent[:, block[0]] + recurrent_bias[block[0]])
            r = sigmoid(xs[1] + hs[1] @ recurrent[:, block[1]] + recurrent_bias[block[1]])
            if kind == "gru":
                candidate = np.tanh(xs[2] + r * (hs[2] @ recurrent[:, block[2]] + recurrent_bias[block[2]]))
            else:
                candidate = np.tanh(xs[2] + (r * hs[2]) @ recurrent[:, block[2]])
            h = z * h + (1 - z) * candidate
        outputs.append(h)
    return np.stack(outputs, axis=1)


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_reset_before"])
def test_per_gate_masks_follow_keras_equations(kind, monkeypatch) -> None:
    layer = randomized(KINDS[kind](dropout=0.5, recurrent_dropout=0.5, return_sequences=True))
    gates = layer.gates
    rng = np.random.default_rng(2)
    input_masks = rng.integers(0, 2, (gates, BATCH, FEATURES)) * 2.0  # kept units scaled by 1 / (1 - 0.5)
    recurrent_masks = rng.integers(0, 2, (gates, BATCH, UNITS)) * 2.0
    drawn = {(gates, BATCH, FEATURES): input_masks, (gates, BATCH, UNITS): recurrent_masks}
    monkeypatch.setattr(
        keras_base, "dropout_mask", lambda like, rate: torch.as_tensor(drawn[tuple(like.shape)]).to(like)
    )
    x = np.random.default_rng(3).standard_normal((BATCH, STEPS, FEATURES))
    got = layer(torch.as_tensor(x, dtype=torch.float32), training=True).detach().numpy()
    order = [1, 0, 2] if kind.startswith("gru") else [0, 1, 2, 3]  # our block k is torch's gate k (GRU: r, z, n)
    expected = numpy_keras_implementation_1(kind, layer.get_weights(), x, input_masks[order], recurrent_masks[order])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_per_gate_dropout_trains() -> None:
    layer = LSTM(UNITS, input_size=FEATURES, dropout=0.2, recurrent_dropout=0.3, return_sequences=True)
    mask = torch.tensor([[1, 1, 1, 0, 0]] * BATCH, dtype=torch.bool)
    layer(torch.randn(BATCH, STEPS, FEATURES), mask=mask, training=True).square().sum().backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in layer.parameters()
    )


# -- 12: NumPy states, RNN(cell) and model configs, reset_state, dtype names -----------------------


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_numpy_inputs_and_initial_states_as_keras(kind) -> None:
    layer = randomized(KINDS[kind](return_sequences=True, return_state=True))
    count = len(layer.state_names)
    rng = np.random.default_rng(0)
    states = [rng.standard_normal((BATCH, UNITS)) for _ in range(count)]  # float64: cast, as Keras does
    x = rng.standard_normal((BATCH, STEPS, FEATURES))
    expected = layer(torch.as_tensor(x, dtype=torch.float32), [torch.as_tensor(s, dtype=torch.float32) for s in states])
    single = states[0] if count == 1 else states
    for given in (single, [s.tolist() for s in states], tuple(states)):
        for got, want in zip(layer(x, given), expected, strict=True):
            torch.testing.assert_close(got, want)


def test_initial_state_errors_name_the_problem() -> None:
    lstm = LSTM(UNITS, input_size=FEATURES)
    x = torch.randn(BATCH, STEPS, FEATURES)
    with pytest.raises(
        ValueError, match=r"expects 2 initial state tensor\(s\) \('h', 'c'\), got 1 .*one entry per state"
    ):
        lstm(x, np.zeros((BATCH, UNITS)))
    with pytest.raises(TypeError, match="initial_state must be a tensor, a NumPy array or a list of them"):
        lstm(x, 0.0)
    with pytest.raises(ValueError, match=r"initial state h of shape \(3, 4\) \(batch, units\), got \(4,\)"):
        GRU(UNITS, input_size=FEATURES)(x, [np.zeros(UNITS)])


def _cell_config(kind: str) -> dict:
    config = {"units": UNITS, "activation": "tanh", "use_bias": True, "dropout": 0.0, "recurrent_dropout": 0.0}
    extra = {"LSTMCell": {"unit_forget_bias": True}, "GRUCell": {"reset_after": False}, "SimpleRNNCell": {}}
    return {"module": "keras.layers", "class_name": kind, "config": config | extra[kind]}


@pytest.mark.parametrize(("cell", "layer"), [("LSTMCell", LSTM), ("GRUCell", GRU), ("SimpleRNNCell", SimpleRNN)])
def test_from_keras_converts_rnn_over_a_cell(cell, layer) -> None:
    equivalent = randomized(layer(UNITS, input_size=FEATURES, **({"reset_after": False} if cell == "GRUCell" else {})))
    config = {"return_sequences": True, "go_backwards": True, "unroll": False, "cell": _cell_config(cell)}
    ours = from_keras({"class_name": "RNN", "config": config}, equivalent.get_weights())
    assert type(ours) is layer and ours.return_sequences and ours.go_backwards
    assert from_keras(config, equivalent.get_weights()).get_config() == ours.get_config()  # inferred from "cell"
    x = torch.randn(BATCH, STEPS, FEATURES)
    torch.testing.assert_close(ours(x), copy_of(equivalent, return_sequences=True, go_backwards=True)(x))


def test_from_keras_rnn_matches_keras() -> None:
    keras = keras_module()
    for cell in (keras.layers.LSTMCell(UNITS), keras.layers.GRUCell(UNITS, reset_after=True)):
        layer = keras.layers.RNN(cell, return_sequences=True, return_state=True)
        x = np.random.default_rng(0).standard_normal((BATCH, STEPS, FEATURES)).astype("float32")
        layer(x)
        randomized(layer)
        ours = from_keras(keras.saving.serialize_keras_object(layer), layer.get_weights())
        for got, want in zip(ours(torch.as_tensor(x)), layer(x), strict=True):
            np.testing.assert_allclose(got.detach().numpy(), keras.ops.convert_to_numpy(want), rtol=1e-5, atol=1e-5)


def test_from_keras_names_the_real_problem() -> None:
    weights = [np.zeros((FEATURES, 4 * UNITS)), np.zeros((UNITS, 4 * UNITS)), np.zeros(4 * UNITS)]
    layers = [{"class_name": "InputLayer", "config": {}}, {"class_name": "LSTM", "config": {"units": UNITS}}]
    message = r"single recurrent layer's config, got a Sequential model's with 2 layers \(InputLayer, LSTM\)"
    with pytest.raises(ValueError, match=message):
        from_keras({"class_name": "Sequential", "config": {"name": "s", "layers": layers}}, weights)
    with pytest.raises(ValueError, match=message):  # a bare Sequential get_config()
        from_keras({"name": "s", "layers": layers, "build_input_shape": None}, weights)
    with pytest.raises(ValueError, match="Functional model's with 2 layers"):
        from_keras({"name": "f", "layers": layers, "input_layers": [], "output_layers": []}, weights)
    stacked = {"class_name": "StackedRNNCells", "config": {"cells": [_cell_config("LSTMCell")] * 2}}
    with pytest.raises(ValueError, match=r"stack of 2 cells \(StackedRNNCells\)"):
        from_keras({"class_name": "RNN", "config": {"cell": stacked}}, weights)
    with pytest.raises(ValueError, match="LSTMCell config is one time step, not a layer"):
        from_keras(_cell_config("LSTMCell"), weights)
    with pytest.raises(ValueError, match="unsupported cell 'ConvLSTMCell'"):
        from_keras({"cell": {"class_name": "ConvLSTMCell", "config": {}}}, weights)


def test_reset_state_zeroes_carried_states() -> None:
    for layer in (
        randomized(LSTM(UNITS, input_size=FEATURES, stateful=True)),
        Bidirectional(GRU(UNITS, stateful=True)),
    ):
        x = torch.randn(BATCH, STEPS, FEATURES)
        first = layer(x)
        assert not torch.equal(layer(x), first)  # carried on
        layer.reset_state()
        torch.testing.assert_close(layer(x), first, rtol=0, atol=0)
    with pytest.raises(AttributeError, match="stateful"):
        Bidirectional(LSTM(UNITS)).reset_state()


def test_dtype_names_work_at_build_time() -> None:
    lstm = LSTM(UNITS, dtype="float64")
    x = torch.randn(BATCH, STEPS, FEATURES, dtype=torch.float64)
    assert lstm(x).dtype == torch.float64 and lstm.cell.weight_ih.dtype == torch.float64
    bi = Bidirectional(GRU(UNITS, dtype="float64", return_sequences=True))
    assert bi(x).dtype == torch.float64
    assert SimpleRNN(UNITS, input_size=FEATURES, dtype="torch.float16").cell.weight_ih.dtype == torch.float16
    assert LSTM(UNITS, dtype="float32")(x.numpy()).dtype == torch.float32  # NumPy inputs take the layer's dtype
    for bad in ("int32", "mixed_float16", torch.int64):
        with pytest.raises(ValueError, match="dtype must be a floating torch.dtype or its name"):
            LSTM(UNITS, dtype=bad)
