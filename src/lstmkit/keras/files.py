"""Keras 3 model files, read and written with ``zipfile``, ``json`` and ``h5py`` only (Keras is
never imported).

* :func:`load_keras_file` reads a ``.keras`` file (a zip of ``config.json`` and
  ``model.weights.h5``) into a :class:`~lstmkit.keras.model.KerasModel`, built by
  :func:`~lstmkit.keras.model_config.model_from_config` from the config, then filled from the weights.
* :func:`load_keras_weights` fills a model from a Keras ``.weights.h5`` file.
* :func:`save_keras_weights` writes a model's weights as a Keras ``.weights.h5`` file
  (``keras_model.load_weights(path)`` reads it), :func:`save_keras_file` a whole ``.keras`` file
  for a model read from Keras.

Each layer's weights sit in the file's group :meth:`~lstmkit.keras.model.KerasModel.weight_paths`
names, in Keras' layout; every shape is checked, and a mismatch names the layer and both shapes.

    >>> import tempfile, torch
    >>> from lstmkit import keras as lk
    >>> model = lk.Sequential(lk.LSTM(4, return_sequences=True, input_size=3), lk.TimeDistributed(lk.Dense(2, 4)))
    >>> copy = lk.Sequential(lk.LSTM(4, return_sequences=True, input_size=3), lk.TimeDistributed(lk.Dense(2, 4)))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = save_keras_weights(model, f"{folder}/model.weights.h5")
    ...     load_keras_weights(copy, f"{folder}/model.weights.h5")
    >>> x = torch.randn(2, 5, 3)
    >>> torch.equal(model(x), copy(x))
    True
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .base import KerasRNN
from .bidirectional import Bidirectional
from .core import Dense, KerasFileError, TimeDistributed, keras_class_name
from .model import KerasModel
from .model_config import model_from_config

INSTALL_HINT = "pip install h5py"


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as error:
        raise ImportError(f"reading and writing Keras weight files needs h5py: {INSTALL_HINT}") from error
    return h5py


def _groups(module: nn.Module) -> list[tuple[str, list[Tensor]]]:
    """The module's weights as Keras stores them: ``(group under the layer's path, tensors in Keras
    layout)``; the tensors are copies."""
    if isinstance(module, nn.Embedding):
        return [("vars", [module.weight.detach()])]
    if isinstance(module, Dense):
        return [("vars", [module.weight.detach().T] + ([module.bias.detach()] if module.bias is not None else []))]
    if isinstance(module, KerasRNN):
        return [("cell/vars", [torch.from_numpy(w) for w in module.get_weights()])]
    if isinstance(module, Bidirectional):
        return [
            (f"{side}/cell/vars", [torch.from_numpy(w) for w in layer.get_weights()])
            for side, layer in (("forward_layer", module.forward_layer), ("backward_layer", module.backward_layer))
        ]
    if isinstance(module, TimeDistributed):
        return [(f"layer/{group}", tensors) for group, tensors in _groups(module.layer)]
    return []


def _assign(module: nn.Module, group: str, arrays: list[np.ndarray], owner: str) -> None:
    """Load one group's arrays into ``module``, checking their number and shapes."""
    if isinstance(module, KerasRNN | Bidirectional):  # set_weights checks (and builds an unbuilt layer)
        layer = module
        if isinstance(module, Bidirectional):
            layer = module.forward_layer if group.startswith("forward_layer") else module.backward_layer
        try:
            layer.set_weights(arrays)
        except ValueError as error:
            raise KerasFileError(f"{owner}: weight shapes do not fit under {group!r}: {error}") from None
        return
    expected = [tuple(t.shape) for g, tensors in _groups(module) if g == group for t in tensors]
    got = [tuple(a.shape) for a in arrays]
    if got != expected:
        raise KerasFileError(f"{owner}: weight shapes do not fit: the file has {got} under {group!r}, the model "
                             f"expects {expected}")  # fmt: skip
    if isinstance(module, TimeDistributed):
        _assign(module.layer, group.removeprefix("layer/"), arrays, owner)
        return
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
    with torch.no_grad():
        if isinstance(module, nn.Embedding):
            module.weight.copy_(tensors[0])
        elif isinstance(module, Dense):
            module.weight.copy_(tensors[0].T)
            if module.bias is not None:
                module.bias.copy_(tensors[1])


def _read_arrays(group: Any, path: str, source: str) -> list[np.ndarray]:
    h5py = _h5py()
    keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
    arrays = []
    for key in keys:
        dataset = group[key]
        if not isinstance(dataset, h5py.Dataset) or not key.isdigit():
            raise KerasFileError(f"{source}: unexpected entry {path}/{key}; not a Keras 3 weights file")
        array = np.asarray(dataset)
        if dataset.attrs.get("dtype") == "bfloat16":
            array = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16).float().numpy()
        arrays.append(array.astype(np.float32) if array.dtype == np.float16 else array)
    return arrays


