"""int8 inference on integer products: the layers of :func:`lstmkit.quantize_int8` on AVX512-VNNI or AVX2.

A layer with int8 weights otherwise dequantizes them at every call and computes with bfloat16 (or
float32) products (:class:`~lstmkit.engine.precision.Int8Weight`). Where the CPU has AVX512-VNNI or
AVX2, the inference of a plain LSTM or a GRU (``reset_after=True``, torch's) runs a native int8 loop
instead (:data:`KERNELS`; ``csrc/int8_gemm.h`` on VNNI, ``csrc/int8_avx2.h``, which multiplies the same
values as int16 and gives the same bits, on AVX2): the int8 weights multiply int8 activations, quantized
symmetrically row by row (the input of all steps at once, then ``h_{t-1}`` at each step, one scale per
row), with exact int32 sums scaled back to float32 by the row's and the weight row's scales; the
gates and states are float32. Each weight is packed for the kernel at its first call and the packed
copy kept for the next (:func:`packed`).

Variable lengths (``lengths=``, PackedSequence input) and ``mask=`` run there too, with the semantics of
every engine: a padded step carries the state and outputs zero (or, with a mask and one direction, the
previous output). The dequantizing path keeps everything else: other cells (projections, peepholes, layer
norms, the GRU with ``reset_after=False``, the plain RNN), ``return_gates=``, zoneout, dropout in
training, calls that may need a gradient,
``torch.compile`` and tracing, CPUs without either (or ``LSTMKIT_INT8_KERNEL=0``, read once per
process; ``LSTMKIT_INT8_KERNEL=avx2`` chooses the AVX2 kernel on a CPU with VNNI), and an ``engine=``
other than ``"auto"`` or ``"native"``. :func:`why_not` says which held;
:func:`lstmkit.engine.explain` reports either path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from ..cells import GRUCell, LSTMCell, State
from .kernels import kernel_of
from .native.build import load_extension
from .options import gradient_possible

if TYPE_CHECKING:
    from ..layers import Recurrent

KERNELS = {"lstm": "lstm+int8", "gru": "gru+int8"}  # the native kernels with an int8 loop, as explain() names it


def kernel_isa() -> str | None:
    """The instruction set of the native int8 kernel here, ``"AVX512-VNNI"`` or ``"AVX2"``, or ``None``
    where none runs: the engine does not build, the CPU has neither, or ``LSTMKIT_INT8_KERNEL=0``
    (builds the extension on the first call)."""
    module = load_extension()
    return (module.int8_kernel or None) if module is not None else None


def kernel_name(layer: Recurrent) -> str | None:
    """The int8 loop computing ``layer``'s cells (:data:`KERNELS`), ``None`` when they have none."""
    kinds = {kernel_of(cell) if type(cell) in (LSTMCell, GRUCell) else None for cell in layer._cells}
    kind = kinds.pop() if len(kinds) == 1 else None
    return KERNELS.get(kind or "")


def why_not(layer: Recurrent, x: Tensor, *, traced: bool, initial: State | None) -> str | None:
    """Why this call of ``layer`` (int8 weights, time-major ``x``; lengths and masks run there too)
    cannot run on :data:`KERNELS`,
    ``None`` when it can (the engine asked for is :mod:`~lstmkit.engine.dispatch`'s to weigh)."""
    if kernel_name(layer) is None:
        return "only the plain LSTM and the GRU (reset_after=True) have an int8 kernel"
    options = {
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
    if gradient_possible(x, initial, layer):
        return "a gradient may be asked for (the int8 loop has no backward)"
    if kernel_isa() is None:
        return "the CPU has neither AVX512-VNNI nor AVX2 (or LSTMKIT_INT8_KERNEL=0, or no native engine)"
    return None


def run_layers(
    layer: Recurrent, x: Tensor, initial: State | None, valid: Tensor | None = None, carry_output: bool = False
) -> tuple[Tensor, State]:
    """Every layer and direction of ``layer`` (int8 weights, :func:`why_not` is ``None``) over
    time-major ``x`` on its int8 loop; returns the output ``(T, B, D*H)`` and the final states
    ``(L*D, B, H)`` each (``h, c`` for the LSTM, ``h`` for the GRU). ``valid`` ``(T, B)``: the steps
    that are not padding; ``carry_output``: a padded step repeats the previous output instead of zero."""
    from ..layers import merge_directions

    module = load_extension()
    assert module is not None
    lstm = kernel_name(layer) == KERNELS["lstm"]
    batch, hidden = x.shape[1], layer.hidden_size
    finals: list[list[Tensor]] = [[], []] if lstm else [[]]
    steps = None if valid is None else valid.to(torch.bool).contiguous()
    layer_input = x
    for number in range(layer.num_layers):
        outputs = []
        for direction in range(layer.num_directions):
            index = number * layer.num_directions + direction
            suffix = f"_l{number}" + ("_reverse" if direction else "")
            weights = [packed(module, layer.parametrizations[f"weight_{part}{suffix}"]) for part in ("ih", "hh")]
            b_ih, b_hh = (_bias(getattr(layer, f"bias_{part}{suffix}", None)) for part in ("ih", "hh"))
            if initial is None:
                state = [x.new_zeros(batch, hidden) for _ in finals]
            else:
                state = [s[index].contiguous() for s in initial]
            source, reverse = layer_input.contiguous(), direction == 1
            if lstm:  # b_ih + b_hh enter together
                bias = b_hh if b_ih is None else b_ih if b_hh is None else b_ih + b_hh
                output, *final = module.lstm_int8(source, *weights, bias, *state, reverse, steps, carry_output)
            else:  # the GRU's b_hn sits inside r * (h W_hn^T + b_hn)
                output, *final = module.gru_int8(source, *weights, b_ih, b_hh, *state, reverse, steps, carry_output)
            outputs.append(output)
            for collected, value in zip(finals, final, strict=True):
                collected.append(value)
        last = number == layer.num_layers - 1
        merge = layer.merge_mode if last else "concat"
        layer_input = outputs[0] if len(outputs) == 1 else merge_directions(*outputs, merge)
    return layer_input, tuple(torch.stack(collected) for collected in finals)


# int8 weight -> ((its version and storage, its scales'), native Int8Packed), while the weight lives
_PACKED: WeakIdKeyDictionary = WeakIdKeyDictionary()


def packed(module: Any, weight: Any) -> Any:
    """The native ``Int8Packed`` of a parametrized int8 weight (``original0`` int8, ``original1`` its
    scales): packed at its first call and kept for the next ones, while neither tensor is changed in
    place or swapped (their version counters and storage) and the weight lives. At one step of one
    stream, packing took most of a call; the packed copy costs the int8 weight's memory again."""
    values, scales = weight.original0, weight.original1
    key = (values._version, values.data_ptr(), scales._version, scales.data_ptr())
    found = _PACKED.get(values)
    if found is None or found[0] != key:
        found = (key, module.Int8Packed(values, scales))
        _PACKED[values] = found
    return found[1]


def _bias(bias: Tensor | None) -> Tensor | None:
    """A bias as the native loop takes it: float32, contiguous, outside autograd."""
    return None if bias is None else bias.detach().float().contiguous()
