"""The short way through a plain inference call of a :class:`~lstmkit.Recurrent` layer.

A call with no gradient, no ``lengths=``, ``mask=`` or gate trace, on a layer whose stack
runs on torch's fused kernels (:func:`lstmkit.engine.choose_layer`), computes as ``torch.nn``'s
would; lstmkit's way there (precision rules, argument checks, the choice of engine, two autocast
contexts) cost ~70 us of Python a call, ~10% of a (200, 1, 64, 128) LSTM's inference under bf16
autocast. A layer with int8 weights on its integer kernel (:func:`lstmkit.engine.choose_int8`)
takes the short way as well: one step of one stream is mostly that Python. :func:`plan` makes that
way's decisions once for each kind of call, with the functions the full path calls, and keeps them
on the layer under a key of everything they read (:func:`plan_key`); :func:`run` then checks the
input and runs the kernel. A kind of call the short way does not take keeps ``None`` and goes the
full way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..engine import choose_layer, int8_loop, torch_engine
from ..engine.dispatch import ENGINE_VARIABLE, choose_int8
from ..engine.kernels import kernel_of
from ..engine.precision import bf16_gemms_active, bf16_weights_widened, cast_floats, reduced_precision

if TYPE_CHECKING:
    from ..cells import State
    from .arguments import StateArg
    from .recurrent import Recurrent


@dataclass(frozen=True)
class Plan:
    """How a plain inference call runs torch's kernel or the int8 loop, as the full path would: in which dtype
    (``compute``; ``None``: the input's, checked against the weights'); in reduced precision or not
    (``reduced``; ``None``: as the call finds it; read only to widen bfloat16 weights); under
    bfloat16 autocast or not (``bf16``); whether autocast must be set for that (``set_autocast``:
    the call comes in another state); the results' dtype (``result``; ``None``: as computed) and
    whether the call comes under autocast (``autocast``, for :meth:`Recurrent._cast_results`)."""

    compute: torch.dtype | None
    reduced: bool | None
    bf16: bool
    set_autocast: bool
    result: torch.dtype | None
    autocast: bool  # the call comes under autocast
    int8: bool = False  # int8 weights on their integer kernel (lstmkit.engine.int8_loop), not torch's


def plan_key(layer: Recurrent, input: Tensor) -> tuple | None:
    """Everything :func:`plan` reads, for a call on ``input``; ``None`` for a call the short way does
    not take (gradients, compiling or tracing, an input that is not a rank-2 or rank-3 tensor)."""
    if torch.is_grad_enabled() or type(input) is not Tensor or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return None
    rank = input.dim()
    if rank == 3:
        steps, batch = (input.shape[1], input.shape[0]) if layer.batch_first else (input.shape[0], input.shape[1])
    elif rank == 2:
        steps, batch = input.shape[0], 1
    else:
        return None
    device = input.device.type
    autocast = torch.is_autocast_enabled(device)
    return (
        input.dtype,
        device,
        autocast,
        torch.get_autocast_dtype(device) if autocast else None,
        bf16_gemms_active(),  # a call in no precision of its own keeps the one it comes in
        bf16_weights_widened(),
        min(batch, 2),  # choose_layer tells empty, one-sequence and larger batches apart
        steps == 1,
        torch.get_num_threads() == 1,
        layer.training,
        layer.dropout,  # the int8 loop has no dropout between layers: in training it goes the full way
        layer.recurrent_dropout,
        layer.zoneout,
        layer.merge_mode,
        layer.engine,
        os.environ.get(ENGINE_VARIABLE),
        kernel_of(layer._cells[0]),
        _weights_kind(layer),
    )


def _weights_kind(layer: Recurrent) -> object:
    """The dtype of the layer's weights, and whether they are int8, for :func:`plan_key` (read from
    the parameter itself when it is one: asking the parametrizations took a tenth of a short call)."""
    stored = layer._parameters.get(layer._bindings[0][2])
    return stored.dtype if stored is not None else (layer._int8_weights(), layer._weights_dtype())


def plan(layer: Recurrent, input: Tensor) -> Plan | None:
    """The plan of a plain inference call on ``input`` (see the module), ``None`` when it does not run
    on torch's kernels or the int8 loop. Decided as the full path decides
    (:meth:`Recurrent._precision`, :func:`choose_layer`, :func:`choose_int8`; a call's ``hx`` plays no
    part there without gradients); raises where it raises."""
    device = input.device.type
    autocast = torch.is_autocast_enabled(device)
    reduced, compute, result = layer._precision(input)
    touched = autocast or reduced  # the full path sets precision and autocast only then
    compute = compute if touched else None
    int8 = layer._int8_weights()
    with torch.autocast(device, enabled=False), reduced_precision(reduced) if touched else _Unchanged():
        x = input if compute is None else cast_floats(input, compute)
        x = layer._prepare(x, None, None, None, bind=not int8)[0]
        call = {"masked": False, "traced": False, "lengths": None, "initial": None}
        chosen = choose_int8(layer, x, **call) if int8 else choose_layer(layer, x, **call)
        bf16 = bf16_gemms_active()
    if chosen is None:
        return None
    if int8:  # the full path runs the integer loop with autocast off, in the precision it set
        return Plan(compute, reduced if touched else None, False, autocast, result, autocast, int8=True)
    # the full path runs torch's kernel under autocast in bfloat16 when the GEMMs are bf16, else without
    in_bf16 = autocast and torch.get_autocast_dtype(device) == torch.bfloat16
    set_autocast = (autocast and not bf16) or (bf16 and not in_bf16)
    # the precision setting is read by the binding of bfloat16 weights alone (widened to float32)
    widens = touched and layer._weights_dtype() == torch.bfloat16
    return Plan(compute, reduced if widens else None, bf16, set_autocast, result, autocast)


def run(layer: Recurrent, chosen: Plan, input: Tensor, hx: StateArg = None) -> tuple[Tensor, Tensor | State]:
    """A plain inference call of ``layer`` on ``input`` (from ``hx``) as ``chosen`` says: ``(output,
    h_n)`` or ``(output, (h_n, c_n))``, as the full path returns."""
    with _Unchanged() if chosen.reduced is None else reduced_precision(chosen.reduced):
        if chosen.compute is not None:
            input, hx = cast_floats(input, chosen.compute), cast_floats(hx, chosen.compute)
        x, _, initial, _, batched, batch_first, _ = layer._prepare(input, hx, None, None, bind=not chosen.int8)
        if chosen.set_autocast:
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=chosen.bf16):
                output, states = _kernel(layer, chosen, x, initial)
        else:
            output, states = _kernel(layer, chosen, x, initial)
    result = layer._finish(output, states, batched, batch_first)
    return layer._cast_results(result, chosen.result, chosen.autocast)


def _kernel(layer: Recurrent, chosen: Plan, x: Tensor, initial: State | None) -> tuple[Tensor, tuple[Tensor, ...]]:
    if chosen.int8:
        return int8_loop.run_layers(layer, x, initial)
    return torch_engine.run_layers(layer, x, initial, None, layer._bound())


class _Unchanged:
    """A context that changes nothing (cheaper than ``contextlib.nullcontext`` on this path)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
