"""Dynamic int8 quantization of lstmkit models, on PyTorch's dynamically quantized modules.

:func:`quantize_dynamic` turns every plain :class:`lstmkit.LSTM` and :class:`lstmkit.GRU` of a model
into ``torch.ao.nn.quantized.dynamic.LSTM``/``GRU`` (weights int8 per torch's
``default_dynamic_qconfig``: symmetric per-tensor, activations quantized on the fly at every call)
and quantizes ``nn.Linear`` and the other ``torch.nn`` types exactly as
``torch.ao.quantization.quantize_dynamic`` does. Every other lstmkit recurrent module is refused with
a ``ValueError`` naming it: nothing is left in float without a word.

torch's own ``torch.ao.quantization.quantize_dynamic`` knows ``torch.nn`` types only. lstmkit plugs
into it in two ways, neither of which patches torch:

* its public ``mapping=`` argument: :func:`dynamic_quant_mappings` is torch's default mapping plus
  the lstmkit layers, whose target :class:`TorchDynamicQuantized` has the ``from_float`` that torch's
  ``convert`` calls, so ``quantize_dynamic(model, {torch.nn.Linear, lstmkit.LSTM},
  mapping=dynamic_quant_mappings())`` swaps them (or refuses an unsupported one by name);
* the ``qconfig`` attribute that torch's ``propagate_qconfig_`` sets on every module and ``convert``
  removes at its end (``remove_qconfig=True``, the default): on lstmkit layers, cells and Keras
  layers its removal issues a :class:`QuantizationSkippedWarning` when the module is still there,
  that is, when torch left it in float. So the default call
  ``torch.ao.quantization.quantize_dynamic(model)`` warns and names :func:`quantize_dynamic`.

lstmkit does not add itself to torch's global default mapping
(``torch.ao.quantization.quantization_mappings.DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS``, which
``quantize_dynamic`` uses when no ``mapping`` is given): every key of that dict also joins the list of
types that static ``prepare()`` gives an output observer, and an observer fails on a recurrent
layer's tuple output (as it does for ``torch.nn.GRU``), so importing lstmkit would break static
quantization of models that hold lstmkit layers.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd
from torch.ao.quantization import quantization_mappings
from torch.nn.utils.parametrize import type_before_parametrizations

from .cells import Cell, GRUCell, LSTMCell, RNNCell
from .keras.base import KerasRNN
from .layers import GRU, LSTM, RNN, Recurrent

SUPPORTED_DTYPES = (torch.qint8, torch.float16)

SUPPORTED = (
    "lstmkit.LSTM and lstmkit.GRU (or lstmkit.Recurrent over LSTMCell or GRUCell) with tanh/sigmoid "
    "activations, no proj_size, GRU reset_after=True, no zoneout, merge_mode='concat' when bidirectional, "
    "float32 parameters on the CPU; any num_layers, bidirectional, batch_first, dropout, bias and "
    "recurrent_dropout (training only, so it changes nothing in evaluation)"
)

# torch's warnings about its own deprecated quantization stack, which lstmkit.quantize_dynamic uses
# on the caller's behalf (see its docstring)
_TORCH_DEPRECATIONS = (
    (r"torch\.ao\.quantization is deprecated", DeprecationWarning),
    (r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor", UserWarning),
)


class QuantizationSkippedWarning(UserWarning):
    """torch's quantization ``convert`` left an lstmkit layer, cell or Keras layer in float."""


