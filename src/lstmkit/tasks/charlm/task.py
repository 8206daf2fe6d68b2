"""The character language model task: presets, training, evaluation.

The seed's progression is three presets on the same code: ``sentence`` (one line of Hamlet learnt by
heart), ``paragraph`` (the "To be, or not to be" soliloquy, by heart) and ``full`` (38 plays, trained
on 34, validated on two and tested on two unseen plays).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...training import TrainConfig, Trainer, TrainResult, config_from_dict
from ...training.checkpoint import atomic_write
from ..common import split_overrides
from .data import Corpus, Vocabulary, shakespeare_corpus, text_file_corpus, unigram_bits_per_character
from .model import CharLM, CharLMConfig, bits_per_character, cross_entropy_sum

TASK_FILE = "task.json"


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


@dataclass
class Preset:
    data: CharLMData
    model: dict[str, Any]
    train: TrainConfig


PRESETS: dict[str, Preset] = {
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
    "full": Preset(
        CharLMData(preset="full", seq_len=100),
        {"hidden_size": 512, "embedding_size": 64},
        TrainConfig(epochs=2, max_steps=None, max_seconds=360, batch_size=64, lr=3e-3, schedule="cosine",
                    warmup_steps=50, eval_every=300, log_every=10),  # fmt: skip
    ),
}


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


def configure(
    preset: str, overrides: Sequence[str] = (), **train_options: Any
) -> tuple[CharLMData, dict[str, Any], TrainConfig]:
    """The settings of a run: the preset's, then ``--set key=value`` overrides (data, model or
    training fields), then explicit training options (``epochs=...``, ``None`` ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {sorted(PRESETS)}")
    chosen = PRESETS[preset]
    model_template = CharLMConfig(characters="?", **chosen.model)
    data, model, train = split_overrides(overrides, chosen.data, model_template, chosen.train)
    given = {name: value for name, value in train_options.items() if value is not None}
    train = config_from_dict(TrainConfig, dataclasses.asdict(train) | given, "training options")
    model_fields = {k: v for k, v in dataclasses.asdict(model).items() if k != "characters"}
    return data, model_fields, train


def train(
    data: CharLMData,
    model_fields: dict[str, Any],
    config: TrainConfig,
    out_dir: str | Path | None,
    resume: bool = False,
) -> tuple[CharLM, TrainResult, dict[str, float]]:
    """Train a character model; returns it (the best weights when validated), the run's result and
    the held-out figures (validation bpc and the unigram baseline)."""
    corpus = load_corpus(data)
    vocabulary = Vocabulary.from_text(corpus.train)
    torch.manual_seed(config.seed)
    model = CharLM(CharLMConfig(characters=vocabulary.characters, **model_fields))
    train_ids = vocabulary.encode(corpus.train)
    validation = corpus.validation[: data.eval_chars] if data.eval_chars else corpus.validation
    validation_ids = vocabulary.encode(validation)
    if out_dir is not None:
        document = {"data": dataclasses.asdict(data), "source": corpus.source}
        atomic_write(Path(out_dir) / TASK_FILE, json.dumps(document, indent=2).encode())

    def evaluate(model: CharLM) -> dict[str, float]:
        return {"val_bpc": bits_per_character(model, validation_ids)}

    trainer = Trainer(
        model,
        config,
        train_set=Windows(train_ids, data.seq_len, data.stride or data.seq_len),
        collate=torch.stack,
        loss=cross_entropy_sum,
        evaluate=evaluate,
        metric="val_bpc",
        out_dir=out_dir,
        task=CharLM.task,
        model_config=model.config_dict(),
    )
    result = trainer.fit(resume=resume)
    if out_dir is not None and result.best_step is not None and trainer.rank == 0:
        model = CharLM.from_pretrained(out_dir)
    figures = {
        "val_bpc": bits_per_character(model, validation_ids),
        "unigram_bpc": unigram_bits_per_character(corpus.train, validation, vocabulary),
    }
    return model, result, figures


def read_task_data(directory: str | Path) -> CharLMData:
    """The data settings a run recorded in ``task.json`` (the defaults when it has none)."""
    path = Path(directory) / TASK_FILE
    if not path.is_file():
        return CharLMData()
    try:
        return config_from_dict(CharLMData, json.loads(path.read_text())["data"], str(path))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a valid task file ({error})") from None


def evaluate_split(model: CharLM, data: CharLMData, split: str) -> dict[str, float]:
    """Bits per character of ``model`` on a split of the corpus, with the unigram baseline."""
    corpus = load_corpus(data)
    if split not in ("train", "validation", "test"):
        raise ValueError(f"unknown split {split!r}: expected train, validation or test")
    text = getattr(corpus, split)
    return {
        f"{split}_bpc": bits_per_character(model, model.vocabulary.encode(text)),
        "unigram_bpc": unigram_bits_per_character(corpus.train, text, model.vocabulary),
        "characters": float(len(text)),
        "unknown_characters": float(sum(text.count(c) for c in model.vocabulary.unknown_in(text))),
    }
