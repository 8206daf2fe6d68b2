"""int8 inference on integer products: the layers of :func:`lstmkit.quantize_int8` on AVX512-VNNI.

A layer with int8 weights otherwise dequantizes them at every call and computes with bfloat16 (or
float32) products (:class:`~lstmkit.engine.precision.Int8Weight`). Where the CPU has AVX512-VNNI, a
plain LSTM's inference runs the native ``lstm_int8`` loop instead (:data:`KERNEL`, ``csrc/int8_gemm.h``):
the int8 weights multiply int8 activations, quantized symmetrically row by row (the input of all steps
at once, then ``h_{t-1}`` at each step, one scale per row), with exact int32 sums scaled back to
float32 by the row's and the weight row's scales; the gates, ``c`` and ``h`` are float32.

The dequantizing path keeps everything else: cells other than the plain LSTM, ``lengths=``, ``mask=``,
``return_gates=``, PackedSequence input, zoneout, dropout in training, calls that may need a gradient,
``torch.compile`` and tracing, and CPUs without AVX512-VNNI or ``LSTMKIT_INT8_KERNEL=0`` (read once per
process), and an ``engine=`` other than ``"auto"`` or ``"native"``. :func:`why_not` says which held;
:func:`lstmkit.engine.explain` reports either path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..cells import LSTMCell, State
from .kernels import kernel_of
from .native.build import load_extension

if TYPE_CHECKING:
    from ..layers import Recurrent

KERNEL = "lstm+int8"  # how explain() names the int8 loop


def vnni_kernel() -> bool:
    """Whether the native int8 kernel runs here: the engine builds, the CPU has AVX512-VNNI and
    ``LSTMKIT_INT8_KERNEL`` is not ``0`` (builds the extension on the first call)."""
    module = load_extension()
    return module is not None and bool(module.avx512_vnni)


def why_not(
    layer: Recurrent, x: Tensor, *, masked: bool, traced: bool, lengths: Tensor | None, initial: State | None
) -> str | None:
    """Why this call of ``layer`` (int8 weights, time-major ``x``) cannot run on :data:`KERNEL`,
    ``None`` when it can (the engine asked for is :mod:`~lstmkit.engine.dispatch`'s to weigh)."""
    if any(type(cell) is not LSTMCell or kernel_of(cell) != "lstm" for cell in layer._cells):
        return "only the plain LSTM has an int8 kernel"
    options = {
        "lengths=": lengths is not None,
        "mask=": masked,
        "return_gates=": traced,
        "zoneout": layer.zoneout > 0,
        "dropout in training": layer.training and (layer.dropout > 0 or layer.recurrent_dropout > 0),
    }
    found = [name for name, present in options.items() if present]
    if found:
        return f"{', '.join(found)} run on the dequantized weights"
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.shape[1] == 0:
        return "the int8 kernel takes a non-empty float32 batch on the CPU"
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return "under torch.compile or tracing (the int8 loop is no operator)"
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, *layer.parameters(), *(initial or ()))):
        return "a gradient may be asked for (the int8 loop has no backward)"
    if not vnni_kernel():
        return "the CPU has no AVX512-VNNI (or LSTMKIT_INT8_KERNEL=0, or the native engine is unavailable)"
    return None


def run_layers(layer: Recurrent, x: Tensor, initial: State | None) -> tuple[Tensor, State]:
    """Every layer and direction of ``layer`` (int8 weights, :func:`why_not` is ``None``) over
    time-major ``x`` on :data:`KERNEL`; returns the output ``(T, B, D*H)`` and the final states
    ``(L*D, B, H)`` each."""
    from ..layers import merge_directions

    module = load_extension()
    assert module is not None
    batch, hidden = x.shape[1], layer.hidden_size
    finals: tuple[list[Tensor], list[Tensor]] = ([], [])
    layer_input = x
    for number in range(layer.num_layers):
        outputs = []
        for direction in range(layer.num_directions):
            index = number * layer.num_directions + direction
            suffix = f"_l{number}" + ("_reverse" if direction else "")
            w_ih, w_hh = (layer.parametrizations[f"weight_{part}{suffix}"] for part in ("ih", "hh"))
            biases = [getattr(layer, f"bias_{part}{suffix}", None) for part in ("ih", "hh")]
            present = [b for b in biases if b is not None]
            bias = (present[0] + present[1] if len(present) == 2 else present[0]) if present else None
            if initial is None:
                h0 = c0 = x.new_zeros(batch, hidden)
            else:
                h0, c0 = (s[index].contiguous() for s in initial)
            output, h_n, c_n = module.lstm_int8(
                layer_input.contiguous(), w_ih.original0, w_ih.original1, w_hh.original0, w_hh.original1,
                None if bias is None else bias.detach().float().contiguous(), h0, c0, direction == 1,
            )  # fmt: skip
            outputs.append(output)
            finals[0].append(h_n)
            finals[1].append(c_n)
        last = number == layer.num_layers - 1
        merge = layer.merge_mode if last else "concat"
        layer_input = outputs[0] if len(outputs) == 1 else merge_directions(*outputs, merge)
    return layer_input, (torch.stack(finals[0]), torch.stack(finals[1]))
