"""Stateless helpers shared by cells, layers and the engine: activations by name, the merge of a
bidirectional layer's two directions (lstmkit's layers and the Keras ones) and dropout masks."""

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


MERGE_MODES = ("concat", "sum", "mul", "ave")


def check_merge_mode(merge_mode: object, modes: tuple[str | None, ...] = MERGE_MODES) -> None:
    """Refuse a ``merge_mode`` not in ``modes`` (Keras' ``Bidirectional`` adds ``None``)."""
    if merge_mode not in modes:
        raise ValueError(f"unknown merge_mode {merge_mode!r}: expected one of {modes}")


def merge_directions(forward: Tensor, backward: Tensor, merge_mode: str) -> Tensor:
    """Combine the two directions' outputs: concat, sum, mul or ave (Keras' merge modes)."""
    check_merge_mode(merge_mode)
    if merge_mode == "concat":
        return torch.cat((forward, backward), dim=-1)
    if merge_mode == "sum":
        return forward + backward
    if merge_mode == "mul":
        return forward * backward
    return (forward + backward) / 2


def dropout_mask(like: Tensor, rate: float) -> Tensor:
    """An inverted-dropout mask shaped as ``like``: ``like`` filled in place with Bernoulli(1 - ``rate``)
    draws, divided by 1 - ``rate`` (kept units scaled, so the expectation is unchanged). One mask
    per sequence is how lstmkit's ``recurrent_dropout`` and Keras' ``dropout`` use it."""
    keep = 1.0 - rate
    return like.bernoulli_(keep) / keep
