"""The sequence classification task: data splits, presets, training, evaluation and the confusion
matrix plot.

The default data is UEA JapaneseVowels with its official split: the 270 training utterances lose
about 20% of each class to validation (which picks the best model), and the 370 test utterances are
only read for the final figures. A user's CSV trains the same way; its test figures need a second
CSV. A sequence is in the validation part when the hash of its content (label and values, see
:mod:`~lstmkit.tasks.splits`) says so, so sequences appended to the file never move the others
between training and validation; a run records what it trained on (``trained_on`` in ``task.json``)
and ``evaluate`` says when the data differs now.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...precision import autocast_for
from ...training import TrainConfig, TrainResult
from ...training.plots import pyplot
from ..runner import DataField, Preset, TaskSettings, data_change, fit, write_png, write_task_file
from ..splits import data_record
from .data import SequenceSet, feature_statistics, japanese_vowels, read_sequence_csv, sort_classes, validation_split
from .model import (
    ClassifyConfig,
    SequenceClassifier,
    accuracy,
    collate,
    confusion_matrix,
    cross_entropy_sum,
    per_class_accuracy,
    predict_logits,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CONFUSION_FILE = "confusion.png"
JAPANESE_VOWELS = "japanese_vowels"
SPLITS = ("train", "validation", "test")
DATA_FIELDS = {
    "classes": DataField(["a", "b"], "the classes come from the training data"),
    "features": DataField(["x"], "the features come from the training data"),
    "mean": DataField([0.0], "the mean of every feature comes from the training data"),
    "std": DataField([1.0], "the std of every feature comes from the training data"),
}


@dataclass
class ClassifyData:
    """Where the sequences come from: ``dataset`` is ``"japanese_vowels"`` or a long-format CSV
    (see :mod:`~lstmkit.tasks.classify.data`); ``test`` a CSV of test sequences for a CSV dataset;
    ``validation_fraction`` of every class of the training data is held out (in expectation: the
    sequences whose content hash with ``split_seed`` falls below it) to pick the best model.

    >>> ClassifyData(dataset="walks.csv", test="walks-test.csv").validation_fraction
    0.2
    """

    dataset: str = JAPANESE_VOWELS
    test: str | None = None
    validation_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must lie strictly between 0 and 1, got {self.validation_fraction}")
        if self.dataset == JAPANESE_VOWELS and self.test is not None:
            raise ValueError("test= is for a CSV dataset; JapaneseVowels brings its own test split")


@dataclass
class Splits:
    """The training, validation and (when there is one) test sequences, and the classes.

    >>> part = SequenceSet(["s"], [torch.zeros(2, 1)], ["a"], ["x"], "memory")
    >>> Splits(part, part, None, ["a", "b"]).test is None
    True
    """

    train: SequenceSet
    validation: SequenceSet
    test: SequenceSet | None
    classes: list[str]


def load_splits(data: ClassifyData) -> Splits:
    """The data's three parts; the validation part holds the sequences of the training data whose hash
    place falls below the validation fraction (:func:`~lstmkit.tasks.classify.data.validation_split`)."""
    if data.dataset == JAPANESE_VOWELS:
        full, test = japanese_vowels("train"), japanese_vowels("test")
    else:
        full = read_sequence_csv(data.dataset)
        classes = sort_classes(full.labels or [])
        if len(classes) < 2:
            raise ValueError(f"{data.dataset}: every sequence has label {classes[0]!r}; need two classes or more")
        test = None if data.test is None else read_sequence_csv(data.test, features=full.features, classes=classes)
    assert full.labels is not None
    kept, held_out = validation_split(full.labels, full.keys, data.validation_fraction, data.split_seed)
    validation = full.subset(held_out, f"{full.source} (validation part)")
    train = full.subset(kept, f"{full.source} (training part)")
    missing = sorted(set(full.labels) - set(train.labels or []))
    if missing:
        raise ValueError(f"{full.source}: every sequence of class(es) {missing} falls in the validation part; "
                         "use more data, a smaller validation_fraction or another split_seed")  # fmt: skip
    return Splits(train, validation, test, sort_classes(full.labels))


def data_source(data: ClassifyData) -> str:
    """The file (or files) a run's data comes from, for a warning."""
    return data.dataset if data.test is None else f"{data.dataset} or {data.test}"


def trained_on(splits: Splits) -> dict[str, Any]:
    """What a run trains and is evaluated on, for its ``task.json``: the sequences of each part and a
    fingerprint of all of them (:func:`~lstmkit.tasks.splits.data_record`)."""
    parts = {"train": splits.train, "validation": splits.validation, "test": splits.test}
    return data_record({name: part.keys for name, part in parts.items() if part is not None})


PRESETS: dict[str, Preset[ClassifyData]] = {
    "default": Preset(
        ClassifyData(),
        {"hidden_size": 64, "bidirectional": True},
        TrainConfig(epochs=40, batch_size=16, lr=5e-3, schedule="cosine", warmup_steps=20, log_every=14),
    ),
    "tiny": Preset(
        ClassifyData(),
        {"hidden_size": 16},
        TrainConfig(epochs=4, batch_size=16, lr=1e-2, log_every=5),
    ),
}

SETTINGS = TaskSettings(ClassifyData, ClassifyConfig, DATA_FIELDS, PRESETS)
configure = SETTINGS.configure
read_task_data = SETTINGS.read_task_data


