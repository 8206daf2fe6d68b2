"""Labelled variable-length sequences: the UEA JapaneseVowels set from the PyPI package ``sktime``,
or a CSV in long format (one row per time step), checked row by row, and a validation split by a hash
of each sequence's content.

The CSV format: a header, then one row per step of each sequence::

    sequence_id,step,label,c1,c2
    a,0,yes,0.5,1.25
    a,1,yes,0.25,1.0
    b,0,no,2.0,-1.5

``sequence_id`` names the sequence, ``step`` (an integer) orders its rows (rows of one sequence may
be anywhere in the file; steps need not be contiguous but must be distinct), ``label`` is its class
(the same on all its rows; optional when only predicting), and every other column is a feature
(finite numbers). Blank lines are ignored; anything else that does not fit is an error naming the
file and the line.
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..files import parse_number, read_csv, read_text
from ..splits import place

ID, STEP, LABEL = "sequence_id", "step", "label"


class SequenceDataError(ValueError):
    """A data set that cannot be used; the message names the file, the line and the problem.

    >>> issubclass(SequenceDataError, ValueError)
    True
    """


@dataclass
class SequenceSet:
    """Sequences of shape ``(steps, features)`` (float32), their names and their labels (``None``
    when unlabelled), the feature names and where they came from; checked on creation (no empty or
    non-finite sequence).

    >>> data = SequenceSet(["u", "v"], [torch.zeros(3, 2), torch.ones(1, 2)], ["a", "b"], ["x", "y"], "memory")
    >>> len(data), data.subset([1]).labels
    (2, ['b'])
    """

    ids: list[str]
    sequences: list[Tensor]
    labels: list[str] | None
    features: list[str]
    source: str

    def __post_init__(self) -> None:
        if not self.sequences:
            raise SequenceDataError(f"{self.source}: no sequences")
        if len(self.ids) != len(self.sequences) or (self.labels is not None and len(self.labels) != len(self.ids)):
            raise SequenceDataError(f"{self.source}: ids, sequences and labels differ in number")
        for name, sequence in zip(self.ids, self.sequences, strict=True):
            if sequence.dim() != 2 or sequence.shape[1] != len(self.features):
                raise SequenceDataError(f"{self.source}: sequence {name!r} has shape {tuple(sequence.shape)}; "
                                        f"expected (steps, {len(self.features)})")  # fmt: skip
            if sequence.shape[0] == 0:
                raise SequenceDataError(f"{self.source}: sequence {name!r} has no steps")
            if not bool(torch.isfinite(sequence).all()):
                raise SequenceDataError(f"{self.source}: sequence {name!r} holds NaN or infinite values")

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def keys(self) -> list[str]:
        """The :func:`content_key` of every sequence."""
        labels = self.labels or [None] * len(self.sequences)
        return [content_key(label, sequence) for label, sequence in zip(labels, self.sequences, strict=True)]

    def subset(self, indices: Sequence[int], source: str | None = None) -> SequenceSet:
        """The sequences at ``indices``, in that order."""
        labels = None if self.labels is None else [self.labels[i] for i in indices]
        return SequenceSet([self.ids[i] for i in indices], [self.sequences[i] for i in indices], labels,
                           self.features, source or self.source)  # fmt: skip


def sort_classes(labels: Sequence[str]) -> list[str]:
    """The distinct labels, numbers in numeric order first, then the rest alphabetically.

    >>> sort_classes(["10", "9", "b", "a", "9"])
    ['9', '10', 'a', 'b']
    """

    def key(label: str) -> tuple[int, float, str]:
        try:
            return (0, float(label), label)
        except ValueError:
            return (1, 0.0, label)

    return sorted(set(labels), key=key)


def japanese_vowels(split: str) -> SequenceSet:
    """The UEA JapaneseVowels ``"train"`` (270) or ``"test"`` (370) split: nine speakers saying /ae/,
    12 LPC cepstrum coefficients per frame, 7 to 29 frames; labels ``"1"`` to ``"9"``.

    The ``.ts`` files ship inside the PyPI package ``sktime``; they are found and read directly,
    without importing sktime (which takes seconds)."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown JapaneseVowels split {split!r}: expected 'train' or 'test'")
    spec = importlib.util.find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        raise SequenceDataError("the JapaneseVowels data needs the PyPI package 'sktime': pip install 'lstmkit[data]'")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "JapaneseVowels"
    data = read_ts_file(folder / f"JapaneseVowels_{split.upper()}.ts", id_prefix=split)
    data.source = f"JapaneseVowels {split}"
    return data


