"""The Keras-file API's former import path, kept because the README still imports from it: the
functions and classes live in :mod:`lstmkit.keras` (``from lstmkit.keras import load_keras_file``).
This module goes once the README imports from :mod:`lstmkit.keras`."""

from ..keras import (
    Activation,
    Dense,
    Embedding,
    KerasFileError,
    KerasModel,
    Merge,
    Sequential,
    TimeDistributed,
    keras_class_name,
    load_keras_file,
    load_keras_weights,
    model_from_config,
    save_keras_file,
    save_keras_weights,
)

__all__ = [
    "Activation",
    "Dense",
    "Embedding",
    "KerasFileError",
    "KerasModel",
    "Merge",
    "Sequential",
    "TimeDistributed",
    "keras_class_name",
    "load_keras_file",
    "load_keras_weights",
    "model_from_config",
    "save_keras_file",
    "save_keras_weights",
]
