"""Keras 3 model files as torch modules, and lstmkit weights back into Keras weight files, read and
written with ``zipfile``, ``json`` and ``h5py`` only (Keras is never imported).

* :func:`load_keras_file` reads a ``.keras`` file (a zip of ``config.json`` and
  ``model.weights.h5``) into a :class:`KerasModel`: an ``nn.Module`` whose forward is the Keras
  model's, built from lstmkit's Keras-semantics layers (:mod:`lstmkit.keras`) and torch modules.
* :func:`model_from_config` builds the same module from a model config alone (``config.json``,
  ``model.to_json()``); :func:`load_keras_weights` fills it from a ``.weights.h5`` file.
* :class:`Sequential` builds such a model in lstmkit directly, to receive Keras weights or give them.
* :func:`save_keras_weights` writes a model's weights as a Keras ``.weights.h5`` file
  (``keras_model.load_weights(path)`` reads it), :func:`save_keras_file` a whole ``.keras`` file
  for a model read from Keras.

Supported layers: ``InputLayer``, ``Embedding`` (with ``mask_zero``: the mask flows to the
recurrent layers as in Keras), ``LSTM``, ``GRU`` (``reset_after`` either way), ``SimpleRNN``,
``Bidirectional``, ``Dense``, ``Dropout``, ``Activation``, ``TimeDistributed`` and the merge layers
``Concatenate``, ``Add``, ``Subtract``, ``Multiply``, ``Average``, ``Maximum``, ``Minimum``, in
``Sequential`` and functional models (several inputs and outputs, shared layers, such as a siamese
model), plus the ``NotEqual`` operation Keras records for masks. Anything else is an error that
names the layer. Subclassed Keras models have no layer graph in their config and cannot be read.

    >>> import tempfile, torch
    >>> from lstmkit import keras as lk
    >>> from lstmkit.interop.keras_files import Dense, Sequential, TimeDistributed, load_keras_weights
    >>> from lstmkit.interop.keras_files import save_keras_weights
    >>> model = Sequential(lk.LSTM(4, return_sequences=True, input_size=3), TimeDistributed(Dense(2, 4)))
    >>> copy = Sequential(lk.LSTM(4, return_sequences=True, input_size=3), TimeDistributed(Dense(2, 4)))
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
import math
import re
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..keras.base import KerasRNN
from ..keras.bidirectional import Bidirectional
from ..keras.convert import _layer as _recurrent_layer
from ..keras.convert import _split
from ..keras.initializers import KERAS_ACTIVATIONS
from ..training.checkpoint import atomic_write
from ..validation import check_weight_count

INSTALL_HINT = "pip install h5py"
RECURRENT = ("LSTM", "GRU", "SimpleRNN")
MERGES = ("Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
SUPPORTED = ("InputLayer", "Embedding", *RECURRENT, "Bidirectional", "Dense", "Dropout", "Activation",
             "TimeDistributed", *MERGES)  # fmt: skip
OPERATIONS = ("NotEqual",)
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    **KERAS_ACTIVATIONS,
    "softmax": lambda x: F.softmax(x, dim=-1),
    "log_softmax": lambda x: F.log_softmax(x, dim=-1),
}


class KerasFileError(ValueError):
    """A Keras file or config that cannot be read, or weights that do not fit; the message names the
    file, the layer and the problem.

    >>> KerasFileError("model.keras: not a zip archive").args[0]
    'model.keras: not a zip archive'
    """


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as error:
        raise ImportError(f"reading and writing Keras weight files needs h5py: {INSTALL_HINT}") from error
    return h5py


def _activation(name: Any, owner: str) -> Callable[[Tensor], Tensor]:
    if name is None:
        return ACTIVATIONS["linear"]
    if isinstance(name, Mapping):  # a serialized activation: {"class_name": ..., "config": ...}
        name = name.get("config", {}).get("name", name.get("class_name"))
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise KerasFileError(f"{owner}: unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# -- layers that torch lacks -------------------------------------------------------------------------


class Embedding(nn.Embedding):
    """``torch.nn.Embedding`` with Keras' ``mask_zero``: id 0 marks padding, and the recurrent layers
    after it skip those steps (the mask flows through the model as in Keras).

    >>> import torch
    >>> embedding = Embedding(10, 3, mask_zero=True)
    >>> tuple(embedding(torch.tensor([[4, 2, 0]])).shape), embedding.mask_zero
    ((1, 3, 3), True)
    """

    def __init__(self, input_dim: int, output_dim: int, mask_zero: bool = False, **kwargs: Any) -> None:
        super().__init__(input_dim, output_dim, **kwargs)
        self.mask_zero = mask_zero

    def forward(self, input: Tensor) -> Tensor:
        return super().forward(input.long())


class Dense(nn.Module):
    """Keras ``Dense``: ``activation(x @ kernel + bias)`` over the last axis. The parameters are those
    of ``torch.nn.Linear`` (``weight (units, in_features)``, ``bias``); Keras' ``kernel`` is ``weight.T``.

    >>> import torch
    >>> dense = Dense(3, 4, activation="softmax")
    >>> round(float(dense(torch.randn(2, 4)).detach().sum(-1)[0]), 6)
    1.0
    """

    def __init__(
        self,
        units: int,
        in_features: int,
        activation: str | None = None,
        use_bias: bool = True,
        *,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.units, self.in_features, self.use_bias = units, in_features, use_bias
        self.activation_name = activation or "linear"
        self.activation = _activation(activation, f"Dense({units})")
        linear = nn.Linear(in_features, units, bias=use_bias, dtype=dtype)
        self.weight = linear.weight
        self.bias = linear.bias

    @classmethod
    def from_linear(cls, linear: nn.Linear, activation: str | None = None) -> Dense:
        """A Dense layer sharing ``linear``'s parameters."""
        dense = cls(linear.out_features, linear.in_features, activation, linear.bias is not None)
        dense.weight, dense.bias = linear.weight, linear.bias
        return dense

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(F.linear(x, self.weight, self.bias))

    def extra_repr(self) -> str:
        return f"units={self.units}, in_features={self.in_features}, activation={self.activation_name!r}"


