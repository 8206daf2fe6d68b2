"""The ``"reference"`` engine: plain autograd over :meth:`Cell.step`, one step at a time.

Input projection for all steps is one matrix multiply; each step adds the recurrent multiply and
the cell's pointwise math. Masks, zoneout (:func:`~lstmkit.engine.options.zone_out_and_mask`) and
recurrent dropout are applied here, so every cell, built-in or user-defined, gets them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..cells import Cell, State
from .options import SequenceOptions, SequenceResult, time_steps, zone_out_and_mask


def run_sequence(
    cell: Cell,
    inputs: Tensor,
    state: State,
    *,
    trace: bool = False,
    zoneout_masks: list[Tensor] | None = None,
    **options: Any,
) -> SequenceResult:
    """Run ``cell`` over ``inputs`` ``(T, B, I)`` from ``state``; ``options`` are the fields of
    :class:`~lstmkit.engine.options.SequenceOptions` (masks, direction, recurrent dropout, zoneout),
    and ``trace`` records every step's gates and states in the result. ``zoneout_masks``: the
    boolean 'keep the old value' masks ``(T, B, size)`` per state, when they were drawn already (a
    recomputation); in training they are drawn here otherwise."""
    options = SequenceOptions(**options)
    steps = inputs.shape[0]
    projected = cell.project_input(inputs).unbind(0)  # one view per step: their backward is one stack
    valid, zoneout = options.valid, options.zoneout
    if zoneout_masks is None:
        zoneout_masks = options.zoneout_masks(state, steps)
    drawn = zoneout_masks[0] is not None  # all masks, or none (evaluation: the expectation)
    outputs: list[Tensor] = [inputs.new_empty(0)] * steps
    records: list[tuple[Tensor, ...]] = [()] * steps
    previous_output = torch.zeros_like(state[0])
    for t in time_steps(steps, options.reverse):
        new_state, gates = cell.step(projected[t], state, options.recurrent_mask)
        new_state, output = zone_out_and_mask(
            state,
            new_state,
            [m[t] for m in zoneout_masks] if drawn else None,
            None if valid is None else valid[t],
            previous_output,
            zoneout=zoneout,
            carry_output=options.carry_output,
        )
        if output is None:
            output = new_state[0]
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


def recomputed_gradients(
    cell: Cell,
    inputs: Tensor,
    state: State,
    sources: list[Tensor],
    grads: list[Tensor | None],
    **options: Any,
) -> list[Tensor | None]:
    """The gradients of a sequence w.r.t. ``sources`` as a graph (``create_graph=True``), given
    ``grads``, those of its output and final states (``None`` where one was not used): the sequence
    recomputed here under autograd, with the options of :func:`run_sequence` (its zoneout masks
    among them). How the other engines' backwards are differentiated in turn. ``None`` for a source
    that does not require gradients or does not reach the results."""
    with torch.enable_grad():
        result = run_sequence(cell, inputs, state, **options)
        pairs = [(r, g) for r, g in zip((result.output, *result.state), grads, strict=True) if g is not None]
        wanted = [t for t in sources if t.requires_grad]
        found = torch.autograd.grad(
            [r for r, _ in pairs], wanted, [g for _, g in pairs], create_graph=True, allow_unused=True
        )
    by_id = {id(t): g for t, g in zip(wanted, found, strict=True)}
    return [by_id.get(id(t)) for t in sources]
