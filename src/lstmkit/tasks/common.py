"""What every task shares: the checks of the model settings every task has, the base class of task
models (with Hugging Face style ``save_pretrained``/``from_pretrained``), and the parsing of the
training options that every ``lstmkit <task> train`` command accepts. The recurrent cell kinds by
name are :mod:`lstmkit.cell_kinds`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from torch import nn

from ..training import TrainConfig, apply_overrides, config_from_dict, load_pretrained, save_pretrained
from ..validation import check_weight_count


def embedding(num_embeddings: int, embedding_dim: int, **options: Any) -> nn.Embedding:
    """``nn.Embedding(num_embeddings, embedding_dim, **options)``, refused before it is built if it
    would have more than :data:`~lstmkit.validation.MAX_WEIGHTS` weights.

    >>> embedding(40, 8).weight.shape
    torch.Size([40, 8])
    """
    check_weight_count(f"an embedding of {num_embeddings} x {embedding_dim}", num_embeddings * embedding_dim)
    return nn.Embedding(num_embeddings, embedding_dim, **options)


def check_statistics(what: str, names: Sequence[str], mean: Sequence[float], std: Sequence[float]) -> None:
    """Refuse standardisation statistics that are not one ``mean`` and one ``std`` for each of the
    inputs ``names`` (``what``: features, columns), or a ``std`` that is not positive and finite.

    >>> check_statistics("columns", ["y", "x"], [0.0, 1.0], [1.0, 0.0])
    Traceback (most recent call last):
    ...
    ValueError: every std must be positive and finite, got [1.0, 0.0]
    """
    if not names or not len(names) == len(mean) == len(std):
        raise ValueError(f"{what}, mean and std must have the same positive length; got {len(names)}, {len(mean)}, "
                         f"{len(std)}")  # fmt: skip
    if not all(s > 0 and math.isfinite(s) for s in std):
        raise ValueError(f"every std must be positive and finite, got {list(std)}")


def check_held_out(validation_fraction: float, test_fraction: float) -> None:
    """Refuse held-out shares of the data that leave nothing to train on or hold nothing out.

    >>> check_held_out(0.5, 0.5)
    Traceback (most recent call last):
    ...
    ValueError: validation_fraction and test_fraction must be positive and sum to less than 1, got 0.5 and 0.5
    """
    if min(validation_fraction, test_fraction) <= 0 or validation_fraction + test_fraction >= 1:
        raise ValueError(f"validation_fraction and test_fraction must be positive and sum to less than 1, got "
                         f"{validation_fraction} and {test_fraction}")  # fmt: skip


class TaskModel(nn.Module):
    """Base of the task models: holds a config dataclass and saves/loads itself as a folder with
    ``config.json`` and ``model.safetensors``.

    Subclasses set ``task`` (the task's name) and ``config_class`` and take the config as their
    only constructor argument.
    """

    task: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def register_statistics(self, prefix: str, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype) -> None:
        """Keep the standardisation statistics as the buffers ``<prefix>_mean`` and ``<prefix>_std``:
        they move with the model, and are saved in its config rather than with its weights."""
        self.register_buffer(f"{prefix}_mean", torch.tensor(mean, dtype=dtype), persistent=False)
        self.register_buffer(f"{prefix}_std", torch.tensor(std, dtype=dtype), persistent=False)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``."""
        return save_pretrained(directory, self, task=self.task, config=self.config_dict())

    @classmethod
    def from_config_dict(cls, values: dict[str, Any]) -> Self:
        return cls(config_from_dict(cls.config_class, values, f"{cls.task} config"))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> Self:
        """The model saved in ``directory`` (by training or :meth:`save_pretrained`), in eval mode."""
        return load_pretrained(directory, cls.task, cls.from_config_dict)  # type: ignore[return-value]


def split_overrides(overrides: Sequence[str], *configs: Any) -> list[Any]:
    """Apply ``key=value`` overrides to whichever of ``configs`` has the field ``key``; an unknown
    key is an error that lists the known ones."""
    buckets: list[list[str]] = [[] for _ in configs]
    for override in overrides:
        key = override.partition("=")[0].strip()
        owners = [i for i, c in enumerate(configs) if key in {f.name for f in dataclasses.fields(c)}]
        if not owners:
            known = sorted({f.name for c in configs for f in dataclasses.fields(c)})
            raise ValueError(f"--set {override!r}: unknown setting {key!r}; known settings: {', '.join(known)}")
        buckets[owners[0]].append(override)
    return [apply_overrides(config, bucket) for config, bucket in zip(configs, buckets, strict=True)]


def train_config(defaults: TrainConfig, **options: Any) -> TrainConfig:
    """``defaults`` with the command line's explicit options (those not ``None``) applied."""
    given = {name: value for name, value in options.items() if value is not None}
    return config_from_dict(TrainConfig, dataclasses.asdict(defaults) | given, "training options")
