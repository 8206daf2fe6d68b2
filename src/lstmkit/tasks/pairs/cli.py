"""``lstmkit pairs train|evaluate|predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ...training.distributed import launch
from ..options import Checkpoint, Epochs, MaxSteps, Nproc, OutDir, Overrides, Quiet, Resume, Seed, console, user_errors
from .data import read_quora_tsv
from .model import PairClassifier, predict_probabilities
from .task import PRESETS, SPLITS, Evaluation, PairsData, configure, evaluate_set, load_splits, read_task_data, train

app = typer.Typer(
    help="Sentence-pair similarity (default data: King James / World English Bible verse pairs).",
    no_args_is_help=True,
)

DataFile = Annotated[
    Path | None,
    typer.Option("--data", help="A Quora Question Pairs TSV (id, qid1, qid2, question1, question2, is_duplicate)."),
]


def _train_worker(data: PairsData, model_fields: dict[str, Any], config: Any, out: Path, resume: bool) -> None:
    train(data, model_fields, config, out, resume)


def _summary(name: str, evaluation: Evaluation) -> str:
    return (f"{name}: [bold]accuracy {evaluation.accuracy:.1%}[/], F1 {evaluation.f1:.3f}, ROC-AUC "
            f"{evaluation.roc_auc:.3f} over {len(evaluation.labels):,} pairs at threshold {evaluation.threshold:.3f} "
            f"(majority class {evaluation.majority:.1%}); cross-entropy {evaluation.loss:.3f}")  # fmt: skip


@app.command("train")
def train_command(
    preset: Annotated[str, typer.Option(help=f"Model and budget: {', '.join(PRESETS)}.")] = "default",
    data: DataFile = None,
    cell: Annotated[str | None, typer.Option(help="rnn, gru, lstm, peephole or layernorm.")] = None,
    out: OutDir = Path("runs/pairs"),
    overrides: Overrides = None,
    epochs: Epochs = None,
    max_steps: MaxSteps = None,
    seed: Seed = None,
    resume: Resume = False,
    nproc: Nproc = 1,
    quiet: Quiet = False,
) -> None:
    """Train a pair classifier; pick the decision threshold on validation; report validation and
    test accuracy, F1 and ROC-AUC."""
    with user_errors():
        extra = [f"{name}={value}" for name, value in (("dataset", data), ("cell", cell)) if value is not None]
        settings, model_fields, config = configure(preset, [*(overrides or []), *extra], epochs=epochs,
                                                   max_steps=max_steps, seed=seed,
                                                   progress=False if quiet else None)  # fmt: skip
        sizes = "->".join(str(size) for size in model_fields["hidden_sizes"])
        console.print(f"[bold]pairs[/] preset {preset}: {model_fields['architecture']} bidirectional "
                      f"{model_fields['cell']} {sizes}, {config.max_steps or config.epochs} "
                      f"{'steps' if config.max_steps else 'epochs'} of batch {config.batch_size} on "
                      f"{settings.dataset} -> {out}")  # fmt: skip
        if nproc > 1:
            launch(_train_worker, nproc, settings, model_fields, config, out, resume)
            model, splits = PairClassifier.from_pretrained(out), load_splits(settings)
            evaluations = {name: evaluate_set(model, splits[name]) for name in ("validation", "test")}
        else:
            _, result, evaluations = train(settings, model_fields, config, out, resume)
            console.print(f"stopped after {result.steps} steps ({result.stopped}, {result.seconds:.0f} s); "
                          f"best validation loss at step {result.best_step}")  # fmt: skip
        console.print(f"decision threshold {evaluations['validation'].threshold:.3f} (best validation "
                      f"{settings.threshold_metric})")  # fmt: skip
        for name, evaluation in evaluations.items():
            console.print(_summary(name, evaluation), highlight=False)
        console.print(f"model, checkpoint, metrics.jsonl and curves.png in {out}")


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
) -> None:
    """Accuracy, F1 and ROC-AUC of a trained model on a split of its data or on a Quora TSV."""
    with user_errors():
        model = PairClassifier.from_pretrained(checkpoint)
        if data is not None:
            pairs = read_quora_tsv(data, drop_empty=drop_empty)
        else:
            settings = read_task_data(checkpoint)
            if split not in SPLITS:
                raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
            pairs = load_splits(settings)[split]
        console.print(_summary(pairs.source, evaluate_set(model, pairs, threshold)), highlight=False)


@app.command("predict")
def predict_command(
    first: Annotated[str, typer.Argument(help="The first sentence.")],
    second: Annotated[str, typer.Argument(help="The second sentence.")],
    checkpoint: Checkpoint = Path("runs/pairs"),
) -> None:
    """The probability that two sentences say the same, and the decision at the model's threshold."""
    with user_errors():
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
