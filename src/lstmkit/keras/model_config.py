"""A Keras model config (a ``.keras`` file's ``config.json``, ``model.to_json()``) as a
:class:`~lstmkit.keras.model.KerasModel` with fresh weights: :func:`model_from_config`.

Supported layers (:data:`SUPPORTED`): ``InputLayer``, ``Embedding`` (with ``mask_zero``: the mask
flows to the recurrent layers as in Keras), ``LSTM``, ``GRU`` (``reset_after`` either way),
``SimpleRNN``, ``Bidirectional``, ``Dense``, ``Dropout``, ``Activation``, ``TimeDistributed`` and the
merge layers ``Concatenate``, ``Add``, ``Subtract``, ``Multiply``, ``Average``, ``Maximum``,
``Minimum``, in ``Sequential`` and functional models (several inputs and outputs, shared layers,
such as a siamese model), plus the ``NotEqual`` operation Keras records for masks. Anything else is
a :class:`~lstmkit.keras.core.KerasFileError` that names the layer. Subclassed Keras models have no
layer graph in their config and cannot be read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..validation import check_weight_count
from .bidirectional import Bidirectional
from .convert import layer_from_config
from .core import MERGES, Activation, Dense, Embedding, KerasFileError, Merge, TimeDistributed
from .model import KerasModel, Node, Ref

RECURRENT = ("LSTM", "GRU", "SimpleRNN")
SUPPORTED = ("InputLayer", "Embedding", *RECURRENT, "Bidirectional", "Dense", "Dropout", "Activation",
             "TimeDistributed", *MERGES)  # fmt: skip
OPERATIONS = ("NotEqual",)


def _input_size(entry: Mapping[str, Any]) -> int | None:
    shape = (entry.get("build_config") or {}).get("input_shape")
    while isinstance(shape, list) and shape and isinstance(shape[0], list):  # several inputs: the first
        shape = shape[0]
    return shape[-1] if isinstance(shape, list) and shape and isinstance(shape[-1], int) else None


def _build_layer(entry: Mapping[str, Any], where: str) -> nn.Module:
    kind = entry.get("class_name")
    config = entry.get("config") or {}
    name = config.get("name", entry.get("name", "?"))
    owner = f"{where}: layer {name!r} ({kind})"
    if kind not in SUPPORTED:
        raise KerasFileError(f"{where}: unsupported Keras layer type {kind!r} (layer {name!r}); supported: "
                             f"{', '.join(SUPPORTED)}")  # fmt: skip
    if kind == "InputLayer":
        return nn.Identity()
    if kind == "Embedding":
        rows, columns = int(config["input_dim"]), int(config["output_dim"])
        _check_size(owner, rows * columns)
        return Embedding(rows, columns, mask_zero=bool(config.get("mask_zero")))
    if kind == "Dropout":
        return nn.Dropout(float(config.get("rate", 0.0)))
    if kind == "Activation":
        return Activation(config.get("activation", "linear"))
    if kind in MERGES:
        return Merge(kind, int(config.get("axis", -1)))
    if kind == "Dense":
        size = _input_size(entry)
        if size is None:
            raise KerasFileError(f"{owner}: the config has no build_config input_shape to size it")
        _check_size(owner, int(config["units"]) * (size + 1))
        return Dense(int(config["units"]), size, config.get("activation"), bool(config.get("use_bias", True)))
    if kind == "TimeDistributed":
        inner = config.get("layer")
        if not isinstance(inner, Mapping):
            raise KerasFileError(f"{owner}: the config has no wrapped 'layer'")
        if inner.get("build_config") is None and entry.get("build_config"):
            inner = {**inner, "build_config": {"input_shape": entry["build_config"]["input_shape"][1:]}}
        return TimeDistributed(_build_layer(inner, where))
    size = _input_size(entry)
    try:
        module = layer_from_config(kind, dict(config), None)
    except (KeyError, TypeError, ValueError) as error:
        raise KerasFileError(f"{owner}: {error}") from None
    layers = (module.forward_layer, module.backward_layer) if isinstance(module, Bidirectional) else (module,)
    if size is not None:
        for layer in layers:
            _check_size(owner, sum(math.prod(shape) for shape in layer.keras_weight_shapes(size)))
            layer.build(size)
    return module


def _check_size(owner: str, count: int) -> None:
    try:
        check_weight_count(owner, count)
    except ValueError as error:
        raise KerasFileError(str(error)) from None


def _reference(value: Any) -> Any:
    """A functional config's argument with its Keras tensors as :class:`Ref`."""
    if isinstance(value, Mapping) and value.get("class_name") == "__keras_tensor__":
        layer, node, tensor = value["config"]["keras_history"]
        return Ref(layer, int(node), int(tensor))
    if isinstance(value, list | tuple):
        return [_reference(v) for v in value]
    if isinstance(value, Mapping):
        return {key: _reference(v) for key, v in value.items()}
    return value


