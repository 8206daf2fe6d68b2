"""``lstmkit classify train|evaluate|predict``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.table import Table

from ...commandline.messages import console, print_error
from ...commandline.options import Checkpoint
from ...precision import autocast_for
from ..commands import TrainRun, stack_shape, train_options
from ..options import Precision, model_session
from .data import read_sequence_csv
from .model import SequenceClassifier, predict_logits
from .task import (
    CONFUSION_FILE,
    PRESETS,
    SPLITS,
    Evaluation,
    configure,
    evaluate_set,
    final_evaluations,
    load_splits,
    plot_confusion_matrix,
    run_split,
    train,
)

app = typer.Typer(
    help="Variable-length sequence classification (default data: UEA JapaneseVowels, 9 speakers).",
    no_args_is_help=True,
)

DataFile = Annotated[
    Path | None,
    typer.Option("--data", help="A long-format CSV (sequence_id, step, label, features...) instead of JapaneseVowels."),
]


def _summary(name: str, evaluation: Evaluation) -> str:
    return (f"{name}: [bold]accuracy {evaluation.accuracy:.1%}[/] of {int(evaluation.matrix.sum())} sequences "
            f"(chance {1 / len(evaluation.classes):.1%}, most frequent class {evaluation.best_constant:.1%}); "
            f"cross-entropy {evaluation.loss:.3f}")  # fmt: skip


@app.command("train")
@train_options("classify", PRESETS, "default", preset_help="Model and budget")
def train_command(
    run: TrainRun,
    data: DataFile = None,
    test: Annotated[Path | None, typer.Option(help="A CSV of test sequences (with --data).")] = None,
) -> None:
    """Train a classifier; report validation and test accuracy and draw the confusion matrix."""
    with run.session():
        settings = run.configure(configure, dataset=data, test=test)
        data_settings, model_fields, _ = settings
        direction = "bidirectional " if model_fields["bidirectional"] else ""
        shape = f"{direction}{stack_shape(model_fields)}, {model_fields['pooling']} pooling"
        trained = run.train(train, settings, shape, data_settings.dataset)
        if trained is None:  # trained in other processes: the model is in the folder
            model = SequenceClassifier.from_pretrained(run.out)
            with autocast_for(settings[2].precision):
                evaluations = final_evaluations(model, load_splits(data_settings), run.out)
        else:
            _, _, evaluations = trained
        for name, evaluation in evaluations.items():
            console.print(_summary(name, evaluation), highlight=False)
        console.print(run.saved_line(CONFUSION_FILE))


def _per_class_table(evaluation: Evaluation) -> Table:
    table = Table("class", "sequences", "correct", "accuracy", title="per class (recall)")
    for index, (name, share) in enumerate(zip(evaluation.classes, evaluation.per_class, strict=True)):
        count, correct = int(evaluation.matrix[index].sum()), int(evaluation.matrix[index, index])
        table.add_row(name, str(count), str(correct), "-" if math.isnan(share) else f"{share:.1%}")
    return table


@app.command("evaluate")
def evaluate_command(
    checkpoint: Checkpoint = Path("runs/classify"),
    split: Annotated[str, typer.Option(help=f"{', '.join(SPLITS)} (of the data the model was trained on).")] = "test",
    data: Annotated[Path | None, typer.Option("--data", help="Evaluate on this labelled CSV instead.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Also draw the confusion matrix into this PNG.")] = None,
    precision: Precision = "auto",
) -> None:
    """Accuracy, per-class accuracy and (optionally) the confusion matrix of a trained model."""
    with model_session(precision):
        model = SequenceClassifier.from_pretrained(checkpoint)
        if data is not None:
            sequences = read_sequence_csv(data, features=model.config.features, classes=model.config.classes)
        else:
            sequences, change = run_split(checkpoint, split)
            if change:
                print_error(change, "warning")
        evaluation = evaluate_set(model, sequences)
        console.print(_summary(sequences.source, evaluation), highlight=False)
        console.print(_per_class_table(evaluation))
        if plot is not None:
            console.print(f"confusion matrix in {plot_confusion_matrix(evaluation, plot, sequences.source)}")


@app.command("predict")
def predict_command(
    sequences: Annotated[Path, typer.Argument(help="A CSV of sequences (sequence_id, step, features...).")],
    checkpoint: Checkpoint = Path("runs/classify"),
    precision: Precision = "auto",
) -> None:
    """Print the predicted class of every sequence of a CSV (tab-separated, with its probability).
    A label column, if any, is ignored."""
    with model_session(precision):
        model = SequenceClassifier.from_pretrained(checkpoint)
        found = read_sequence_csv(sequences, labelled=False, features=model.config.features)
        probabilities = torch.softmax(predict_logits(model, found.sequences), dim=1)
        confidence, predicted = probabilities.max(1)
        typer.echo("sequence_id\tpredicted\tprobability")
        for name, index, share in zip(found.ids, predicted.tolist(), confidence.tolist(), strict=True):
            typer.echo(f"{name}\t{model.config.classes[index]}\t{share:.4f}")
