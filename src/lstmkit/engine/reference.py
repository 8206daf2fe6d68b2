"""Reference time loop: plain autograd over :meth:`Cell.step`, one step at a time.

Input projection for all steps is one matrix multiply; each step adds the recurrent multiply and
the cell's pointwise math. Masks, zoneout and recurrent dropout are applied here, so every cell,
built-in or user-defined, gets them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..cells import Cell, State


@dataclass
class SequenceResult:
    """What one direction of one layer produces; all tensors are time-major ``(T, B, ...)``."""

    output: Tensor
    state: State
    trace: dict[str, Tensor] | None = None


def run_sequence(
    cell: Cell,
    inputs: Tensor,
    state: State,
    *,
    valid: Tensor | None = None,
    carry_output: bool = False,
    reverse: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout: float = 0.0,
    training: bool = False,
    trace: bool = False,
) -> SequenceResult:
    """Run ``cell`` over ``inputs`` ``(T, B, I)`` from ``state``.

    ``valid`` ``(T, B)`` marks real steps: at an invalid step the state is carried unchanged and
    the output is zero, or (``carry_output``, Keras masks) repeats the previous output.
    ``reverse`` walks ``t = T-1 .. 0``; outputs stay aligned with the input's time axis.
    ``recurrent_mask`` ``(B, recurrent_size)`` multiplies ``h`` before the recurrent multiply.
    ``zoneout`` keeps each state unit's previous value with that probability (Krueger et al.
    2016): sampled per step in training, its expectation in evaluation.
    """
    steps = inputs.shape[0]
    projected = cell.project_input(inputs)
    zoneout_masks = _zoneout_masks(state, steps, zoneout, training)
    outputs: list[Tensor] = [inputs.new_empty(0)] * steps
    records: list[tuple[Tensor, ...]] = [()] * steps
    previous_output = torch.zeros_like(state[0])
    for t in range(steps - 1, -1, -1) if reverse else range(steps):
        new_state, gates = cell.step(projected[t], state, recurrent_mask)
        if zoneout:
            new_state = tuple(
                _zone_out(old, new, zoneout, masks[t] if masks is not None else None)
                for old, new, masks in zip(state, new_state, zoneout_masks, strict=True)
            )
        output = new_state[0]
        if valid is not None:
            keep = valid[t].unsqueeze(-1)
            new_state = tuple(torch.where(keep, new, old) for new, old in zip(new_state, state, strict=True))
            output = torch.where(keep, output, previous_output if carry_output else torch.zeros_like(output))
        state = new_state
        previous_output = output
        outputs[t] = output
        if trace:
            records[t] = (*gates, *new_state)
    result = SequenceResult(torch.stack(outputs), state)
    if trace:
        names = (*cell.gate_names, *cell.state_names)
        result.trace = {
            name: torch.stack(column) for name, column in zip(names, zip(*records, strict=True), strict=True)
        }
    return result


def _zoneout_masks(state: State, steps: int, rate: float, training: bool) -> list[Tensor | None]:
    """One Bernoulli(rate) 'keep the old value' mask per step and state tensor, drawn up front."""
    if not (rate and training):
        return [None] * len(state)
    return [torch.rand((steps, *s.shape), dtype=s.dtype, device=s.device) < rate for s in state]


def _zone_out(old: Tensor, new: Tensor, rate: float, keep_old: Tensor | None) -> Tensor:
    if keep_old is None:  # evaluation: the expectation of the random update
        return rate * old + (1 - rate) * new
    return torch.where(keep_old, old, new)
