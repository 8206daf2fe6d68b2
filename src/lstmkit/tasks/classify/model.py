"""The sequence classifier: standardise -> recurrent stack (over the valid steps only, through
``lengths=``) -> pooling -> linear, and the figures it is judged by (accuracy, confusion matrix)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...cell_kinds import check_cell, recurrent_layer
from ...training import pad_sequences
from ...validation import check_probability
from ..common import TaskModel, check_statistics

POOLINGS = ("last", "mean", "max")


@dataclass
class ClassifyConfig:
    """The classifier: its classes and feature names, the training part's per-feature ``mean`` and
    ``std`` (inputs are standardised with them, so a saved model needs nothing else), and the
    network's shape. ``pooling``: ``"last"`` (final hidden state of the last layer, both directions
    when bidirectional), or ``"mean"``/``"max"`` over the valid steps of the last layer's output.

    >>> ClassifyConfig(["no", "yes"], ["x"], [0.0], [1.0], cell="gru").pooling
    'last'
    """

    classes: list[str]
    features: list[str]
    mean: list[float]
    std: list[float]
    cell: str = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.0
    bidirectional: bool = False
    pooling: str = "last"

    def __post_init__(self) -> None:
        check_cell(self.cell)
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}: expected one of {POOLINGS}")
        if min(self.hidden_size, self.num_layers) < 1:
            raise ValueError(f"need hidden_size, num_layers >= 1; got {self.hidden_size}, {self.num_layers}")
        check_probability("dropout", self.dropout)
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"need at least two distinct classes, got {self.classes}")
        check_statistics("features", self.features, self.mean, self.std)


class SequenceClassifier(TaskModel):
    """Classifies padded sequences: ``logits = model(x, lengths)`` for ``x`` of shape ``(batch,
    steps, features)`` in raw units; steps at or past a sequence's length never affect its logits.

        >>> config = ClassifyConfig(["a", "b", "c"], ["x", "y"], [0.0, 0.0], [1.0, 1.0], hidden_size=8)
        >>> model = SequenceClassifier(config)
        >>> tuple(model(torch.randn(4, 6, 2), torch.tensor([6, 1, 3, 6])).shape)
        (4, 3)
    """

    task = "classify"
    config_class = ClassifyConfig

    def __init__(self, config: ClassifyConfig) -> None:
        super().__init__(config)
        self.register_statistics("feature", config.mean, config.std, torch.float32)
        self.rnn = recurrent_layer(config.cell, len(config.features), config.hidden_size, config.num_layers,
                                   dropout=config.dropout, bidirectional=config.bidirectional)  # fmt: skip
        self.directions = 2 if config.bidirectional else 1
        self.head = nn.Linear(config.hidden_size * self.directions, len(config.classes))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Logits ``(batch, classes)``; ``lengths`` (int64, ``(batch,)``, each >= 1) defaults to
        every step being valid."""
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        if lengths.numel() and int(lengths.min()) < 1:
            raise ValueError(f"every sequence needs at least one step; got lengths {lengths.tolist()}")
        output, state = self.rnn((x - self.feature_mean) / self.feature_std, lengths=lengths)
        return self.head(self.pool(output, state, lengths))

    def pool(self, output: Tensor, state: Tensor | tuple[Tensor, ...], lengths: Tensor) -> Tensor:
        """One vector per sequence from the last layer (see :class:`ClassifyConfig`)."""
        if self.config.pooling == "last":
            h_n = state[0] if isinstance(state, tuple) else state
            return h_n[-self.directions :].transpose(0, 1).reshape(h_n.shape[1], -1)
        valid = (torch.arange(output.shape[1], device=output.device)[None] < lengths[:, None].to(output.device))[
            ..., None
        ]
        if self.config.pooling == "mean":
            return (output * valid).sum(1) / lengths[:, None].to(output.dtype)
        return output.masked_fill(~valid, float("-inf")).amax(1)


def collate(items: Sequence[tuple[Tensor, int]]) -> tuple[Tensor, Tensor, Tensor]:
    """``(padded, lengths, targets)`` from ``(sequence, class index)`` pairs.

    >>> padded, lengths, targets = collate([(torch.ones(3, 2), 1), (torch.ones(1, 2), 0)])
    >>> tuple(padded.shape), lengths.tolist(), targets.tolist()
    ((2, 3, 2), [3, 1], [1, 0])
    """
    padded, lengths = pad_sequences([sequence for sequence, _ in items])
    return padded, lengths, torch.tensor([target for _, target in items], dtype=torch.long)


def cross_entropy_sum(model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, int]:
    """Summed cross-entropy (nats) of a :func:`collate` batch and its number of sequences: the
    training loss of the task (in float32, under bf16 autocast too)."""
    padded, lengths, targets = batch
    return F.cross_entropy(model(padded, lengths).float(), targets, reduction="sum"), len(targets)


@torch.no_grad()
def predict_logits(model: SequenceClassifier, sequences: Sequence[Tensor], batch_size: int = 256) -> Tensor:
    """The logits ``(len(sequences), classes)`` of ``model`` (in eval mode), in the order given;
    batches are formed by length to keep padding small."""
    model.eval()
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    logits = torch.empty(len(sequences), len(model.config.classes))
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        padded, lengths = pad_sequences([sequences[i] for i in chosen])
        logits[chosen] = model(padded, lengths).float()
    return logits


def confusion_matrix(targets: Tensor, predictions: Tensor, num_classes: int) -> Tensor:
    """Counts ``(num_classes, num_classes)``: row = true class, column = predicted class.

    >>> confusion_matrix(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 2]), 3).tolist()
    [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    """
    return torch.bincount(targets * num_classes + predictions, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def accuracy(matrix: Tensor) -> float:
    """The share of correct predictions in a confusion matrix."""
    return int(matrix.diagonal().sum()) / int(matrix.sum())


def per_class_accuracy(matrix: Tensor) -> list[float]:
    """For each true class, the share of its sequences predicted right (its recall); NaN for a
    class without sequences.

    >>> per_class_accuracy(torch.tensor([[3, 1], [0, 0]]))
    [0.75, nan]
    """
    counts = matrix.sum(1).double()
    return (matrix.diagonal().double() / counts).tolist()
