"""Which kernel computes which cell: the one table the engines, the dispatcher and the ONNX export read.

* :func:`kernel_of`: the native kernel (a key of :data:`lstmkit.engine.native.KERNELS`) computing a
  built-in cell exactly -- the cell classes themselves, not subclasses, with their standard
  activations.
* :func:`torch_kernel_of`: the ``torch._VF`` kernel computing the same cell (torch's fused
  LSTM/GRU/RNN, which ONNX's recurrent operators also compute), or ``None``.
"""

from __future__ import annotations

import torch

from ..cells import GRUCell, LayerNormLSTMCell, LSTMCell, PeepholeLSTMCell, RNNCell

# native kernel -> the torch._VF kernel that computes the same thing (with weight_hr for a projection)
TORCH_KERNELS = {
    "rnn_tanh": "rnn_tanh",
    "rnn_relu": "rnn_relu",
    "lstm": "lstm",
    "lstm_projection": "lstm",
    "gru": "gru",
}


def kernel_of(cell: object) -> str | None:
    """The native kernel computing ``cell``, or ``None`` (user cells, subclasses, other activations)."""
    kind = type(cell)
    if kind is RNNCell:
        return {torch.tanh: "rnn_tanh", torch.relu: "rnn_relu"}.get(cell.activation)
    if kind in (LSTMCell, GRUCell):
        if cell.activation is not torch.tanh or cell.gate_activation is not torch.sigmoid:
            return None
        if kind is GRUCell:
            return "gru" if cell.reset_after else "gru_reset_before"
        return "lstm_projection" if cell.proj_size else "lstm"
    if kind is PeepholeLSTMCell:
        return "peephole_lstm"
    if kind is LayerNormLSTMCell:
        return "layernorm_lstm"
    return None


def torch_kernel_of(cell: object) -> str | None:
    """The ``torch._VF`` kernel computing ``cell`` exactly, or ``None``."""
    return TORCH_KERNELS.get(kernel_of(cell) or "")
