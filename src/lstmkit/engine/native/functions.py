"""Autograd Functions over the native time loops, and the entry points the layers will call.

Two levels:

* :func:`lstm_sequence`, :func:`gru_sequence` -- stateless, tensors in, tensors out, strict: every
  tensor must be a contiguous CPU tensor of the input's dtype (float32 or float64) and the right
  shape, else the C++ code raises ``TypeError``/``ValueError``.
* :func:`run_cell` -- mirrors :func:`lstmkit.engine.reference.run_sequence` for an
  :class:`lstmkit.LSTMCell` or :class:`lstmkit.GRUCell` (same arguments, same
  :class:`SequenceResult`, same random draws for zoneout), for the cells :func:`supports` accepts.
  It makes its inputs contiguous.

Both need the compiled extension: :func:`is_available` says whether it could be built.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from ...cells import GRUCell, LSTMCell, State
from ..reference import SequenceResult, _zoneout_masks
from .build import load_extension, unavailable_reason


class NativeEngineUnavailable(RuntimeError):
    """The C++ extension could not be built on this machine (see the warning emitted once)."""


def is_available() -> bool:
    """Whether the native engine can run here (compiles the extension on the first call)."""
    return load_extension() is not None


def _extension() -> ModuleType:
    module = load_extension()
    if module is None:
        raise NativeEngineUnavailable(f"the lstmkit native engine is unavailable: {unavailable_reason()}")
    return module


class LSTMSequenceFunction(torch.autograd.Function):
    """A whole LSTM sequence (one layer, one direction) as one autograd node.

    Differentiable inputs: ``x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0``. The masks
    (``valid``, ``recurrent_mask``, zoneout masks) are constants. Outputs ``(output, h_n, c_n)``.
    First derivatives only (the backward is itself a native loop, not differentiable again).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        x: Tensor,
        weight_ih: Tensor,
        weight_hh: Tensor,
        bias_ih: Tensor | None,
        bias_hh: Tensor | None,
        h0: Tensor,
        c0: Tensor,
        valid: Tensor | None,
        recurrent_mask: Tensor | None,
        zoneout_h: Tensor | None,
        zoneout_c: Tensor | None,
        zoneout_rate: float,
        reverse: bool,
        carry_output: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        needs_grad = any(ctx.needs_input_grad[:7])
        output, h_n, c_n, gates, hs, cs, h_rec = _extension().lstm_forward(
            x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, valid, recurrent_mask,
            zoneout_h, zoneout_c, zoneout_rate, reverse, carry_output, needs_grad,
        )  # fmt: skip
        if needs_grad:
            ctx.save_for_backward(
                x, weight_ih, weight_hh, gates, hs, cs, h_rec, valid, recurrent_mask, zoneout_h, zoneout_c
            )
            ctx.options = (zoneout_rate, reverse, carry_output)
        return output, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, grad_output: Tensor, grad_h_n: Tensor, grad_c_n: Tensor
    ) -> tuple[Tensor | None, ...]:
        x, weight_ih, weight_hh, gates, hs, cs, h_rec, valid, recurrent_mask, zoneout_h, zoneout_c = ctx.saved_tensors
        zoneout_rate, reverse, carry_output = ctx.options
        need = ctx.needs_input_grad
        dx, dw_ih, dw_hh, db, dh0, dc0 = _extension().lstm_backward(
            grad_output, grad_h_n, grad_c_n, x, weight_ih, weight_hh, gates, hs, cs,
            h_rec if recurrent_mask is not None else None, valid, recurrent_mask, zoneout_h, zoneout_c,
            zoneout_rate, reverse, carry_output, need[0], need[1] or need[2], need[3] or need[4],
        )  # fmt: skip
        return (
            dx,
            dw_ih if need[1] else None,
            dw_hh if need[2] else None,
            db if need[3] else None,
            (db.clone() if need[3] else db) if need[4] else None,  # never alias the two .grad tensors
            dh0,
            dc0,
            *([None] * 7),
        )


