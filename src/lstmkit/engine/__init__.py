"""The time loop: every layer drives its cells through :func:`run_sequence`, which picks a backend.

* ``"reference"``: the plain autograd loop of :mod:`lstmkit.engine.reference`; runs every cell
  and every option, and is the oracle the other backends are tested against.
* ``"native"``: the compiled C++ loops of :mod:`lstmkit.engine.native` (forward and backward in
  C++, weight gradients as single matrix multiplies) for the built-in cells it supports.
* ``"fused"``: any cell whose maths is in ``pointwise`` (user cells, peepholes, projections, ...)
  as one autograd node: hoisted input projection, one ``addmm`` and the pointwise step per step
  without an autograd graph, a reverse loop of per-step vector-Jacobian products and the weight
  gradients as single matrix multiplies (:mod:`lstmkit.engine.fused`). With compilation on
  (``$LSTMKIT_COMPILE``, :mod:`lstmkit.engine.compiling`) a step that translates to C++ runs in the
  native loop instead (:mod:`lstmkit.engine.native.generated`); one that does not has its steps
  compiled by TorchInductor (:mod:`lstmkit.engine.fused_inductor`).
* ``"torch"``: PyTorch's own fused kernels (``torch._VF``; oneDNN for LSTM) for whole stacks of
  plain LSTM/GRU/RNN cells without lstmkit's extras (:mod:`lstmkit.engine.torch_engine`).
* ``"auto"`` (default): for plain stacks, torch's kernels for LSTM inference and for RNN cells
  (oneDNN's forward is at the GEMM floor), native for LSTM training and for GRU (faster than
  torch's); for the rest native where it supports the cell and could be built, else fused where it
  supports the call (not gate tracing, not cells that override ``step``/``project_*``), else reference.

The choice comes from the ``engine=`` argument of a layer, else the ``LSTMKIT_ENGINE``
environment variable, else ``"auto"``; :mod:`lstmkit.engine.dispatch` makes it, and
:func:`explain` says which engine a layer call would run on and why. Under ``torch.compile`` and
``torch.export`` ``"auto"`` does not pick torch's kernels (the native operators keep the batch and
the sequence length dynamic).

Besides the engines: :mod:`.options` (what every time loop takes and returns, zoneout masks,
zoneout and masking of one step), :mod:`.kernels` (which native and torch kernel computes which
cell), :mod:`.precision` (bf16 products, int8 weights) and :mod:`.int8_loop` (int8 inference on
integer products).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..cells import Cell, State
from . import fused, native
from .dispatch import ENGINE_VARIABLE, ENGINES, Choice, choose_cell, choose_layer, explain, resolve_engine
from .options import SequenceOptions, SequenceResult
from .reference import run_sequence as run_reference


def run_sequence(
    cell: Cell, inputs: Tensor, state: State, *, engine: str | None = None, trace: bool = False, **options: Any
) -> SequenceResult:
    """Run ``cell`` over ``inputs`` ``(T, B, I)`` from ``state`` on the chosen engine; ``options`` are
    the fields of :class:`SequenceOptions` and ``trace`` records the gates, as in
    :func:`lstmkit.engine.reference.run_sequence`."""
    chosen = choose_cell(cell, inputs, engine=engine, trace=trace).engine
    if chosen == "native":
        return native.run_cell(cell, inputs, state, **options)
    if chosen == "fused":
        return fused.run_cell(cell, inputs, state, **options)
    return run_reference(cell, inputs, state, trace=trace, **options)


__all__ = [
    "ENGINES",
    "ENGINE_VARIABLE",
    "Choice",
    "SequenceOptions",
    "SequenceResult",
    "choose_cell",
    "choose_layer",
    "explain",
    "resolve_engine",
    "run_sequence",
]
