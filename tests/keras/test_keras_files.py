"""Keras 3 model files: models built and saved by real Keras (torch backend) load into torch modules
that give Keras' outputs to 1e-5, and lstmkit weights written as Keras weight files give Keras the
same outputs; broken files fail with errors that name the problem."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from lstmkit import keras as lk
from lstmkit.cli import app
from lstmkit.keras import (
    Dense,
    Embedding,
    KerasFileError,
    KerasModel,
    Sequential,
    TimeDistributed,
    load_keras_file,
    load_keras_weights,
    model_from_config,
    save_keras_file,
    save_keras_weights,
)
from lstmkit.seeds import HIHELLO, HiHelloModel

keras = pytest.importorskip("keras")
pytest.importorskip("h5py")
if keras.backend.backend() != "torch":  # pragma: no cover - conftest sets KERAS_BACKEND=torch
    pytest.skip("these tests compare with Keras on its torch backend", allow_module_level=True)

layers = keras.layers
# Keras' torch backend converts tensors with np.array(x), which NumPy 2 flags on every call.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def randomize(model, seed: int = 0) -> None:
    """Non-zero biases and weights everywhere: Keras' zero biases would hide a bias mistake."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.uniform(-0.6, 0.6, weight.shape).astype("float32"))


def keras_output(model, *inputs: np.ndarray) -> np.ndarray:
    result = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
    return keras.ops.convert_to_numpy(result)


def torch_output(model: torch.nn.Module, *inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(*(torch.from_numpy(x) for x in inputs)).numpy()


def saved(model, tmp_path: Path, name: str = "model") -> tuple[Path, Path]:
    model.save(tmp_path / f"{name}.keras")
    model.save_weights(tmp_path / f"{name}.weights.h5")
    return tmp_path / f"{name}.keras", tmp_path / f"{name}.weights.h5"


def hihello_input() -> np.ndarray:
    chars = sorted(set(HIHELLO), key=HIHELLO.index)
    ids = torch.tensor([[chars.index(c) for c in HIHELLO[:-1]]])
    return F.one_hot(ids, len(chars)).float().numpy()


def keras_hihello(activation: str):
    return keras.Sequential([keras.Input((6, 5)), layers.LSTM(5, return_sequences=True),
                             layers.TimeDistributed(layers.Dense(5, activation=activation))])  # fmt: skip


def lstmkit_hihello(activation: str) -> Sequential:
    return Sequential(lk.LSTM(5, return_sequences=True, input_size=5), TimeDistributed(Dense(5, 5, activation)))


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "relu"])
def test_the_hihello_model_from_keras_files(activation: str, tmp_path: Path) -> None:
    model = keras_hihello(activation)
    randomize(model)
    keras_file, weights_file = saved(model, tmp_path)
    x = np.concatenate([hihello_input(), np.random.default_rng(1).normal(size=(3, 6, 5)).astype("float32")])
    want = keras_output(model, x)
    loaded = load_keras_file(keras_file)
    np.testing.assert_allclose(torch_output(loaded, x), want, rtol=0, atol=1e-5)
    ours = lstmkit_hihello(activation).eval()
    load_keras_weights(ours, weights_file)
    np.testing.assert_allclose(torch_output(ours, x), want, rtol=0, atol=1e-5)