def lstm_sequence(
    input: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    h0: Tensor,
    c0: Tensor,
    *,
    valid: Tensor | None = None,
    reverse: bool = False,
    carry_output: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_masks: tuple[Tensor, Tensor] | None = None,
    zoneout_rate: float = 0.0,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Run one LSTM layer direction over ``input`` ``(T, B, I)`` natively; returns ``(output, (h_n, c_n))``.

    Weights in PyTorch's layout (gates ``i, f, g, o``): ``weight_ih (4H, I)``, ``weight_hh (4H, H)``,
    ``bias_ih``/``bias_hh`` ``(4H,)`` or both ``None``; ``h0``, ``c0`` ``(B, H)``. All tensors must be
    contiguous CPU tensors of one dtype, float32 or float64.

    ``valid`` ``(T, B)`` bool: at an invalid step the state is carried, the output is zero or, with
    ``carry_output``, the previous output. ``reverse`` walks ``t = T-1 .. 0``. ``recurrent_mask``
    ``(B, H)`` multiplies ``h`` before the recurrent multiply. Zoneout: ``zoneout_masks = (keep_h,
    keep_c)``, each ``(T, B, H)`` (bool or 0/1), keeps the old value where set (training);
    without masks, ``zoneout_rate`` mixes ``rate * old + (1 - rate) * new`` (evaluation).
    """
    zoneout_h, zoneout_c = (None, None) if zoneout_masks is None else zoneout_masks
    if zoneout_h is not None:
        zoneout_h, zoneout_c = (m.to(input.dtype) if m.dtype == torch.bool else m for m in (zoneout_h, zoneout_c))
    output, h_n, c_n = LSTMSequenceFunction.apply(
        input, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, valid, recurrent_mask,
        zoneout_h, zoneout_c, float(zoneout_rate), bool(reverse), bool(carry_output),
    )  # fmt: skip
    return output, (h_n, c_n)


class GRUSequenceFunction(torch.autograd.Function):
    """A whole GRU sequence (``reset_after=True``, PyTorch's form) as one autograd node.

    Differentiable inputs: ``x, weight_ih, weight_hh, bias_ih, bias_hh, h0``; outputs ``(output, h_n)``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        x: Tensor,
        weight_ih: Tensor,
        weight_hh: Tensor,
        bias_ih: Tensor | None,
        bias_hh: Tensor | None,
        h0: Tensor,
        valid: Tensor | None,
        recurrent_mask: Tensor | None,
        zoneout_h: Tensor | None,
        zoneout_rate: float,
        reverse: bool,
        carry_output: bool,
    ) -> tuple[Tensor, Tensor]:
        needs_grad = any(ctx.needs_input_grad[:6])
        output, h_n, gates, hn, hs, h_rec = _extension().gru_forward(
            x, weight_ih, weight_hh, bias_ih, bias_hh, h0, valid, recurrent_mask,
            zoneout_h, zoneout_rate, reverse, carry_output, needs_grad,
        )  # fmt: skip
        if needs_grad:
            ctx.save_for_backward(x, weight_ih, weight_hh, gates, hn, hs, h_rec, valid, recurrent_mask, zoneout_h)
            ctx.options = (zoneout_rate, reverse, carry_output)
        return output, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_output: Tensor, grad_h_n: Tensor) -> tuple[Tensor | None, ...]:
        x, weight_ih, weight_hh, gates, hn, hs, h_rec, valid, recurrent_mask, zoneout_h = ctx.saved_tensors
        zoneout_rate, reverse, carry_output = ctx.options
        need = ctx.needs_input_grad
        dx, dw_ih, dw_hh, db_ih, db_hh, dh0 = _extension().gru_backward(
            grad_output, grad_h_n, x, weight_ih, weight_hh, gates, hn, hs,
            h_rec if recurrent_mask is not None else None, valid, recurrent_mask, zoneout_h,
            zoneout_rate, reverse, carry_output, need[0], need[1] or need[2], need[3] or need[4],
        )  # fmt: skip
        return (
            dx,
            dw_ih if need[1] else None,
            dw_hh if need[2] else None,
            db_ih if need[3] else None,
            db_hh if need[4] else None,
            dh0,
            *([None] * 6),
        )


