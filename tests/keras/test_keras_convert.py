"""lstmkit.keras weights both ways, initializers, dropout, errors and gradients."""

import math

import numpy as np
import pytest
import torch

import lstmkit
from lstmkit.keras import GRU, LSTM, Bidirectional, SimpleRNN, from_keras, initialize, to_keras_weights

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

BATCH, STEPS, FEATURES, UNITS = 3, 5, 3, 4
HOLES = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)


def keras_out(layer, x: torch.Tensor, **kwargs) -> np.ndarray:
    return keras.ops.convert_to_numpy(layer(x, **kwargs))


# -- ours -> Keras ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "keras_layer"),
    [
        (lambda: LSTM(UNITS, return_sequences=True, bias_initializer="random_normal"), keras.layers.LSTM),
        (lambda: GRU(UNITS, return_sequences=True, bias_initializer=0.3), keras.layers.GRU),
        (lambda: GRU(UNITS, reset_after=False, bias_initializer=-0.2), keras.layers.GRU),
        (lambda: SimpleRNN(UNITS, go_backwards=True, activation="relu"), keras.layers.SimpleRNN),
    ],
)
def test_round_trip_to_keras_set_weights(ours, keras_layer) -> None:
    module = ours()
    x = torch.randn(BATCH, STEPS, FEATURES)
    expected = module(x, mask=HOLES, training=False).detach().numpy()
    skip = ("input_size", "zero_output_for_mask", "bias_initializer")  # Keras takes no number initializer
    config = {k: v for k, v in module.get_config().items() if k not in skip}
    layer = keras_layer(**config)
    layer(x)
    layer.set_weights(to_keras_weights(module))
    np.testing.assert_allclose(keras_out(layer, x, mask=HOLES), expected, rtol=1e-5, atol=1e-5)
    # and back again: from_keras(get_config, get_weights) gives the same module
    again = from_keras(layer.get_config(), layer.get_weights(), class_name=type(layer).__name__)
    torch.testing.assert_close(again(x, mask=HOLES), module(x, mask=HOLES), rtol=0, atol=0)


def test_round_trip_bidirectional() -> None:
    module = Bidirectional(GRU(UNITS, return_sequences=True, bias_initializer="random_uniform"), merge_mode="mul")
    x = torch.randn(BATCH, STEPS, FEATURES)
    expected = module(x, mask=HOLES).detach().numpy()
    layer = keras.layers.Bidirectional(keras.layers.GRU(UNITS, return_sequences=True), merge_mode="mul")
    layer(x)
    layer.set_weights(to_keras_weights(module))
    np.testing.assert_allclose(keras_out(layer, x, mask=HOLES), expected, rtol=1e-5, atol=1e-5)


