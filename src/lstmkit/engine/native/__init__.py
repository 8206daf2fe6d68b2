"""Native (C++) time loops for the built-in cells, forward and backward, compiled on first use.

Entry points: :func:`lstm_sequence`, :func:`gru_sequence` (stateless tensors-in forms),
:func:`run_cell` (the :func:`lstmkit.engine.reference.run_sequence` signature for an
:class:`lstmkit.LSTMCell` or :class:`lstmkit.GRUCell`),
:func:`supports` and :func:`is_available` for dispatch. See ``build.py`` for how and where the
extension is compiled and ``csrc/`` for the kernels.
"""

from .functions import (
    GRUSequenceFunction,
    LSTMSequenceFunction,
    NativeEngineUnavailable,
    gru_sequence,
    is_available,
    lstm_sequence,
    run_cell,
    run_lstm_cell,
    supports,
)

__all__ = [
    "GRUSequenceFunction",
    "LSTMSequenceFunction",
    "NativeEngineUnavailable",
    "gru_sequence",
    "is_available",
    "lstm_sequence",
    "run_cell",
    "run_lstm_cell",
    "supports",
]
