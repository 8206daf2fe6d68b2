"""The sentence-pair model: embedding -> BiLSTM 64 (sequences) -> BiLSTM 32 (final states) as a
sentence encoder, then Dense 64 relu -> Dropout 0.2 -> Dense 1 on ``[u, v, |u - v|, u * v]``
(siamese: one encoder, shared weights, for both sentences) or on the encoding of the two sentences
joined by a separator (single); and the figures it is judged by (accuracy, F1, ROC-AUC, the
decision threshold)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...cell_kinds import check_cell, recurrent_layer
from ...training import pad_sequences
from ...validation import check_probability
from ..common import TaskModel, embedding
from .data import Vocabulary

ARCHITECTURES = ("siamese", "single")
THRESHOLD_METRICS = ("accuracy", "f1")


@dataclass
class PairsConfig:
    """The model: its vocabulary (``words``; padding, unknown and separator ids are implicit), the
    network's shape and the decision ``threshold`` on the probability (chosen on validation data
    after training). ``hidden_sizes``: one bidirectional layer per entry, each reading the previous
    one's sequence output; the last one's final states (both directions) encode a sentence.

    >>> PairsConfig(["the", "cat"], architecture="single").hidden_sizes
    [64, 32]
    """

    words: list[str]
    architecture: str = "siamese"
    cell: str = "lstm"
    embedding_size: int = 64
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 32])
    dense_size: int = 64
    dropout: float = 0.2
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}: expected one of {ARCHITECTURES}")
        check_cell(self.cell)
        if not self.hidden_sizes or min(self.embedding_size, self.dense_size, *self.hidden_sizes) < 1:
            raise ValueError(f"need embedding_size, dense_size and at least one hidden size, all positive; got "
                             f"{self.embedding_size}, {self.dense_size}, {self.hidden_sizes}")  # fmt: skip
        check_probability("dropout", self.dropout)
        check_probability("threshold", self.threshold, upper_inclusive=True)


class PairClassifier(TaskModel):
    """Whether two sentences say the same: ``logits = model(a, a_lengths, b, b_lengths)`` for padded
    id batches ``(batch, steps)``; ``sigmoid(logits)`` is the probability. Padding never reaches
    the logits.

        >>> model = PairClassifier(PairsConfig(["a", "b"], hidden_sizes=[4, 3], embedding_size=5))
        >>> a, b = torch.tensor([[3, 4, 0], [4, 4, 4]]), torch.tensor([[3, 0], [4, 3]])
        >>> tuple(model(a, torch.tensor([2, 3]), b, torch.tensor([1, 2])).shape)
        (2,)
    """

    task = "pairs"
    config_class = PairsConfig

    def __init__(self, config: PairsConfig) -> None:
        super().__init__(config)
        self.vocabulary = Vocabulary(config.words)
        self.embedding = embedding(len(self.vocabulary), config.embedding_size, padding_idx=Vocabulary.pad)
        sizes = [config.embedding_size, *(2 * size for size in config.hidden_sizes)]
        self.encoder = nn.ModuleList(
            recurrent_layer(config.cell, sizes[i], hidden, bidirectional=True)
            for i, hidden in enumerate(config.hidden_sizes)
        )
        features = sizes[-1] * (4 if config.architecture == "siamese" else 1)
        self.head = nn.Sequential(
            nn.Linear(features, config.dense_size),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.dense_size, 1),
        )

    def encode(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Sentence encodings ``(batch, 2 * hidden_sizes[-1])``: the last layer's final states of
        the forward direction (after each sentence's last word) and of the backward one."""
        _require_words(lengths, "")
        x = self.embedding(ids)
        for layer in self.encoder:
            x, state = layer(x, lengths=lengths)
        h_n = state[0] if isinstance(state, tuple) else state
        return h_n[-2:].transpose(0, 1).reshape(ids.shape[0], -1)

    def forward(self, a: Tensor, a_lengths: Tensor, b: Tensor, b_lengths: Tensor) -> Tensor:
        """Logits ``(batch,)`` of "the pair is a duplicate"; every sentence needs a word or more."""
        _require_words(a_lengths, "first ")
        _require_words(b_lengths, "second ")
        if self.config.architecture == "siamese":
            if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():  # no size may be fixed by Python
                u, v = self.encode(a, a_lengths), self.encode(b, b_lengths)
            else:  # both sentences in one pass of the shared encoder: half the steps of the time loop
                steps = max(a.shape[1], b.shape[1])
                both = torch.cat((F.pad(a, (0, steps - a.shape[1])), F.pad(b, (0, steps - b.shape[1]))))
                u, v = self.encode(both, torch.cat((a_lengths, b_lengths))).chunk(2)
            features = torch.cat((u, v, (u - v).abs(), u * v), dim=1)
        else:
            features = self.encode(*join_pairs(a, a_lengths, b, b_lengths))
        return self.head(features).squeeze(1)


