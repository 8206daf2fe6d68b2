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
