"""Weight layout: Keras stores ``kernel (I, G*H)`` with gate blocks in its own order and one bias
per gate; torch stores the transposes (``weight_ih (G*H, I)``) and two biases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..cells import Cell, GRUCell, LSTMCell, RNNCell


def _gate_order(cell: Cell) -> tuple[int, ...] | None:
    """Keras block of each torch block; GRU is Keras (z, r, h) vs torch (r, z, n). Self-inverse."""
    return (1, 0, 2) if isinstance(cell, GRUCell) else None


def _reorder(tensor: Tensor, order: tuple[int, ...] | None, size: int) -> Tensor:
    if order is None:
        return tensor
    blocks = tensor.split(size, dim=0)
    return torch.cat([blocks[k] for k in order], dim=0)


def check_convertible(cell: Cell) -> None:
    """Only the cells Keras has a layer for convert: LSTMCell (no projection), GRUCell, RNNCell."""
    if type(cell) not in (LSTMCell, GRUCell, RNNCell) or getattr(cell, "proj_size", 0):
        raise TypeError(
            f"no Keras layout for {type(cell).__name__}"
            + (" with proj_size > 0" if getattr(cell, "proj_size", 0) else "")
            + ": only LSTMCell, GRUCell and RNNCell convert"
        )


def cell_to_keras(cell: Cell) -> list[Tensor]:
    """``[kernel, recurrent_kernel(, bias)]`` in Keras layout; torch's two biases are summed (exact,
    they always enter the same sum) except for a reset-after GRU, whose Keras bias is ``(2, 3H)``."""
    check_convertible(cell)
    order, size = _gate_order(cell), cell.hidden_size
    weights = [_reorder(cell.weight_ih, order, size).T, _reorder(cell.weight_hh, order, size).T]
    if cell.bias_ih is not None or cell.bias_hh is not None:
        zeros = cell.weight_ih.new_zeros(cell.weight_ih.shape[0])
        b_ih = zeros if cell.bias_ih is None else cell.bias_ih
        b_hh = zeros if cell.bias_hh is None else cell.bias_hh
        if isinstance(cell, GRUCell) and cell.reset_after:
            weights.append(torch.stack([_reorder(b_ih, order, size), _reorder(b_hh, order, size)]))
        else:
            weights.append(_reorder(b_ih + b_hh, order, size))
    return [w.detach().clone() for w in weights]


def load_keras(cell: Cell, weights: Sequence[Tensor]) -> None:
    """Copy shape-checked Keras-layout weights into the cell's parameters (their identity is kept)."""
    order, size = _gate_order(cell), cell.hidden_size
    kernel, recurrent, *bias = weights
    with torch.no_grad():
        cell.weight_ih.copy_(_reorder(kernel.T, order, size))
        cell.weight_hh.copy_(_reorder(recurrent.T, order, size))
        if bias and bias[0].dim() == 2:  # reset-after GRU: row 0 input bias, row 1 recurrent bias
            cell.bias_ih.copy_(_reorder(bias[0][0], order, size))
            cell.bias_hh.copy_(_reorder(bias[0][1], order, size))
        elif bias:
            cell.bias_ih.copy_(_reorder(bias[0], order, size))


def check_weights(owner: str, names: Sequence[str], expected: Sequence[tuple], weights: Sequence[Any]) -> list:
    """Weights as arrays; a ValueError listing expected vs got shapes per weight on any mismatch."""
    arrays = [w.detach().cpu().numpy() if isinstance(w, Tensor) else np.asarray(w) for w in weights]
    got = [tuple(a.shape) for a in arrays]
    if len(got) != len(expected) or any(g != tuple(e) for g, e in zip(got, expected, strict=False)):
        rows = [
            f"  {names[i] if i < len(names) else f'weight {i}'}: expected "
            f"{tuple(expected[i]) if i < len(expected) else 'nothing'}, got {got[i] if i < len(got) else 'nothing'}"
            for i in range(max(len(got), len(expected)))
        ]
        raise ValueError(
            f"{owner} expects {len(expected)} weights in Keras layout, got {len(got)}:\n" + "\n".join(rows)
        )
    return arrays