def gru_sequence(
    input: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    h0: Tensor,
    *,
    valid: Tensor | None = None,
    reverse: bool = False,
    carry_output: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_mask: Tensor | None = None,
    zoneout_rate: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Run one GRU layer direction (``reset_after=True``: ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
    gates ``r, z, n``) over ``input`` ``(T, B, I)`` natively; returns ``(output, h_n)``.

    Shapes ``weight_ih (3H, I)``, ``weight_hh (3H, H)``, biases ``(3H,)`` or both ``None``, ``h0 (B, H)``;
    the options are those of :func:`lstm_sequence` (one zoneout mask, for ``h``).
    """
    if zoneout_mask is not None and zoneout_mask.dtype == torch.bool:
        zoneout_mask = zoneout_mask.to(input.dtype)
    output, h_n = GRUSequenceFunction.apply(
        input, weight_ih, weight_hh, bias_ih, bias_hh, h0, valid, recurrent_mask,
        zoneout_mask, float(zoneout_rate), bool(reverse), bool(carry_output),
    )  # fmt: skip
    return output, h_n


def supports(cell: object, inputs: Tensor | None = None, *, trace: bool = False) -> bool:
    """Whether :func:`run_cell` can run ``cell``: a plain :class:`LSTMCell` (no projection) or
    :class:`GRUCell` (``reset_after=True``) -- not subclasses -- with tanh/sigmoid activations,
    float32/float64 on the CPU, no gate tracing. Does not build the extension (see :func:`is_available`)."""
    if trace:
        return False
    if type(cell) is LSTMCell:
        if cell.proj_size:
            return False
    elif type(cell) is GRUCell:
        if not cell.reset_after:
            return False
    else:
        return False
    if cell.activation is not torch.tanh or cell.gate_activation is not torch.sigmoid:
        return False
    weight = cell.weight_ih
    if weight.device.type != "cpu" or weight.dtype not in (torch.float32, torch.float64):
        return False
    return inputs is None or (inputs.device.type == "cpu" and inputs.dtype == weight.dtype)


def run_cell(
    cell: LSTMCell | GRUCell,
    inputs: Tensor,
    state: State,
    *,
    valid: Tensor | None = None,
    carry_output: bool = False,
    reverse: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout: float = 0.0,
    training: bool = False,
) -> SequenceResult:
    """:func:`lstmkit.engine.reference.run_sequence` natively, for a cell :func:`supports` accepts.

    Same arguments (except ``trace``) and result; zoneout masks are drawn exactly as the reference
    draws them, so under the same seed both engines compute the same thing.
    """
    if not supports(cell, inputs):
        raise ValueError(f"the native engine does not support {cell!r} with {inputs.dtype} input on {inputs.device}")
    masks = _zoneout_masks(state, inputs.shape[0], zoneout, training)
    common = {
        "valid": None if valid is None else valid.to(torch.bool).contiguous(),
        "reverse": reverse,
        "carry_output": carry_output,
        "recurrent_mask": None if recurrent_mask is None else recurrent_mask.contiguous(),
        "zoneout_rate": zoneout,
    }
    bias_ih, bias_hh = cell.bias_ih, cell.bias_hh
    if (bias_ih is None) != (bias_hh is None):  # one bias per gate (Keras layers): the other is zero
        bias_ih = torch.zeros_like(bias_hh) if bias_ih is None else bias_ih
        bias_hh = torch.zeros_like(bias_ih) if bias_hh is None else bias_hh
    weights = [None if w is None else w.contiguous() for w in (cell.weight_ih, cell.weight_hh, bias_ih, bias_hh)]
    if isinstance(cell, GRUCell):
        (h0,) = state
        output, h_n = gru_sequence(inputs.contiguous(), *weights, h0.contiguous(), zoneout_mask=masks[0], **common)
        return SequenceResult(output, (h_n,))
    h0, c0 = state
    zoneout_masks = None if masks[0] is None else (masks[0], masks[1])
    output, (h_n, c_n) = lstm_sequence(
        inputs.contiguous(), *weights, h0.contiguous(), c0.contiguous(), zoneout_masks=zoneout_masks, **common
    )
    return SequenceResult(output, (h_n, c_n))


run_lstm_cell = run_cell  # the name the first prototype used
