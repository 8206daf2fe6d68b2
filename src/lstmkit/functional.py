"""Stateless helpers shared by cells, layers and the engine: activations by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Activation = Callable[[Tensor], Tensor]


def _linear(x: Tensor) -> Tensor:
    return x


ACTIVATIONS: dict[str, Activation] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "hard_sigmoid": F.hardsigmoid,  # relu6(x + 3) / 6, as Keras 3 defines it
    "linear": _linear,
    "elu": F.elu,
    "selu": F.selu,
    "gelu": F.gelu,
    "silu": F.silu,
    "swish": F.silu,
    "softsign": F.softsign,
    "softplus": F.softplus,
}


def resolve_activation(activation: str | Activation | None) -> Activation:
    """Turn an activation name (or ``None`` for linear) into a function; callables pass through."""
    if activation is None:
        return _linear
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in ACTIVATIONS:
        return ACTIVATIONS[activation]
    raise ValueError(f"unknown activation {activation!r}: expected one of {sorted(ACTIVATIONS)} or a callable")


def activation_name(activation: str | Activation | None) -> str:
    """The registry name of an activation (for reprs and Keras configs), else its __name__."""
    if activation is None:
        return "linear"
    if isinstance(activation, str):
        return activation
    for name, fn in ACTIVATIONS.items():
        if fn is activation:
            return name
    return getattr(activation, "__name__", repr(activation))
