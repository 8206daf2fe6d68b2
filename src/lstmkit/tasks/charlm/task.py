"""The character language model task: presets, training, evaluation.

The seed's progression is three presets on the same code: ``sentence`` (one line of Hamlet learnt by
heart), ``paragraph`` (the "To be, or not to be" soliloquy, by heart) and ``full`` (38 plays, trained
on 34, validated on two and tested on two unseen plays).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...precision import autocast_for
from ...training import TrainConfig, TrainResult
from ..runner import DataField, Preset, TaskSettings, fit, write_task_file
from .data import Corpus, Vocabulary, shakespeare_corpus, text_file_corpus, unigram_bits_per_character
from .model import CharLM, CharLMConfig, bits_per_character, cross_entropy_sum

DATA_FIELDS = {"characters": DataField("?", "the characters come from the training text")}


@dataclass
class CharLMData:
    """Where the text comes from and how it is cut: ``corpus`` is ``"shakespeare"`` or a path to a
    UTF-8 text file; ``preset`` picks the Shakespeare size; windows of ``seq_len`` characters start
    every ``stride`` characters (``None``: every ``seq_len``)."""

    corpus: str = "shakespeare"
    preset: str = "full"
    seq_len: int = 128
    stride: int | None = None
    eval_chars: int = 100_000

    def __post_init__(self) -> None:
        if self.seq_len < 1 or (self.stride is not None and self.stride < 1) or self.eval_chars < 0:
            raise ValueError("seq_len and stride must be positive and eval_chars >= 0")


PRESETS: dict[str, Preset[CharLMData]] = {
    "sentence": Preset(
        CharLMData(preset="sentence", seq_len=16, stride=1),
        {"hidden_size": 64, "embedding_size": 16},
        TrainConfig(epochs=200, max_steps=150, batch_size=8, lr=1e-2, log_every=10),
    ),
    "paragraph": Preset(
        CharLMData(preset="paragraph", seq_len=64, stride=1),
        {"hidden_size": 192, "embedding_size": 32},
        TrainConfig(epochs=100, max_steps=400, batch_size=32, lr=5e-3, schedule="cosine", log_every=20),
    ),
    # Tuned for ~5.5 minutes of training on 2 cores (docs/tasks.md, "what each choice bought"): the
    # layer-norm LSTM (it learns more per step than the plain one, at ~80% of its characters per
    # second), windows of 50 characters rather than 100 (twice the updates for the same characters),
    # lr 8e-3 rather than 3e-3 and decayed to 1% of it rather than 10%, AdamW's decoupled weight decay of
    # 0.05 (each a little more than one seed's noise on the held-out plays). 4,000 steps (2.9 epochs), what
    # a Xeon with AMX trains in the 350 s under bf16 (2,600 steps before the AMX kernels: 2.045 -> 2.021
    # on the test plays), end the cosine schedule; max_seconds is a cap for a slower or busy machine, where
    # fit_to_time ends the schedule within it.
    "full": Preset(
        CharLMData(preset="full", seq_len=50),
        {"cell": "layernorm", "hidden_size": 512, "embedding_size": 64},
        TrainConfig(
            epochs=3,
            max_steps=4000,
            max_seconds=350,
            fit_to_time=True,
            batch_size=64,
            optimizer="adamw",
            lr=8e-3,
            weight_decay=0.05,
            schedule="cosine",
            min_lr_ratio=0.01,
            warmup_steps=50,
            eval_every=600,
            log_every=10,
        ),  # fmt: skip
    ),
}

SETTINGS = TaskSettings(CharLMData, CharLMConfig, DATA_FIELDS, PRESETS)
configure = SETTINGS.configure
read_task_data = SETTINGS.read_task_data


class Windows(Sequence[Tensor]):
    """The training examples: windows of ``seq_len + 1`` ids (inputs and their next characters)."""

    def __init__(self, ids: Tensor, seq_len: int, stride: int) -> None:
        self.ids, self.seq_len = ids, min(seq_len, ids.numel() - 1)
        if self.seq_len < 1:
            raise ValueError(f"the training text has {ids.numel()} characters; need at least 2")
        self.starts = range(0, ids.numel() - self.seq_len, stride)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> Tensor:  # type: ignore[override]
        start = self.starts[index]
        return self.ids[start : start + self.seq_len + 1]


def load_corpus(data: CharLMData) -> Corpus:
    return shakespeare_corpus(data.preset) if data.corpus == "shakespeare" else text_file_corpus(data.corpus)


def train(data: CharLMData, model_fields: dict[str, Any], config: TrainConfig, out_dir: str | Path | None,
          resume: bool = False) -> tuple[CharLM, TrainResult, dict[str, float]]:  # fmt: skip
    """Train a character model; returns it (the best weights when validated), the run's result and
    the held-out figures (validation bpc and the unigram baseline)."""
    corpus = load_corpus(data)
    vocabulary = Vocabulary.from_text(corpus.train)
    torch.manual_seed(config.seed)
    model = CharLM(CharLMConfig(characters=vocabulary.characters, **model_fields))
    train_ids = vocabulary.encode(corpus.train)
    validation = corpus.validation[: data.eval_chars] if data.eval_chars else corpus.validation
    validation_ids = vocabulary.encode(validation)
    write_task_file(out_dir, data, corpus.source)

    def evaluate(model: CharLM) -> dict[str, float]:
        return {"val_bpc": bits_per_character(model, validation_ids)}

    windows = Windows(train_ids, data.seq_len, data.stride or data.seq_len)
    model, result, _ = fit(model, config, out_dir, resume, train_set=windows, collate=torch.stack,
                           loss=cross_entropy_sum, evaluate=evaluate, metric="val_bpc")  # fmt: skip
    with autocast_for(config.precision):
        figures = {
            "val_bpc": bits_per_character(model, validation_ids),
            "unigram_bpc": unigram_bits_per_character(corpus.train, validation, vocabulary),
        }
    return model, result, figures


def evaluate_split(model: CharLM, corpus: Corpus, split: str) -> dict[str, float]:
    """Bits per character of ``model`` on a split of the ``corpus``, with the unigram baseline."""
    if split not in ("train", "validation", "test"):
        raise ValueError(f"unknown split {split!r}: expected train, validation or test")
    text = getattr(corpus, split)
    return {
        f"{split}_bpc": bits_per_character(model, model.vocabulary.encode(text)),
        "unigram_bpc": unigram_bits_per_character(corpus.train, text, model.vocabulary),
        "characters": float(len(text)),
        "unknown_characters": float(sum(text.count(c) for c in model.vocabulary.unknown_in(text))),
    }
