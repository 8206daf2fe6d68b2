"""The recurrent cell kinds by name (``rnn``, ``gru``, ``lstm``, ``peephole``, ``layernorm``): the
cell class each name stands for, the check of a name, and the batch-first
:class:`~lstmkit.Recurrent` stack of a named kind that the tasks and the inspections build."""

from __future__ import annotations

from typing import Any

from .cells import Cell, GRUCell, LayerNormLSTMCell, LSTMCell, PeepholeLSTMCell, RNNCell
from .layers import Recurrent
from .validation import check_weight_count

CELL_KINDS: dict[str, type[Cell]] = {
    "rnn": RNNCell,
    "gru": GRUCell,
    "lstm": LSTMCell,
    "peephole": PeepholeLSTMCell,
    "layernorm": LayerNormLSTMCell,
}


def check_cell(kind: str) -> None:
    """Refuse a cell name outside :data:`CELL_KINDS`.

    >>> check_cell("transformer")
    Traceback (most recent call last):
    ...
    ValueError: unknown cell 'transformer': expected one of ['gru', 'layernorm', 'lstm', 'peephole', 'rnn']
    """
    if kind not in CELL_KINDS:
        raise ValueError(f"unknown cell {kind!r}: expected one of {sorted(CELL_KINDS)}")


def recurrent_layer(
    kind: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    dropout: float = 0.0,
    bidirectional: bool = False,
    **cell_kwargs: Any,
) -> Recurrent:
    """A batch-first :class:`~lstmkit.Recurrent` stack of the cell named ``kind`` (see :data:`CELL_KINDS`);
    ``cell_kwargs`` go to every cell (e.g. ``forget_bias=1.0``, :mod:`lstmkit.init`).

    >>> recurrent_layer("gru", 4, 8).cell().__class__.__name__
    'GRUCell'
    """
    check_cell(kind)
    check_stack_size(kind, input_size, hidden_size, num_layers, bidirectional)
    return Recurrent(
        CELL_KINDS[kind],
        input_size,
        hidden_size,
        num_layers,
        batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0,
        bidirectional=bidirectional,
        **cell_kwargs,
    )


MAX_LAYERS = 1024  # far beyond any stack the tasks train: a billion layers took forever to build


def check_stack_size(kind: str, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool) -> None:
    """Refuse a stack of more than :data:`MAX_LAYERS` layers or :data:`~lstmkit.validation.MAX_WEIGHTS`
    weights (counted as gate blocks of ``hidden_size x (inputs + hidden_size + 2)``) before it is built.

    >>> check_stack_size("lstm", 64, 10**9, 1, False)
    Traceback (most recent call last):
    ...
    ValueError: 1 lstm layer(s) of 1000000000 units would have about 4.0e+18 weights (1.6e+10 GB ...
    """
    if num_layers > MAX_LAYERS:
        raise ValueError(f"num_layers must be at most {MAX_LAYERS}, got {num_layers}")
    blocks = {"rnn": 1, "gru": 3}.get(kind, 4)
    directions = 2 if bidirectional else 1
    count = 0
    for layer in range(num_layers):
        inputs = input_size if layer == 0 else directions * hidden_size
        count += directions * blocks * hidden_size * (inputs + hidden_size + 2)
    check_weight_count(f"{num_layers} {kind} layer(s) of {hidden_size} units", count)
