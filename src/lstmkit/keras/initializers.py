"""Keras initializers and activations by name, computed on Keras-layout shapes.

Keras draws ``kernel (I, G*H)`` and ``recurrent_kernel (H, G*H)``, so its fans differ from those of
the transposed torch matrices; :func:`initialize` draws on the Keras shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import ACTIVATIONS, Activation
from ..init import orthogonal_

Initializer = str | float | int | Callable[[Tensor], Any]

# Keras activations by name: lstmkit's registry plus a few Keras-only ones, with Keras' defaults.
KERAS_ACTIVATIONS: dict[str, Activation] = {
    **ACTIVATIONS,
    "relu6": F.relu6,
    "exponential": torch.exp,
    "hard_silu": F.hardswish,
    "hard_swish": F.hardswish,
    "hard_tanh": F.hardtanh,
    "log_sigmoid": F.logsigmoid,
    "mish": F.mish,
    "tanh_shrink": F.tanhshrink,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),  # Keras' default negative_slope is 0.2
}


def resolve_keras_activation(activation: str | Activation | None) -> Activation:
    """A Keras activation name (or ``None`` for linear) as a function; callables pass through."""
    if activation is None:
        return KERAS_ACTIVATIONS["linear"]
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in KERAS_ACTIVATIONS:
        return KERAS_ACTIVATIONS[activation]
    raise ValueError(
        f"unsupported activation {activation!r}: expected a callable or one of {sorted(KERAS_ACTIVATIONS)}"
    )


def _fans(shape: torch.Size) -> tuple[int, int]:
    return (shape[0], shape[0]) if len(shape) == 1 else (shape[0], shape[1])


def _variance_scaling(scale: float, mode: str, distribution: str) -> Callable[[Tensor], Tensor]:
    def fill(tensor: Tensor) -> Tensor:
        fan_in, fan_out = _fans(tensor.shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = scale / max(1.0, fan)
        if distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return nn.init.uniform_(tensor, -limit, limit)
        std = math.sqrt(variance) / 0.87962566103423978  # std of a unit normal truncated at +-2
        return nn.init.trunc_normal_(tensor, 0.0, std, -2 * std, 2 * std)

    return fill


INITIALIZERS: dict[str, Callable[[Tensor], Tensor]] = {
    "glorot_uniform": _variance_scaling(1.0, "fan_avg", "uniform"),
    "glorot_normal": _variance_scaling(1.0, "fan_avg", "truncated_normal"),
    "he_uniform": _variance_scaling(2.0, "fan_in", "uniform"),
    "he_normal": _variance_scaling(2.0, "fan_in", "truncated_normal"),
    "lecun_uniform": _variance_scaling(1.0, "fan_in", "uniform"),
    "lecun_normal": _variance_scaling(1.0, "fan_in", "truncated_normal"),
    "orthogonal": orthogonal_,  # on the whole (I or H, G*H) matrix, as Keras
    "zeros": nn.init.zeros_,
    "ones": nn.init.ones_,
    "random_normal": lambda t: nn.init.normal_(t, 0.0, 0.05),
    "random_uniform": lambda t: nn.init.uniform_(t, -0.05, 0.05),
    "truncated_normal": lambda t: nn.init.trunc_normal_(t, 0.0, 0.05, -0.1, 0.1),
}


def check_initializer(argument: str, value: Initializer) -> Initializer:
    ok = callable(value) or (isinstance(value, str) and value in INITIALIZERS)
    ok = ok or (isinstance(value, int | float) and not isinstance(value, bool))
    if not ok:
        raise ValueError(
            f"{argument}={value!r} is not supported: expected a number, a callable filling a tensor "
            f"or one of {sorted(INITIALIZERS)}"
        )
    return value


def initialize(initializer: Initializer, shape: tuple[int, ...], **factory: Any) -> Tensor:
    """A new tensor of ``shape`` (Keras layout) filled by ``initializer``: a name, a constant or a
    callable that fills a tensor in place (e.g. ``torch.nn.init.xavier_uniform_``)."""
    tensor = torch.empty(shape, **factory)
    with torch.no_grad():
        if isinstance(initializer, int | float) and not isinstance(initializer, bool):
            return tensor.fill_(float(initializer))
        fill = INITIALIZERS[initializer] if isinstance(initializer, str) else initializer
        result = fill(tensor)
    if isinstance(result, Tensor) and result is not tensor:
        if tuple(result.shape) != shape:
            raise ValueError(f"initializer {initializer!r} returned shape {tuple(result.shape)}, expected {shape}")
        return result.to(**factory)
    return tensor