def quantize_dynamic(model: nn.Module, dtype: torch.dtype = torch.qint8, inplace: bool = False) -> nn.Module:
    """Dynamic (weight-only int8) quantization of a model that holds lstmkit layers.

    Every plain :class:`lstmkit.LSTM` and :class:`lstmkit.GRU` becomes PyTorch's
    ``torch.ao.nn.quantized.dynamic.LSTM``/``GRU``, built from a ``torch.nn.LSTM``/``GRU`` with the
    same weights: its weights are int8 (torch's ``default_dynamic_qconfig``: symmetric, per tensor)
    and its activations are quantized on the fly. ``nn.Linear``, ``nn.LSTM``, ``nn.GRU``,
    ``nn.LSTMCell``, ``nn.GRUCell``, ``nn.RNNCell`` (and with ``dtype=torch.float16`` the same types
    in float16) are quantized as ``torch.ao.quantization.quantize_dynamic(model, dtype=dtype)``
    does; other torch modules, e.g. ``nn.Embedding``, stay float as they do there.

    What is supported (torch's quantized LSTM/GRU compute exactly these): ``lstmkit.LSTM``,
    ``lstmkit.GRU`` and :class:`lstmkit.Recurrent` over ``LSTMCell``/``GRUCell``, with tanh and
    sigmoid, ``GRU`` with ``reset_after=True``, any ``num_layers``, ``bidirectional`` (with
    ``merge_mode="concat"``), ``batch_first``, ``dropout``, ``bias=False`` (given zero biases, as
    torch's quantized RNNs require biases) and ``recurrent_dropout`` (training only: it changes
    nothing in evaluation), float32 on the CPU. Parametrized weights (``torch.nn.utils.parametrize``,
    spectral or weight norm) are quantized as the layer computes with them.

    Refused with a ``ValueError`` that names each offending module by its path, says what it has and
    what is supported: ``lstmkit.RNN`` (torch has no dynamically quantized RNN), ``proj_size``
    (torch's quantized LSTM has no projection; torch itself builds one without it, which fails at
    run time), peephole, layer-norm and user cells, other activations, ``GRU(reset_after=False)``,
    ``zoneout`` (it changes evaluation outputs too), other merge modes, subclasses of the layers,
    float64 or non-CPU parameters, standalone lstmkit cells and ``lstmkit.keras`` layers. Nothing
    lstmkit is ever left in float silently.

    The trade-off: the quantized modules are torch's, not lstmkit's. They take what
    ``torch.nn.LSTM``/``GRU`` take (a batched tensor or a ``PackedSequence``, and ``hx``); lstmkit's
    ``lengths=``, ``mask=``, ``return_gates=``, unbatched 2-D input, other merge modes and the
    lstmkit engines are not available on them, and code that passes those keywords fails with
    torch's ``TypeError`` (pack the sequences instead of ``lengths=``). lstmkit's own int8 kernels,
    which keep the extras, are the next step.

    Args:
        model: any module; a bare lstmkit layer is quantized too (torch's ``quantize_dynamic``
            only swaps submodules, never the model it is given).
        dtype: ``torch.qint8`` (int8 weights) or ``torch.float16`` (float16 weights).
        inplace: quantize ``model`` itself instead of a deep copy. A bare layer is always replaced,
            so use the returned module.

    Returns:
        The quantized model, in evaluation mode (as torch's ``quantize_dynamic`` leaves it).

    torch 2.13 marks its eager quantization API (``torch.ao.quantization``) and its quantized tensors
    deprecated, pointing to torchao. This function silences those two deprecation warnings, which are
    about torch's internals rather than the caller's code; the modules it returns are still torch's
    deprecated quantized ones, one more reason for lstmkit's own int8 kernels.

        >>> import torch, lstmkit
        >>> lstm = lstmkit.LSTM(4, 8, num_layers=2, bidirectional=True, batch_first=True)
        >>> quantized = lstmkit.quantize_dynamic(lstm)
        >>> type(quantized) is torch.ao.nn.quantized.dynamic.LSTM
        True
        >>> quantized.get_weight()["weight_hh_l1_reverse"].dtype
        torch.qint8
        >>> x = torch.randn(3, 5, 4)
        >>> bool((quantized(x)[0] - lstm(x)[0]).abs().max() < 0.05)
        True
    """
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"dtype must be torch.qint8 or torch.float16 (what torch's dynamically quantized LSTM and GRU "
            f"support), got {dtype!r}"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    problems = quantization_problems(model)
    if problems:
        raise ValueError(
            f"lstmkit.quantize_dynamic cannot quantize {len(problems)} lstmkit module(s), and leaves none "
            "in float silently:\n  " + "\n  ".join(problems) + f"\nSupported: {SUPPORTED}."
        )
    layers = {id(module): module for module in model.modules() if isinstance(module, Recurrent)}
    twins = {key: _torch_twin(layer, copy_hooks=True) for key, layer in layers.items()}
    if inplace:
        for parent in list(model.modules()):
            for name, child in list(parent._modules.items()):
                if id(child) in twins:
                    parent._modules[name] = twins[id(child)]
        model = twins.get(id(model), model)
    else:
        # the twins take the layers' places in the copy (a layer shared at two paths stays shared), and the
        # layers are not copied: a parametrized layer's bound weights are not leaves, which deepcopy refuses
        model = copy.deepcopy(model, memo=dict(twins))
    holder = nn.Sequential(model)  # torch never swaps the module it is given, only its children
    with warnings.catch_warnings():
        for message, category in _TORCH_DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message, category=category)
        torch.ao.quantization.quantize_dynamic(holder, dtype=dtype, inplace=True)
    return holder[0]


