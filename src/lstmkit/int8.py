"""Weight-only int8 inference for lstmkit's recurrent layers: :func:`quantize_int8`.

Each weight matrix becomes int8 with one float32 scale per output row (symmetric: the row's largest
magnitude becomes 127), a quarter of its float32 memory (:class:`~lstmkit.engine.precision.Int8Weight`,
a ``torch.nn.utils.parametrize`` parametrization, so ``state_dict`` holds the int8 values and the
scales). Inference of a plain LSTM or a GRU (``reset_after=True``; no gradient, no ``return_gates=``)
on a CPU with AVX512-VNNI or AVX2 multiplies integers: the activations are quantized to int8 row by
row, each product sums exactly in int32 and is scaled back to float32, with the same bits on either
kind of CPU (:mod:`lstmkit.engine.int8_loop`). Every other call dequantizes the weights once and computes as under
bfloat16 autocast: the activations stay in floating point, the matrix products take bfloat16 operands
where the CPU has bf16 hardware (float32 elsewhere). Either way the gates and states are float32, and
so are the results; :func:`lstmkit.engine.explain` says which path a call takes.

Next to :func:`lstmkit.quantize_dynamic`, which hands plain LSTM/GRU layers to torch's dynamically
quantized modules (int8 activations at every step, per-tensor weight scales), this keeps lstmkit's
layers: every cell kind converts, and ``lengths=``, ``mask=`` and ``return_gates=`` still work.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils import parametrize

from .engine.precision import Int8Weight
from .layers import Recurrent


def quantize_int8(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` (a copy unless ``inplace``) with the weight matrices of every lstmkit recurrent layer
    stored in int8, one scale per output row, for inference (the int8 values do not train).

    Refused with a ``ValueError``: a model without lstmkit recurrent layers, and weights that are
    parametrized already (weight norm, spectral norm, ...: remove that parametrization first).

    >>> import torch, lstmkit
    >>> lstm = lstmkit.LSTM(8, 32, num_layers=2).eval()
    >>> small = lstmkit.quantize_int8(lstm)
    >>> small.parametrizations.weight_hh_l0.original0.dtype
    torch.int8
    >>> x = torch.randn(5, 3, 8)
    >>> with torch.no_grad():
    ...     print(float((small(x)[0] - lstm(x)[0]).abs().max()) < 2e-2)
    True
    """
    layers = [(path, module) for path, module in model.named_modules() if isinstance(module, Recurrent)]
    if not layers:
        raise ValueError(f"quantize_int8: {type(model).__name__} holds no lstmkit recurrent layer")
    for path, layer in layers:
        for name in layer._flat_weights_names:
            if parametrize.is_parametrized(layer, name):
                where = f"{path}.{name}" if path else name
                raise ValueError(f"quantize_int8: {where} is parametrized already; remove that parametrization first")
    if not inplace:
        model = copy.deepcopy(model)
    for _, layer in (pair for pair in model.named_modules() if isinstance(pair[1], Recurrent)):
        for name in layer._flat_weights_names:
            if getattr(layer, name).dim() == 2:
                layer._parameters[name].requires_grad_(False)  # int8 values do not train
                parametrize.register_parametrization(layer, name, Int8Weight(), unsafe=True)
    return model
