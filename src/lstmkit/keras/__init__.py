"""Keras semantics and weights for PyTorch; Keras itself is never needed at run time.

:class:`LSTM`, :class:`GRU`, :class:`SimpleRNN` and :class:`Bidirectional` are batch-first
``nn.Module`` layers with Keras' arguments, initialisation, masking and outputs;
:func:`from_keras` builds one from a Keras layer's ``get_config()`` and ``get_weights()``, and
:func:`to_keras_weights` gives the weights back in Keras' layout.

    >>> import torch
    >>> from lstmkit.keras import LSTM, from_keras, to_keras_weights
    >>> lstm = LSTM(4, return_sequences=True, input_size=3)
    >>> copy = from_keras(lstm.get_config(), to_keras_weights(lstm), class_name="LSTM")
    >>> x = torch.randn(2, 5, 3)
    >>> torch.equal(lstm(x), copy(x))
    True
"""

from .bidirectional import Bidirectional
from .convert import from_keras, to_keras_weights
from .initializers import INITIALIZERS, KERAS_ACTIVATIONS, initialize
from .layers import GRU, LSTM, SimpleRNN

__all__ = [
    "GRU",
    "INITIALIZERS",
    "KERAS_ACTIVATIONS",
    "LSTM",
    "Bidirectional",
    "SimpleRNN",
    "from_keras",
    "initialize",
    "to_keras_weights",
]
