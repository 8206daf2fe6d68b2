"""Batches for variable-length sequences: bucketing by length, and padding that keeps the lengths.

Sorting examples of similar length into the same batch means little padding; the layers receive
the true ``lengths`` and skip the padded steps' effect on the state, so padding costs (almost) no
accuracy and little compute.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random generator that orders epoch ``epoch`` of a run seeded with ``seed``: the same
    every time, so a resumed run sees the same batches."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def batch_indices(
    count: int,
    batch_size: int,
    generator: torch.Generator,
    lengths: Sequence[int] | None = None,
    pool_batches: int = 50,
) -> list[list[int]]:
    """Split ``range(count)`` into shuffled batches of ``batch_size`` (the last may be smaller).

    With ``lengths``, examples are bucketed: shuffled, cut into pools of ``pool_batches`` batches,
    sorted by length inside each pool, batched, and the batches shuffled again.

        >>> g = torch.Generator().manual_seed(0)
        >>> batches = batch_indices(10, 4, g, lengths=[5, 1, 5, 1, 5, 1, 5, 1, 5, 1])
        >>> sorted(len(b) for b in batches), sorted(i for b in batches for i in b) == list(range(10))
        ([2, 4, 4], True)
    """
    if count < 0 or batch_size < 1:
        raise ValueError(f"need count >= 0 and batch_size >= 1, got {count} and {batch_size}")
    if lengths is not None and len(lengths) != count:
        raise ValueError(f"lengths has {len(lengths)} entries for {count} examples")
    order = torch.randperm(count, generator=generator).tolist()
    if lengths is not None:
        pool = batch_size * pool_batches
        pools = [order[start : start + pool] for start in range(0, count, pool)]
        order = [i for chunk in pools for i in sorted(chunk, key=lengths.__getitem__)]
    batches = [order[start : start + batch_size] for start in range(0, count, batch_size)]
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def pad_sequences(sequences: Sequence[Tensor], padding_value: float = 0.0) -> tuple[Tensor, Tensor]:
    """Stack sequences of shape ``(L_i, ...)`` into ``(B, max L, ...)`` (batch first) and return them
    with their ``lengths`` (int64). Zero-length sequences are allowed.

        >>> padded, lengths = pad_sequences([torch.tensor([1, 2, 3]), torch.tensor([4])])
        >>> padded.tolist(), lengths.tolist()
        ([[1, 2, 3], [4, 0, 0]], [3, 1])
    """
    if not sequences:
        raise ValueError("pad_sequences needs at least one sequence, got an empty batch")
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    longest = int(lengths.max())
    first = sequences[0]
    padded = torch.full((len(sequences), longest, *first.shape[1:]), padding_value, dtype=first.dtype)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = sequence
    return padded, lengths
