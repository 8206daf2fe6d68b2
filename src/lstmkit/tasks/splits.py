"""Splits that stay put, and what a run trained on.

An example goes to train, validation or test by a hash of its content, not by its position in the
file or a random permutation of it: its place ``u`` in ``[0, 1)`` comes from BLAKE2b of the split
seed and the example's content key, and the split is the one whose share of ``[0, 1)`` holds ``u``.
Appending rows to a file, or reordering it, never moves an existing example to another split, and
rows with the same content are always in the same split (no copy of a test example in training).

A run records the number of examples in each split and a fingerprint of the data (a hash over the
sorted content hashes: the same rows in any order give the same fingerprint) in its ``task.json``,
so that ``evaluate`` can say when the data has changed since. A series, cut by time on purpose (a
hash split would put future steps in training), records the steps of each part and a fingerprint
of its values in order (:func:`series_record`).

    >>> keys = [f"question {i}" for i in range(1000)]
    >>> parts = hash_split(keys, [0.8, 0.1, 0.1], seed=0)
    >>> [round(len(part), -2) for part in parts]  # about 80/10/10
    [800, 100, 100]
    >>> longer = hash_split([*keys, "one more", "and another"], [0.8, 0.1, 0.1], seed=0)
    >>> all(set(before) <= set(after) for before, after in zip(parts, longer, strict=True))
    True
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

DIGEST_BYTES = 16


def content_hash(key: str) -> bytes:
    """The BLAKE2b digest of an example's content key."""
    return hashlib.blake2b(key.encode("utf-8"), digest_size=DIGEST_BYTES).digest()


def place(key: str, seed: int) -> float:
    """Where the example ``key`` falls in ``[0, 1)`` for the split seed ``seed``: uniform over keys,
    independent between seeds."""
    digest = hashlib.blake2b(content_hash(key), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "big") / 2**64


def hash_split(keys: Sequence[str], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """The indices of ``keys`` in each part, in index order: each example in the part whose share of
    ``[0, 1)`` (``fractions``, which sum to 1) holds its :func:`place`."""
    edges = list(itertools.accumulate(fractions))[:-1]
    parts: list[list[int]] = [[] for _ in fractions]
    for index, key in enumerate(keys):
        parts[bisect.bisect_right(edges, place(key, seed))].append(index)
    return parts


def fingerprint(keys: Iterable[str]) -> str:
    """A hash of the examples' content keys that does not depend on their order (hex, 32 digits).

    >>> fingerprint(["a", "b"]) == fingerprint(["b", "a"]) != fingerprint(["a", "b", "b"])
    True
    """
    total = hashlib.blake2b(digest_size=DIGEST_BYTES)
    for digest in sorted(content_hash(key) for key in keys):
        total.update(digest)
    return total.hexdigest()


def data_record(parts: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """What a run trained and was evaluated on, for its ``task.json``: the number of examples of each
    part and the :func:`fingerprint` of all of them (``parts``: each part's content keys)."""
    return {"counts": {name: len(keys) for name, keys in parts.items()},
            "fingerprint": fingerprint(key for keys in parts.values() for key in keys)}  # fmt: skip


def describe_change(source: str, then: Mapping[str, Any], now: Mapping[str, Any], unit: str = "examples") -> str | None:
    """One line saying that the data of ``source`` differs from what a run recorded (``then``, a
    :func:`data_record`), or ``None`` when it does not (``unit``: what the counts count).

    >>> then = {"counts": {"train": 8, "test": 2}, "fingerprint": "0f" * 16}
    >>> describe_change("pairs.tsv", then, then) is None
    True
    >>> describe_change("pairs.tsv", then, {"counts": {"train": 8, "test": 3}, "fingerprint": "a1" * 16})
    'pairs.tsv has changed since the run trained on it (train 8, test 2 examples then; train 8, test 3 now): ...'
    """
    if then.get("fingerprint") == now["fingerprint"]:
        return None

    return (f"{source} has changed since the run trained on it ({_counts(then)} {unit} then; {_counts(now)} now): "
            "the figures are for the data as it is now")  # fmt: skip


def _counts(record: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} {count}" for name, count in record.get("counts", {}).items())


def series_fingerprint(values: np.ndarray, columns: Sequence[str]) -> str:
    """A hash of a series' column names and values, in order (hex, 32 digits): a value changed,
    added or moved changes it.

    >>> values = np.arange(6.0).reshape(3, 2)
    >>> series_fingerprint(values, ["y", "x"]) == series_fingerprint(values.copy(), ["y", "x"])
    True
    >>> series_fingerprint(values[::-1], ["y", "x"]) == series_fingerprint(values, ["y", "x"])
    False
    """
    total = hashlib.blake2b("\t".join(columns).encode("utf-8"), digest_size=DIGEST_BYTES)
    total.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
    return total.hexdigest()


def series_record(values: np.ndarray, columns: Sequence[str], counts: Mapping[str, int]) -> dict[str, Any]:
    """What a run on a series cut by time trained and was evaluated on, for its ``task.json``: the
    steps of each part (``counts``, in time order) and the :func:`series_fingerprint` of the values."""
    return {"counts": dict(counts), "fingerprint": series_fingerprint(values, columns)}


def describe_series_change(source: str, then: Mapping[str, Any], now: Mapping[str, Any], values: np.ndarray,
                           columns: Sequence[str]) -> str | None:  # fmt: skip
    """One line saying that the series ``source`` (its ``values`` and ``columns`` now, whose
    :func:`series_record` is ``now``) differs from what a run recorded (``then``), or ``None``.
    Values appended to it move the split point: the line says so.

    >>> values = np.arange(12.0)[:, None]
    >>> then = series_record(values[:10], ["y"], {"train": 8, "validation": 1, "test": 1})
    >>> now = series_record(values, ["y"], {"train": 10, "validation": 1, "test": 1})
    >>> describe_series_change("y.csv", then, then, values[:10], ["y"]) is None
    True
    >>> describe_series_change("y.csv", then, now, values, ["y"])
    'y.csv has 2 more values than when the run trained on it (train 8, validation 1, test 1 steps then; ...'
    """
    if then.get("fingerprint") == now["fingerprint"]:
        return None
    steps = sum(int(count) for count in then.get("counts", {}).values())
    if 0 < steps < len(values) and series_fingerprint(values[:steps], columns) == then.get("fingerprint"):
        return (f"{source} has {len(values) - steps} more values than when the run trained on it ({_counts(then)} "
                f"steps then; {_counts(now)} now): the split point has moved, so the test part is not the one the "
                "run was evaluated on")  # fmt: skip
    return describe_change(source, then, now, unit="steps")
