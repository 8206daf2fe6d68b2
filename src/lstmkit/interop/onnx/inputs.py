"""The module's arguments as the flat, named tensors of an ONNX graph and back; their batch and
sequence axes, and inputs resized along them."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ...keras.base import KerasRNN
from ...layers import Recurrent
from .common import BATCH, SEQUENCE, STATE_PARAMETERS, Axes, ExportError


@dataclass
class _Input:
    name: str
    tensor: Tensor
    axes: Axes


@dataclass
class _Slot:
    """One argument of ``forward``: positional or keyword, a tensor, a tuple of tensors, or None."""

    keyword: str | None
    inputs: list[_Input]
    is_tuple: bool
    kind: type = tuple


class _Adapter(nn.Module):
    """``forward(*flat_tensors)`` -> the wrapped module's call with its real arguments -> a flat
    tuple of output tensors (what the TorchScript exporter needs)."""

    def __init__(self, module: nn.Module, slots: list[_Slot]) -> None:
        super().__init__()
        self.module = module
        self.slots = slots

    def forward(self, *flat: Tensor) -> tuple[Tensor, ...]:
        args, kwargs = _rebuild(self.slots, list(flat))
        return tuple(tensor for _, tensor in _flatten_outputs(self.module(*args, **kwargs)))


def _rebuild(slots: list[_Slot], flat: list[Tensor]) -> tuple[list[Any], dict[str, Any]]:
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    position = 0
    for slot in slots:
        tensors = flat[position : position + len(slot.inputs)]
        position += len(slot.inputs)
        value = slot.kind(tensors) if slot.is_tuple else (tensors[0] if tensors else None)
        if slot.keyword is None:
            args.append(value)
        else:
            kwargs[slot.keyword] = value
    return args, kwargs


def _flatten_outputs(value: Any, path: str = "") -> list[tuple[str, Tensor]]:
    if isinstance(value, Tensor):
        return [(path, value)]
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [item for i, v in enumerate(value) for item in _flatten_outputs(v, f"{path}_{i}" if path else str(i))]
    if isinstance(value, Mapping) and not value:
        return []
    raise ExportError(
        f"the module returns a {type(value).__name__} at output {path or '<root>'}: only tensors and "
        "(nested) tuples of tensors export (gate traces, PackedSequence and dicts do not)"
    )


def _parameter_names(module: nn.Module) -> tuple[list[str], bool]:
    """Names of ``forward``'s positional parameters, and whether it takes ``*args``."""
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return [], True
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in parameters if p.kind in positional]
    return names, any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)


def _default_axes(module: nn.Module, name: str, tensor: Tensor, in_tuple: bool) -> Axes:
    """Which axes of an input are the batch and the sequence, when the caller did not say."""
    rank = tensor.dim()
    if "length" in name:
        return {0: BATCH} if rank == 1 else {}
    if in_tuple:  # a recurrent state: (num_layers * num_directions, batch, size) or (batch, size)
        return {1: BATCH} if rank == 3 else ({0: BATCH} if rank == 2 and not isinstance(module, Recurrent) else {})
    if isinstance(module, Recurrent):
        if rank == 2:  # one unbatched sequence
            return {0: SEQUENCE}
        return {0: BATCH, 1: SEQUENCE} if module.batch_first else {0: SEQUENCE, 1: BATCH}
    if rank >= 2:
        return {0: BATCH, 1: SEQUENCE}
    return {0: BATCH} if rank == 1 else {}


def _slots(
    module: nn.Module,
    example_input: Any,
    example_kwargs: Mapping[str, Any] | None,
    input_names: Sequence[str] | None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None,
) -> list[_Slot]:
    positional = list(example_input) if isinstance(example_input, tuple | list) else [example_input]
    parameter_names, var_positional = _parameter_names(module)
    if len(positional) > len(parameter_names) and not var_positional and parameter_names:
        raise ExportError(
            f"{type(module).__name__}.forward takes {len(parameter_names)} positional arguments "
            f"{parameter_names}, got {len(positional)} example inputs"
        )
    arguments = [(None, parameter_names[i] if i < len(parameter_names) else f"input_{i}", v) for i, v in
                 enumerate(positional)]  # fmt: skip
    arguments += [(key, key, value) for key, value in (example_kwargs or {}).items()]
    state_names = _state_names(module)
    slots = []
    for keyword, name, value in arguments:
        if value is None:
            slots.append(_Slot(keyword, [], False))
            continue
        is_tuple = isinstance(value, tuple | list)
        tensors = list(value) if is_tuple else [value]
        if state_names and name in STATE_PARAMETERS and len(tensors) == len(state_names):
            names = [f"{state}_0" for state in state_names]
        else:
            names = [f"{name}_{j}" for j in range(len(tensors))] if is_tuple else [name]
        inputs = []
        for input_name, tensor in zip(names, tensors, strict=True):
            if not isinstance(tensor, Tensor):
                raise ExportError(f"example input {input_name!r} is a {type(tensor).__name__}; only tensors export")
            axes = _default_axes(module, input_name, tensor, in_tuple=is_tuple or name in STATE_PARAMETERS)
            inputs.append(_Input(input_name, tensor, axes))
        slots.append(_Slot(keyword, inputs, is_tuple, type(value) if is_tuple else tuple))
    flat = [item for slot in slots for item in slot.inputs]
    if input_names is not None:
        if len(input_names) != len(flat):
            raise ExportError(
                f"got {len(input_names)} input_names for {len(flat)} input tensors {[i.name for i in flat]}"
            )
        for item, new_name in zip(flat, input_names, strict=True):
            item.name = new_name
    lengths = {item.tensor.shape[axis] for item in flat for axis, label in item.axes.items() if label == SEQUENCE}
    if len(lengths) > 1:  # inputs of their own lengths (a siamese model's two texts): one axis each
        for item in flat:
            item.axes = {axis: f"{item.name}_{SEQUENCE}" if label == SEQUENCE else label
                         for axis, label in item.axes.items()}  # fmt: skip
    for item in flat:
        if dynamic_axes is not None and item.name in dynamic_axes:
            item.axes = {int(axis): str(label) for axis, label in dynamic_axes[item.name].items()}
    names = [item.name for item in flat]
    if len(set(names)) != len(names):
        raise ExportError(f"input names must be distinct, got {names}")
    return slots


