"""The precision of the engines' matrix products during a layer call.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` a layer computes with its float32 weights
(the master copies) and sets :func:`bf16_gemms` for the call: the native kernels then run their
GEMMs on bfloat16 operands with float32 results (oneDNN: AMX or AVX512-BF16 where the CPU has them),
while the gates, the cell state and the weight gradients stay float32; torch's own kernels, where
the dispatcher picks them, run under autocast as in ``torch.nn``. The other engines compute in
float32. The setting is per thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

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
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, tuple | list):
        return type(value)(cast_floats(v, dtype) for v in value)
    if isinstance(value, dict):
        return {key: cast_floats(v, dtype) for key, v in value.items()}
    return value
