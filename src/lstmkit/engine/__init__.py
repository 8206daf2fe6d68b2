"""The time loop: every layer drives its cells through :func:`run_sequence`, which picks a backend.

* ``"reference"``: the plain autograd loop of :mod:`lstmkit.engine.reference`; runs every cell
  and every option, and is the oracle the other backends are tested against.
* ``"native"``: the compiled C++ loops of :mod:`lstmkit.engine.native` (forward and backward in
  C++, weight gradients as single matrix multiplies) for the built-in cells it supports.
* ``"fused"``: any cell whose maths is in ``pointwise`` (user cells, peepholes, projections, ...)
  as one autograd node: hoisted input projection, one ``addmm`` and the pointwise step per step
  without an autograd graph, a reverse loop of per-step vector-Jacobian products and the weight
  gradients as single matrix multiplies (:mod:`lstmkit.engine.python_fused`). With compilation on
  (``$LSTMKIT_COMPILE``) a step that translates to C++ runs in the native loop instead
  (:mod:`lstmkit.engine.native.generated`); one that does not has its steps compiled by TorchInductor.
* ``"torch"``: PyTorch's own fused kernels (``torch._VF``; oneDNN for LSTM) for whole stacks of
  plain LSTM/GRU/RNN cells without lstmkit's extras (:mod:`lstmkit.engine.fused_torch`).
* ``"auto"`` (default): for plain stacks, torch's kernels for LSTM inference and for RNN cells
  (oneDNN's forward is at the GEMM floor), native for LSTM training and for GRU (faster than
  torch's); for the rest native where it supports the cell and could be built, else fused where it
  supports the call (not gate tracing, not cells that override ``step``/``project_*``), else reference.

The choice comes from the ``engine=`` argument of a layer, else the ``LSTMKIT_ENGINE``
environment variable, else ``"auto"``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..cells import Cell, State
from . import fused_torch, native, python_fused
from .native.build import unavailable_reason
from .options import SequenceOptions, SequenceResult
from .reference import run_sequence as run_reference

if TYPE_CHECKING:
    from ..layers import Recurrent

ENGINES = ("auto", "native", "torch", "fused", "reference")
ENGINE_VARIABLE = "LSTMKIT_ENGINE"


def resolve_engine(engine: str | None = None) -> str:
    """The engine asked for: the argument, else ``$LSTMKIT_ENGINE``, else ``"auto"``."""
    source = "engine" if engine is not None else ENGINE_VARIABLE
    engine = engine if engine is not None else os.environ.get(ENGINE_VARIABLE) or "auto"
    if engine not in ENGINES:
        raise ValueError(f"unknown {source} {engine!r}: expected one of {ENGINES}")
    return engine


def use_torch_kernels(
    layer: Recurrent, masked: bool, traced: bool, lengths: Tensor | None, initial: State | None, x: Tensor
) -> bool:
    """Whether ``layer`` runs this call on torch's fused kernels (see the module docstring)."""
    choice = resolve_engine(layer.engine)
    if choice not in ("torch", "auto"):
        return False
    reason = fused_torch.why_not(layer, masked=masked, traced=traced, lengths=lengths)
    if choice == "torch":
        if reason:
            raise ValueError(f"engine='torch' cannot be used: {reason}; use engine='auto' or 'reference'")
        return True
    if reason:
        return False
    kernel = fused_torch.kernel_name(layer)
    if kernel.startswith("rnn") or not native.is_available():
        return True
    if kernel != "lstm":
        return False
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, *layer.parameters(), *(initial or ())))
    return not needs_grad


def run_sequence(
    cell: Cell, inputs: Tensor, state: State, *, engine: str | None = None, trace: bool = False, **options: Any
) -> SequenceResult:
    """Run ``cell`` over ``inputs`` ``(T, B, I)`` from ``state`` on the chosen engine; ``options`` are
    the fields of :class:`SequenceOptions` and ``trace`` records the gates, as in
    :func:`lstmkit.engine.reference.run_sequence`."""
    choice = resolve_engine(engine)
    if choice in ("auto", "native"):
        if native.supports(cell, inputs, trace=trace) and native.is_available():
            return native.run_cell(cell, inputs, state, **options)
        if choice == "native":
            reason = unavailable_reason() or (
                f"it does not run {cell!r} with {inputs.dtype} input on {inputs.device}"
                + (" with gate tracing" if trace else "")
            )
            raise ValueError(f"engine='native' cannot be used: {reason}; use engine='auto' or 'reference'")
    if choice in ("auto", "fused"):
        reason = python_fused.why_not(cell, inputs, trace=trace)
        if reason is None:
            return python_fused.run_cell(cell, inputs, state, **options)
        if choice == "fused":
            raise ValueError(f"engine='fused' cannot be used: {reason}; use engine='auto' or 'reference'")
    return run_reference(cell, inputs, state, trace=trace, **options)


__all__ = [
    "ENGINES",
    "ENGINE_VARIABLE",
    "SequenceOptions",
    "SequenceResult",
    "resolve_engine",
    "run_sequence",
    "use_torch_kernels",
]