def _state_names(module: nn.Module) -> tuple[str, ...] | None:
    """The state names (``("h", "c")``, ``("h",)``) of the module's first lstmkit layer."""
    layer = next((sub for sub in module.modules() if isinstance(sub, Recurrent)), None)
    return None if layer is None else layer.cell(0, 0).state_names


def _output_names(module: nn.Module, paths: list[str]) -> list[str]:
    names = getattr(module, "onnx_output_names", None)
    if names is not None and len(names) == len(paths):
        return list(names)
    if isinstance(module, KerasRNN) and module.return_state and len(paths) == 1 + len(module.state_names):
        return ["output", *module.state_names]
    states = _state_names(module)
    paired = ["0", "1"] if states == ("h",) else ["0", *(f"1_{i}" for i in range(len(states or ())))]
    if states and paths == paired:
        return ["output", *(f"{state}_n" for state in states)]  # (output, state), as the layers return
    if len(paths) == 1:
        return ["output"]
    return [f"output_{path}" for path in paths]


def _is_sequence(label: str) -> bool:
    return label == SEQUENCE or label.endswith(f"_{SEQUENCE}")


def _sizes(slots: list[_Slot]) -> dict[str, int]:
    """The example's batch size and sequence length, from the inputs' dynamic axes."""
    found: dict[str, set[int]] = {}
    for item in (i for slot in slots for i in slot.inputs):
        for axis, label in item.axes.items():
            if not -item.tensor.dim() <= axis < item.tensor.dim():
                raise ExportError(f"input {item.name!r} of shape {tuple(item.tensor.shape)} has no axis {axis}")
            found.setdefault(label, set()).add(item.tensor.shape[axis])
    for label, values in found.items():
        if len(values) > 1:
            raise ExportError(f"the example inputs disagree on the {label} size: {sorted(values)}")
    return {label: values.pop() for label, values in found.items()}


def _resized(slots: list[_Slot], sizes: Mapping[str, int]) -> list[Tensor]:
    """The example inputs with their batch and sequence axes cycled to ``sizes``."""
    items = [i for slot in slots for i in slot.inputs]
    labels = {item.name: label for item in items for label in item.axes.values() if _is_sequence(label)}
    tensors = []
    for item in items:
        tensor = item.tensor
        for axis, label in item.axes.items():
            if label in sizes:
                index = torch.arange(sizes[label], device=tensor.device) % tensor.shape[axis]
                tensor = tensor.index_select(axis, index)
        if "length" in item.name and not tensor.is_floating_point():
            owner = labels.get(_lengths_owner(item.name), SEQUENCE)  # "a_lengths" -> the length of "a"
            steps = sizes.get(owner) or min((size for label, size in sizes.items() if _is_sequence(label)), default=0)
            if steps and tensor.numel():
                tensor = tensor.clamp(1, steps)
                tensor[0] = steps  # one full-length sequence, as padded batches have
        tensors.append(tensor)
    return tensors


def _lengths_owner(name: str) -> str:
    """The input whose lengths an input named ``a_lengths`` (or ``a_length``) holds."""
    for suffix in ("_lengths", "_length"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return ""


def _run(module: nn.Module, slots: list[_Slot], flat: list[Tensor]) -> list[tuple[str, Tensor]]:
    args, kwargs = _rebuild(slots, flat)
    with torch.no_grad():
        return _flatten_outputs(module(*args, **kwargs))


def _output_axes(module: nn.Module, slots: list[_Slot], sizes: dict[str, int]) -> list[Axes]:
    """Which output axes follow the batch size and the sequence length: found by running the module
    on inputs with one of them changed."""
    base = _run(module, slots, _resized(slots, sizes))
    axes: list[Axes] = [{} for _ in base]
    for label in sizes:
        changed = _run(module, slots, _resized(slots, {**sizes, label: sizes[label] + 2}))
        for j, ((_, before), (_, after)) in enumerate(zip(base, changed, strict=True)):
            for axis, (b, a) in enumerate(zip(before.shape, after.shape, strict=True)):
                if a != b:
                    axes[j][axis] = label if axis not in axes[j] else f"{axes[j][axis]}_{label}"
    return axes
