"""The precision of the engines' matrix products during a layer call, and weight-only int8.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` a layer computes with its float32 weights
(the master copies) and runs the call in :func:`reduced_precision`: on a CPU with bf16 hardware the
native kernels then run their GEMMs on bfloat16 operands with float32 results (:func:`bf16_gemms`;
oneDNN, AMX or AVX512-BF16), while the gates, the cell state and the weight gradients stay float32,
and torch's own kernels, where the dispatcher picks them, run under autocast as in ``torch.nn``. On
a CPU without it the products stay float32: there a bfloat16 product is emulated, and a training
step under autocast took 3-17x its float32 time (AVX2; torch.nn.GRU's 7-15x). The other engines
compute in float32. The settings are per thread.

:class:`Int8Weight` stores a weight matrix as int8 with one scale per row (a parametrization, see
:func:`lstmkit.quantize_int8`); a layer holding such weights computes with them dequantized, with
bf16 GEMMs where the CPU has bf16 hardware, except the inference of a plain LSTM or GRU on a CPU with
AVX512-VNNI or AVX2, which multiplies the int8 values themselves (:mod:`lstmkit.engine.int8_loop`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ..precision import detect_cpu

_state = threading.local()


@contextlib.contextmanager
def bf16_gemms(enabled: bool = True, *, widen: bool | None = None) -> Iterator[None]:
    """Within the block, the engines' GEMMs take bfloat16 operands where they can (``enabled``), and
    a layer's bfloat16 weights compute as float32 copies (``widen``, by default ``enabled``)."""
    previous = bf16_gemms_active(), bf16_weights_widened()
    _state.bf16, _state.widen = enabled, enabled if widen is None else widen
    try:
        yield
    finally:
        _state.bf16, _state.widen = previous


def reduced_precision(enabled: bool) -> contextlib.AbstractContextManager:
    """A layer call in reduced precision (``enabled``): bfloat16 weights compute as float32 copies,
    and the GEMMs take bfloat16 operands where the CPU has bf16 hardware (:func:`bf16_hardware`)."""
    return bf16_gemms(enabled and bf16_hardware(), widen=enabled)


def bf16_gemms_active() -> bool:
    """Whether the current call's GEMMs take bfloat16 operands (:func:`bf16_gemms`)."""
    return getattr(_state, "bf16", False)


def bf16_weights_widened() -> bool:
    """Whether the current call computes with float32 copies of bfloat16 weights (:func:`bf16_gemms`)."""
    return getattr(_state, "widen", False)


def cast_floats(value: Any, dtype: torch.dtype) -> Any:
    """``value`` (a tensor, PackedSequence, or tuple/list/dict of them, or anything else) with its
    floating-point tensors in ``dtype``."""
    if isinstance(value, PackedSequence):
        return value._replace(data=cast_floats(value.data, dtype))
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, tuple | list):
        return type(value)(cast_floats(v, dtype) for v in value)
    if isinstance(value, dict):
        return {key: cast_floats(v, dtype) for key, v in value.items()}
    return value


# Read once, at import: under torch.compile reading /proc/cpuinfo would break the graph.
_BF16_HARDWARE = detect_cpu().bf16


def bf16_hardware() -> bool:
    """Whether this CPU computes in bfloat16 in hardware (AVX512-BF16 or AMX-BF16). Without it a
    bfloat16 product is emulated, several times slower than the float32 one, so the layers keep
    their products in float32 there (:meth:`lstmkit.Recurrent._precision`)."""
    return _BF16_HARDWARE


class Int8Weight(nn.Module):
    """A parametrization storing a weight matrix ``(rows, columns)`` as int8 and one float32 scale per
    row (symmetric: the row's largest magnitude becomes 127): ``weight = int8 * scale``.

    >>> import torch
    >>> from torch.nn.utils import parametrize
    >>> linear = torch.nn.Linear(4, 3).requires_grad_(False)
    >>> _ = parametrize.register_parametrization(linear, "weight", Int8Weight(), unsafe=True)
    >>> linear.parametrizations.weight.original0.dtype
    torch.int8
    """

    def forward(self, values: Tensor, scale: Tensor) -> Tensor:
        return values.to(scale.dtype) * scale

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        weight = weight.detach().float()
        scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny) / 127
        return torch.round(weight / scale).clamp_(-127, 127).to(torch.int8), scale