def quantization_problems(model: nn.Module) -> list[str]:
    """Why :func:`quantize_dynamic` would refuse ``model``: one line per offending lstmkit module,
    with its path (empty when every lstmkit module in it can be quantized).

    >>> import lstmkit
    >>> quantization_problems(lstmkit.GRU(3, 4, num_layers=2))
    []
    >>> quantization_problems(lstmkit.LSTM(3, 4, zoneout=0.1))
    ["LSTM at '<root>': zoneout=0.1 (torch's quantized LSTM/GRU have no zoneout, which changes evaluation outputs too)"]
    """
    problems = []
    handled: list[str] = []  # lstmkit modules: nothing under one is looked at again (a Keras layer's cell)
    for path, module in model.named_modules(remove_duplicate=False):
        if any(prefix == "" or path == prefix or path.startswith(prefix + ".") for prefix in handled):
            continue
        reasons = _refusals(module)
        if reasons:
            where = f"{type_before_parametrizations(module).__name__} at {path or '<root>'!r}"
            problems.append(f"{where}: {'; '.join(reasons)}")
        if isinstance(module, Recurrent | Cell | KerasRNN):
            handled.append(path)
    return problems


def _refusals(module: nn.Module) -> list[str]:
    """What stops ``module`` from becoming torch's dynamically quantized LSTM/GRU (empty for a
    supported layer and for modules that are not lstmkit's)."""
    if isinstance(module, KerasRNN):
        return [
            "an lstmkit.keras layer (Keras semantics: masks, return_sequences, go_backwards, states; torch's "
            "quantized modules have none of them): build the model from lstmkit.LSTM/GRU to quantize it"
        ]
    if isinstance(module, Cell):
        return [
            f"a standalone lstmkit cell, {type(module).__name__}({module.extra_repr()}) (only whole lstmkit.LSTM/GRU "
            "layers are quantized; torch quantizes a torch.nn.LSTMCell/GRUCell/RNNCell holding the same weights)"
        ]
    if not isinstance(module, Recurrent):
        return []
    kind = type_before_parametrizations(module)
    if kind not in (LSTM, GRU, RNN, Recurrent):
        base = next(cls for cls in kind.__mro__ if cls in (LSTM, GRU, RNN, Recurrent))
        return [f"a subclass of lstmkit.{base.__name__} (its forward may differ from torch's; quantize the base class)"]
    reasons = []
    cells = module._cells  # not .cells, which binds the weights: a parametrization would run, in training mode too
    cell_types = {type(cell) for cell in cells}
    if len(cell_types) > 1:
        reasons.append(f"cells of several types ({', '.join(sorted(t.__name__ for t in cell_types))})")
    for cell in cells:
        reason = _cell_refusal(cell)
        if reason:
            reasons.append(reason)
            break
    if module.zoneout:
        reasons.append(
            f"zoneout={module.zoneout} "
            "(torch's quantized LSTM/GRU have no zoneout, which changes evaluation outputs too)"
        )
    if module.bidirectional and module.merge_mode != "concat":
        reasons.append(f"merge_mode={module.merge_mode!r} (torch's quantized LSTM/GRU concatenate the directions)")
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in module.parameters()} - {"float32"})
    if dtypes:
        reasons.append(f"{', '.join(dtypes)} parameters (torch's quantized RNNs run in float32: call .float() first)")
    devices = sorted({p.device.type for p in module.parameters()} - {"cpu"})
    if devices:
        reasons.append(f"parameters on {', '.join(devices)} (torch's quantized kernels run on the CPU)")
    return reasons


