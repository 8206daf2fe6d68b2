"""``lstmkit classify train|evaluate|predict``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.table import Table

from ...training.distributed import launch
from ..options import Checkpoint, Epochs, MaxSteps, Nproc, OutDir, Overrides, Quiet, Resume, Seed, console, user_errors
from .data import read_sequence_csv
from .model import SequenceClassifier, predict_logits
from .task import (
    CONFUSION_FILE,
    PRESETS,
    SPLITS,
    ClassifyData,
    Evaluation,
    configure,
    evaluate_set,
    final_evaluations,
    load_splits,
    plot_confusion_matrix,
    read_task_data,
    split_set,
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


def _train_worker(data: ClassifyData, model_fields: dict[str, Any], config: Any, out: Path, resume: bool) -> None:
    train(data, model_fields, config, out, resume)


def _summary(name: str, evaluation: Evaluation) -> str:
    return (f"{name}: [bold]accuracy {evaluation.accuracy:.1%}[/] of {int(evaluation.matrix.sum())} sequences "
            f"(chance {1 / len(evaluation.classes):.1%}, most frequent class {evaluation.best_constant:.1%}); "
            f"cross-entropy {evaluation.loss:.3f}")  # fmt: skip


@app.command("train")
def train_command(
    preset: Annotated[str, typer.Option(help=f"Model and budget: {', '.join(PRESETS)}.")] = "default",
    data: DataFile = None,
    test: Annotated[Path | None, typer.Option(help="A CSV of test sequences (with --data).")] = None,
    cell: Annotated[str | None, typer.Option(help="rnn, gru, lstm, peephole or layernorm.")] = None,
    out: OutDir = Path("runs/classify"),
    overrides: Overrides = None,
    epochs: Epochs = None,
    max_steps: MaxSteps = None,
    seed: Seed = None,
    resume: Resume = False,
    nproc: Nproc = 1,
    quiet: Quiet = False,
) -> None:
    """Train a classifier; report validation and test accuracy and draw the confusion matrix."""
    with user_errors():
        extra = [f"{name}={value}" for name, value in (("dataset", data), ("test", test), ("cell", cell))
                 if value is not None]  # fmt: skip
        settings, model_fields, config = configure(preset, [*(overrides or []), *extra], epochs=epochs,
                                                   max_steps=max_steps, seed=seed,
                                                   progress=False if quiet else None)  # fmt: skip
        direction = "bidirectional " if model_fields["bidirectional"] else ""
        console.print(f"[bold]classify[/] preset {preset}: {direction}{model_fields['cell']} "
                      f"{model_fields['num_layers']}x{model_fields['hidden_size']}, {model_fields['pooling']} pooling, "
                      f"{config.max_steps or config.epochs} {'steps' if config.max_steps else 'epochs'} of batch "
                      f"{config.batch_size} on {settings.dataset} -> {out}")  # fmt: skip
        if nproc > 1:
            launch(_train_worker, nproc, settings, model_fields, config, out, resume)
            evaluations = final_evaluations(SequenceClassifier.from_pretrained(out), load_splits(settings), out)
        else:
            _, result, evaluations = train(settings, model_fields, config, out, resume)
            console.print(f"stopped after {result.steps} steps ({result.stopped}, {result.seconds:.0f} s); "
                          f"best validation loss at step {result.best_step}")  # fmt: skip
        for name, evaluation in evaluations.items():
            console.print(_summary(name, evaluation), highlight=False)
        console.print(f"model, checkpoint, metrics.jsonl, curves.png and {CONFUSION_FILE} in {out}")


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
) -> None:
    """Accuracy, per-class accuracy and (optionally) the confusion matrix of a trained model."""
    with user_errors():
        model = SequenceClassifier.from_pretrained(checkpoint)
        if data is not None:
            sequences = read_sequence_csv(data, features=model.config.features, classes=model.config.classes)
        else:
            sequences = split_set(read_task_data(checkpoint), split)
        evaluation = evaluate_set(model, sequences)
        console.print(_summary(sequences.source, evaluation), highlight=False)
        console.print(_per_class_table(evaluation))
        if plot is not None:
            console.print(f"confusion matrix in {plot_confusion_matrix(evaluation, plot, sequences.source)}")


@app.command("predict")
def predict_command(
    sequences: Annotated[Path, typer.Argument(help="A CSV of sequences (sequence_id, step, features...).")],
    checkpoint: Checkpoint = Path("runs/classify"),
) -> None:
    """Print the predicted class of every sequence of a CSV (tab-separated, with its probability).
    A label column, if any, is ignored."""
    with user_errors():
        model = SequenceClassifier.from_pretrained(checkpoint)
        found = read_sequence_csv(sequences, labelled=False, features=model.config.features)
        probabilities = torch.softmax(predict_logits(model, found.sequences), dim=1)
        confidence, predicted = probabilities.max(1)
        typer.echo("sequence_id\tpredicted\tprobability")
        for name, index, share in zip(found.ids, predicted.tolist(), confidence.tolist(), strict=True):
            typer.echo(f"{name}\t{model.config.classes[index]}\t{share:.4f}")
