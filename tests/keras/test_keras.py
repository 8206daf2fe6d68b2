"""lstmkit.keras layers against real Keras 3 (torch backend): same weights, same outputs and states."""

import numpy as np
import pytest
import torch

from lstmkit.keras import GRU, LSTM, Bidirectional, SimpleRNN, from_keras

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras-internal

BATCH, STEPS, FEATURES, UNITS = 3, 5, 3, 4
MASKS = {
    "none": None,
    "right_padding": np.arange(STEPS)[None, :] < np.array([[5], [3], [1]]),
    "holes": np.array([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1], [0, 0, 0, 0, 0]], dtype=bool),  # row 2 fully masked
}
KINDS = {
    "lstm": lambda **kw: keras.layers.LSTM(UNITS, **kw),
    "gru": lambda **kw: keras.layers.GRU(UNITS, **kw),
    "gru_reset_before": lambda **kw: keras.layers.GRU(UNITS, reset_after=False, **kw),
    "simple_rnn": lambda **kw: keras.layers.SimpleRNN(UNITS, **kw),
}


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((BATCH, STEPS, FEATURES)).astype("float32")


def randomize(layer, x: np.ndarray, seed: int = 1, **call) -> None:
    """Build the Keras layer on x, then give it random weights (biases too, so none is trivially zero)."""
    layer(x, **call)
    rng = np.random.default_rng(seed)
    layer.set_weights([0.5 * rng.standard_normal(w.shape).astype("float32") for w in layer.get_weights()])


def keras_call(layer, x: np.ndarray, mask=None, **kwargs) -> list[np.ndarray]:
    if mask is not None:
        kwargs["mask"] = torch.as_tensor(mask)
    out = layer(x, **kwargs)
    return [keras.ops.convert_to_numpy(o) for o in (out if isinstance(out, list | tuple) else [out])]


def ours_call(module, x: np.ndarray, mask=None, **kwargs) -> list[np.ndarray]:
    mask = None if mask is None else torch.as_tensor(mask)
    with torch.no_grad():
        out = module(torch.as_tensor(x), mask=mask, training=False, **kwargs)
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def convert(layer):
    """Our module from the Keras layer, via its serialized config and weights."""
    return from_keras(keras.saving.serialize_keras_object(layer), layer.get_weights())


def assert_same(expected: list[np.ndarray], got: list[np.ndarray]) -> None:
    assert len(expected) == len(got)
    for e, g in zip(expected, got, strict=True):
        assert e.shape == g.shape
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("return_state", [False, True])
def test_layer_matches_keras(kind, go_backwards, return_sequences, return_state, x) -> None:
    layer = KINDS[kind](return_sequences=return_sequences, return_state=return_state, go_backwards=go_backwards)
    randomize(layer, x)
    ours = convert(layer)
    assert type(ours).__name__ == {"gru_reset_before": "GRU", "simple_rnn": "SimpleRNN"}.get(kind, kind.upper())
    for mask in MASKS.values():
        assert_same(keras_call(layer, x, mask), ours_call(ours, x, mask))


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("lstm", {"activation": "relu", "recurrent_activation": "hard_sigmoid"}),
        ("lstm", {"activation": "linear", "use_bias": False}),
        ("gru", {"activation": "relu", "recurrent_activation": "hard_sigmoid", "use_bias": False}),
        ("gru_reset_before", {"activation": "linear", "recurrent_activation": "hard_sigmoid"}),
        ("gru_reset_before", {"use_bias": False}),
        ("simple_rnn", {"activation": "relu"}),
        ("simple_rnn", {"activation": "linear", "use_bias": False}),
    ],
)
def test_activations_and_no_bias_match_keras(kind, options, x) -> None:
    layer = KINDS[kind](return_sequences=True, return_state=True, **options)
    randomize(layer, x)
    for mask in (None, MASKS["holes"]):
        assert_same(keras_call(layer, x, mask), ours_call(convert(layer), x, mask))


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_initial_state_matches_keras(kind, x) -> None:
    layer = KINDS[kind](return_sequences=True, return_state=True)
    randomize(layer, x)
    count = 2 if kind == "lstm" else 1
    states = [np.random.default_rng(i).standard_normal((BATCH, UNITS)).astype("float32") for i in range(count)]
    expected = keras_call(layer, x, MASKS["right_padding"], initial_state=[torch.as_tensor(s) for s in states])
    got = ours_call(convert(layer), x, MASKS["right_padding"], initial_state=[torch.as_tensor(s) for s in states])
    assert_same(expected, got)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_stateful_two_calls_and_reset_match_keras(kind, x) -> None:
    layer = KINDS[kind](stateful=True, return_sequences=True)
    randomize(layer, x)
    layer.reset_states()  # randomize's build call advanced the Keras states
    ours = convert(layer)
    second = x[:, ::-1].copy()
    for inputs in (x, second):  # the second call starts from the first call's final state
        assert_same(keras_call(layer, inputs), ours_call(ours, inputs))
    layer.reset_states()
    ours.reset_states()
    assert_same(keras_call(layer, second), ours_call(ours, second))


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_matches_keras(kind, merge_mode, return_sequences, x) -> None:
    layer = keras.layers.Bidirectional(KINDS[kind](return_sequences=return_sequences), merge_mode=merge_mode)
    randomize(layer, x)
    ours = convert(layer)
    assert isinstance(ours, Bidirectional)
    for mask in MASKS.values():
        assert_same(keras_call(layer, x, mask), ours_call(ours, x, mask))


