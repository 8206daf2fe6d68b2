"""Keras layer configs and weights to lstmkit modules and back, without importing Keras.

Keras stores ``kernel (I, G*H)``, ``recurrent_kernel (H, G*H)`` and one bias per gate; torch stores
the transposes and two biases. LSTM gates are ``i, f, c, o`` in both; Keras GRU gates are
``z, r, h`` against torch's ``r, z, n``; a reset-after Keras GRU has a ``(2, 3H)`` bias (input row,
recurrent row), a reset-before one a ``(3H,)`` bias.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..cells import Cell
from ..layers import Recurrent
from .base import REGULARIZERS, KerasRNN
from .bidirectional import Bidirectional
from .initializers import INITIALIZERS, KERAS_ACTIVATIONS
from .layers import GRU, LSTM, SimpleRNN
from .layout import cell_to_keras
from .regularizers import resolve_regularizer

LAYERS: dict[str, type[KerasRNN]] = {"LSTM": LSTM, "GRU": GRU, "SimpleRNN": SimpleRNN}
SUPPORTED = (*LAYERS, "Bidirectional", "RNN")
CELLS = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}  # keras.layers.RNN(cell) -> layer
MODELS = ("Sequential", "Functional", "Model")

# Config keys each layer takes (Keras name == lstmkit.keras name).
_COMMON_KEYS = (
    "activation",
    "use_bias",
    "kernel_initializer",
    "recurrent_initializer",
    "bias_initializer",
    "dropout",
    "recurrent_dropout",
    "return_sequences",
    "return_state",
    "go_backwards",
    "stateful",
    "unroll",
    "zero_output_for_mask",
)
_EXTRA_KEYS = {
    "LSTM": ("recurrent_activation", "unit_forget_bias", "implementation"),
    "GRU": ("recurrent_activation", "reset_after", "implementation"),
    "SimpleRNN": (),
}
_IGNORED_IF_SET = ("kernel_constraint", "recurrent_constraint", "bias_constraint")
# Parameters of Keras initializers that the lstmkit.keras names mean (others fall back, with a warning).
_INITIALIZER_DEFAULTS = {
    "orthogonal": {"gain": 1.0},
    "random_normal": {"mean": 0.0, "stddev": 0.05},
    "random_uniform": {"minval": -0.05, "maxval": 0.05},
    "truncated_normal": {"mean": 0.0, "stddev": 0.05},
}


def from_keras(
    config: Mapping[str, Any],
    weights: Sequence[Any],
    *,
    class_name: str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """The lstmkit.keras layer equivalent to a Keras ``LSTM``, ``GRU``, ``SimpleRNN`` or
    ``Bidirectional`` layer, or ``RNN`` over an ``LSTMCell``, ``GRUCell`` or ``SimpleRNNCell`` (the
    layer of that cell), from its ``get_config()`` and ``get_weights()``.

    ``config`` is a layer's ``get_config()`` or its serialized form ``{"class_name": ..., "config":
    ...}`` (``keras.saving.serialize_keras_object``). A bare config names no class: pass
    ``class_name=``, or it is inferred from the keys (``cell`` -> RNN, ``reset_after`` -> GRU,
    ``unit_forget_bias`` -> LSTM, else SimpleRNN). The module's dtype is the weights' unless
    ``dtype`` is given. L1/L2 regularizers carry over (:attr:`losses <lstmkit.keras.LSTM.losses>`);
    other regularizers and constraints are ignored with a warning; the forward pass is exact. A
    whole model's config (Sequential, functional) is refused: see
    :func:`~lstmkit.keras.load_keras_file` and :func:`~lstmkit.keras.model_from_config` for those.

        >>> import numpy as np
        >>> from lstmkit.keras import from_keras
        >>> weights = [np.zeros((3, 8), "float32"), np.zeros((2, 8), "float32"), np.zeros(8, "float32")]
        >>> lstm = from_keras({"units": 2, "unit_forget_bias": True, "return_sequences": True}, weights)
        >>> type(lstm).__name__, lstm.units, lstm.input_size, lstm.return_sequences
        ('LSTM', 2, 3, True)
    """
    name, layer_config = split_config(config, class_name)
    if dtype is None and len(weights) and np.issubdtype(np.asarray(weights[0]).dtype, np.floating):
        dtype = torch.as_tensor(np.asarray(weights[0])).dtype  # Keras' float32, usually
    module = layer_from_config(name, layer_config, dtype)
    module.set_weights(list(weights))
    return module


def to_keras_weights(module: nn.Module) -> list[np.ndarray]:
    """Weights in Keras' ``get_weights()`` layout, for ``layer.set_weights(...)`` in Keras.

    Takes an lstmkit.keras layer, a single-layer ``lstmkit.LSTM`` (no projection), ``GRU`` or
    ``RNN`` (a bidirectional one gives a Keras ``Bidirectional``'s weights: forward, then backward),
    or one of their cells. Torch's two biases fold into Keras' one where Keras has one (exact: they
    always enter the same sum); a reset-after GRU keeps both as Keras' ``(2, 3H)`` bias.

        >>> import lstmkit
        >>> from lstmkit.keras import to_keras_weights
        >>> [w.shape for w in to_keras_weights(lstmkit.GRU(3, 4))]
        [(3, 12), (4, 12), (2, 12)]
    """
    if isinstance(module, KerasRNN | Bidirectional):
        layers = (module,) if isinstance(module, KerasRNN) else (module.forward_layer, module.backward_layer)
        unbuilt = [type(layer).__name__ for layer in layers if not layer.built]
        if unbuilt:
            raise ValueError(f"{unbuilt[0]} is not built yet: call it once, or pass input_size= when creating it")
        return module.get_weights()
    if isinstance(module, Recurrent):
        if module.num_layers != 1:
            raise ValueError(
                f"a Keras layer holds one recurrent layer, got num_layers={module.num_layers}; "
                "convert module.cell(layer, direction) one by one"
            )
        cells = [module.cell(0, direction) for direction in range(module.num_directions)]
    elif isinstance(module, Cell):
        cells = [module]
    else:
        raise TypeError(
            "to_keras_weights takes an lstmkit.keras layer, a single-layer lstmkit.LSTM/GRU/RNN or a cell, "
            f"got {type(module).__name__}"
        )
    return [w.cpu().numpy() for cell in cells for w in cell_to_keras(cell)]


def split_config(config: Mapping[str, Any], class_name: str | None) -> tuple[str, dict[str, Any]]:
    """(class name, layer config) from a bare or serialized Keras config (see :func:`from_keras` for
    how a bare config's class is inferred); a model's, a cell's or an unsupported layer's is refused."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict (Keras get_config()), got {type(config).__name__}")
    if "class_name" in config and isinstance(config.get("config"), Mapping):
        class_name = class_name or config["class_name"]
        config = config["config"]
    if class_name is None:
        if "layers" in config:
            class_name = "Functional" if "input_layers" in config else "Sequential"
        elif "cell" in config:
            class_name = "RNN"
        elif "layer" in config:
            class_name = "Bidirectional"
        elif "reset_after" in config:
            class_name = "GRU"
        elif "unit_forget_bias" in config:
            class_name = "LSTM"
        else:
            class_name = "SimpleRNN"
    class_name = _short_name(class_name)
    if class_name in MODELS:
        layers = config.get("layers") if isinstance(config.get("layers"), list) else []
        kinds = ", ".join(str(entry.get("class_name")) for entry in layers if isinstance(entry, Mapping))
        raise ValueError(
            f"expected a single recurrent layer's config, got a {class_name} model's with {len(layers)} layers "
            f"({kinds}): pass one layer's get_config() and get_weights(), or read the whole model with "
            "lstmkit.keras.model_from_config or load_keras_file"
        )
    if class_name in CELLS:
        raise ValueError(
            f"a {class_name} config is one time step, not a layer: convert the keras.layers.RNN that holds it "
            f"(or a {CELLS[class_name]} layer)"
        )
    if class_name not in SUPPORTED:
        raise ValueError(f"unsupported Keras layer {class_name!r}: expected one of {SUPPORTED}")
    if class_name == "RNN":
        return _unwrap_cell(config)
    return class_name, dict(config)


def _short_name(class_name: str) -> str:
    return class_name.rsplit(">", 1)[-1].rsplit(".", 1)[-1]  # "keras.layers.LSTM" -> "LSTM"


def _unwrap_cell(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A ``keras.layers.RNN(cell)`` config as the config of the cell's own layer: the cell's arguments
    with the RNN's (``return_sequences``, ``go_backwards``, ...)."""
    cell = config.get("cell")
    if not isinstance(cell, Mapping) or not isinstance(cell.get("class_name"), str):
        raise ValueError("an RNN config needs its serialized cell ({'class_name': ..., 'config': ...}) under 'cell'")
    kind, cell_config = _short_name(cell["class_name"]), cell.get("config") or {}
    if kind == "StackedRNNCells":
        count = len(cell_config.get("cells") or [])
        raise ValueError(
            f"an RNN over a stack of {count} cells (StackedRNNCells): an lstmkit.keras layer holds one cell; "
            "build one RNN layer per cell in Keras to convert them one by one"
        )
    if kind not in CELLS:
        raise ValueError(f"unsupported cell {kind!r} in an RNN layer: expected one of {tuple(CELLS)}")
    return CELLS[kind], {**cell_config, **{key: value for key, value in config.items() if key != "cell"}}


def layer_from_config(name: str, config: dict[str, Any], dtype: torch.dtype | None) -> KerasRNN | Bidirectional:
    """The lstmkit.keras layer, with fresh weights, of a Keras ``LSTM``, ``GRU``, ``SimpleRNN`` or
    ``Bidirectional`` config (class name and config as :func:`split_config` gives them)."""
    if name != "Bidirectional":
        return _recurrent(name, config, dtype)
    if "layer" not in config:
        raise ValueError("a Bidirectional config needs the serialized wrapped layer under 'layer'")
    forward = _recurrent(*split_config(config["layer"], None), dtype)
    backward = config.get("backward_layer")
    backward = None if backward is None else _recurrent(*split_config(backward, None), dtype)
    return Bidirectional(forward, config.get("merge_mode", "concat"), backward)


def _recurrent(name: str, config: dict[str, Any], dtype: torch.dtype | None) -> KerasRNN:
    if name not in LAYERS:
        raise ValueError(f"Bidirectional must wrap one of {tuple(LAYERS)}, got {name!r}")
    if "units" not in config:
        raise ValueError(f"the {name} config has no 'units' (its keys: {', '.join(sorted(config)) or 'none'})")
    arguments: dict[str, Any] = {}
    ignored = [key for key in _IGNORED_IF_SET if config.get(key) is not None]
    for key in REGULARIZERS:
        if config.get(key) is None:
            continue
        try:
            resolve_regularizer(key, config[key])
        except ValueError:  # e.g. Keras' OrthogonalRegularizer or a custom one
            ignored.append(key)
            continue
        arguments[key] = config[key]
    if ignored:
        warnings.warn(f"lstmkit.keras ignores Keras {', '.join(ignored)} of this {name}", stacklevel=4)
    for key in _COMMON_KEYS + _EXTRA_KEYS[name]:
        if key not in config:
            continue
        value = config[key]
        if key.endswith("activation"):
            value = _activation(key, value)
        elif key.endswith("initializer"):
            value = _initializer(key, value)
        arguments[key] = value
    return LAYERS[name](int(config["units"]), dtype=dtype, **arguments)


def _activation(key: str, value: Any) -> Any:
    if value is None or callable(value) or (isinstance(value, str) and value in KERAS_ACTIVATIONS):
        return value
    raise ValueError(
        f"unsupported Keras {key} {value!r}: lstmkit.keras supports the built-in activations "
        f"{sorted(KERAS_ACTIVATIONS)} (or a callable when building layers directly)"
    )


def _initializer(key: str, value: Any) -> Any:
    """A Keras initializer config as an lstmkit.keras initializer; only matters for reset_parameters()."""
    if callable(value) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    parameters: dict[str, Any] = {}
    if isinstance(value, Mapping):
        parameters = dict(value.get("config") or {})
        value = value.get("class_name", "")
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", str(value)).lower()  # GlorotUniform -> glorot_uniform
    parameters = {k: v for k, v in parameters.items() if k != "seed" and v is not None}
    if name == "constant" and "value" in parameters:
        return float(parameters["value"])
    defaults = _INITIALIZER_DEFAULTS.get(name, {})
    if name in INITIALIZERS and all(k in defaults and defaults[k] == v for k, v in parameters.items()):
        return name
    default = {"kernel_initializer": "glorot_uniform", "recurrent_initializer": "orthogonal"}.get(key, "zeros")
    warnings.warn(
        f"Keras {key} {value!r} {parameters or ''} has no lstmkit.keras equivalent; reset_parameters() will use "
        f"{default!r} (the loaded weights are unaffected)",
        stacklevel=5,
    )
    return default