class Activation(nn.Module):
    """Keras ``Activation``: an activation by its Keras name.

    >>> import torch
    >>> Activation("relu")(torch.tensor([-1.0, 2.0])).tolist()
    [0.0, 2.0]
    """

    def __init__(self, activation: str) -> None:
        super().__init__()
        self.activation_name = activation
        self.activation = _activation(activation, "Activation")

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(x)


class TimeDistributed(nn.Module):
    """Keras ``TimeDistributed``: applies ``layer`` to every step of ``(batch, steps, ...)``.

    >>> import torch
    >>> tuple(TimeDistributed(Dense(2, 3))(torch.randn(4, 5, 3)).shape)
    (4, 5, 2)
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        batch, steps = x.shape[:2]
        y = self.layer(x.reshape(batch * steps, *x.shape[2:]))
        return y.reshape(batch, steps, *y.shape[1:])


class Merge(nn.Module):
    """The Keras merge layers: ``Concatenate`` (along ``axis``), ``Add``, ``Subtract``, ``Multiply``,
    ``Average``, ``Maximum``, ``Minimum``; called with a list of tensors.

    >>> import torch
    >>> Merge("Subtract")([torch.tensor([3.0]), torch.tensor([1.0])]).tolist()
    [2.0]
    """

    def __init__(self, kind: str, axis: int = -1) -> None:
        super().__init__()
        if kind not in MERGES:
            raise ValueError(f"unknown merge {kind!r}: expected one of {MERGES}")
        self.kind, self.axis = kind, axis

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        inputs = list(inputs)
        if self.kind == "Concatenate":
            return torch.cat(inputs, dim=self.axis)
        if self.kind == "Subtract":
            if len(inputs) != 2:
                raise ValueError(f"Subtract takes exactly 2 inputs, got {len(inputs)}")
            return inputs[0] - inputs[1]
        stacked = torch.stack(torch.broadcast_tensors(*inputs))
        reduce = {"Add": torch.sum, "Multiply": torch.prod, "Average": torch.mean}
        if self.kind in reduce:
            return reduce[self.kind](stacked, dim=0)
        return stacked.amax(0) if self.kind == "Maximum" else stacked.amin(0)

    def extra_repr(self) -> str:
        return self.kind + (f", axis={self.axis}" if self.kind == "Concatenate" else "")


# -- the model --------------------------------------------------------------------------------------


@dataclass
class _Node:
    """One call of a layer in a functional model: its arguments as Keras records them."""

    layer: str
    index: int
    args: list[Any]
    kwargs: dict[str, Any]


def keras_class_name(module: nn.Module) -> str:
    """The Keras class a module stands for (``"LSTM"``, ``"Dense"``, ...).

    >>> keras_class_name(nn.Dropout(0.1)), keras_class_name(Dense(2, 3))
    ('Dropout', 'Dense')
    """
    if isinstance(module, KerasRNN):
        return type(module).__name__
    if isinstance(module, Merge):
        return module.kind
    known = {Embedding: "Embedding", nn.Embedding: "Embedding", Bidirectional: "Bidirectional", Dense: "Dense",
             nn.Dropout: "Dropout", Activation: "Activation", TimeDistributed: "TimeDistributed",
             nn.Identity: "InputLayer"}  # fmt: skip
    for kind, name in known.items():
        if type(module) is kind:
            return name
    raise KerasFileError(
        f"{type(module).__name__} has no Keras layer; a Keras model here holds Embedding, lstmkit.keras "
        "LSTM/GRU/SimpleRNN/Bidirectional, Dense, nn.Dropout, Activation, TimeDistributed and Merge layers"
    )


def _snake_case(name: str) -> str:
    """Keras' ``to_snake_case``: the name of a layer's group in a weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class KerasModel(nn.Module):
    """A Keras ``Sequential`` or functional model as a torch module (see the module docstring).

    ``layers`` holds the modules by Keras layer name, in the order of Keras' ``model.layers``;
    ``forward`` takes the model's inputs positionally and returns its output (a tuple for several).
    Dropout follows ``module.training``; recurrent layers receive Keras masks (``Embedding(mask_zero=
    True)``).
    """

    def __init__(
        self,
        layers: Mapping[str, nn.Module],
        *,
        name: str = "model",
        nodes: Sequence[_Node] | None = None,
        inputs: Sequence[str] = (),
        outputs: Sequence[tuple[str, int, int]] = (),
        operations: Mapping[str, str] | None = None,
        keras_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.layers = nn.ModuleDict(dict(layers))
        self.functional = nodes is not None
        self.nodes = list(nodes or [])
        self.inputs, self.outputs = list(inputs), [tuple(o) for o in outputs]
        self.operations = dict(operations or {})
        self.keras_config = dict(keras_config) if keras_config is not None else None
        self.input_specs: dict[str, tuple[list[int | None], str]] = {}  # from the config's InputLayers

    def example_inputs(self, batch: int = 2, steps: int = 8) -> dict[str, Tensor]:
        """Random inputs shaped as the model's Keras inputs (``None`` axes: ``batch``, then ``steps``),
        by input name; token ids below the first Embedding's ``input_dim``. Used by the ONNX export."""
        generator = torch.Generator().manual_seed(0)
        embedding = next((m for m in self.layers.values() if isinstance(m, nn.Embedding)), None)
        specs = self.input_specs or {"input": ([None, None], "int32" if embedding is not None else "float32")}
        inputs = {}
        for name, (shape, dtype) in specs.items():
            size = [batch, *(steps if dim is None else int(dim) for dim in shape[1:])]
            torch_dtype = getattr(torch, dtype, None)
            if not isinstance(torch_dtype, torch.dtype):
                raise KerasFileError(f"input {name!r} has dtype {dtype!r}, which torch does not have")
            if not torch_dtype.is_floating_point:
                high = embedding.num_embeddings if embedding is not None else 2
                inputs[name] = torch.randint(min(1, high - 1), high, size, generator=generator, dtype=torch_dtype)
            else:
                inputs[name] = torch.randn(size, generator=generator, dtype=torch_dtype)
        return inputs

    # -- weights files -------------------------------------------------------------------------------
    def weight_paths(self) -> dict[str, str]:
        """Each layer's group in a Keras weights file: ``layers/<snake_case class>[_n]`` in the order
        of Keras' ``model.layers`` (a Sequential model leaves its InputLayer out)."""
        used: dict[str, int] = {}
        paths = {}
        for name, module in self.layers.items():
            kind = keras_class_name(module)
            if kind == "InputLayer" and not self.functional:
                continue
            base = _snake_case(kind)
            used[base] = used.get(base, -1) + 1
            paths[name] = f"layers/{base}" + (f"_{used[base]}" if used[base] else "")
        return paths

    # -- running ---------------------------------------------------------------------------------
    def forward(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        if not self.functional:
            if len(inputs) != 1:
                raise ValueError(f"a Sequential model takes one input, got {len(inputs)}")
            x, mask = inputs[0], None
            for module in self.layers.values():
                x, mask = _call(module, [x], {}, mask)
                x = x[0]
            return x
        if len(inputs) != len(self.inputs):
            raise ValueError(f"the model takes {len(self.inputs)} inputs {self.inputs}, got {len(inputs)}")
        values: dict[tuple[str, int], tuple[list[Tensor], Tensor | None]] = {
            (name, 0): ([x], None) for name, x in zip(self.inputs, inputs, strict=True)
        }
        pending = [node for node in self.nodes if node.layer not in self.inputs]
        while pending:
            ready = [node for node in pending if _dependencies(node) <= set(values)]
            if not ready:
                missing = sorted(_dependencies(pending[0]) - set(values))
                raise KerasFileError(f"layer {pending[0].layer!r} waits for outputs {missing} that nothing computes")
            for node in ready:
                values[(node.layer, node.index)] = self._run_node(node, values)
            pending = [node for node in pending if node not in ready]
        outputs = tuple(values[(layer, index)][0][tensor] for layer, index, tensor in self.outputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def _run_node(self, node: _Node, values: Mapping) -> tuple[list[Tensor], Tensor | None]:
        def resolve(value: Any) -> Any:
            if isinstance(value, _Ref):
                return values[(value.layer, value.node)][0][value.tensor]
            if isinstance(value, list):
                return [resolve(v) for v in value]
            return value

        args, kwargs = resolve(node.args), {key: resolve(value) for key, value in node.kwargs.items()}
        first = node.args[0] if node.args else None
        if isinstance(first, list):
            first = first[0] if first else None
        mask = values[(first.layer, first.node)][1] if isinstance(first, _Ref) else None
        if node.layer in self.layers:
            return _call(self.layers[node.layer], args, kwargs, mask)
        return _operation(self.operations.get(node.layer, node.layer), args), None


@dataclass(frozen=True)
class _Ref:
    """A Keras tensor in a functional config: output ``tensor`` of call ``node`` of ``layer``."""

    layer: str
    node: int
    tensor: int


def _dependencies(node: _Node) -> set[tuple[str, int]]:
    found: set[tuple[str, int]] = set()

    def visit(value: Any) -> None:
        if isinstance(value, _Ref):
            found.add((value.layer, value.node))
        elif isinstance(value, list):
            for item in value:
                visit(item)
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)

    visit(node.args)
    visit(node.kwargs)
    return found


def _call(module: nn.Module, args: list[Any], kwargs: dict[str, Any], mask: Tensor | None) -> tuple[list, Any]:
    """Run one Keras layer: its outputs (a list) and the mask that flows on, as Keras computes it."""
    mask = kwargs.get("mask", mask)
    if isinstance(module, KerasRNN | Bidirectional):
        initial = kwargs.get("initial_state")
        result = module(args[0], initial, None if mask is None else mask.bool())
        outputs = list(result) if isinstance(result, tuple) else [result]
        return outputs, mask if module.return_sequences else None
    if isinstance(module, Embedding | nn.Embedding):
        ids = args[0]
        return [module(ids)], (ids != 0) if getattr(module, "mask_zero", False) else None
    if isinstance(module, Merge):
        masks = [] if mask is None else [mask]
        return [module(args[0])], masks[0] if masks else None
    return [module(args[0])], mask


def _operation(kind: str, args: list[Any]) -> list[Tensor]:
    """The few Keras operations a functional config records (``NotEqual``: a mask)."""
    if kind == "NotEqual":
        left, right = args
        return [torch.as_tensor(left) != torch.as_tensor(right)]
    raise KerasFileError(f"unsupported Keras operation {kind!r}")


class Sequential(KerasModel):
    """A Keras ``Sequential`` model built in lstmkit, to receive Keras weights
    (:func:`load_keras_weights`) or to give them (:func:`save_keras_weights`). The layers are named
    as Keras would name them (``lstm``, ``lstm_1``, ...).

    >>> import torch
    >>> from lstmkit import keras as lk
    >>> model = Sequential(Embedding(20, 8, mask_zero=True), lk.Bidirectional(lk.LSTM(4, input_size=8)),
    ...                    Dense(1, 8, activation="sigmoid"))
    >>> list(model.layers), tuple(model(torch.tensor([[3, 5, 0, 0]])).shape)
    (['embedding', 'bidirectional', 'dense'], (1, 1))
    """

    def __init__(self, *layers: nn.Module, name: str = "sequential") -> None:
        named: dict[str, nn.Module] = {}
        used: dict[str, int] = {}
        for module in layers:
            base = _snake_case(keras_class_name(module))
            used[base] = used.get(base, -1) + 1
            named[base + (f"_{used[base]}" if used[base] else "")] = module
        super().__init__(named, name=name)


# -- building from a config --------------------------------------------------------------------------


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
        if kind == "Bidirectional":
            forward = _recurrent_layer(*_split(config["layer"], None), None)
            backward = config.get("backward_layer")
            backward = None if backward is None else _recurrent_layer(*_split(backward, None), None)
            module: nn.Module = Bidirectional(forward, config.get("merge_mode", "concat"), backward)
            layers = (module.forward_layer, module.backward_layer)
        else:
            module = _recurrent_layer(kind, dict(config), None)
            layers = (module,)
    except (KeyError, TypeError, ValueError) as error:
        raise KerasFileError(f"{owner}: {error}") from None
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
    """A functional config's argument with its Keras tensors as :class:`_Ref`."""
    if isinstance(value, Mapping) and value.get("class_name") == "__keras_tensor__":
        layer, node, tensor = value["config"]["keras_history"]
        return _Ref(layer, int(node), int(tensor))
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
    :func:`load_keras_weights`.

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
    nodes: list[_Node] = []
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
            nodes.append(_Node(name, index, _reference(list(node.get("args", []))),
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


# -- weights -----------------------------------------------------------------------------------------


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
    return atomic_write(path, buffer.getvalue())


__all__ = [
    "Activation",
    "Dense",
    "Embedding",
    "KerasFileError",
    "KerasModel",
    "Merge",
    "Sequential",
    "TimeDistributed",
    "keras_class_name",
    "load_keras_file",
    "load_keras_weights",
    "model_from_config",
    "save_keras_file",
    "save_keras_weights",
]