def _require_words(lengths: Tensor, which: str) -> None:
    if lengths.numel() and int(lengths.min()) < 1:
        raise ValueError(f"every sentence needs at least one word; got {which}lengths {lengths.tolist()}")


def join_pairs(a: Tensor, a_lengths: Tensor, b: Tensor, b_lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Each pair as one sequence ``a <sep> b`` (padded to the width of ``a``, one step and ``b``,
    batch first) and its lengths.

    >>> joined, lengths = join_pairs(torch.tensor([[5, 6], [7, 0]]), torch.tensor([2, 1]),
    ...                              torch.tensor([[8, 0], [9, 9]]), torch.tensor([1, 2]))
    >>> joined.tolist(), lengths.tolist()
    ([[5, 6, 2, 8, 0], [7, 2, 9, 9, 0]], [4, 4])
    """
    lengths = a_lengths + 1 + b_lengths
    steps = torch.arange(a.shape[1] + 1 + b.shape[1], device=a.device)[None]
    first = a.gather(1, steps.clamp(max=a.shape[1] - 1).expand(a.shape[0], -1))
    after = (steps - a_lengths[:, None] - 1).clamp(0, b.shape[1] - 1)
    joined = torch.where(steps < a_lengths[:, None], first, b.gather(1, after))
    joined = joined.masked_fill(steps == a_lengths[:, None], Vocabulary.separator)
    return joined.masked_fill(steps >= lengths[:, None], Vocabulary.pad), lengths


def collate(items: Sequence[tuple[Tensor, Tensor, int]]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(a, a_lengths, b, b_lengths, labels)`` from ``(ids of a, ids of b, label)`` triples.

    >>> a, a_lengths, b, b_lengths, labels = collate([(torch.tensor([3, 4]), torch.tensor([5]), 1)])
    >>> a.tolist(), b_lengths.tolist(), labels.tolist()
    ([[3, 4]], [1], [1.0])
    """
    a, a_lengths = pad_sequences([first for first, _, _ in items], Vocabulary.pad)
    b, b_lengths = pad_sequences([second for _, second, _ in items], Vocabulary.pad)
    return a, a_lengths, b, b_lengths, torch.tensor([float(label) for _, _, label in items])


def bce_sum(model: nn.Module, batch: tuple[Tensor, Tensor, Tensor, Tensor, Tensor]) -> tuple[Tensor, int]:
    """Summed binary cross-entropy (nats) of a :func:`collate` batch and its number of pairs: the
    training loss (the seed's sigmoid + binary cross-entropy, computed from the logits for
    numerical stability, in float32 under bf16 autocast too)."""
    *inputs, labels = batch
    return F.binary_cross_entropy_with_logits(model(*inputs).float(), labels, reduction="sum"), len(labels)


@torch.no_grad()
def predict_probabilities(
    model: PairClassifier, pairs: Sequence[tuple[Tensor, Tensor]], batch_size: int = 256
) -> Tensor:
    """The probabilities ``(len(pairs),)`` that each ``(ids of a, ids of b)`` pair is a duplicate,
    in the order given (``model`` in eval mode; batches formed by length to keep padding small)."""
    model.eval()
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    probabilities = torch.empty(len(pairs))
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        a, a_lengths, b, b_lengths, _ = collate([(*pairs[i], 0) for i in chosen])
        probabilities[chosen] = torch.sigmoid(model(a, a_lengths, b, b_lengths).float())
    return probabilities


def _zero_one(name: str, values: Tensor) -> Tensor:
    """``values`` as booleans, or a ``ValueError`` naming the first value that is not 0 or 1."""
    bad = (values != 0) & (values != 1)
    if bool(bad.any()):
        raise ValueError(f"{name} must be 0 or 1; got {values[bad][0].item()!r}")
    return values.bool()


def binary_counts(labels: Tensor, predictions: Tensor) -> dict[str, int]:
    """True/false positives/negatives of 0/1 ``predictions`` against 0/1 ``labels``.

    >>> binary_counts(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 1, 0]))
    {'tp': 1, 'fp': 1, 'fn': 1, 'tn': 1}
    """
    labels, predictions = _zero_one("labels", labels), _zero_one("predictions", predictions)
    return {
        "tp": int((labels & predictions).sum()),
        "fp": int((~labels & predictions).sum()),
        "fn": int((labels & ~predictions).sum()),
        "tn": int((~labels & ~predictions).sum()),
    }


def accuracy_and_f1(labels: Tensor, probabilities: Tensor, threshold: float) -> tuple[float, float]:
    """Accuracy and F1 (of the positive class; 0 when nothing is predicted or labelled positive)
    when a pair is called a duplicate at ``probability >= threshold``.

    >>> accuracy_and_f1(torch.tensor([1, 1, 0, 0]), torch.tensor([0.9, 0.4, 0.6, 0.1]), 0.5)
    (0.5, 0.5)
    """
    counts = binary_counts(labels, probabilities >= threshold)
    hits = 2 * counts["tp"] + counts["fp"] + counts["fn"]
    return (counts["tp"] + counts["tn"]) / len(labels), 2 * counts["tp"] / hits if hits else 0.0


def roc_auc(labels: Tensor, scores: Tensor) -> float:
    """The area under the ROC curve: the probability that a random positive scores above a random
    negative (ties count half), by the Mann-Whitney rank sum.

    >>> roc_auc(torch.tensor([0, 0, 1, 1]), torch.tensor([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    labels = _zero_one("labels", labels)
    if scores.shape != labels.shape:
        raise ValueError(f"expected one score per label, shape {tuple(labels.shape)}; got {tuple(scores.shape)}")
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        raise ValueError(f"ROC-AUC needs both classes; got {positives} positives and {negatives} negatives")
    values, inverse, counts = torch.unique(scores.double(), return_inverse=True, return_counts=True)
    mean_rank = torch.cumsum(counts, 0) - (counts - 1) / 2  # average 1-based rank of each distinct score
    rank_sum = float(mean_rank[inverse][labels].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def choose_threshold(labels: Tensor, probabilities: Tensor, metric: str = "accuracy") -> float:
    """The threshold that maximises ``metric`` (``"accuracy"`` or ``"f1"``) on these pairs: a
    midpoint between two consecutive distinct probabilities (the one nearest 0.5 among equals).

    >>> choose_threshold(torch.tensor([0, 1, 0, 1, 1]), torch.tensor([0.1, 0.2, 0.3, 0.7, 0.9]))
    0.5
    """
    if metric not in THRESHOLD_METRICS:
        raise ValueError(f"unknown threshold metric {metric!r}: expected one of {THRESHOLD_METRICS}")
    values, inverse = torch.unique(probabilities.double(), return_inverse=True)
    candidates = torch.cat((values[:1] / 2, (values[1:] + values[:-1]) / 2, (values[-1:] + 1) / 2))
    # candidate k calls the pairs with the k-th smallest distinct probability or a larger one positive
    positive_at = torch.bincount(inverse, weights=labels.double(), minlength=len(values))
    negative_at = torch.bincount(inverse, minlength=len(values)).double() - positive_at
    zero = torch.zeros(1, dtype=torch.double)
    tp = torch.cat((positive_at.flip(0).cumsum(0).flip(0), zero))
    fp = torch.cat((negative_at.flip(0).cumsum(0).flip(0), zero))
    positives = float(labels.sum())
    if metric == "accuracy":
        score = (tp + (len(labels) - positives - fp)) / len(labels)
    else:
        score = 2 * tp / (positives + tp + fp).clamp(min=1)
    best = candidates[score >= score.max() - 1e-12]
    return float(best[(best - 0.5).abs().argmin()])
