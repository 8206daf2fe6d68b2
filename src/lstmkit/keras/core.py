"""Keras layers that torch lacks, as torch modules: ``Embedding`` with ``mask_zero``, ``Dense``,
``Activation``, ``TimeDistributed`` and the merge layers (:class:`Merge`); :func:`keras_class_name`
says which Keras class a module stands for; :class:`KerasFileError` is the error of everything that
reads or writes Keras models (:mod:`lstmkit.keras.model`, :mod:`~lstmkit.keras.model_config`,
:mod:`~lstmkit.keras.files`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import KerasRNN
from .bidirectional import Bidirectional
from .initializers import KERAS_ACTIVATIONS

MERGES = ("Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
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


def _activation(name: Any, owner: str) -> Callable[[Tensor], Tensor]:
    if name is None:
        return ACTIVATIONS["linear"]
    if isinstance(name, Mapping):  # a serialized activation: {"class_name": ..., "config": ...}
        name = name.get("config", {}).get("name", name.get("class_name"))
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise KerasFileError(f"{owner}: unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


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