@dataclass
class Evaluation:
    """A model's figures on one set of labelled sequences: the confusion matrix (true class down)
    and the mean cross-entropy.

    >>> evaluation = Evaluation(["a", "b"], torch.tensor([[3, 1], [0, 4]]), 0.3)
    >>> evaluation.accuracy, evaluation.per_class, evaluation.best_constant
    (0.875, [0.75, 1.0], 0.5)
    """

    classes: list[str]
    matrix: Tensor
    loss: float

    @property
    def accuracy(self) -> float:
        """The share of sequences classified right."""
        return accuracy(self.matrix)

    @property
    def per_class(self) -> list[float]:
        """Each class's share of its sequences classified right (NaN for a class without any)."""
        return per_class_accuracy(self.matrix)

    @property
    def best_constant(self) -> float:
        """The accuracy of always predicting this set's most frequent class: the trivial baseline."""
        return int(self.matrix.sum(1).max()) / int(self.matrix.sum())


def evaluate_set(model: SequenceClassifier, data: SequenceSet) -> Evaluation:
    """Accuracy, confusion matrix and mean cross-entropy of ``model`` on the labelled ``data``."""
    classes = model.config.classes
    if data.labels is None:
        raise ValueError(f"{data.source}: no labels; evaluation needs a 'label' column")
    unknown = sorted(set(data.labels) - set(classes))
    if unknown:
        raise ValueError(f"{data.source}: labels {unknown} are not among the model's classes {classes}")
    targets = torch.tensor([classes.index(label) for label in data.labels])
    logits = predict_logits(model, data.sequences)
    matrix = confusion_matrix(targets, logits.argmax(1), len(classes))
    return Evaluation(classes, matrix, float(F.cross_entropy(logits, targets)))


def confusion_figure(evaluation: Evaluation, title: str) -> Figure:
    """The confusion matrix as a matplotlib figure: true class down, predicted class across, the
    count in every cell, the accuracy in the title."""
    matrix, classes = evaluation.matrix, evaluation.classes
    size = 2.5 + 0.45 * len(classes)
    figure, axis = pyplot().subplots(figsize=(size + 1, size))
    image = axis.imshow(matrix.numpy(), cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="sequences")
    axis.set_xticks(range(len(classes)), classes, rotation=45 if max(map(len, classes)) > 3 else 0)
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(f"{title}\naccuracy {evaluation.accuracy:.1%} of {int(matrix.sum())}", fontsize=10)
    threshold = float(matrix.max()) / 2
    for row in range(len(classes)):
        for column in range(len(classes)):
            count = int(matrix[row, column])
            axis.text(column, row, str(count), ha="center", va="center", fontsize=8,
                      color="white" if count > threshold else "black")  # fmt: skip
    figure.tight_layout()
    return figure


def plot_confusion_matrix(evaluation: Evaluation, path: str | Path, title: str) -> Path:
    """Write :func:`confusion_figure` to the PNG ``path`` (atomically)."""
    return write_png(confusion_figure(evaluation, title), path)


def train(data: ClassifyData, model_fields: dict[str, Any], config: TrainConfig, out_dir: str | Path | None,
          resume: bool = False) -> tuple[SequenceClassifier, TrainResult, dict[str, Evaluation]]:  # fmt: skip
    """Train a classifier; returns it (the weights of the best validation loss when validated), the
    run's result and its :func:`final_evaluations` (none in the processes of rank > 0)."""
    splits = load_splits(data)
    mean, std = feature_statistics(splits.train.sequences)
    torch.manual_seed(config.seed)
    model_config = ClassifyConfig(splits.classes, splits.train.features, mean, std, **model_fields)
    model = SequenceClassifier(model_config)
    assert splits.train.labels is not None
    examples = [(s, splits.classes.index(label)) for s, label in zip(splits.train.sequences, splits.train.labels,
                                                                       strict=True)]  # fmt: skip
    write_task_file(out_dir, data, splits.train.source, trained_on=trained_on(splits))

    def evaluate(model: SequenceClassifier) -> dict[str, float]:
        evaluation = evaluate_set(model, splits.validation)
        return {"val_loss": evaluation.loss, "val_accuracy": evaluation.accuracy}

    model, result, rank = fit(model, config, out_dir, resume, train_set=examples, collate=collate,
                              loss=cross_entropy_sum, evaluate=evaluate, metric="val_loss",
                              lengths=[len(sequence) for sequence, _ in examples])  # fmt: skip
    if rank != 0:  # the other processes of a data-parallel run leave the figures to rank 0
        return model, result, {}
    with autocast_for(config.precision):
        return model, result, final_evaluations(model, splits, out_dir)


def final_evaluations(model: SequenceClassifier, splits: Splits, out_dir: str | Path | None) -> dict[str, Evaluation]:
    """The model's evaluations on the validation and (when there is one) test part; with an
    ``out_dir``, the test (else validation) confusion matrix is drawn into ``confusion.png`` there."""
    evaluations = {"validation": evaluate_set(model, splits.validation)}
    if splits.test is not None:
        evaluations["test"] = evaluate_set(model, splits.test)
    if out_dir is not None:
        split = "test" if splits.test is not None else "validation"
        plot_confusion_matrix(evaluations[split], Path(out_dir) / CONFUSION_FILE, getattr(splits, split).source)
    return evaluations


def run_split(directory: str | Path, split: str) -> tuple[SequenceSet, str | None]:
    """One part (``"train"``, ``"validation"`` or ``"test"``) of the data the run in ``directory``
    trained on, split as in training, and one line saying that the data has changed since, if it has."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    data = read_task_data(directory)
    splits = load_splits(data)
    chosen = getattr(splits, split)
    if chosen is None:
        raise ValueError(f"{data.dataset} has no test part: train with --test FILE, or evaluate with --data FILE")
    return chosen, data_change(directory, data_source(data), trained_on(splits))
