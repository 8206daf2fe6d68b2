"""Keras' weight and activity regularizers as penalties on torch tensors, without importing Keras.

Keras' ``L1``, ``L2`` and ``L1L2`` penalise ``l1 * sum(|x|) + l2 * sum(x**2)``. A regularizer is
given as Keras accepts it: a name (``"l1"``, ``"l2"``: factor 0.01; ``"l1l2"``/``"L1L2"``: Keras 3's
class defaults 0 and 0; ``"l1_l2"``: 0.01 and 0.01, as Keras documents it and tf.keras had it), a
serialized config (``{"class_name": "L2", "config": {"l2": 0.1}}``), a dict of factors
(``{"l1": 0.1, "l2": 0.01}``), an object with ``l1``/``l2`` factors (a Keras regularizer), or a
callable taking a weight tensor and returning a scalar tensor.

    >>> import torch
    >>> from lstmkit.keras.regularizers import resolve_regularizer
    >>> penalty = resolve_regularizer("kernel_regularizer", {"class_name": "L1L2", "config": {"l1": 0.5, "l2": 1.0}})
    >>> penalty(torch.tensor([1.0, -2.0]))
    tensor(6.5000)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

Regularizer = str | Mapping[str, Any] | Callable[[Tensor], Tensor] | None

# (l1, l2) of each name Keras resolves, lower-cased: its classes and their snake-case names (class
# defaults), plus "l1_l2", the factory tf.keras resolved by that name.
_NAMED: dict[str, tuple[float, float]] = {
    "l1": (0.01, 0.0),
    "l2": (0.0, 0.01),
    "l1l2": (0.0, 0.0),
    "l1_l2": (0.01, 0.01),
}


@dataclass(frozen=True)
class Penalty:
    """``l1 * sum(|x|) + l2 * sum(x**2)``: Keras' ``L1``, ``L2`` and ``L1L2`` regularizers."""

    l1: float = 0.0
    l2: float = 0.0

    def __call__(self, x: Tensor) -> Tensor:
        penalty = x.new_zeros(())
        if self.l1:
            penalty = penalty + self.l1 * x.abs().sum()
        if self.l2:
            penalty = penalty + self.l2 * x.square().sum()
        return penalty


def _factor(argument: str, name: str, value: Any) -> float:
    """A non-negative finite float, as Keras validates its regularization factors."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok:
        raise ValueError(f"{argument}: {name} must be a non-negative finite number, got {value!r}")
    return float(value)


def resolve_regularizer(argument: str, value: Regularizer) -> Callable[[Tensor], Tensor] | None:
    """The penalty function ``value`` stands for (``None`` for none); a ``ValueError`` naming
    ``argument`` and what is supported for anything else."""
    if value is None:
        return None
    defaults: tuple[float, float] | None = None
    factors: Mapping[str, Any] = {}
    if isinstance(value, str):
        defaults = _NAMED.get(value.lower())
    elif isinstance(value, Mapping) and "class_name" in value:
        defaults = _NAMED.get(str(value["class_name"]).rsplit(".", 1)[-1].lower())
        factors = value.get("config") or {}
    elif isinstance(value, Mapping):
        defaults, factors = (0.0, 0.0), value
    elif hasattr(value, "l1") or hasattr(value, "l2"):  # a Keras regularizer object
        defaults, factors = (0.0, 0.0), {key: getattr(value, key) for key in ("l1", "l2") if hasattr(value, key)}
    elif callable(value):
        return value
    unknown = sorted(set(factors) - {"l1", "l2"})
    if defaults is None or unknown:
        raise ValueError(
            f"{argument}={value!r} is not supported: expected one of {sorted(_NAMED)}, a Keras L1/L2/L1L2 "
            "config or object, a dict of l1/l2 factors, or a callable taking a tensor"
        )
    l1, l2 = (
        _factor(argument, key, default if factors.get(key) is None else factors[key])  # Keras: None means 0
        for key, default in zip(("l1", "l2"), defaults, strict=True)
    )
    return Penalty(l1, l2)
