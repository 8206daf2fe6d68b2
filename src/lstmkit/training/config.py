"""Configuration as dataclasses: the trainer's :class:`TrainConfig`, and the helpers that build any
config dataclass from a dict (a ``config.json``) or from ``key=value`` overrides on the command line,
checking every field's name and type."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ..precision import resolve_precision
from ..validation import check_probability

C = TypeVar("C")

OPTIMIZERS = ("adam", "adamw")
# Far above any useful rate, and far below where the optimizers' float32 step sizes overflow
# (Adam's first step is lr / (1 - beta1) = 10 lr: lr = 1e38 crashed inside torch.optim).
MAX_LR = 1e6
SCHEDULES = ("constant", "cosine", "linear")
ON_NONFINITE = ("stop", "skip")


@dataclass
class TrainConfig:
    """How to train: optimiser, schedule, budget, early stopping, checkpoints.

    The budget is ``epochs``, cut short by ``max_steps`` or ``max_seconds`` when given (a time
    budget makes runs machine-dependent; prefer ``max_steps`` for repeatable results). With
    ``fit_to_time``, a decaying schedule that would not end within ``max_seconds`` is shortened to
    end there, so a slow machine still ends with the learning rate decayed (the pace is measured
    from step 10 to step 100, where the schedule is fitted, and again at each later evaluation; the
    checkpoint keeps the fitted count for ``--resume``, and ``metrics.jsonl`` records it; without
    ``max_seconds`` it does nothing).
    ``precision`` is ``"fp32"``, ``"bf16"`` (the forward pass under CPU autocast; weights, optimizer
    and checkpoints stay float32) or ``"auto"``, which becomes one of them at once (``"bf16"`` on a
    CPU with bf16 hardware; see :func:`~lstmkit.precision.resolve_precision`).

        >>> TrainConfig(epochs=3, lr=1e-3).clip_grad_norm
        1.0
    """

    epochs: int = 10
    max_steps: int | None = None
    max_seconds: float | None = None
    fit_to_time: bool = False
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 2e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    clip_grad_norm: float | None = 1.0
    eval_every: int | None = None
    patience: int | None = None
    checkpoint_every: int | None = None
    log_every: int = 10
    seed: int = 0
    on_nonfinite: str = "stop"
    precision: str = "fp32"
    progress: bool = True

    def __post_init__(self) -> None:
        self.precision = resolve_precision(self.precision)
        positive = ("epochs", "batch_size", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_every", "patience", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 or None, got {value}")
        if not 0 < self.lr <= MAX_LR or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError(f"need 0 < lr <= {MAX_LR:g}, weight_decay >= 0, warmup_steps >= 0; got {self.lr}, "
                             f"{self.weight_decay}, {self.warmup_steps}")  # fmt: skip
        check_probability("min_lr_ratio", self.min_lr_ratio, upper_inclusive=True)
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive or None, got {self.max_seconds}")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise ValueError(f"clip_grad_norm must be positive or None, got {self.clip_grad_norm}")
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("on_nonfinite", ON_NONFINITE)):
            if getattr(self, name) not in choices:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}: expected one of {choices}")


def _convert(value: Any, annotation: Any, name: str) -> Any:
    """``value`` as the type ``annotation`` names, or a ValueError that says what was expected."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, name)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0] if errors else f"{name}: cannot be None")
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        if isinstance(value, str):
            value = [part for part in value.split(",") if part]
        if not isinstance(value, list | tuple):
            raise ValueError(f"{name}: expected a list, got {value!r}")
        return origin(_convert(part, item, name) for part in value)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    if annotation in (int, float):
        expected = "an integer" if annotation is int else "a number"
        if isinstance(value, bool) or (annotation is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{name}: expected {expected}, got {value!r}")
        try:
            number = annotation(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected {expected}, got {value!r}") from None
        if annotation is float and not math.isfinite(number):  # NaN or infinity would poison training
            raise ValueError(f"{name}: expected a finite number, got {value!r}")
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {value!r}")
        return value
    raise ValueError(f"{name}: unsupported field type {annotation!r}")


def config_from_dict(cls: type[C], values: Mapping[str, Any], source: str = "config") -> C:
    """Build the dataclass ``cls`` from ``values``, naming unknown fields and values of the wrong type."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{source}: expected an object of {cls.__name__} fields, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{source}: unknown {cls.__name__} fields {unknown}; known: {sorted(fields)}")
    try:
        converted = {name: _convert(value, hints[name], name) for name, value in values.items()}
        return cls(**converted)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: {error}") from None


def apply_overrides(config: C, overrides: Iterable[str], source: str = "--set") -> C:
    """A copy of ``config`` with ``key=value`` overrides applied (values parsed by field type; a
    JSON list or number is accepted too)."""
    values = dataclasses.asdict(config)  # type: ignore[call-overload]
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{source} {override!r}: expected key=value")
        try:
            value: Any = json.loads(raw) if raw[:1] in "[{" else raw
        except json.JSONDecodeError:
            value = raw
        values[key.strip()] = value
    return config_from_dict(type(config), values, source)


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-ready dict."""
    return dataclasses.asdict(config)