@pytest.mark.parametrize("kind", ["lstm", "gru_reset_before"])
@pytest.mark.parametrize("merge_mode", ["concat", None])
def test_bidirectional_return_state_and_initial_state_match_keras(kind, merge_mode, x) -> None:
    layer = keras.layers.Bidirectional(KINDS[kind](return_sequences=True, return_state=True), merge_mode=merge_mode)
    randomize(layer, x)
    ours = convert(layer)
    for mask in (None, MASKS["holes"]):
        assert_same(keras_call(layer, x, mask), ours_call(ours, x, mask))
    count = 4 if kind == "lstm" else 2  # forward states, then backward states
    states = [torch.randn(BATCH, UNITS) for _ in range(count)]
    expected = keras_call(layer, x, MASKS["right_padding"], initial_state=states)
    assert_same(expected, ours_call(ours, x, MASKS["right_padding"], initial_state=states))


def test_bidirectional_with_own_backward_layer_matches_keras(x) -> None:
    forward = keras.layers.LSTM(UNITS, return_sequences=True)
    backward = keras.layers.LSTM(UNITS, activation="relu", return_sequences=True, go_backwards=True)
    layer = keras.layers.Bidirectional(forward, backward_layer=backward, merge_mode="ave")
    randomize(layer, x)
    ours = convert(layer)
    assert ours.backward_layer.activation == "relu" and ours.forward_layer.activation == "tanh"
    assert_same(keras_call(layer, x, MASKS["holes"]), ours_call(ours, x, MASKS["holes"]))


def test_unit_forget_bias_init_matches_keras(x) -> None:
    layer = keras.layers.LSTM(UNITS)
    layer(x)
    keras_bias = layer.get_weights()[2]
    ours = LSTM(UNITS, input_size=FEATURES)
    np.testing.assert_array_equal(ours.get_weights()[2], keras_bias)
    assert keras_bias[UNITS : 2 * UNITS].tolist() == [1.0] * UNITS


@pytest.mark.parametrize(
    "name",
    [
        "relu",
        "hard_sigmoid",
        "linear",
        "elu",
        "selu",
        "softplus",
        "softsign",
        "gelu",
        "silu",
        "relu6",
        "exponential",
        "hard_silu",
        "leaky_relu",
        "mish",
        "log_sigmoid",
    ],
)
def test_activation_names_mean_what_keras_means(name) -> None:
    from lstmkit.keras import KERAS_ACTIVATIONS

    values = torch.linspace(-5, 5, 101)
    expected = keras.ops.convert_to_numpy(keras.activations.get(name)(values))
    np.testing.assert_allclose(KERAS_ACTIVATIONS[name](values).numpy(), expected, rtol=1e-6, atol=1e-6)


def test_layer_signatures_take_keras_arguments() -> None:
    # every argument lstmkit.keras names is accepted by the Keras layer of the same name, with the same default
    import inspect

    for ours, theirs in ((LSTM, keras.layers.LSTM), (GRU, keras.layers.GRU), (SimpleRNN, keras.layers.SimpleRNN)):
        keras_params = inspect.signature(theirs).parameters
        for name, param in inspect.signature(ours).parameters.items():
            if name in keras_params:
                assert keras_params[name].default == param.default or name == "units", (ours, name)
            elif name == "implementation":  # Keras' LSTM and GRU take it from **kwargs, default 2
                assert param.default == 2 and theirs(2, implementation=1).cell.implementation == 1
            else:
                assert name in ("zero_output_for_mask", "input_size", "device", "dtype", "reset_after"), name
