"""Native (C++) time loops for the built-in cells, forward and backward, compiled on first use.

Entry points: :func:`lstm_sequence` (stateless tensors-in form), :func:`run_lstm_cell` (the
:func:`lstmkit.engine.reference.run_sequence` signature for an :class:`lstmkit.LSTMCell`),
:func:`supports` and :func:`is_available` for dispatch. See ``build.py`` for how and where the
extension is compiled and ``csrc/`` for the kernels.
"""

from .functions import (
    LSTMSequenceFunction,
    NativeEngineUnavailable,
    is_available,
    lstm_sequence,
    run_lstm_cell,
    supports,
)

__all__ = [
    "LSTMSequenceFunction",
    "NativeEngineUnavailable",
    "is_available",
    "lstm_sequence",
    "run_lstm_cell",
    "supports",
]
