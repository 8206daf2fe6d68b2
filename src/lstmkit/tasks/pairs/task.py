"""The sentence-pair task: data splits, vocabulary, presets, training, the decision threshold and
the held-out figures.

The default data are the KJV/WEB Bible verse pairs, cut by chapter into train (80%), validation
(10%) and test (10%). A Quora Question Pairs file is cut by a hash of each pair's content (see
:mod:`~lstmkit.tasks.splits`), so rows appended to it never move the pairs already there to another
part. The vocabulary is built on the training pairs only. After training, the decision threshold that maximises accuracy
(or F1) on the validation pairs is stored in the model's config and applied to the test pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...precision import autocast_for
from ...training import TrainConfig, TrainResult
from ...validation import check_probability
from ..common import check_held_out
from ..files import skipped_notes
from ..runner import DataField, Preset, TaskSettings, data_change, fit, write_task_file
from ..splits import data_record, hash_split, place
from .data import PairSet, Vocabulary, bible_verses, chapter_split, read_quora_tsv, verse_pairs
from .model import (
    THRESHOLD_METRICS,
    PairClassifier,
    PairsConfig,
    accuracy_and_f1,
    bce_sum,
    choose_threshold,
    collate,
    predict_probabilities,
    roc_auc,
)

BIBLE = "bible"
SPLITS = ("train", "validation", "test")
DATA_FIELDS = {
    "words": DataField(["?"], "the vocabulary comes from the training pairs"),
    "threshold": DataField(0.5, "the threshold is chosen on the validation pairs"),
}


@dataclass
class PairsData:
    """Where the pairs come from and how they are cut: ``dataset`` is ``"bible"`` or a Quora
    Question Pairs TSV file; ``validation_fraction`` and ``test_fraction`` of the chapters (Bible,
    drawn with ``split_seed``) or pairs (file, by a hash of their content and ``split_seed``) are
    held out; at most ``max_train_pairs`` training and ``max_eval_pairs`` validation/test pairs are
    used (``None``: all; a file's pairs are then taken in the order of a second hash); ``hard_negatives`` is the
    share of Bible negatives drawn from the same chapter; words seen fewer than ``min_count`` times
    in training are unknown; the threshold maximises ``threshold_metric`` on validation;
    ``drop_empty`` leaves out file pairs with an empty question and ``skip_bad_rows`` any malformed
    row of the file (else they are an error).

    >>> PairsData(dataset="quora.tsv", threshold_metric="f1").min_count
    2
    """

    dataset: str = BIBLE
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    max_train_pairs: int | None = None
    max_eval_pairs: int | None = None
    hard_negatives: float = 0.5
    min_count: int = 2
    threshold_metric: str = "accuracy"
    drop_empty: bool = False
    skip_bad_rows: bool = False

    def __post_init__(self) -> None:
        check_held_out(self.validation_fraction, self.test_fraction)
        for name in ("max_train_pairs", "max_eval_pairs"):
            if getattr(self, name) is not None and getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2 or None, got {getattr(self, name)}")
        check_probability("hard_negatives", self.hard_negatives, upper_inclusive=True)
        if self.min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {self.min_count}")
        if self.threshold_metric not in THRESHOLD_METRICS:
            raise ValueError(f"unknown threshold_metric {self.threshold_metric!r}: expected one of {THRESHOLD_METRICS}")


def read_file(data: PairsData) -> PairSet:
    """The pairs of the file ``data.dataset``, with its malformed rows left out as ``data`` says."""
    return read_quora_tsv(data.dataset, drop_empty=data.drop_empty, skip_bad_rows=data.skip_bad_rows)


def file_notes(data: PairsData) -> list[str]:
    """Notes on the rows of the pairs file left out (none for the Bible pairs)."""
    return [] if data.dataset == BIBLE else skipped_notes(read_file(data).skipped)


def load_splits(data: PairsData) -> dict[str, PairSet]:
    """The training, validation and test pairs (capped at ``max_train_pairs``/``max_eval_pairs``)."""
    fractions = [1 - data.validation_fraction - data.test_fraction, data.validation_fraction, data.test_fraction]
    caps = [data.max_train_pairs, data.max_eval_pairs, data.max_eval_pairs]
    if data.dataset == BIBLE:
        verses = bible_verses()
        parts = chapter_split(verses, fractions, data.split_seed)
        return {
            name: verse_pairs(
                verses,
                part,
                f"KJV/WEB Bible verse pairs ({name}: {len(part):,} verses of "
                f"{len({verses[i].chapter for i in part})} chapters)",
                hard_negatives=data.hard_negatives,
                max_pairs=cap,
                seed=data.split_seed * 3 + number,
            )  # fmt: skip
            for number, (name, part, cap) in enumerate(zip(SPLITS, parts, caps, strict=True))
        }
    pairs = read_file(data)
    if len(pairs) < 10:
        raise ValueError(f"{pairs.source}: {len(pairs)} pairs; need at least 10 to split three ways")
    if len(set(pairs.labels or [])) < 2:
        raise ValueError(f"{pairs.source}: every pair has is_duplicate={pairs.labels[0]}; need both 0 and 1")  # type: ignore[index]
    splits, keys = {}, pairs.keys
    for name, part, cap in zip(SPLITS, hash_split(keys, fractions, data.split_seed), caps, strict=True):
        kept = sorted(part, key=lambda index: place(keys[index], data.split_seed + 1))[:cap]
        splits[name] = pairs.subset(sorted(kept), f"{pairs.source} ({name} part)")
        if name != "train" and len(set(splits[name].labels or [])) < 2:
            raise ValueError(f"{splits[name].source}: only one label among {len(part[:cap])} pairs; the held-out "
                             "parts need both (use a larger file or another split_seed)")  # fmt: skip
    return splits


PRESETS: dict[str, Preset[PairsData]] = {
    "default": Preset(
        PairsData(max_train_pairs=20_000, max_eval_pairs=10_000),
        {},
        TrainConfig(
            epochs=3, batch_size=16, lr=2e-3, schedule="cosine", warmup_steps=100, eval_every=500, log_every=50
        ),  # fmt: skip
    ),
    "tiny": Preset(
        PairsData(max_train_pairs=1200, max_eval_pairs=300, min_count=3),
        {"embedding_size": 32, "hidden_sizes": [32, 16], "dense_size": 32},
        TrainConfig(epochs=1, batch_size=16, lr=1e-2, log_every=25),
    ),
}

SETTINGS = TaskSettings(PairsData, PairsConfig, DATA_FIELDS, PRESETS)
configure = SETTINGS.configure
read_task_data = SETTINGS.read_task_data


def encode_pairs(vocabulary: Vocabulary, pairs: PairSet) -> list[tuple[Tensor, Tensor]]:
    """Both sentences of every pair as id tensors."""
    return [(vocabulary.encode(a), vocabulary.encode(b)) for a, b in zip(pairs.first, pairs.second, strict=True)]


@dataclass
class Evaluation:
    """A model's figures on labelled pairs at a decision threshold.

    >>> evaluation = Evaluation(torch.tensor([1, 0, 0, 0]), torch.tensor([0.9, 0.2, 0.6, 0.1]), 0.5)
    >>> evaluation.accuracy, evaluation.f1, evaluation.roc_auc, evaluation.majority
    (0.75, 0.6666666666666666, 1.0, 0.75)
    """

    labels: Tensor
    probabilities: Tensor
    threshold: float

    @property
    def accuracy(self) -> float:
        """The share of pairs decided right at the threshold."""
        return accuracy_and_f1(self.labels, self.probabilities, self.threshold)[0]

    @property
    def f1(self) -> float:
        """F1 of the duplicate class at the threshold."""
        return accuracy_and_f1(self.labels, self.probabilities, self.threshold)[1]

    @property
    def roc_auc(self) -> float:
        """The area under the ROC curve (threshold-free)."""
        return roc_auc(self.labels, self.probabilities)

    @property
    def loss(self) -> float:
        """Mean binary cross-entropy (nats)."""
        return float(F.binary_cross_entropy(self.probabilities.double(), self.labels.double()))

    @property
    def majority(self) -> float:
        """The accuracy of always answering this set's more frequent label: the trivial baseline."""
        share = float(self.labels.double().mean())
        return max(share, 1 - share)

    def figures(self, prefix: str = "") -> dict[str, float]:
        """Every figure by name (``prefix`` before each)."""
        names = ("accuracy", "f1", "roc_auc", "loss", "majority", "threshold")
        return {f"{prefix}{name}": float(getattr(self, name)) for name in names}


def evaluate_set(model: PairClassifier, pairs: PairSet, threshold: float | None = None) -> Evaluation:
    """``model``'s figures on the labelled ``pairs`` at ``threshold`` (default: the model's)."""
    if pairs.labels is None:
        raise ValueError(f"{pairs.source}: no labels; evaluation needs the is_duplicate column")
    probabilities = predict_probabilities(model, encode_pairs(model.vocabulary, pairs))
    chosen = model.config.threshold if threshold is None else threshold
    return Evaluation(torch.tensor(pairs.labels), probabilities, chosen)


def train(data: PairsData, model_fields: dict[str, Any], config: TrainConfig, out_dir: str | Path | None,
          resume: bool = False) -> tuple[PairClassifier, TrainResult, dict[str, Evaluation]]:  # fmt: skip
    """Train a pair classifier; returns it (the weights of the best validation loss, with the
    threshold chosen on validation), the run's result and its validation and test evaluations."""
    splits = load_splits(data)
    vocabulary = Vocabulary.from_texts(splits["train"].first + splits["train"].second, data.min_count)
    torch.manual_seed(config.seed)
    model = PairClassifier(PairsConfig(vocabulary.words, **model_fields))
    examples = [(*ids, label) for ids, label in zip(encode_pairs(vocabulary, splits["train"]),
                                                    splits["train"].labels or [], strict=True)]  # fmt: skip
    validation = encode_pairs(vocabulary, splits["validation"])
    validation_labels = torch.tensor(splits["validation"].labels)
    write_task_file(out_dir, data, splits["train"].source, trained_on=trained_on(splits))

    def evaluate(model: PairClassifier) -> dict[str, float]:
        evaluation = Evaluation(validation_labels, predict_probabilities(model, validation), 0.5)
        return {"val_loss": evaluation.loss, "val_accuracy": evaluation.accuracy, "val_roc_auc": evaluation.roc_auc}

    lengths = [len(a) + len(b) for a, b, _ in examples]
    model, result, rank = fit(model, config, out_dir, resume, train_set=examples, collate=collate, loss=bce_sum,
                              evaluate=evaluate, metric="val_loss", lengths=lengths)  # fmt: skip
    with autocast_for(config.precision):
        probabilities = predict_probabilities(model, validation)
        model.config.threshold = choose_threshold(validation_labels, probabilities, data.threshold_metric)
        evaluations = {name: evaluate_set(model, splits[name]) for name in ("validation", "test")}
    if out_dir is not None and rank == 0:
        model.save_pretrained(out_dir)
    return model, result, evaluations


def trained_on(splits: dict[str, PairSet]) -> dict[str, Any]:
    """What a run trains and is evaluated on, for its ``task.json``: the pairs of each part and the
    fingerprint of all of them (:func:`~lstmkit.tasks.splits.data_record`)."""
    return data_record({name: pairs.keys for name, pairs in splits.items()})


def run_split(directory: str | Path, split: str) -> tuple[PairSet, str | None]:
    """One part (``"train"``, ``"validation"`` or ``"test"``) of the data the run in ``directory``
    trained on, cut as in training, and one line saying that the data has changed since, if it has."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    data = read_task_data(directory)
    splits = load_splits(data)
    return splits[split], data_change(directory, data.dataset, trained_on(splits))
