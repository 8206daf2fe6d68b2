"""The precision of the engines' matrix products during a layer call, and weight-only int8.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` a layer computes with its float32 weights
(the master copies) and sets :func:`bf16_gemms` for the call: the native kernels then run their
GEMMs on bfloat16 operands with float32 results (oneDNN: AMX or AVX512-BF16 where the CPU has them),
while the gates, the cell state and the weight gradients stay float32; torch's own kernels, where
the dispatcher picks them, run under autocast as in ``torch.nn``. The other engines compute in
float32. The setting is per thread.

:class:`Int8Weight` stores a weight matrix as int8 with one scale per row (a parametrization, see
:func:`lstmkit.quantize_int8`); a layer holding such weights computes with them dequantized, with
bf16 GEMMs where the CPU has bf16 hardware, except the inference of a plain LSTM or GRU on a CPU with
AVX512-VNNI, which multiplies the int8 values themselves (:mod:`lstmkit.engine.int8_vnni`).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ..precision import detect_cpu

_state = threading.local()


@contextlib.contextmanager
def bf16_gemms(enabled: bool = True) -> Iterator[None]:
    """Within the block, the engines' GEMMs take bfloat16 operands where they can (``enabled``)."""
    previous = bf16_gemms_active()
    _state.bf16 = enabled
    try:
        yield
    finally:
        _state.bf16 = previous


def bf16_gemms_active() -> bool:
    """Whether the current call's GEMMs take bfloat16 operands (:func:`bf16_gemms`)."""
    return getattr(_state, "bf16", False)


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


@functools.cache
def bf16_hardware() -> bool:
    """Whether this CPU computes in bfloat16 in hardware (AVX512-BF16 or AMX-BF16; read once)."""
    return detect_cpu().bf16


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
