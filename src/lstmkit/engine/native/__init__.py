"""The ``"native"`` engine: C++ time loops for the built-in cells, forward and backward, compiled on
first use.

Entry points: :func:`cell_sequence` (stateless, tensors in, one kernel per cell: :data:`KERNELS`);
:func:`run_cell` (the :func:`lstmkit.engine.reference.run_sequence` signature for :class:`lstmkit.RNNCell`,
:class:`lstmkit.LSTMCell`, :class:`lstmkit.PeepholeLSTMCell`, :class:`lstmkit.LayerNormLSTMCell`
and :class:`lstmkit.GRUCell`); :func:`supports` and :func:`is_available` for dispatch. See
``build.py`` for how and where the extension is compiled and ``csrc/`` for the kernels, and
``generated/`` for user-defined cells translated to C++ (:func:`run_generated`), and ``ops.py``
for the PyTorch operators (``torch.ops.lstmkit.sequence_forward/_backward``) that compile, export,
vmap and dispatch modes see (plain eager calls skip their dispatch).
"""

from .functions import cell_sequence, is_available, kernel_of, run_cell, run_generated, supports
from .ops import KERNELS, NativeEngineUnavailable

__all__ = [
    "KERNELS",
    "NativeEngineUnavailable",
    "cell_sequence",
    "is_available",
    "kernel_of",
    "run_cell",
    "run_generated",
    "supports",
]
