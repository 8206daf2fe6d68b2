"""``lstmkit pairs train|evaluate|predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ...commandline.messages import console, print_error, print_note
from ...commandline.options import Checkpoint
from ...precision import autocast_for
from ..commands import TrainRun, train_options
from ..files import skipped_notes
from ..options import Precision, model_session
from .data import read_quora_tsv
from .model import PairClassifier, predict_probabilities
from .task import PRESETS, SPLITS, Evaluation, configure, evaluate_set, file_notes, load_splits, run_split, train

app = typer.Typer(
    help="Sentence-pair similarity (default data: King James / World English Bible verse pairs).",
    no_args_is_help=True,
)

SkipBadRows = Annotated[
    bool,
    typer.Option("--skip-bad-rows", help="Leave out malformed rows of --data (each is named, then counted) instead of "
                 "stopping at the first."),
]  # fmt: skip
DataFile = Annotated[
    Path | None,
    typer.Option("--data", help="A Quora Question Pairs TSV (id, qid1, qid2, question1, question2, is_duplicate)."),
]


def _summary(name: str, evaluation: Evaluation) -> str:
    return (f"{name}: [bold]accuracy {evaluation.accuracy:.1%}[/], F1 {evaluation.f1:.3f}, ROC-AUC "
            f"{evaluation.roc_auc:.3f} over {len(evaluation.labels):,} pairs at threshold {evaluation.threshold:.3f} "
            f"(majority class {evaluation.majority:.1%}); cross-entropy {evaluation.loss:.3f}")  # fmt: skip


@app.command("train")
@train_options("pairs", PRESETS, "default", preset_help="Model and budget")
def train_command(run: TrainRun, data: DataFile = None, skip_bad_rows: SkipBadRows = False) -> None:
    """Train a pair classifier; pick the decision threshold on validation; report validation and
    test accuracy, F1 and ROC-AUC."""
    with run.session():
        settings = run.configure(configure, dataset=data, skip_bad_rows=skip_bad_rows or None)
        data_settings, model_fields, _ = settings
        sizes = "->".join(str(size) for size in model_fields["hidden_sizes"])
        shape = f"{model_fields['architecture']} bidirectional {model_fields['cell']} {sizes}"
        notes = file_notes(data_settings)
        trained = run.train(train, settings, shape, data_settings.dataset, notes=notes)
        if trained is None:  # trained in other processes: the model is in the folder
            model, splits = PairClassifier.from_pretrained(run.out), load_splits(data_settings)
            with autocast_for(settings[2].precision):
                evaluations = {name: evaluate_set(model, splits[name]) for name in ("validation", "test")}
        else:
            _, _, evaluations = trained
        console.print(f"decision threshold {evaluations['validation'].threshold:.3f} (best validation "
                      f"{data_settings.threshold_metric})")  # fmt: skip
        for name, evaluation in evaluations.items():
            console.print(_summary(name, evaluation), highlight=False)
        console.print(run.saved_line())


@app.command("evaluate")
def evaluate_command(
    checkpoint: Checkpoint = Path("runs/pairs"),
    split: Annotated[str, typer.Option(help=f"{', '.join(SPLITS)} (of the data the model was trained on).")] = "test",
    data: Annotated[Path | None, typer.Option("--data", help="Evaluate on every pair of this Quora TSV.")] = None,
    threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Decide at this probability (default: the model's).")
    ] = None,
    drop_empty: Annotated[
        bool, typer.Option("--drop-empty", help="Leave out --data pairs with an empty question (else an error).")
    ] = False,
    skip_bad_rows: SkipBadRows = False,
    precision: Precision = "auto",
) -> None:
    """Accuracy, F1 and ROC-AUC of a trained model on a split of its data or on a Quora TSV."""
    with model_session(precision):
        model = PairClassifier.from_pretrained(checkpoint)
        if data is not None:
            pairs = read_quora_tsv(data, drop_empty=drop_empty, skip_bad_rows=skip_bad_rows)
            for note in skipped_notes(pairs.skipped):
                print_note(note)
        else:
            pairs, change = run_split(checkpoint, split)
            if change:
                print_error(change, "warning")
        console.print(_summary(pairs.source, evaluate_set(model, pairs, threshold)), highlight=False)


@app.command("predict")
def predict_command(
    first: Annotated[str, typer.Argument(help="The first sentence.")],
    second: Annotated[str, typer.Argument(help="The second sentence.")],
    checkpoint: Checkpoint = Path("runs/pairs"),
    precision: Precision = "auto",
) -> None:
    """The probability that two sentences say the same, and the decision at the model's threshold."""
    with model_session(precision):
        model = PairClassifier.from_pretrained(checkpoint)
        vocabulary = model.vocabulary
        for name, sentence in (("first", first), ("second", second)):
            ids = vocabulary.encode(sentence)
            if not len(ids):
                raise ValueError(f"the {name} sentence {sentence!r} has no words")
            unknown = vocabulary.unknown_in(sentence)
            if unknown:
                console.print(f"[yellow]note:[/] the {name} sentence's words {unknown} were never seen in training; "
                              f"the model reads them as unknown", highlight=False)  # fmt: skip
        probability = float(predict_probabilities(model, [(vocabulary.encode(first), vocabulary.encode(second))])[0])
        decision = "duplicate" if probability >= model.config.threshold else "different"
        typer.echo(f"probability {probability:.4f}\t{decision} (threshold {model.config.threshold:.3f})")