def _cell_refusal(cell: Cell) -> str | None:
    kind = type(cell)
    if kind is RNNCell:
        return "RNNCell (torch has no dynamically quantized RNN layer, only RNNCell)"
    if kind not in (LSTMCell, GRUCell):
        return f"{kind.__name__} (torch's dynamically quantized modules compute only the plain LSTM and GRU)"
    reasons = [
        f"{attribute}={getattr(function, '__name__', function)!r} (torch's quantized LSTM/GRU use tanh and sigmoid)"
        for attribute, function, expected in (
            ("activation", cell.activation, torch.tanh),
            ("gate_activation", cell.gate_activation, torch.sigmoid),
        )
        if function is not expected
    ]
    if kind is LSTMCell and cell.proj_size:
        reasons.append(f"proj_size={cell.proj_size} (torch's quantized LSTM has no projection)")
    if kind is GRUCell and not cell.reset_after:
        reasons.append("reset_after=False (torch's GRU applies the reset gate after the recurrent multiply)")
    return f"{kind.__name__} with " + ", ".join(reasons) if reasons else None


def _torch_twin(layer: Recurrent, *, copy_hooks: bool) -> nn.LSTM | nn.GRU:
    """The ``torch.nn.LSTM``/``GRU`` computing what ``layer`` computes in evaluation, with its weights
    as the layer sees them (parametrizations applied) and zero biases for ``bias=False``."""
    kind = nn.LSTM if isinstance(layer._cells[0], LSTMCell) else nn.GRU
    twin = kind(
        layer.input_size,
        layer.hidden_size,
        num_layers=layer.num_layers,
        bias=True,
        batch_first=layer.batch_first,
        dropout=layer.dropout if layer.num_layers > 1 else 0.0,  # torch warns about dropout on one layer
        bidirectional=layer.bidirectional,
    )
    modes = [(module, module.training) for module in layer.modules()]
    layer.eval()  # weights as evaluation computes them (a spectral norm's power iteration updates in training)
    try:
        with torch.no_grad():
            for name in twin._flat_weights_names:
                weight = getattr(layer, name, None)
                parameter = getattr(twin, name)
                if weight is None:
                    parameter.zero_()  # bias=False: a zero bias computes the same
                else:
                    parameter.copy_(weight)
    finally:
        for module, training in modes:
            module.training = training
    twin.eval()
    if copy_hooks:  # as torch's swap_module carries hooks to the module it swaps in
        for hook in layer._forward_pre_hooks.values():
            if not _is_weight_reparametrization(hook):  # its effect is already in the copied weights
                twin.register_forward_pre_hook(hook)
        for hook in layer._forward_hooks.values():
            twin.register_forward_hook(hook)
    return twin


def _is_weight_reparametrization(hook: Any) -> bool:
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    return isinstance(hook, WeightNorm | SpectralNorm)


class TorchDynamicQuantized:
    """Target of lstmkit layers in a torch dynamic-quantization mapping (see
    :func:`dynamic_quant_mappings`): torch's ``convert`` calls :meth:`from_float` on a layer that has a
    qconfig, and puts the module it returns in the layer's place. Never instantiated."""

    def __init__(self) -> None:
        raise TypeError("TorchDynamicQuantized only converts layers: call TorchDynamicQuantized.from_float(layer)")

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> nn.Module:
        """``torch.ao.nn.quantized.dynamic.LSTM``/``GRU`` computing what the lstmkit layer ``mod``
        computes, with the dtype of ``mod.qconfig`` (torch's ``default_dynamic_qconfig`` when it has
        none); raises a ``ValueError`` naming what it has when it cannot be quantized."""
        if not isinstance(mod, Recurrent):
            raise TypeError(
                f"TorchDynamicQuantized.from_float takes an lstmkit layer, got {type(mod).__name__}: "
                "map only lstmkit.LSTM, GRU, RNN and Recurrent to it"
            )
        reasons = _refusals(mod)
        if reasons:
            raise ValueError(
                f"lstmkit {_describe(mod)} cannot be dynamically quantized: {'; '.join(reasons)}. "
                f"Supported: {SUPPORTED}."
            )
        twin = _torch_twin(mod, copy_hooks=False)  # torch's swap_module carries mod's hooks itself
        twin.qconfig = getattr(mod, "qconfig", None)
        target = nnqd.LSTM if isinstance(twin, nn.LSTM) else nnqd.GRU
        return target.from_float(twin, use_precomputed_fake_quant=use_precomputed_fake_quant)


