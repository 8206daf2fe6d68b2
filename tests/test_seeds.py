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