def _randomize_biases(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "bias" in name:
                parameter.normal_()


@pytest.mark.parametrize(
    ("core", "keras_layer"),
    [
        (
            lambda: lstmkit.LSTM(FEATURES, UNITS, batch_first=True),
            lambda: keras.layers.LSTM(UNITS, return_sequences=True),
        ),
        (
            lambda: lstmkit.GRU(FEATURES, UNITS, batch_first=True),
            lambda: keras.layers.GRU(UNITS, return_sequences=True),
        ),
        (
            lambda: lstmkit.GRU(FEATURES, UNITS, batch_first=True, reset_after=False),
            lambda: keras.layers.GRU(UNITS, return_sequences=True, reset_after=False),
        ),
        (
            lambda: lstmkit.RNN(FEATURES, UNITS, nonlinearity="relu", batch_first=True),
            lambda: keras.layers.SimpleRNN(UNITS, activation="relu", return_sequences=True),
        ),
        (
            lambda: lstmkit.LSTM(FEATURES, UNITS, batch_first=True, bidirectional=True),
            lambda: keras.layers.Bidirectional(keras.layers.LSTM(UNITS, return_sequences=True)),
        ),
    ],
)
def test_core_layers_to_keras(core, keras_layer) -> None:
    module = core()
    _randomize_biases(module)  # both torch biases non-zero: the folding must be exact
    x = torch.randn(BATCH, STEPS, FEATURES)
    layer = keras_layer()
    layer(x)
    layer.set_weights(to_keras_weights(module))
    expected = module(x)[0].detach().numpy()
    np.testing.assert_allclose(keras_out(layer, x), expected, rtol=1e-5, atol=1e-5)


def test_cells_and_unsupported_modules() -> None:
    assert [w.shape for w in to_keras_weights(lstmkit.LSTMCell(3, 2, bias=False))] == [(3, 8), (2, 8)]
    with pytest.raises(ValueError, match="num_layers=2"):
        to_keras_weights(lstmkit.LSTM(3, 4, num_layers=2))
    with pytest.raises(TypeError, match="proj_size"):
        to_keras_weights(lstmkit.LSTM(3, 4, proj_size=2))
    with pytest.raises(TypeError, match="PeepholeLSTMCell"):
        to_keras_weights(lstmkit.PeepholeLSTMCell(3, 4))
    with pytest.raises(TypeError, match="Linear"):
        to_keras_weights(torch.nn.Linear(3, 4))
    with pytest.raises(ValueError, match="not built"):
        to_keras_weights(LSTM(4))


# -- initializers ----------------------------------------------------------------------------------


def test_default_initialization_has_keras_statistics() -> None:
    lstm = LSTM(64, input_size=32)
    kernel, recurrent, bias = (torch.as_tensor(w) for w in lstm.get_weights())
    limit = math.sqrt(6 / (32 + 4 * 64))  # glorot_uniform on the Keras kernel (I, 4H): Keras' fans
    assert kernel.abs().max() <= limit and kernel.abs().max() > 0.95 * limit
    assert abs(kernel.var().item() - limit**2 / 3) < 0.1 * limit**2 / 3
    torch.testing.assert_close(recurrent @ recurrent.T, torch.eye(64), atol=1e-5, rtol=0)  # orthonormal rows
    assert bias[64:128].eq(1).all() and bias[:64].eq(0).all() and bias[128:].eq(0).all()
    assert GRU(5, input_size=2).get_weights()[2].shape == (2, 15)


def test_named_constant_and_callable_initializers() -> None:
    kernel = initialize("he_normal", (400, 300))
    assert abs(kernel.std().item() - math.sqrt(2 / 400)) < 0.05 * math.sqrt(2 / 400)  # truncation-corrected
    assert initialize("lecun_uniform", (100, 50)).abs().max() <= math.sqrt(3 / 100)
    square = initialize("orthogonal", (6, 6))
    torch.testing.assert_close(square.T @ square, torch.eye(6), atol=1e-5, rtol=0)
    rnn = SimpleRNN(3, input_size=2, kernel_initializer=0.5, recurrent_initializer=torch.nn.init.eye_)
    kernel, recurrent, _ = rnn.get_weights()
    assert (kernel == 0.5).all() and (recurrent == np.eye(3)).all()
    with pytest.raises(ValueError, match="kernel_initializer='glorot'.*glorot_uniform"):
        LSTM(3, kernel_initializer="glorot")


# -- layer behaviour -------------------------------------------------------------------------------


def _linear_rnn(**options) -> SimpleRNN:
    """A linear SimpleRNN of 6 units over 6 features returning sequences, kernel = I, no bias."""
    return SimpleRNN(
        6,
        activation="linear",
        use_bias=False,
        return_sequences=True,
        kernel_initializer=torch.nn.init.eye_,
        input_size=6,
        **options,
    )


def test_dropout_masks_are_per_sequence_and_training_only() -> None:
    # kernel = I, recurrent = 0, linear: the outputs are the dropped inputs themselves
    rnn = _linear_rnn(dropout=0.5, recurrent_initializer="zeros")
    x = torch.rand(4, 7, 6) + 1
    out = rnn(x)
    kept = out[:, :1] != 0
    assert (kept == (out != 0)).all()  # the same features dropped at every step
    torch.testing.assert_close(out, torch.where(kept, 2 * x, torch.zeros_like(x)))
    torch.testing.assert_close(rnn(x, training=False), x)
    rnn.eval()
    torch.testing.assert_close(rnn(x), x)

    # recurrent dropout: kernel = I, recurrent = I, input only at t=0: h_t = m^t * x_0 with one mask m
    rnn = _linear_rnn(recurrent_dropout=0.5, recurrent_initializer=torch.nn.init.eye_)
    x = torch.zeros(4, 4, 6)
    x[:, 0] = 1
    out = rnn(x)
    torch.testing.assert_close(out[:, 2], out[:, 1] * out[:, 1])  # (m x0)(m x0) = m^2 x0 as x0 = 1
    torch.testing.assert_close(rnn(x, training=False), torch.ones(4, 4, 6))


def test_lazy_build_and_parameters() -> None:
    gru = GRU(UNITS, reset_after=False)
    assert not gru.built and list(gru.parameters()) == [] and gru.get_weights() == []
    gru(torch.randn(2, 3, 5, dtype=torch.float64))
    assert gru.input_size == 5 and gru.cell.weight_ih.dtype == torch.float64
    # one bias per gate, as Keras: torch's redundant recurrent bias is not a parameter
    assert sorted(name for name, _ in gru.named_parameters()) == ["cell.bias_ih", "cell.weight_hh", "cell.weight_ih"]
    assert len(list(GRU(UNITS, input_size=2).parameters())) == 4  # reset-after keeps both biases


def test_stateful_batch_size_is_fixed() -> None:
    lstm = LSTM(UNITS, stateful=True, input_size=FEATURES)
    lstm(torch.randn(2, 3, FEATURES))
    with pytest.raises(ValueError, match="batch size 2.*batch size 5"):
        lstm(torch.randn(5, 3, FEATURES))
    with pytest.raises(AttributeError, match="stateful"):
        Bidirectional(LSTM(UNITS)).reset_states()


def test_gradcheck_with_mask() -> None:
    lstm = LSTM(
        3, return_sequences=True, return_state=True, input_size=2, dtype=torch.float64, bias_initializer="random_normal"
    )
    names = [name for name, _ in lstm.named_parameters()]
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0]], dtype=torch.bool)

    def run(x, *parameters):
        return torch.func.functional_call(lstm, dict(zip(names, parameters, strict=True)), (x,), {"mask": mask})

    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    parameters = [p.detach().clone().requires_grad_() for p in lstm.parameters()]
    assert torch.autograd.gradcheck(run, (x, *parameters))


