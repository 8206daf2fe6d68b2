"""The seed examples against independent oracles: real Keras for the LSTM outputs, learning for hihello."""

import numpy as np
import pytest
import torch

from lstmkit import seeds


def test_lstm_outputs_match_keras() -> None:
    keras = pytest.importorskip("keras")
    x = np.array([seeds.SEED_INPUT], dtype="float32")
    options = seeds.lstm_arguments(keras.initializers.Constant(0.1))
    sequence, h, c = (np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.layers.LSTM(3, **options)(x))
    bi = keras.layers.Bidirectional(keras.layers.LSTM(3, **options))
    expected_bi = [np.asarray(keras.ops.convert_to_numpy(t)) for t in bi(x)]
    ours = seeds.lstm_outputs()
    for name, expected in zip(("sequence", "h", "c"), (sequence, h, c), strict=True):
        np.testing.assert_allclose(ours[name].numpy(), expected, atol=1e-6, err_msg=name)
    for name, expected in zip(("bi_sequence", "fwd_h", "fwd_c", "bwd_h", "bwd_c"), expected_bi, strict=True):
        np.testing.assert_allclose(ours[name].numpy(), expected, atol=1e-6, err_msg=name)


def numpy_lstm(x: np.ndarray, units: int, constant: float, forget_bias: float) -> tuple[np.ndarray, ...]:
    """The LSTM equations in NumPy (float64), Keras' gate order i, f, c, o: kernels filled with
    ``constant``, biases 0 except the forget gate's ``forget_bias``; returns (sequence, h, c)."""
    kernel = np.full((x.shape[-1], 4 * units), constant)
    recurrent = np.full((units, 4 * units), constant)
    bias = np.zeros(4 * units)
    bias[units : 2 * units] = forget_bias

    def sigmoid(z: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-z))

    h, c, sequence = np.zeros(units), np.zeros(units), []
    for x_t in x:
        i, f, g, o = np.split(x_t @ kernel + h @ recurrent + bias, 4)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        sequence.append(h)
    return np.stack(sequence), h, c


@pytest.mark.parametrize("unit_forget_bias", [True, False])
def test_lstm_outputs_follow_the_lstm_equations(unit_forget_bias: bool) -> None:
    # Keras' default unit_forget_bias=True starts the forget-gate bias at 1 (the seed's code as written)
    x = np.array(seeds.SEED_INPUT, dtype=np.float64)
    ours = seeds.lstm_outputs(unit_forget_bias=unit_forget_bias)
    sequence, h, c = numpy_lstm(x, 3, 0.1, forget_bias=1.0 if unit_forget_bias else 0.0)
    np.testing.assert_allclose(ours["sequence"][0].numpy(), sequence, rtol=1e-6)
    np.testing.assert_allclose(ours["h"][0].numpy(), h, rtol=1e-6)
    np.testing.assert_allclose(ours["c"][0].numpy(), c, rtol=1e-6)
    backward, bwd_h, bwd_c = numpy_lstm(x[::-1], 3, 0.1, forget_bias=1.0 if unit_forget_bias else 0.0)
    np.testing.assert_allclose(ours["bwd_h"][0].numpy(), bwd_h, rtol=1e-6)
    np.testing.assert_allclose(ours["bi_sequence"][0, :, 3:].numpy(), backward[::-1], rtol=1e-6)


def test_lstm_outputs_default_is_the_seeds_code_as_keras_runs_it() -> None:
    # h and c of keras.layers.LSTM(3) with Constant(0.1) kernels and Keras defaults, from real Keras 3 (issue 16)
    out = seeds.lstm_outputs()
    np.testing.assert_allclose(out["h"][0].numpy(), [0.6303139] * 3, rtol=1e-6)
    np.testing.assert_allclose(out["c"][0].numpy(), [1.5707086] * 3, rtol=1e-6)
    assert "unit_forget_bias" not in seeds.lstm_arguments(0.1)  # Keras' default, as the seed leaves it


def test_lstm_outputs_example_labels_the_unit_forget_bias_aside() -> None:
    from io import StringIO

    from rich.console import Console

    buffer = StringIO()
    seeds.print_lstm_outputs(Console(file=buffer, width=200))
    text = buffer.getvalue()
    seed_part, aside = text.split("Aside, not the seed's code: unit_forget_bias=False")
    h = seeds.lstm_outputs()["h"][0, 0].item()
    h_aside = seeds.lstm_outputs(unit_forget_bias=False)["h"][0, 0].item()
    assert f"{h:.6f}" in seed_part and f"{h_aside:.6f}" not in seed_part
    assert f"{h_aside:.6f}" in aside
    assert "[forward h_t | backward h_t]" in seed_part  # printed, not taken for rich markup


def test_lstm_outputs_state_relations() -> None:
    out = seeds.lstm_outputs()
    torch.testing.assert_close(out["h"], out["sequence"][:, -1])
    torch.testing.assert_close(out["fwd_h"], out["bi_sequence"][:, -1, :3])
    torch.testing.assert_close(out["bwd_h"], out["bi_sequence"][:, 0, 3:])


def test_hihello_softmax_learns_the_word() -> None:
    run = seeds.hihello("softmax", epochs=50)
    assert run.predictions[-1] == "ihello"
    assert run.losses[-1] < 0.1 * run.losses[0]


def test_keras_categorical_crossentropy_matches_keras() -> None:
    keras = pytest.importorskip("keras")
    probabilities = torch.rand(4, 6, 5)
    target = torch.nn.functional.one_hot(torch.randint(0, 5, (4, 6)), 5).float()
    expected = keras.losses.categorical_crossentropy(target.numpy(), probabilities.numpy())
    expected = float(np.mean(keras.ops.convert_to_numpy(expected)))
    assert seeds.keras_categorical_crossentropy(probabilities, target).item() == pytest.approx(expected, rel=1e-5)


def test_relu_output_layer_does_worse_than_softmax() -> None:
    softmax = seeds.hihello("softmax", epochs=50)
    relu = seeds.hihello("relu", epochs=50)
    relu_final = relu.losses[-1]
    assert relu.predictions[-1] != "ihello" or not np.isfinite(relu_final) or relu_final > softmax.losses[-1]
