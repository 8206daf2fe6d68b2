"""The time loop: every layer drives its cells through :func:`run_sequence`, which picks a backend.

* ``"reference"``: the plain autograd loop of :mod:`lstmkit.engine.reference`; runs every cell
  and every option, and is the oracle the other backends are tested against.
* ``"native"``: the compiled C++ loops of :mod:`lstmkit.engine.native` (forward and backward in
  C++, weight gradients as single matrix multiplies) for the built-in cells it supports.
* ``"auto"`` (default): native where it supports the cell and could be built, else reference.

The choice comes from the ``engine=`` argument of a layer, else the ``LSTMKIT_ENGINE``
environment variable, else ``"auto"``.
"""

from __future__ import annotations

import os

from torch import Tensor

from ..cells import Cell, State
from . import native
from .native.build import unavailable_reason
from .reference import SequenceResult
from .reference import run_sequence as run_reference

ENGINES = ("auto", "native", "reference")
ENGINE_VARIABLE = "LSTMKIT_ENGINE"


def resolve_engine(engine: str | None = None) -> str:
    """The engine asked for: the argument, else ``$LSTMKIT_ENGINE``, else ``"auto"``."""
    source = "engine" if engine is not None else ENGINE_VARIABLE
    engine = engine if engine is not None else os.environ.get(ENGINE_VARIABLE) or "auto"
    if engine not in ENGINES:
        raise ValueError(f"unknown {source} {engine!r}: expected one of {ENGINES}")
    return engine


def run_sequence(
    cell: Cell,
    inputs: Tensor,
    state: State,
    *,
    engine: str | None = None,
    valid: Tensor | None = None,
    carry_output: bool = False,
    reverse: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout: float = 0.0,
    training: bool = False,
    trace: bool = False,
) -> SequenceResult:
    """Run ``cell`` over ``inputs`` ``(T, B, I)`` from ``state`` on the chosen engine; the options
    are those of :func:`lstmkit.engine.reference.run_sequence`."""
    options = dict(
        valid=valid,
        carry_output=carry_output,
        reverse=reverse,
        recurrent_mask=recurrent_mask,
        zoneout=zoneout,
        training=training,
    )
    choice = resolve_engine(engine)
    if choice != "reference":
        if native.supports(cell, inputs, trace=trace) and native.is_available():
            return native.run_cell(cell, inputs, state, **options)
        if choice == "native":
            reason = unavailable_reason() or (
                f"it does not run {cell!r} with {inputs.dtype} input on {inputs.device}"
                + (" with gate tracing" if trace else "")
            )
            raise ValueError(f"engine='native' cannot be used: {reason}; use engine='auto' or 'reference'")
    return run_reference(cell, inputs, state, trace=trace, **options)


__all__ = ["ENGINES", "ENGINE_VARIABLE", "SequenceResult", "resolve_engine", "run_sequence"]
