"""The one place that decides which engine runs a call, and :func:`explain`, which says so.

Three decisions, in this order (see :mod:`lstmkit.engine` for the engines):

1. :func:`choose_int8`: whether a layer with int8 weights runs on integer products (:mod:`.int8_loop`);
2. :func:`choose_layer`: whether a whole stack runs on torch's fused kernels (``torch._VF``);
3. else :func:`choose_cell`, per layer and direction: native, fused or reference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from ..cells import Cell, State
from . import fused, int8_loop, native, torch_engine
from .kernels import kernel_of
from .native.build import unavailable_reason
from .options import gradient_possible
from .precision import bf16_gemms_active, cast_floats, reduced_precision

if TYPE_CHECKING:
    from ..layers import Recurrent

ENGINES = ("auto", "native", "torch", "fused", "reference")
ENGINE_VARIABLE = "LSTMKIT_ENGINE"


@dataclass(frozen=True)
class Choice:
    """An engine and why it runs the call."""

    engine: str  # "torch", "native", "fused" or "reference"
    reason: str

    def __str__(self) -> str:
        return f"{self.engine}: {self.reason}"


def resolve_engine(engine: str | None = None) -> str:
    """The engine asked for: the argument, else ``$LSTMKIT_ENGINE``, else ``"auto"``."""
    source = "engine" if engine is not None else ENGINE_VARIABLE
    engine = engine if engine is not None else os.environ.get(ENGINE_VARIABLE) or "auto"
    if engine not in ENGINES:
        raise ValueError(f"unknown {source} {engine!r}: expected one of {ENGINES}")
    return engine


def int8_refusal(
    layer: Recurrent, x: Tensor, *, masked: bool, traced: bool, lengths: Tensor | None, initial: State | None
) -> str | None:
    """Why a call of ``layer`` (int8 weights) does not run on the int8 kernel, ``None`` when it does."""
    engine = resolve_engine(layer.engine)
    if engine not in ("auto", "native"):
        return f"engine={engine!r} was asked for"
    return int8_loop.why_not(layer, x, traced=traced, initial=initial)


def choose_int8(
    layer: Recurrent, x: Tensor, *, masked: bool, traced: bool, lengths: Tensor | None, initial: State | None
) -> Choice | None:
    """``Choice("native", ...)`` when ``layer`` has int8 weights (:func:`lstmkit.quantize_int8`) and runs
    this call on integer products (:func:`lstmkit.engine.int8_loop.run_layers`), else ``None``."""
    call = {"masked": masked, "traced": traced, "lengths": lengths, "initial": initial}
    if not layer._int8_weights() or int8_refusal(layer, x, **call) is not None:
        return None
    kernel = int8_loop.kernel_name(layer)
    return Choice("native", f"int8 weights: integer products on {int8_loop.kernel_isa()} (kernel {kernel!r})")


def choose_layer(
    layer: Recurrent, x: Tensor, *, masked: bool, traced: bool, lengths: Tensor | None, initial: State | None
) -> Choice | None:
    """``Choice("torch", ...)`` when ``layer``'s whole stack runs this call on torch's fused kernels,
    else ``None`` (each cell then goes through :func:`choose_cell`)."""
    choice = resolve_engine(layer.engine)
    if choice not in ("torch", "auto"):
        return None
    compiling = torch.compiler.is_compiling() or torch.jit.is_tracing()
    reason = torch_engine.why_not(layer, masked=masked, traced=traced, lengths=None if compiling else lengths)
    if choice == "torch":
        if reason:
            raise ValueError(f"engine='torch' cannot be used: {reason}; use engine='auto' or 'reference'")
        return Choice("torch", "engine='torch' was asked for")
    if reason or compiling or x.shape[1] == 0:
        return None  # under torch.compile/export/jit.trace the operators keep batch and length dynamic
    kernel = torch_engine.kernel_name(layer)
    if kernel.startswith("rnn"):
        return Choice("torch", "plain RNN cells: torch's kernel runs at the per-step GEMM floor")
    if not native.is_available():
        return Choice("torch", f"the native engine is unavailable ({unavailable_reason()})")
    if kernel != "lstm":
        return None
    if gradient_possible(x, initial, layer):
        return None
    if x.shape[1] == 1 and (x.shape[0] == 1 or torch.get_num_threads() == 1):
        # one sequence, one step or one thread: the native loop's few-rows product beats oneDNN's, which
        # on more threads splits a long sequence's columns between them (docs/engine.md)
        return None
    if lengths is not None:
        # torch's LSTM over a PackedSequence runs without oneDNN: ~2x slower under autocast, and in float32
        # the native loop took 0.46-0.87 of its time on two threads (0.84-1.06 on one; docs/engine.md)
        return None
    return Choice("torch", "plain LSTM inference: oneDNN's forward runs at the per-step GEMM floor")


def choose_cell(cell: Cell, inputs: Tensor, *, engine: str | None = None, trace: bool = False) -> Choice:
    """The engine that runs ``cell`` over ``inputs`` ``(T, B, I)``; raises ``ValueError`` when the
    engine asked for cannot."""
    choice = resolve_engine(engine)
    if inputs.shape[1] == 0:
        return Choice("reference", "an empty batch")
    if choice in ("auto", "native"):
        if native.supports(cell, inputs, trace=trace) and native.is_available():
            return Choice("native", f"{type(cell).__name__} has the native kernel {kernel_of(cell)!r}")
        if choice == "native":
            reason = unavailable_reason() or (
                f"it does not run {cell!r} with {inputs.dtype} input on {inputs.device}"
                + (" with gate tracing" if trace else "")
            )
            raise ValueError(f"engine='native' cannot be used: {reason}; use engine='auto' or 'reference'")
    if choice in ("auto", "fused"):
        reason = fused.why_not(cell, inputs, trace=trace)
        if reason is None:
            return Choice("fused", f"{type(cell).__name__} has no native kernel; its pointwise runs in the fused loop")
        if choice == "fused":
            raise ValueError(f"engine='fused' cannot be used: {reason}; use engine='auto' or 'reference'")
        return Choice("reference", reason)
    return Choice("reference", "engine='reference' was asked for")


def explain(
    layer: Recurrent,
    input: Tensor,
    hx: Tensor | tuple[Tensor, ...] | None = None,
    *,
    lengths: object = None,
    mask: Tensor | None = None,
    return_gates: bool = False,
) -> Choice:
    """The engine ``layer(input, hx, lengths=..., mask=..., return_gates=...)`` would run on, and why.

    >>> import torch, lstmkit
    >>> lstm = lstmkit.LSTM(4, 8)
    >>> print(lstmkit.engine.explain(lstm, torch.randn(5, 2, 4)).engine)
    native
    >>> with torch.no_grad():
    ...     print(lstmkit.engine.explain(lstm, torch.randn(5, 2, 4)))
    torch: plain LSTM inference: oneDNN's forward runs at the per-step GEMM floor
    """
    data = input.data if isinstance(input, PackedSequence) else input
    reduced, compute, _ = layer._precision(data, packed=isinstance(input, PackedSequence))
    with torch.autocast(data.device.type, enabled=False), reduced_precision(reduced):
        bf16 = bf16_gemms_active()
        input, hx = cast_floats(input, compute), cast_floats(hx, compute)
        x, lengths_tensor, initial = layer._prepare(input, hx, lengths, mask)[:3]
        call = {"masked": mask is not None, "traced": return_gates, "lengths": lengths_tensor, "initial": initial}
        int8 = choose_int8(layer, x, **call)
        if int8 is not None:
            return int8
        chosen = choose_layer(layer, x, **call)
        choice = chosen or choose_cell(layer._cells[0], x, engine=layer.engine, trace=return_gates)
        dequantized = f"; int8 weights dequantized ({int8_refusal(layer, x, **call)})" if layer._int8_weights() else ""
    if bf16 and choice.engine == "native":
        return Choice("native", choice.reason + "; GEMMs on bfloat16 operands where they pay" + dequantized)
    if bf16 and choice.engine == "torch":
        return Choice("torch", choice.reason + "; under bfloat16 autocast, as torch.nn" + dequantized)
    if reduced and not bf16:
        return Choice(choice.engine, choice.reason + "; float32 products: this CPU has no bf16 hardware")
    return Choice(choice.engine, choice.reason + dequantized)