# -- bad input -------------------------------------------------------------------------------------


def test_from_keras_rejects_wrong_weights_with_shapes() -> None:
    config = {"units": 4, "unit_forget_bias": True}
    good = [np.zeros((3, 16), "float32"), np.zeros((4, 16), "float32"), np.zeros(16, "float32")]
    with pytest.raises(ValueError, match=r"(?s)recurrent_kernel: expected \(4, 16\), got \(4, 12\)"):
        from_keras(config, [good[0], np.zeros((4, 12), "float32"), good[2]])
    with pytest.raises(ValueError, match=r"(?s)expects 3 weights.*got 2.*bias: expected \(16,\), got nothing"):
        from_keras(config, good[:2])
    with pytest.raises(ValueError, match=r"(?s)bias: expected \(2, 12\), got \(12,\)"):
        from_keras({"units": 4, "reset_after": True}, [np.zeros((3, 12)), np.zeros((4, 12)), np.zeros(12)])
    bidirectional = {
        "class_name": "Bidirectional",
        "config": {"merge_mode": "concat", "layer": {"class_name": "SimpleRNN", "config": {"units": 4}}},
    }
    with pytest.raises(ValueError, match=r"(?s)expects 6 weights.*got 3.*backward_kernel: expected \(3, 4\)"):
        from_keras(bidirectional, [np.zeros((3, 4)), np.zeros((4, 4)), np.zeros(4)])


def test_from_keras_rejects_bad_configs() -> None:
    weights = [np.zeros((3, 4)), np.zeros((4, 4)), np.zeros(4)]
    with pytest.raises(ValueError, match=r"unsupported Keras layer 'ConvLSTM1D'.*'LSTM'"):
        from_keras({"units": 4}, weights, class_name="ConvLSTM1D")
    with pytest.raises(ValueError, match="unsupported Keras activation 'softmax_2'"):
        from_keras({"units": 4, "activation": "softmax_2"}, weights)
    bidirectional = {"merge_mode": "max", "layer": {"class_name": "SimpleRNN", "config": {"units": 4}}}
    with pytest.raises(ValueError, match=r"unknown merge_mode 'max'.*'concat', 'sum', 'mul', 'ave', None"):
        from_keras(bidirectional, weights + weights)
    with pytest.warns(UserWarning, match="kernel_constraint, kernel_regularizer"):  # no lstmkit equivalent
        from_keras(
            {"units": 4, "kernel_regularizer": {"class_name": "OrthogonalRegularizer"}, "kernel_constraint": {}},
            weights,
        )


def test_bad_calls_name_expected_and_got() -> None:
    lstm = LSTM(UNITS, input_size=FEATURES)
    with pytest.raises(ValueError, match=r"rank 3 \(batch, timesteps, features\), got rank 2 with shape \(5, 3\)"):
        lstm(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"expects inputs \(batch, timesteps, 3\), got 7 features"):
        lstm(torch.randn(2, 5, 7))
    with pytest.raises(TypeError, match="must be a torch.Tensor, got list"):  # NumPy arrays are taken, as Keras
        lstm(np.zeros((2, 5, 3), "float32").tolist())
    with pytest.raises(TypeError, match="dtype torch.float64 but the parameters are torch.float32"):
        lstm(torch.randn(2, 5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expected mask of shape \(2, 5\).*got \(2, 4\)"):
        lstm(torch.randn(2, 5, 3), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expects 2 initial state tensor\(s\) \('h', 'c'\), got 1"):
        lstm(torch.randn(2, 5, 3), initial_state=[torch.zeros(2, UNITS)])
    with pytest.raises(ValueError, match=r"initial state c of shape \(2, 4\) \(batch, units\), got \(3, 4\)"):
        lstm(torch.randn(2, 5, 3), initial_state=[torch.zeros(2, UNITS), torch.zeros(3, UNITS)])
    with pytest.raises(ValueError, match="expects 4 initial states.*got 2"):
        Bidirectional(lstm)(torch.randn(2, 5, 3), initial_state=[torch.zeros(2, UNITS)] * 2)
    with pytest.raises(ValueError, match=r"unknown merge_mode 'max'.*'concat', 'sum', 'mul', 'ave', None"):
        Bidirectional(lstm, merge_mode="max")
    with pytest.raises(ValueError, match="different go_backwards"):
        Bidirectional(lstm, backward_layer=LSTM(UNITS))
    with pytest.raises(ValueError, match="unsupported activation 'swish2'"):
        GRU(UNITS, recurrent_activation="swish2")
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\), got 1.5"):
        SimpleRNN(UNITS, dropout=1.5)
