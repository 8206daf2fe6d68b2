"""Keras semantics, weights and model files for PyTorch; Keras itself is never needed at run time.

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

Whole Keras 3 models: :func:`load_keras_file` reads a ``.keras`` file into a :class:`KerasModel`
(an ``nn.Module`` whose forward is the Keras model's), :func:`model_from_config` builds one from a
model config, :class:`Sequential` builds one in lstmkit, with the layers torch lacks
(:class:`Embedding` with ``mask_zero``, :class:`Dense`, :class:`Activation`, :class:`TimeDistributed`,
:class:`Merge`); :func:`load_keras_weights` and :func:`save_keras_weights` read and write Keras
``.weights.h5`` files, :func:`save_keras_file` a ``.keras`` file. Errors are :class:`KerasFileError`.

The modules: :mod:`~lstmkit.keras.layers` (LSTM, GRU, SimpleRNN and their arguments),
:mod:`~lstmkit.keras.base` (what they share), :mod:`~lstmkit.keras.bidirectional`,
:mod:`~lstmkit.keras.dropout` (Keras' per-gate dropout), :mod:`~lstmkit.keras.initializers`,
:mod:`~lstmkit.keras.regularizers`, :mod:`~lstmkit.keras.layout` (weights between torch's layout and
Keras'), :mod:`~lstmkit.keras.convert` (layer configs and weights), :mod:`~lstmkit.keras.core` (the
other layers), :mod:`~lstmkit.keras.model` (:class:`KerasModel`), :mod:`~lstmkit.keras.model_config`
(model configs) and :mod:`~lstmkit.keras.files` (``.keras`` and ``.weights.h5`` files).
"""

from .bidirectional import Bidirectional
from .convert import from_keras, to_keras_weights
from .core import Activation, Dense, Embedding, KerasFileError, Merge, TimeDistributed, keras_class_name
from .files import load_keras_file, load_keras_weights, save_keras_file, save_keras_weights
from .initializers import INITIALIZERS, KERAS_ACTIVATIONS, initialize
from .layers import GRU, LSTM, SimpleRNN
from .model import KerasModel, Sequential
from .model_config import model_from_config

__all__ = [
    "GRU",
    "INITIALIZERS",
    "KERAS_ACTIVATIONS",
    "LSTM",
    "Activation",
    "Bidirectional",
    "Dense",
    "Embedding",
    "KerasFileError",
    "KerasModel",
    "Merge",
    "Sequential",
    "SimpleRNN",
    "TimeDistributed",
    "from_keras",
    "initialize",
    "keras_class_name",
    "load_keras_file",
    "load_keras_weights",
    "model_from_config",
    "save_keras_file",
    "save_keras_weights",
    "to_keras_weights",
]