def dynamic_quant_mappings() -> dict[Any, Any]:
    """torch's default dynamic-quantization mapping plus lstmkit's layers, for the public ``mapping``
    argument of ``torch.ao.quantization.quantize_dynamic`` (and ``convert``); a new dict each call.

    ``lstmkit.LSTM``, ``GRU``, ``RNN`` and ``Recurrent`` map to :class:`TorchDynamicQuantized`: a
    layer that the ``qconfig_spec`` names becomes torch's dynamically quantized LSTM/GRU, or is
    refused with a ``ValueError`` saying why. As always with torch's mappings, the exact type counts
    (not a subclass), and the model passed to ``quantize_dynamic`` is never swapped itself, only its
    submodules.

        >>> import torch, lstmkit
        >>> from lstmkit.quantization import dynamic_quant_mappings
        >>> model = torch.nn.ModuleDict({"rnn": lstmkit.GRU(4, 8), "head": torch.nn.Linear(8, 2)})
        >>> quantized = torch.ao.quantization.quantize_dynamic(
        ...     model, {lstmkit.GRU, torch.nn.Linear}, mapping=dynamic_quant_mappings())
        >>> [module._get_name() for module in quantized.values()]
        ['DynamicQuantizedGRU', 'DynamicQuantizedLinear']
    """
    mapping = dict(quantization_mappings.get_default_dynamic_quant_module_mappings())
    mapping.update(dict.fromkeys((LSTM, GRU, RNN, Recurrent), TorchDynamicQuantized))
    return mapping


def _describe(module: nn.Module) -> str:
    return f"{type_before_parametrizations(module).__name__}({module.extra_repr()})"


class _QConfigGuard:
    """The ``qconfig`` attribute of lstmkit layers, cells and Keras layers: stored as any attribute,
    but its removal by torch's quantization ``convert`` (``remove_qconfig=True``, the default), which
    only reaches modules still in the model, warns that the module was left in float."""

    def __get__(self, module: nn.Module | None, owner: type | None = None) -> Any:
        if module is None:
            return self
        try:
            return module.__dict__["qconfig"]
        except KeyError:
            raise AttributeError(f"{type(module).__name__!r} object has no attribute 'qconfig'") from None

    def __set__(self, module: nn.Module, value: Any) -> None:
        module.__dict__["qconfig"] = value

    def __delete__(self, module: nn.Module) -> None:
        if "qconfig" not in module.__dict__:
            raise AttributeError("qconfig")
        qconfig = module.__dict__.pop("qconfig")
        warnings.warn(_left_float_message(module, qconfig), QuantizationSkippedWarning, stacklevel=2)


def _left_float_message(module: nn.Module, qconfig: Any) -> str:
    kind = type_before_parametrizations(module)
    if qconfig is None:
        why = "its qconfig_spec names no lstmkit type (torch's default names torch.nn types only)"
    else:
        why = (
            "it had a qconfig, but torch swaps only submodules (never the model it is given) whose exact "
            "type is in the mapping, and torch's default mapping has no lstmkit type"
        )
    message = f"torch.ao.quantization left lstmkit {_describe(module)} in float: {why}. "
    if not isinstance(module, Recurrent):
        return message + (
            "lstmkit quantizes whole lstmkit.LSTM/GRU layers, not cells or lstmkit.keras layers; "
            "lstmkit.quantize_dynamic(model) says what it can quantize"
        )
    name = kind.__name__ if kind in (LSTM, GRU) else "LSTM"
    return message + (
        "Use lstmkit.quantize_dynamic(model), which quantizes lstmkit.LSTM/GRU and refuses the others by name, "
        f"or torch.ao.quantization.quantize_dynamic(model, {{torch.nn.Linear, lstmkit.{name}}}, "
        "mapping=lstmkit.quantization.dynamic_quant_mappings())"
    )


# Set on lstmkit's own classes (torch is left as it is). Its place is their class bodies; it is set here
# for now, beside the quantization code it belongs to.
for _guarded in (Recurrent, Cell, KerasRNN):
    _guarded.qconfig = _QConfigGuard()  # type: ignore[attr-defined]