def _load_h5(model: KerasModel, file: Any, source: str) -> None:
    if "layers" not in file:
        legacy = "model_weights" in file or "layer_names" in file.attrs
        raise KerasFileError(
            f"{source}: no 'layers' group; "
            + (
                "a Keras 2 (legacy HDF5) file: re-save it with Keras 3 (model.save('m.keras'))"
                if legacy
                else "not a Keras 3 weights file"
            )  # fmt: skip
        )
    by_name = {}
    for group_name in file["layers"]:
        attrs = file["layers"][group_name].get("vars")
        if attrs is not None and "name" in attrs.attrs:
            by_name[str(attrs.attrs["name"])] = f"layers/{group_name}"
    for name, path in model.weight_paths().items():
        module = model.layers[name]
        groups = _groups(module)
        if not groups:
            continue
        owner = f"{source}: layer {name!r} ({keras_class_name(module)})"
        if path not in file:
            path = by_name.get(name, path)
        if path not in file:
            raise KerasFileError(f"{owner}: no group {path!r} in the file; the file holds {sorted(file['layers'])}")
        for group, _ in groups:
            full = f"{path}/{group}"
            if full not in file:
                raise KerasFileError(f"{owner}: no weights under {full!r}")
            _assign(module, group, _read_arrays(file[full], full, source), owner)


def load_keras_weights(model: KerasModel, path: str | Path) -> None:
    """Fill ``model`` (a :class:`KerasModel` or :class:`Sequential` of the same architecture as the
    Keras model) from a Keras 3 ``.weights.h5`` file, or from the weights inside a ``.keras`` file.
    Every weight's shape is checked; a mismatch names the layer and both shapes."""
    path = Path(path)
    if not isinstance(model, KerasModel):
        raise TypeError(f"model must be a KerasModel (see model_from_config, Sequential), got {type(model).__name__}")
    if zipfile.is_zipfile(path):
        _, weights = _read_archive(path)
        with _h5py().File(io.BytesIO(weights), "r") as file:
            _load_h5(model, file, str(path))
        return
    _open_and_load(model, path)


def _open_and_load(model: KerasModel, path: Path) -> None:
    h5py = _h5py()
    if not path.is_file():
        raise KerasFileError(f"{path}: no such file")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise KerasFileError(f"{path}: not an HDF5 file ({error})") from None
    with file:
        _load_h5(model, file, str(path))


def _read_archive(path: Path) -> tuple[dict[str, Any], bytes]:
    if not path.is_file():
        raise KerasFileError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise KerasFileError(f"{path}: not a zip archive; a .keras file is a zip of config.json and model.weights.h5")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for needed in ("config.json", "model.weights.h5"):
                if needed not in names:
                    sharded = " (sharded weights are not supported)" if "model.weights.json" in names else ""
                    raise KerasFileError(f"{path}: no {needed} in the archive{sharded}; it holds {sorted(names)}")
            config_text, weights = archive.read("config.json"), archive.read("model.weights.h5")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as error:
        raise KerasFileError(f"{path}: a damaged zip archive ({error})") from None
    try:
        return json.loads(config_text), weights
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise KerasFileError(f"{path}: config.json is not valid JSON ({error})") from None


def load_keras_file(path: str | Path) -> KerasModel:
    """The model of a Keras 3 ``.keras`` file as a :class:`KerasModel` in eval mode (see the module
    docstring for what is supported). Raises :class:`KerasFileError` naming what is wrong."""
    path = Path(path)
    config, weights = _read_archive(path)
    model = model_from_config(config, source=str(path))
    try:
        file = _h5py().File(io.BytesIO(weights), "r")
    except OSError as error:
        raise KerasFileError(f"{path}: model.weights.h5 is not an HDF5 file ({error})") from None
    with file:
        _load_h5(model, file, str(path))
    return model.eval()


def _h5_bytes(model: KerasModel) -> bytes:
    h5py = _h5py()
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        file.create_group("vars").attrs["name"] = model.name
        for name, path in model.weight_paths().items():
            module = model.layers[name]
            file.create_group(f"{path}/vars").attrs["name"] = name
            for group, tensors in _groups(module):
                target = file.require_group(f"{path}/{group}")
                for index, tensor in enumerate(tensors):
                    target[str(index)] = tensor.detach().cpu().float().numpy()
    return buffer.getvalue()


def save_keras_weights(model: KerasModel, path: str | Path) -> Path:
    """Write ``model``'s weights as a Keras 3 ``.weights.h5`` file (atomically), in Keras' layout:
    a Keras model of the same architecture reads it with ``model.load_weights(path)``."""
    if not isinstance(model, KerasModel):
        raise TypeError(f"model must be a KerasModel (see model_from_config, Sequential), got {type(model).__name__}")
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"{path}: Keras 3 reads weights from files named *.weights.h5")
    from ..training.checkpoint import atomic_write  # here: importing lstmkit.training takes a while

    return atomic_write(path, _h5_bytes(model))


def save_keras_file(model: KerasModel, path: str | Path) -> Path:
    """Write a ``.keras`` file: the config the model was read from and its current weights (for a
    model read by :func:`load_keras_file` or built by :func:`model_from_config`)."""
    if not isinstance(model, KerasModel) or model.keras_config is None:
        raise ValueError("only a model read from a Keras config can be written as .keras; use save_keras_weights")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.0.0", "date_saved": "lstmkit"}))
        archive.writestr("config.json", json.dumps(model.keras_config))
        archive.writestr("model.weights.h5", _h5_bytes(model))
    from ..training.checkpoint import atomic_write

    return atomic_write(path, buffer.getvalue())