def _endpoints(value: Any) -> list[tuple[str, int, int]]:
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]
    return [(str(name), int(node), int(tensor)) for name, node, tensor in value]


def model_from_config(config: Mapping[str, Any] | str, *, source: str = "config") -> KerasModel:
    """A :class:`KerasModel` from a Keras model config: a ``.keras`` file's ``config.json`` or
    ``model.to_json()``, as a dict or JSON text. Its weights are fresh; load them with
    :func:`~lstmkit.keras.files.load_keras_weights`.

    >>> import json
    >>> config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
    ...     {"class_name": "InputLayer", "config": {"batch_shape": [None, None, 3]}},
    ...     {"class_name": "GRU", "config": {"name": "gru", "units": 4, "reset_after": True},
    ...      "build_config": {"input_shape": [None, None, 3]}}]}}
    >>> gru = model_from_config(json.dumps(config)).layers["gru"]
    >>> type(gru).__name__, gru.units, gru.input_size
    ('GRU', 4, 3)
    """
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as error:
            raise KerasFileError(f"{source}: not valid JSON ({error})") from None
    try:
        return _model_from_config(config, source)
    except KerasFileError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as error:
        # a field of a type or shape Keras never writes, anywhere in the graph: say so, with the file
        raise KerasFileError(f"{source}: not a Keras model config that can be read ({type(error).__name__}: "
                             f"{error})") from None  # fmt: skip


def _model_from_config(config: Any, source: str) -> KerasModel:
    if not isinstance(config, Mapping) or not isinstance(config.get("config"), Mapping):
        raise KerasFileError(f"{source}: not a Keras model config (expected {{'class_name': ..., 'config': ...}})")
    kind, body = config.get("class_name"), config["config"]
    if kind not in ("Sequential", "Functional", "Model"):
        raise KerasFileError(
            f"{source}: a {kind!r} model: only Sequential and functional models have a layer graph in their "
            "config (subclassed models do not)"
        )
    entries = body.get("layers")
    if not isinstance(entries, list):
        raise KerasFileError(f"{source}: the model config has no 'layers' list")
    layers: dict[str, nn.Module] = {}
    operations: dict[str, str] = {}
    nodes: list[Node] = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise KerasFileError(f"{source}: layer {position} is not an object")
        name = entry.get("name") or (entry.get("config") or {}).get("name") or f"layer_{position}"
        is_operation = str(entry.get("module", "")).startswith(("keras.src.ops", "keras.ops"))
        if is_operation:
            if entry.get("class_name") not in OPERATIONS:
                raise KerasFileError(f"{source}: unsupported Keras operation {entry.get('class_name')!r} ({name!r})")
            operations[name] = entry["class_name"]
        else:
            layers[name] = _build_layer(entry, source)
        for index, node in enumerate(entry.get("inbound_nodes") or []):
            if not isinstance(node, Mapping):
                raise KerasFileError(f"{source}: layer {name!r} has an inbound node in an old format")
            nodes.append(Node(name, index, _reference(list(node.get("args", []))),
                               _reference(dict(node.get("kwargs", {})))))  # fmt: skip
            unknown = set(node.get("kwargs", {})) - {"mask", "training", "initial_state"}
            if unknown:
                raise KerasFileError(f"{source}: layer {name!r} is called with unsupported arguments {sorted(unknown)}")
    specs = {
        entry.get("name") or entry["config"].get("name", "input"): (
            list(entry["config"].get("batch_shape") or [None, None]),
            str(entry["config"].get("dtype", "float32")),
        )
        for entry in entries
        if entry.get("class_name") == "InputLayer" and isinstance(entry.get("config"), Mapping)
    }
    if kind == "Sequential":
        model = KerasModel(layers, name=body.get("name", "sequential"), keras_config=config)
    else:
        model = KerasModel(layers, name=body.get("name", "functional"), nodes=nodes,
                           inputs=[name for name, _, _ in _endpoints(body.get("input_layers", []))],
                           outputs=_endpoints(body.get("output_layers", [])), operations=operations,
                           keras_config=config)  # fmt: skip
    model.input_specs = specs
    return model