def test_lstmkit_hihello_weights_load_into_keras(tmp_path: Path) -> None:
    torch.manual_seed(3)
    trained = HiHelloModel(5, "softmax")  # the seed's lstmkit model: LSTM(5) -> Dense(5) -> softmax
    for weight in trained.parameters():
        torch.nn.init.uniform_(weight, -0.6, 0.6)
    wrapped = Sequential(trained.lstm, TimeDistributed(Dense.from_linear(trained.dense, "softmax")))
    save_keras_weights(wrapped, tmp_path / "hihello.weights.h5")
    model = keras_hihello("softmax")
    model.load_weights(tmp_path / "hihello.weights.h5")
    x = hihello_input()
    np.testing.assert_allclose(keras_output(model, x), trained(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def embedding_bilstm_lstm(mask_zero: bool):
    return keras.Sequential([
        keras.Input((None,), dtype="int32"),
        layers.Embedding(30, 8, mask_zero=mask_zero),
        layers.Bidirectional(layers.LSTM(6, return_sequences=True), merge_mode="concat"),
        layers.LSTM(5),
        layers.Dropout(0.3),
        layers.Dense(3, activation="softmax"),
    ])  # fmt: skip


@pytest.mark.parametrize("mask_zero", [False, True], ids=["unmasked", "mask-zero"])
def test_embedding_bidirectional_lstm_dense(mask_zero: bool, tmp_path: Path) -> None:
    model = embedding_bilstm_lstm(mask_zero)
    randomize(model, seed=2)
    keras_file, weights_file = saved(model, tmp_path)
    ids = np.random.default_rng(4).integers(1, 30, (4, 9)).astype("int32")
    ids[1, 5:] = 0  # padded sequences: masked steps when mask_zero
    ids[3, 2:] = 0
    want = keras_output(model, ids)
    np.testing.assert_allclose(torch_output(load_keras_file(keras_file), ids), want, rtol=0, atol=1e-5)
    ours = Sequential(Embedding(30, 8, mask_zero=mask_zero), lk.Bidirectional(lk.LSTM(6, return_sequences=True)),
                      lk.LSTM(5), torch.nn.Dropout(0.3), Dense(3, 5, "softmax")).eval()  # fmt: skip
    load_keras_weights(ours, weights_file)
    np.testing.assert_allclose(torch_output(ours, ids), want, rtol=0, atol=1e-5)


RECURRENT_MODELS = {
    "gru-reset-after": lambda: layers.GRU(6, return_sequences=True, reset_after=True),
    "gru-reset-before": lambda: layers.GRU(6, return_sequences=True, reset_after=False),
    "simplernn": lambda: layers.SimpleRNN(6, return_sequences=True, go_backwards=True),
    "bi-gru-sum": lambda: layers.Bidirectional(layers.GRU(6, return_sequences=True, reset_after=False), "sum"),
}


@pytest.mark.parametrize("kind", RECURRENT_MODELS)
def test_gru_and_simplernn_with_time_distributed_dense(kind: str, tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((None, 4)), RECURRENT_MODELS[kind](),
                              layers.SimpleRNN(5, return_sequences=True),
                              layers.TimeDistributed(layers.Dense(2, activation="tanh"))])  # fmt: skip
    randomize(model, seed=5)
    keras_file, weights_file = saved(model, tmp_path)
    x = np.random.default_rng(6).normal(size=(3, 7, 4)).astype("float32")
    want = keras_output(model, x)
    loaded = load_keras_file(keras_file)
    np.testing.assert_allclose(torch_output(loaded, x), want, rtol=0, atol=1e-5)
    fresh = model_from_config(_config(keras_file))
    load_keras_weights(fresh, weights_file)
    np.testing.assert_allclose(torch_output(fresh.eval(), x), want, rtol=0, atol=1e-5)


def _config(keras_file: Path) -> dict:
    with zipfile.ZipFile(keras_file) as archive:
        return json.loads(archive.read("config.json"))


def siamese():
    left, right = keras.Input((None,), dtype="int32", name="left"), keras.Input((None,), dtype="int32", name="right")
    embedding = layers.Embedding(40, 8, mask_zero=True)
    first = layers.Bidirectional(layers.LSTM(6, return_sequences=True))
    second = layers.Bidirectional(layers.LSTM(4))
    a, b = second(first(embedding(left))), second(first(embedding(right)))
    x = layers.Concatenate()([a, b, layers.Subtract()([a, b]), layers.Multiply()([a, b])])
    x = layers.Dropout(0.2)(layers.Dense(7, activation="relu")(x))
    return keras.Model([left, right], layers.Dense(1, activation="sigmoid")(x))


def test_a_siamese_functional_model_with_shared_layers_and_masks(tmp_path: Path) -> None:
    model = siamese()
    randomize(model, seed=7)
    keras_file, weights_file = saved(model, tmp_path)
    rng = np.random.default_rng(8)
    left, right = rng.integers(1, 40, (5, 8)).astype("int32"), rng.integers(1, 40, (5, 6)).astype("int32")
    left[1, 4:], right[2, 1:], right[4, 3:] = 0, 0, 0
    want = keras_output(model, left, right)
    loaded = load_keras_file(keras_file)
    assert loaded.inputs == ["left", "right"]
    np.testing.assert_allclose(torch_output(loaded, left, right), want, rtol=0, atol=1e-5)
    # train the torch copy a little, write its weights, and Keras computes what torch computes
    optimizer = torch.optim.SGD(loaded.parameters(), lr=0.5)
    loaded.train()
    loss = loaded(torch.from_numpy(left), torch.from_numpy(right)).sum()
    loss.backward()
    optimizer.step()
    loaded.eval()
    save_keras_weights(loaded, tmp_path / "trained.weights.h5")
    model.load_weights(tmp_path / "trained.weights.h5")
    changed = keras_output(model, left, right)
    assert np.abs(changed - want).max() > 1e-3
    np.testing.assert_allclose(changed, torch_output(loaded, left, right), rtol=0, atol=1e-5)
    save_keras_file(loaded, tmp_path / "copy.keras")  # a whole .keras file Keras reads back
    again = keras.saving.load_model(tmp_path / "copy.keras")
    np.testing.assert_allclose(keras_output(again, left, right), changed, rtol=0, atol=1e-6)
    with pytest.raises(KerasFileError, match=r"'bidirectional_\d+' \(Bidirectional\): weight shapes do not fit"):
        load_keras_weights(model_from_config(_with_units(_config(keras_file), 4, 5)), weights_file)
    for units, kind in ((4, "Bidirectional"), (7, "Dense")):  # a billion units: refused before any allocation
        with pytest.raises(KerasFileError, match=rf"\({kind}\) would have about .*e\+1\d weights"):
            model_from_config(_with_units(_config(keras_file), units, 10**9))


def _with_units(config: dict, old: int, new: int) -> dict:
    text = json.dumps(config).replace(f'"units": {old}', f'"units": {new}')
    return json.loads(text)


def test_weight_shape_mismatch_names_the_layer_and_shapes(tmp_path: Path) -> None:
    model = keras_hihello("softmax")
    _, weights_file = saved(model, tmp_path)
    wrong = Sequential(lk.LSTM(5, return_sequences=True, input_size=5), TimeDistributed(Dense(4, 5, "softmax")))
    with pytest.raises(KerasFileError, match=r"layer 'time_distributed' \(TimeDistributed\): weight shapes do not "
                       r"fit: the file has \[\(5, 5\), \(5,\)\] .* expects \[\(5, 4\), \(4,\)\]"):  # fmt: skip
        load_keras_weights(wrong, weights_file)
    wider = Sequential(lk.LSTM(5, return_sequences=True, input_size=7), TimeDistributed(Dense(5, 5)))
    with pytest.raises(KerasFileError, match=r"(?s)'lstm' \(LSTM\).*kernel: expected \(7, 20\), got \(5, 20\)"):
        load_keras_weights(wider, weights_file)
    missing = Sequential(lk.LSTM(5, return_sequences=True, input_size=5), lk.LSTM(5), Dense(5, 5))
    with pytest.raises(KerasFileError, match=r"layer 'lstm_1' \(LSTM\): no group 'layers/lstm_1'"):
        load_keras_weights(missing, weights_file)


def test_malformed_files_give_clear_errors(tmp_path: Path) -> None:
    model = keras_hihello("softmax")
    keras_file, weights_file = saved(model, tmp_path)
    (tmp_path / "text.keras").write_text("not a zip")
    with pytest.raises(KerasFileError, match="not a zip archive"):
        load_keras_file(tmp_path / "text.keras")
    with pytest.raises(KerasFileError, match="no such file"):
        load_keras_file(tmp_path / "missing.keras")
    config = _config(keras_file)
    with zipfile.ZipFile(keras_file) as archive:
        weights = archive.read("model.weights.h5")

    def archive(name: str, entries: dict[str, bytes | str]) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as out:
            for entry, data in entries.items():
                out.writestr(entry, data)
        return path

    with pytest.raises(KerasFileError, match="no config.json in the archive"):
        load_keras_file(archive("noconfig.keras", {"model.weights.h5": weights}))
    with pytest.raises(KerasFileError, match="no model.weights.h5 in the archive"):
        load_keras_file(archive("noweights.keras", {"config.json": json.dumps(config)}))
    with pytest.raises(KerasFileError, match="config.json is not valid JSON"):
        load_keras_file(archive("badjson.keras", {"config.json": "{oops", "model.weights.h5": weights}))
    conv = json.loads(json.dumps(config))
    conv["config"]["layers"][1] = {"class_name": "Conv1D", "config": {"name": "conv1d", "filters": 3}}
    with pytest.raises(KerasFileError, match=r"unsupported Keras layer type 'Conv1D' \(layer 'conv1d'\)"):
        load_keras_file(archive("conv.keras", {"config.json": json.dumps(conv), "model.weights.h5": weights}))
    subclassed = {"class_name": "MyModel", "config": {}}
    with pytest.raises(KerasFileError, match="'MyModel' model: only Sequential and functional"):
        load_keras_file(archive("sub.keras", {"config.json": json.dumps(subclassed), "model.weights.h5": weights}))
    with pytest.raises(KerasFileError, match="model.weights.h5 is not an HDF5 file"):
        load_keras_file(archive("h5.keras", {"config.json": json.dumps(config), "model.weights.h5": b"junk"}))
    (tmp_path / "junk.weights.h5").write_bytes(b"junk")
    with pytest.raises(KerasFileError, match="not an HDF5 file"):
        load_keras_weights(lstmkit_hihello("softmax"), tmp_path / "junk.weights.h5")
    import h5py

    with h5py.File(tmp_path / "legacy.h5", "w") as legacy:
        legacy.create_group("model_weights")
    with pytest.raises(KerasFileError, match="Keras 2 .*re-save it with Keras 3"):
        load_keras_weights(lstmkit_hihello("softmax"), tmp_path / "legacy.h5")
    with pytest.raises(ValueError, match="files named \\*.weights.h5"):
        save_keras_weights(lstmkit_hihello("softmax"), tmp_path / "model.h5")
    with pytest.raises(ValueError, match="only a model read from a Keras config"):
        save_keras_file(lstmkit_hihello("softmax"), tmp_path / "model.keras")
    with pytest.raises(KerasFileError, match="no Keras layer"):
        Sequential(torch.nn.GRU(3, 4))
    assert isinstance(load_keras_file(keras_file), KerasModel)  # the good file still loads
    load_keras_weights(lstmkit_hihello("softmax"), weights_file)


def test_a_keras_file_exports_to_onnx_and_onnxruntime_gives_keras_outputs(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from lstmkit.interop.onnx import ExportError, export_onnx, onnxruntime_session

    model = embedding_bilstm_lstm(mask_zero=False)
    randomize(model, seed=9)
    keras_file, _ = saved(model, tmp_path)
    exported = export_onnx(load_keras_file(keras_file), np_ids(2, 6), tmp_path / "model.onnx")
    assert exported.dynamic_axes["input_0"] == {0: "batch", 1: "sequence"}
    result = CliRunner().invoke(app, ["export", "onnx", str(keras_file), str(tmp_path / "cli.onnx")])
    assert result.exit_code == 0, result.output
    (input_name,) = load_keras_file(keras_file).input_specs  # Keras' name: input_layer, input_layer_1, ...
    assert f"inputs:  {input_name} {{0: batch, 1: sequence}}" in result.output
    for path, name in ((tmp_path / "model.onnx", "input_0"), (tmp_path / "cli.onnx", input_name)):
        session = onnxruntime_session(path)
        for batch, steps in ((1, 1), (3, 11)):
            ids = np_ids(batch, steps).numpy()
            np.testing.assert_allclose(session.run(None, {name: ids})[0], keras_output(model, ids), atol=1e-5)
    masked = siamese()
    masked_file, _ = saved(masked, tmp_path, "siamese")
    loaded = load_keras_file(masked_file)
    with pytest.raises(ExportError, match="called with a mask.*dynamic_sequence=False"):
        export_onnx(loaded, (np_ids(2, 6), np_ids(2, 4)), tmp_path / "siamese.onnx")
    result = CliRunner().invoke(app, ["export", "onnx", str(masked_file), str(tmp_path / "siamese.onnx")])
    assert result.exit_code == 2 and "--static-sequence" in result.output
    exported = export_onnx(loaded, (np_ids(2, 6), np_ids(2, 4)), tmp_path / "siamese.onnx", dynamic_sequence=False)
    left, right = np_ids(5, 6).numpy(), np_ids(5, 4).numpy()
    left[0, 3:] = 0
    got = onnxruntime_session(tmp_path / "siamese.onnx").run(None, {"input_0": left, "input_1": right})[0]
    np.testing.assert_allclose(got, keras_output(masked, left, right), atol=1e-5)


def np_ids(batch: int, steps: int) -> torch.Tensor:
    return torch.randint(1, 30, (batch, steps), dtype=torch.int32)