def read_ts_file(path: str | Path, id_prefix: str | None = None) -> SequenceSet:
    """A labelled, multivariate file of the UEA/UCR ``.ts`` format (``@`` headers, then one line per
    sequence: the dimensions' comma-separated values separated by ``:``, the label last; the header's
    ``@dimensions`` and ``@classLabel true <labels>`` are enforced when given); features
    are named ``dim_0``, ``dim_1``, ...; sequences ``<id_prefix>-0``, ... (the file's stem)."""
    path = Path(path)
    contents = read_text(path, SequenceDataError, "@ headers, an @data line and one line per sequence")
    ids, sequences, labels, in_data = [], [], [], False
    dimensions: int | None = None
    classes: list[str] | None = None
    for line, text in enumerate(contents.splitlines(), start=1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{path}, line {line}"
        if not in_data:
            key, _, value = text.partition(" ")
            key, flag = key.lower(), value.strip().lower()
            unlabelled = key == "@classlabel" and not flag.startswith("true")
            if unlabelled or (key == "@timestamps" and flag != "false"):
                raise SequenceDataError(f"{where}: {text!r}; only labelled files without time stamps are supported")
            if key == "@classlabel":
                classes = value.split()[1:] or None
            if key == "@dimensions" and value.strip().isdigit():
                dimensions = int(value)
            in_data = key == "@data"
            continue
        *parts, label = text.split(":")
        if not parts or not label.strip():
            raise SequenceDataError(f"{where}: expected dimensions separated by ':' and a label last")
        if classes is not None and label.strip() not in classes:
            raise SequenceDataError(
                f"{where}: label {label.strip()!r} is not one of the classes {classes} of the header"
            )
        if dimensions not in (None, len(parts)):
            raise SequenceDataError(f"{where}: {len(parts)} dimensions, expected {dimensions}")
        dimensions = len(parts)
        values = [[parse_number(v.strip(), where, f"dim_{d}", SequenceDataError) for v in part.split(",")]
                  for d, part in enumerate(parts)]  # fmt: skip
        if len({len(v) for v in values}) != 1:
            raise SequenceDataError(f"{where}: the dimensions have different lengths {[len(v) for v in values]}")
        ids.append(f"{id_prefix or path.stem}-{len(ids)}")
        sequences.append(torch.tensor(values, dtype=torch.float32).T.contiguous())
        labels.append(label.strip())
    if not sequences:
        raise SequenceDataError(f"{path}: no sequences (expected an @data line and one line per sequence after it)")
    return SequenceSet(ids, sequences, labels, [f"dim_{d}" for d in range(dimensions or 0)], str(path))


def _header(path: Path, names: list[str], features: Sequence[str] | None, labelled: bool | None) -> list[str]:
    """Check the header's column ``names``; returns the feature columns in the order the sequences
    will hold them."""
    required = [ID, STEP] + [LABEL] * bool(labelled)
    missing = [name for name in required if name not in names]
    if missing:
        raise SequenceDataError(f"{path}, line 1: missing column(s) {missing}; expected {ID}, {STEP}"
                                f"{', ' + LABEL if labelled else ''} and feature columns, got {names}")  # fmt: skip
    found = [name for name in names if name not in (ID, STEP, LABEL)]
    if features is None:
        if not found:
            raise SequenceDataError(f"{path}, line 1: no feature columns; expected columns besides {ID}, {STEP}, "
                                    f"{LABEL}, got {names}")  # fmt: skip
        return found
    absent, unexpected = [f for f in features if f not in found], [f for f in found if f not in features]
    if absent or unexpected:
        raise SequenceDataError(f"{path}, line 1: the feature columns must be the model's {list(features)}; "
                                f"missing {absent}, unexpected {unexpected}")  # fmt: skip
    return list(features)


def read_sequence_csv(
    path: str | Path,
    *,
    labelled: bool | None = True,
    features: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
) -> SequenceSet:
    """Read a long-format CSV (see the module docstring). ``labelled``: the ``label`` column is
    required (``True``), optional (``None``) or ignored (``False``); ``features``: the feature
    columns that must be present (in any order), else every non-key column; ``classes``: the allowed
    labels. Every problem is a :class:`SequenceDataError` naming the file and line."""
    path = Path(path)
    columns, records = read_csv(path, SequenceDataError, f"a header ({ID},{STEP},{LABEL},...) and rows")
    has_label = LABEL in columns and labelled is not False
    names = _header(path, columns, features, labelled)
    where_feature = [columns.index(name) for name in names]
    id_column, step_column = columns.index(ID), columns.index(STEP)
    label_column = columns.index(LABEL) if has_label else None
    rows: dict[str, list[tuple[int, int, list[float]]]] = {}
    labels: dict[str, tuple[str, int]] = {}
    for line, fields in records:
        where = f"{path}, line {line}"
        name, step_text = fields[id_column].strip(), fields[step_column].strip()
        if not name:
            raise SequenceDataError(f"{where}: empty {ID}")
        try:
            step = int(step_text)
        except ValueError:
            raise SequenceDataError(f"{where}, column {STEP!r}: expected an integer, got {step_text!r}") from None
        values = [parse_number(fields[i].strip(), where, columns[i], SequenceDataError) for i in where_feature]
        if label_column is not None:
            label = fields[label_column].strip()
            if not label:
                raise SequenceDataError(f"{where}: empty {LABEL} for sequence {name!r}")
            if classes is not None and label not in classes:
                raise SequenceDataError(f"{where}: label {label!r} is not one of the classes {list(classes)}")
            first = labels.setdefault(name, (label, line))
            if first[0] != label:
                raise SequenceDataError(f"{where}: sequence {name!r} has label {label!r}, but line {first[1]} "
                                        f"gave it {first[0]!r}; a sequence has one label")  # fmt: skip
        rows.setdefault(name, []).append((step, line, values))
    sequences = []
    for name, steps in rows.items():
        steps.sort()
        for (step, line, _), (next_step, next_line, _) in zip(steps, steps[1:], strict=False):
            if step == next_step:
                raise SequenceDataError(f"{path}, line {max(line, next_line)}: sequence {name!r} repeats step "
                                        f"{step} (first on line {min(line, next_line)})")  # fmt: skip
        sequences.append(torch.tensor([values for _, _, values in steps], dtype=torch.float32))
    ids = list(rows)
    return SequenceSet(ids, sequences, [labels[n][0] for n in ids] if has_label else None, names, str(path))


def write_sequence_csv(data: SequenceSet, path: str | Path) -> Path:
    """Write ``data`` in the long CSV format :func:`read_sequence_csv` reads (steps from 0)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow([ID, STEP, *([LABEL] if data.labels is not None else []), *data.features])
        for index, (name, sequence) in enumerate(zip(data.ids, data.sequences, strict=True)):
            label = [] if data.labels is None else [data.labels[index]]
            for step, values in enumerate(sequence.tolist()):
                writer.writerow([name, step, *label, *(f"{v:.9g}" for v in values)])
    return path


def content_key(label: str | None, sequence: Tensor) -> str:
    """What a sequence is for its split and the data's fingerprint: its label and its values (float32,
    exactly: their bytes in hex), row by row; not its name or its place in the file.

    >>> content_key("a", torch.tensor([[0.5, 1.0]])) == content_key("a", torch.tensor([[0.5, 1.0]]))
    True
    >>> content_key("a", torch.tensor([[0.5, 1.0]])) == content_key("b", torch.tensor([[0.5, 1.0]]))
    False
    """
    values = sequence.detach().to(torch.float32).contiguous().numpy().astype("<f4", copy=False)
    return f"{label or ''}\t{values.shape[0]}x{values.shape[1]}\t{values.tobytes().hex()}"


def validation_split(labels: Sequence[str], keys: Sequence[str], fraction: float,
                     seed: int = 0) -> tuple[list[int], list[int]]:  # fmt: skip
    """Indices ``(kept, held_out)``, both in index order: within each class, a sequence is held out
    when its hash place (:func:`~lstmkit.tasks.splits.place` of its content key ``keys[i]`` and
    ``seed``) falls below ``fraction``. Each class keeps ``fraction`` of its sequences in expectation,
    and sequences appended (or reordered) never move the others between the two parts.

    >>> labels = ["a"] * 500 + ["b"] * 300
    >>> kept, held_out = validation_split(labels, [f"{label} {i}" for i, label in enumerate(labels)], 0.25)
    >>> [0.2 < sum(labels[i] == c for i in held_out) / labels.count(c) < 0.3 for c in "ab"]
    [True, True]
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the validation fraction must lie strictly between 0 and 1, got {fraction}")
    held_out: list[int] = []
    for label in sort_classes(labels):
        members = [i for i, other in enumerate(labels) if other == label]
        held_out += [i for i in members if place(keys[i], seed) < fraction]
    if not held_out:
        raise ValueError(f"no sequence of the {len(labels)} falls in the validation part (validation_fraction "
                         f"{fraction}): use more data, a larger fraction or another split_seed")  # fmt: skip
    chosen = set(held_out)
    return [i for i in range(len(labels)) if i not in chosen], sorted(held_out)


def feature_statistics(sequences: Sequence[Tensor]) -> tuple[list[float], list[float]]:
    """Per-feature mean and standard deviation over every step of ``sequences`` (a constant
    feature gets standard deviation 1, so standardising leaves it at 0).

    >>> feature_statistics([torch.tensor([[1.0, 5.0], [3.0, 5.0]]), torch.tensor([[2.0, 5.0]])])
    ([2.0, 5.0], [0.816496..., 1.0])
    """
    steps = torch.cat(list(sequences)).double()
    mean, std = steps.mean(0), steps.std(0, correction=0)
    std = torch.where(std > 1e-12 * mean.abs().clamp_min(1.0), std, torch.ones_like(std))
    return mean.tolist(), std.tolist()
