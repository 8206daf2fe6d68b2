"""Keras' per-gate dropout (its implementation 1): with ``recurrent_dropout``, an LSTM or GRU draws
one mask per gate for ``h`` and for the inputs; :class:`PerGateDropout` runs a cell with them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cells import Cell, State


def _gate_shifts(value: Tensor, masks: Tensor, weight: Tensor, size: int) -> Tensor:
    """``(..., G * size)``: what each gate's block of ``weight`` adds when it reads
    ``value * masks[k]`` rather than ``value * masks[-1]`` (zero for the last gate)."""
    blocks = weight.split(size)
    shifts = [F.linear(value * (mask - masks[-1]), block) for mask, block in zip(masks[:-1], blocks[:-1], strict=True)]
    return torch.cat([*shifts, torch.zeros_like(shifts[0])], dim=-1)


class PerGateDropout:
    """``cell`` with Keras' per-gate dropout masks (its implementation 1): gate ``k`` reads
    ``inputs * input_masks[k]`` and ``h * recurrent_masks[k]`` (masks ``(G, B, size)``).

    The cell runs unchanged with the last gate's masks, and each other gate's pre-activation is
    shifted by its block times ``value * (masks[k] - masks[-1])``. Exact, as those pre-activations
    are sums of the two projections; the last gate, whose recurrent term a GRU scales by ``r`` or
    computes from ``r * h``, needs no shift. Has the two methods the reference time loop calls
    (``step``'s ``recurrent_mask`` is unused: the masks are this object's)."""

    def __init__(self, cell: Cell, input_masks: Tensor | None, recurrent_masks: Tensor) -> None:
        self.cell, self.input_masks, self.recurrent_masks = cell, input_masks, recurrent_masks

    def project_input(self, x: Tensor) -> Tensor:
        masks = self.input_masks
        if masks is None:
            return self.cell.project_input(x)
        shifts = _gate_shifts(x, masks, self.cell.weight_ih, self.cell.hidden_size)
        return self.cell.project_input(x * masks[-1]) + shifts

    def step(self, xg: Tensor, state: State, recurrent_mask: Tensor | None = None) -> tuple[State, tuple[Tensor, ...]]:
        masks = self.recurrent_masks
        xg = xg + _gate_shifts(state[0], masks, self.cell.weight_hh, self.cell.hidden_size)
        return self.cell.step(xg, state, masks[-1])
