"""``lstmkit charlm train|evaluate|generate|predict``."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.markup import escape

from ...commandline.messages import console
from ...commandline.options import Checkpoint
from ...precision import autocast_for
from ..commands import TrainRun, stack_shape, train_options
from ..options import Precision, model_session
from .model import CharLM, generate, next_characters
from .task import PRESETS, configure, evaluate_split, load_corpus, read_task_data, train

app = typer.Typer(help="Character-level language model (default corpus: Shakespeare's plays).", no_args_is_help=True)

Prompt = Annotated[str, typer.Option(help="Text the generated passage continues.")]
Length = Annotated[int, typer.Option(min=0, max=100_000, help="Characters to generate.")]
TEMPERATURES = (0.01, 10.0)  # near 0.01 sampling is already greedy


def _finite_positive(temperature: float) -> float:
    """Refuse a temperature that is not a finite positive number in :data:`TEMPERATURES` (typer's own
    range check named NaN too large)."""
    low, high = TEMPERATURES
    if not (math.isfinite(temperature) and low <= temperature <= high):
        raise typer.BadParameter(f"must be a finite positive number from {low:g} to {high:g}, got {temperature}")
    return temperature


Temperature = Annotated[
    float,
    typer.Option(callback=_finite_positive, help=f"Sampling temperature, from {TEMPERATURES[0]:g} to "
                 f"{TEMPERATURES[1]:g} (lower: safer)."),
]  # fmt: skip
TopK = Annotated[int | None, typer.Option("--top-k", min=1, help="Sample among the k likeliest characters only.")]


def _note_unknown(model: CharLM, prompt: str) -> None:
    unknown = model.vocabulary.unknown_in(prompt)
    if unknown:
        console.print(f"[yellow]note:[/] the prompt's characters {unknown!r} were never seen in training; "
                      "the model reads them as unknown", highlight=False)  # fmt: skip


def _stream(model: CharLM, prompt: str, length: int, temperature: float, top_k: int | None, seed: int) -> None:
    _note_unknown(model, prompt)
    generator = torch.Generator().manual_seed(seed)
    typer.echo(prompt, nl=False)
    for character in generate(model, prompt, length, temperature=temperature, top_k=top_k, generator=generator):
        typer.echo(character, nl=False)
    typer.echo()


@app.command("train")
@train_options("charlm", PRESETS, "full", preset_help="Corpus size and budget")
def train_command(
    run: TrainRun,
    corpus: Annotated[str | None, typer.Option(help="A UTF-8 text file instead of Shakespeare.")] = None,
    sample: Annotated[int, typer.Option(min=0, help="Characters to generate after training.")] = 500,
) -> None:
    """Train a character model, report bits per character on held-out text, and write a passage."""
    with run.session():
        settings = run.configure(configure, corpus=corpus)
        _, model_fields, config = settings
        trained = run.train(train, settings, stack_shape(model_fields), metric="validation bits per character")
        if trained is None:  # trained in other processes: the model is in the folder, without figures
            model, figures = CharLM.from_pretrained(run.out), {}
        else:
            model, _, figures = trained
        if figures:
            console.print(f"validation: [bold]{figures['val_bpc']:.3f} bits per character[/] "
                          f"(unigram baseline {figures['unigram_bpc']:.3f})")  # fmt: skip
        console.print(run.saved_line())
        if sample:
            console.rule("a generated passage")
            characters = model.vocabulary.characters
            with autocast_for(config.precision):
                _stream(model, "\n" if "\n" in characters else characters[0], sample, 0.8, None, config.seed)


@app.command("evaluate")
def evaluate_command(
    checkpoint: Checkpoint = Path("runs/charlm"),
    split: Annotated[str, typer.Option(help="train, validation or test.")] = "test",
    corpus: Annotated[
        str | None,
        typer.Option(
            help="Evaluate on this text file instead, cut 90/5/5 by position as a training corpus is: "
            "--split test scores its last 5%."
        ),
    ] = None,
    precision: Precision = "auto",
) -> None:
    """Bits per character of a trained model on a split of its corpus (or of another text)."""
    with model_session(precision):
        model = CharLM.from_pretrained(checkpoint)
        data = read_task_data(checkpoint)
        if corpus is not None:
            data = dataclasses.replace(data, corpus=corpus)
        text = load_corpus(data)
        figures = evaluate_split(model, text, split)
        where = f", {escape(text.parts[split])}" if split in text.parts else ""
        console.print(f"{split}: [bold]{figures[f'{split}_bpc']:.3f} bits per character[/] over "
                      f"{int(figures['characters']):,} characters{where}; unigram baseline "
                      f"{figures['unigram_bpc']:.3f}; {int(figures['unknown_characters'])} unknown characters",
                      highlight=False)  # fmt: skip


@app.command("generate")
def generate_command(
    checkpoint: Checkpoint = Path("runs/charlm"),
    prompt: Prompt = "ROMEO:\n",
    length: Length = 500,
    temperature: Temperature = 0.8,
    top_k: TopK = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    precision: Precision = "auto",
) -> None:
    """Stream text from a trained model, continuing a prompt."""
    with model_session(precision):
        _stream(CharLM.from_pretrained(checkpoint), prompt, length, temperature, top_k, seed)


@app.command("predict")
def predict_command(
    prompt: Annotated[str, typer.Argument(help="The text so far.")],
    checkpoint: Checkpoint = Path("runs/charlm"),
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=1000, help="How many characters to list.")] = 5,
    precision: Precision = "auto",
) -> None:
    """The likeliest next characters after a prompt, with their probabilities."""
    with model_session(precision):
        model = CharLM.from_pretrained(checkpoint)
        _note_unknown(model, prompt)
        for character, probability in next_characters(model, prompt, top_k):
            typer.echo(f"{character!r:>6}  {probability:6.1%}")
