"""A Keras ``Sequential`` or functional model as a torch module (:class:`KerasModel`): its layers by
Keras name, its graph of layer calls run as Keras runs it (masks included), and the groups its
weights take in a Keras weights file. :class:`Sequential` builds one in lstmkit."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .base import KerasRNN
from .bidirectional import Bidirectional
from .core import Embedding, KerasFileError, Merge, keras_class_name


@dataclass
class Node:
    """One call of a layer in a functional model: its arguments as Keras records them."""

    layer: str
    index: int
    args: list[Any]
    kwargs: dict[str, Any]


def snake_case(name: str) -> str:
    """Keras' ``tosnake_case``: the name of a layer's group in a weights file."""
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
        nodes: Sequence[Node] | None = None,
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
            base = snake_case(kind)
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

    def _run_node(self, node: Node, values: Mapping) -> tuple[list[Tensor], Tensor | None]:
        def resolve(value: Any) -> Any:
            if isinstance(value, Ref):
                return values[(value.layer, value.node)][0][value.tensor]
            if isinstance(value, list):
                return [resolve(v) for v in value]
            return value

        args, kwargs = resolve(node.args), {key: resolve(value) for key, value in node.kwargs.items()}
        first = node.args[0] if node.args else None
        if isinstance(first, list):
            first = first[0] if first else None
        mask = values[(first.layer, first.node)][1] if isinstance(first, Ref) else None
        if node.layer in self.layers:
            return _call(self.layers[node.layer], args, kwargs, mask)
        return _operation(self.operations.get(node.layer, node.layer), args), None


@dataclass(frozen=True)
class Ref:
    """A Keras tensor in a functional config: output ``tensor`` of call ``node`` of ``layer``."""

    layer: str
    node: int
    tensor: int


def _dependencies(node: Node) -> set[tuple[str, int]]:
    found: set[tuple[str, int]] = set()

    def visit(value: Any) -> None:
        if isinstance(value, Ref):
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
    (:func:`~lstmkit.keras.files.load_keras_weights`) or to give them
    (:func:`~lstmkit.keras.files.save_keras_weights`). The layers are named as Keras would name them
    (``lstm``, ``lstm_1``, ...).

    >>> import torch
    >>> from lstmkit import keras as lk
    >>> model = Sequential(lk.Embedding(20, 8, mask_zero=True), lk.Bidirectional(lk.LSTM(4, input_size=8)),
    ...                    lk.Dense(1, 8, activation="sigmoid"))
    >>> list(model.layers), tuple(model(torch.tensor([[3, 5, 0, 0]])).shape)
    (['embedding', 'bidirectional', 'dense'], (1, 1))
    """

    def __init__(self, *layers: nn.Module, name: str = "sequential") -> None:
        named: dict[str, nn.Module] = {}
        used: dict[str, int] = {}
        for module in layers:
            base = snake_case(keras_class_name(module))
            used[base] = used.get(base, -1) + 1
            named[base + (f"_{used[base]}" if used[base] else "")] = module
        super().__init__(named, name=name)
