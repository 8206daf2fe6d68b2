"""Export lstmkit layers, Keras-semantics layers and task models to ONNX, with dynamic batch and
sequence axes, checked in onnxruntime.

How it works: during the export every lstmkit layer runs on a traceable engine
(:func:`traceable_engine`). With ``dynamic_sequence=True`` (the default) plain LSTM/GRU/RNN stacks
run on torch's fused kernels, which torch's TorchScript-based exporter (``torch.onnx.export(...,
dynamo=False)``) writes as ONNX's own ``LSTM``/``GRU``/``RNN`` operators: the graph takes any batch
size and any sequence length. With ``dynamic_sequence=False`` every layer runs on the reference
engine and its Python time loop is unrolled over the example's length: any cell exports, but the
graph only takes sequences of exactly that length (the batch stays dynamic). (torch 2.13's dynamo
exporter was tried too: it bakes the example's length into a ``Reshape`` of bidirectional LSTMs, so
it is not used.)

What exports with a dynamic sequence length (``dynamic_sequence=True``):

* ``lstmkit.LSTM``, ``GRU`` (``reset_after=True``), ``RNN`` (``tanh``/``relu``) and
  :class:`~lstmkit.Recurrent` over those cells with default activations: stacked, bidirectional
  (``merge_mode="concat"``), ``batch_first`` or not, with initial states and with ``lengths=``
  (lengths may be 0 at run time, giving zero outputs and the initial state as in lstmkit; the
  example's lengths must be at least 1);
* Keras-semantics ``lstmkit.keras.LSTM``, ``GRU`` (``reset_after=True``), ``SimpleRNN``
  (``tanh``/``relu``), ``Bidirectional`` (any merge mode), any ``return_sequences``/``return_state``/
  ``go_backwards``, not stateful, without masks;
* any module built from those and traceable torch layers (Embedding, Linear, ...), such as the task
  models (``lstmkit export onnx CHECKPOINT out.onnx``).

What does not, and the error says so: ``proj_size > 0`` (ONNX's LSTM has no projection), peephole and
layer-norm cells, ``GRU(reset_after=False)``, custom cells or activations, zoneout, ``merge_mode``
other than concat on ``lstmkit`` layers, masks, stateful Keras layers. All of these except masks
and stateful layers export with ``dynamic_sequence=False``. Gate traces (``return_gates``) and
``PackedSequence`` inputs never export; pass ``lengths=`` instead of packing.

Every export is verified (``verify=True``): the ONNX graph runs in onnxruntime on the example and on
other batch sizes and sequence lengths, and must agree with the module; a model that depends on the
sequence length in Python (and so would be silently wrong) fails with :class:`ExportError`.

    >>> import tempfile, torch, lstmkit
    >>> from lstmkit.interop.onnx import export_onnx
    >>> lstm = lstmkit.LSTM(4, 8, num_layers=2, bidirectional=True, batch_first=True)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     exported = export_onnx(lstm, torch.randn(2, 5, 4), f"{folder}/lstm.onnx", verify=False)
    >>> exported.input_names, exported.output_names
    (['input'], ['output', 'h_n', 'c_n'])
    >>> exported.dynamic_axes["input"], exported.dynamic_axes["h_n"]
    ({0: 'batch', 1: 'sequence'}, {1: 'batch'})
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import secrets
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..cells import Cell, GRUCell, LSTMCell, RNNCell
from ..engine import ENGINE_VARIABLE, fused_torch
from ..engine.kernels import torch_kernel_of
from ..keras.layers import _KerasRNN
from ..layers import Recurrent

BATCH, SEQUENCE = "batch", "sequence"
INSTALL_HINT = "pip install 'lstmkit[onnx]' (onnx, onnxruntime)"
Axes = dict[int, str]
STATE_PARAMETERS = ("hx", "state", "states", "initial_state")
# The ONNX opsets an export may ask for, as tested with torch 2.13, onnx 1.23 and onnxruntime 1.32:
# below 11 an LSTM with lengths does not export (Sort) and GRU/RNN graphs fail onnx's checker
# (ConstantOfShape); torch's TorchScript exporter writes at most 20 (21-23 only relabel opset 20's
# operators, with a warning that they are unsupported; from 24 on it refuses).
OPSETS = range(11, 21)


class ExportError(ValueError):
    """A module (or a part of it) that cannot be exported as asked; the message says which part,
    why, and what to do instead.

    >>> ExportError("LSTM at 'rnn': proj_size > 0").args[0]
    "LSTM at 'rnn': proj_size > 0"
    """


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote: the file, the graph's input and output names in order, the
    dynamic axes of each (``{axis: "batch" | "sequence"}``), the engine the layers ran on during
    the export, and the ``(batch, sequence)`` sizes onnxruntime was checked on.

    >>> OnnxExport(Path("m.onnx"), ["input"], ["output"], {"input": {0: "batch"}}, False, "reference").engine
    'reference'
    """

    path: Path
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, Axes]
    dynamic_sequence: bool
    engine: str
    verified: list[tuple[int, int | None]] = field(default_factory=list)
    max_difference: float | None = None


def check_opset(opset: int | None) -> None:
    """Raise :class:`ExportError` (one line naming :data:`OPSETS`) for an opset the export does not
    support; ``None`` (torch's default, 20) is fine.

    >>> check_opset(7)
    Traceback (most recent call last):
    ...
    lstmkit.interop.onnx.ExportError: ONNX opset 7 is not supported: use 11 to 20
    """
    if opset is not None and opset not in OPSETS:
        raise ExportError(f"ONNX opset {opset} is not supported: use {OPSETS[0]} to {OPSETS[-1]}")


# -- engines ---------------------------------------------------------------------------------------


def _cell_kernel(cell: Cell) -> str | None:
    """The ``torch._VF`` kernel computing ``cell`` exactly (what ONNX's LSTM/GRU/RNN ops compute;
    they have no projection)."""
    return None if getattr(cell, "proj_size", 0) else torch_kernel_of(cell)


def _describe_cell(cell: Cell) -> str:
    if isinstance(cell, LSTMCell) and cell.proj_size:
        return "LSTMCell with proj_size > 0 (ONNX's LSTM operator has no projection)"
    if isinstance(cell, GRUCell) and not cell.reset_after:
        return "GRUCell(reset_after=False) (torch's GRU kernel resets after the recurrent multiply)"
    if type(cell) in (LSTMCell, GRUCell, RNNCell):
        return f"{type(cell).__name__} with non-default activations"
    return f"{type(cell).__name__} (no ONNX recurrent operator computes it)"


def dynamic_sequence_problems(module: nn.Module) -> list[str]:
    """Why ``module`` cannot be exported with a dynamic sequence length: one line per offending
    submodule (empty when it can).

    >>> import lstmkit
    >>> dynamic_sequence_problems(lstmkit.LSTM(3, 4))
    []
    >>> dynamic_sequence_problems(lstmkit.Recurrent(lstmkit.PeepholeLSTMCell, 3, 4))
    ["Recurrent at '<root>': PeepholeLSTMCell (no ONNX recurrent operator computes it)"]
    """
    problems = []
    for name, sub in module.named_modules():
        where = f"{type(sub).__name__} at {name or '<root>'!r}"
        if isinstance(sub, Recurrent):
            cell = sub.cell(0, 0)
            if _cell_kernel(cell) is None:
                problems.append(f"{where}: {_describe_cell(cell)}")
                continue
            reason = fused_torch.why_not(sub, masked=False, traced=False, lengths=None)
            if reason:
                problems.append(f"{where}: {reason}")
        elif isinstance(sub, _KerasRNN):
            if sub.stateful:
                problems.append(f"{where}: stateful layers carry states between calls; an ONNX graph cannot")
            elif sub.built and _cell_kernel(sub.cell) is None:
                problems.append(f"{where}: {_describe_cell(sub.cell)}")
    return problems


def _keras_fused_forward(layer: _KerasRNN):
    """A forward for a Keras-semantics layer on torch's fused kernel (exact for the plain cells)."""

    def forward(
        inputs: Tensor, initial_state: Any = None, mask: Tensor | None = None, training: bool | None = None
    ) -> Tensor | tuple[Tensor, ...]:
        if mask is not None:
            raise ExportError(
                f"{layer._describe()} was called with a mask: masks do not export with a dynamic sequence "
                "length; export with dynamic_sequence=False, or pass lengths to lstmkit layers instead"
            )
        x = layer._check_inputs(inputs)
        cell = layer.cell
        assert cell is not None  # _check_inputs builds the layer
        kernel = _cell_kernel(cell)
        if kernel is None:
            raise ExportError(f"{layer._describe()}: {_describe_cell(cell)}; export with dynamic_sequence=False")
        state = layer._initial_state(initial_state, x.shape[0], x)
        x = x.transpose(0, 1)
        if layer.go_backwards:
            x = x.flip(0)
        weights = [cell.weight_ih, cell.weight_hh]
        if layer.use_bias:
            bias_hh = cell.bias_hh if cell.bias_hh is not None else torch.zeros_like(cell.bias_ih)
            weights += [cell.bias_ih, bias_hh]
        hx = tuple(s.unsqueeze(0) for s in state)
        result = getattr(torch._VF, kernel)(
            x, hx if len(hx) > 1 else hx[0], weights, layer.use_bias, 1, 0.0, False, False, False
        )
        output, states = result[0], tuple(s.squeeze(0) for s in result[1:])
        output = output.transpose(0, 1) if layer.return_sequences else output[-1]
        return (output, *states) if layer.return_state else output

    return forward


def _recurrent_export_forward(layer: Recurrent):
    """The layer's forward, plus what ONNX runtimes do differently: for a sequence of length 0 they
    return a zero final state, lstmkit (and PackedSequence semantics) the initial state."""
    original = type(layer).forward.__get__(layer)

    def forward(
        input: Tensor, hx: Any = None, *, lengths: Any = None, mask: Tensor | None = None, return_gates: bool = False
    ) -> Any:
        result = original(input, hx, lengths=lengths, mask=mask, return_gates=return_gates)
        if hx is None or not isinstance(lengths, Tensor) or return_gates or input.dim() != 3:
            return result
        output, state = result
        empty = (lengths == 0).view(1, -1, 1)
        initial = (hx,) if isinstance(hx, Tensor) else tuple(hx)
        final = (state,) if isinstance(state, Tensor) else tuple(state)
        fixed = tuple(torch.where(empty, h0, h_n) for h0, h_n in zip(initial, final, strict=True))
        return output, fixed[0] if isinstance(state, Tensor) else fixed

    return forward


@contextlib.contextmanager
def traceable_engine(module: nn.Module, engine: str = "torch") -> Iterator[nn.Module]:
    """Within the block, ``module`` is in eval mode and every lstmkit layer in it runs on a
    traceable engine: ``"torch"`` (lstmkit layers on torch's fused kernels, Keras-semantics layers
    on the same kernels; what exports with a dynamic sequence length) or ``"reference"`` (the plain
    Python loop, for any cell; tracing unrolls it). Everything is restored afterwards. Sets
    ``$LSTMKIT_ENGINE`` for the block, so it is not thread-safe.

    >>> import torch, lstmkit
    >>> lstm = lstmkit.LSTM(3, 4)
    >>> with traceable_engine(lstm, "reference"):
    ...     lstm.engine, lstm.training
    ('reference', False)
    >>> lstm.engine is None, lstm.training
    (True, True)
    """
    if engine not in ("torch", "reference"):
        raise ValueError(f"engine must be 'torch' or 'reference' to export, got {engine!r}")
    layers = [sub for sub in module.modules() if isinstance(sub, Recurrent)]
    keras_layers = [sub for sub in module.modules() if isinstance(sub, _KerasRNN)] if engine == "torch" else []
    saved_engines = [layer.engine for layer in layers]
    saved_variable = os.environ.get(ENGINE_VARIABLE)
    modes = [(sub, sub.training) for sub in module.modules()]
    try:
        for layer in layers:
            layer.engine = engine
            if engine == "torch":
                layer.forward = _recurrent_export_forward(layer)  # an instance attribute shadows the method
        for layer in keras_layers:
            layer.forward = _keras_fused_forward(layer)
        os.environ[ENGINE_VARIABLE] = "reference"  # anything else that calls run_sequence: traceable
        module.eval()
        yield module
    finally:
        for layer, saved in zip(layers, saved_engines, strict=True):
            layer.engine = saved
            layer.__dict__.pop("forward", None)
        for layer in keras_layers:
            layer.__dict__.pop("forward", None)
        if saved_variable is None:
            os.environ.pop(ENGINE_VARIABLE, None)
        else:
            os.environ[ENGINE_VARIABLE] = saved_variable
        for sub, training in modes:
            sub.training = training


# -- inputs and outputs ----------------------------------------------------------------------------


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
    if isinstance(module, _KerasRNN) and module.return_state and len(paths) == 1 + len(module.state_names):
        return ["output", *module.state_names]
    states = _state_names(module)
    paired = ["0", "1"] if states == ("h",) else ["0", *(f"1_{i}" for i in range(len(states or ())))]
    if states and paths == paired:
        return ["output", *(f"{state}_n" for state in states)]  # (output, state), as the layers return
    if len(paths) == 1:
        return ["output"]
    return [f"output_{path}" for path in paths]


# -- sizes and probes ------------------------------------------------------------------------------


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


# -- export ----------------------------------------------------------------------------------------


def export_onnx(
    module: nn.Module,
    example_input: Any,
    path: str | Path,
    *,
    example_kwargs: Mapping[str, Any] | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    dynamic_sequence: bool = True,
    opset_version: int | None = None,
    verify: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> OnnxExport:
    """Write ``module`` as an ONNX graph to ``path`` and check it (see the module docstring).

    Args:
        module: an lstmkit layer, a Keras-semantics layer, a task model or any module built from them
            whose ``forward`` takes tensors (or tuples of tensors, such as ``hx``) and returns tensors
            or nested tuples of them.
        example_input: the positional arguments: a tensor or a tuple of them (``None`` for an
            argument left at its default). ``example_kwargs``: keyword arguments, e.g.
            ``{"lengths": torch.tensor([5, 3])}``. Their values only matter for the checks.
        input_names: names of the flat input tensors (default: ``forward``'s parameter names;
            ``h_0``/``c_0`` for a layer's initial state). ``output_names``: default ``output``,
            ``h_n``, ``c_n`` for lstmkit layers, the model's ``onnx_output_names`` if it has them,
            else ``output_0``, ``output_1_0``, ... by position.
        dynamic_axes: ``{input name: {axis: "batch" | "sequence"}}`` for inputs whose layout is not
            the default (batch-first ``(batch, sequence, ...)``, a layer's own ``batch_first``,
            ``(batch,)`` for lengths, ``(layers, batch, size)`` for states). Output axes are found
            by running the module with another batch size and sequence length.
        dynamic_sequence: export ONNX recurrent operators that take any sequence length (``True``)
            or unroll the reference loop over the example's length (``False``; any cell).
        opset_version: the ONNX opset (default: torch's).
        verify: run the graph in onnxruntime on the example and on other batch sizes (and sequence
            lengths) and compare with the module to ``rtol``/``atol``; raises :class:`ExportError`
            when they differ. Needs onnxruntime.

    Returns an :class:`OnnxExport`. Raises :class:`ExportError` naming the part that cannot export.
    """
    check_opset(opset_version)
    try:
        import onnx  # noqa: F401  (torch's exporter writes the file through it)
    except ImportError as error:
        raise ImportError(f"exporting to ONNX needs the onnx package: {INSTALL_HINT}") from error
    path = Path(path)
    if isinstance(example_input, torch.nn.utils.rnn.PackedSequence):
        raise ExportError("a PackedSequence does not export: pass the padded tensor and lengths= instead")
    slots = _slots(module, example_input, example_kwargs, input_names, dynamic_axes)
    if not dynamic_sequence:
        for item in (i for slot in slots for i in slot.inputs):
            item.axes = {axis: label for axis, label in item.axes.items() if not _is_sequence(label)}
    for item in (i for slot in slots for i in slot.inputs):
        if "length" in item.name and not item.tensor.is_floating_point() and bool((item.tensor < 1).any()):
            raise ExportError(
                f"example input {item.name!r} has lengths below 1 ({item.tensor.tolist()}): give an example whose "
                "lengths are at least 1 (the exported graph accepts 0 at run time)"
            )
    engine = "torch" if dynamic_sequence else "reference"
    sizes = _sizes(slots)
    flat = tuple(item.tensor for slot in slots for item in slot.inputs)
    with _temporary_next_to(path) as written:
        with traceable_engine(module, engine):
            result = _describe_export(module, slots, sizes, path, output_names, dynamic_sequence, engine)
            _write(_Adapter(module, slots), flat, written, result, opset_version)
        _check_graph(written)
        if verify:
            _verify(module, slots, sizes, result, written, rtol, atol)
        os.replace(written, path)
    return result


def _describe_export(
    module: nn.Module,
    slots: list[_Slot],
    sizes: dict[str, int],
    path: Path,
    output_names: Sequence[str] | None,
    dynamic_sequence: bool,
    engine: str,
) -> OnnxExport:
    """The export's names and dynamic axes, from running ``module`` (on its traceable engine) on the
    example and on inputs of other sizes; raises :class:`ExportError` for what cannot export."""
    problems = dynamic_sequence_problems(module) if dynamic_sequence else []
    if problems:
        raise ExportError(
            "cannot export with a dynamic sequence length: "
            + "; ".join(problems)
            + ". Export with dynamic_sequence=False to unroll the loop over the example's sequence length "
            "(the batch stays dynamic)"
        )
    try:
        outputs = _run(module, slots, [item.tensor for slot in slots for item in slot.inputs])
        axes = _output_axes(module, slots, sizes)
    except ExportError:
        raise
    except ValueError as error:
        if "engine='torch' cannot be used" in str(error):
            raise ExportError(
                f"cannot export with a dynamic sequence length: {error}. Export with dynamic_sequence=False"
            ) from None
        raise
    names = list(output_names) if output_names is not None else _output_names(module, [p for p, _ in outputs])
    if len(names) != len(outputs):
        raise ExportError(f"got {len(names)} output_names for {len(outputs)} output tensors")
    in_names = [item.name for slot in slots for item in slot.inputs]
    if set(in_names) & set(names):
        raise ExportError(f"input and output names overlap: {sorted(set(in_names) & set(names))}")
    all_axes = {item.name: item.axes for slot in slots for item in slot.inputs}
    all_axes.update(dict(zip(names, axes, strict=True)))
    return OnnxExport(path, in_names, names, {k: v for k, v in all_axes.items() if v}, dynamic_sequence, engine)


@contextlib.contextmanager
def _temporary_next_to(path: Path) -> Iterator[Path]:
    """A new file name in ``path``'s folder (``.<name>.<random>.tmp``), removed on leaving the block
    unless it was renamed: the export writes there, and only a checked graph replaces ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        yield temporary
    finally:
        temporary.unlink(missing_ok=True)


def _write(adapter: _Adapter, flat: tuple[Tensor, ...], path: Path, export: OnnxExport, opset: int | None) -> None:
    """``torch.onnx.export`` (TorchScript-based) of the adapted module to ``path``, its errors as
    :class:`ExportError`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings of input checks; the exporter's deprecation notice
        try:
            torch.onnx.export(
                adapter,
                flat,
                str(path),
                dynamo=False,
                input_names=export.input_names,
                output_names=export.output_names,
                dynamic_axes=export.dynamic_axes,
                opset_version=opset,
            )
        except torch.onnx.OnnxExporterError as error:
            text = " ".join(str(error).split("[Caused by", 1)[0].split())
            reason = re.search(r"because (.+?)\.", text) or re.search(r"^(.{1,300})", text)
            source = re.search(r"# (\S+:\d+)", text)
            raise ExportError(
                f"torch's ONNX exporter cannot export {type(adapter.module).__name__}: "
                + (f"the operation at {source.group(1)} fails: " if source else "")
                + (reason.group(1) if reason else type(error).__name__)
            ) from None


def _check_graph(path: Path) -> None:
    """onnx's checker on the written graph, its complaint as :class:`ExportError`."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as error:
        raise ExportError(f"the exported graph is not valid ONNX: {str(error).splitlines()[0][:300]}") from None


def _probe_sizes(sizes: Mapping[str, int], dynamic_sequence: bool) -> list[dict[str, int]]:
    probes = [dict(sizes)]
    if BATCH in sizes:
        probes.append({**sizes, BATCH: sizes[BATCH] + 1})
        probes.append({**sizes, BATCH: 1})
    sequences = [label for label in sizes if _is_sequence(label)] if dynamic_sequence else []
    for label in sequences:
        probes.append({**sizes, label: sizes[label] + 3})
    if sequences:
        shortest = {**sizes, **dict.fromkeys(sequences, 1)}
        probes.append({**shortest, BATCH: sizes[BATCH] + 2} if BATCH in sizes else shortest)
    return probes


def onnxruntime_session(path: str | Path) -> Any:
    """An onnxruntime ``InferenceSession`` on one thread (raises ImportError with the install hint)."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"running ONNX graphs needs onnxruntime: {INSTALL_HINT}") from error
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # failures reach the caller as exceptions; no extra lines on stderr
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _verify(
    module: nn.Module,
    slots: list[_Slot],
    sizes: Mapping[str, int],
    result: OnnxExport,
    path: Path,
    rtol: float,
    atol: float,
) -> None:
    """Run the graph at ``path`` in onnxruntime at the probe sizes and compare with ``module``; records
    the sizes and the largest difference in ``result``, raises :class:`ExportError` on a mismatch."""
    try:
        session = onnxruntime_session(path)
    except ImportError:
        raise
    except Exception as error:  # onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime cannot load the exported graph: {str(error).splitlines()[0][:300]}") from None
    worst = 0.0
    was_training = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        for probe in _probe_sizes(sizes, result.dynamic_sequence):
            flat = _resized(slots, probe)
            expected = _run(module, slots, flat)
            where = ", ".join(f"{label} {size}" for label, size in probe.items()) or "the example"
            feed = {name: tensor.detach().cpu().numpy() for name, tensor in zip(result.input_names, flat, strict=True)}
            try:
                got = session.run(result.output_names, feed)
            except Exception as error:  # onnxruntime raises its own exception types
                raise ExportError(
                    f"the exported graph fails at {where} ({str(error).splitlines()[0][:300]}); a part of the model "
                    "depends on the example's sizes in Python. Export with dynamic_sequence=False or "
                    "give dynamic_axes"
                ) from None
            for name, (_, want), array in zip(result.output_names, expected, got, strict=True):
                actual = torch.from_numpy(array).to(want.dtype)
                if actual.shape != want.shape:
                    raise ExportError(
                        f"the exported graph's output {name!r} has shape {tuple(actual.shape)} at {where}; "
                        f"the module gives {tuple(want.shape)}"
                    )
                difference = float((actual - want.cpu()).abs().max()) if want.numel() else 0.0
                if not torch.allclose(actual, want.cpu(), rtol=rtol, atol=atol, equal_nan=True):
                    raise ExportError(
                        f"the exported graph disagrees with the module on output {name!r} at {where} (max abs "
                        f"difference {difference:.3g}): a part of the model was unrolled over the example's sizes or "
                        "depends on them in Python. Export with dynamic_sequence=False, or an example of the sizes "
                        "you will run"
                    )
                worst = max(worst, difference)
            steps = [size for label, size in probe.items() if _is_sequence(label)]
            result.verified.append((probe.get(BATCH, 0), max(steps) if steps else None))
    finally:
        for sub, training in was_training:
            sub.training = training
    result.max_difference = worst


# -- task models -----------------------------------------------------------------------------------


def example_inputs(model: nn.Module, batch: int = 2, steps: int = 8) -> dict[str, Tensor]:
    """Example inputs for a model's ``forward``, by parameter name, from what the model holds.

    A model may say itself through a method ``example_inputs(batch, steps) -> dict``. Otherwise:
    every required parameter gets token ids ``(batch, steps)`` in the vocabulary of the model's first
    ``nn.Embedding``, or, without one, features ``(batch, steps, input_size)`` of its first recurrent
    layer (a second sequence ``steps + 1`` long, and so on, so that each keeps a sequence axis of its
    own); a parameter whose name contains ``length`` gets lengths ``(batch,)`` (the first sequence
    full, the others shorter; ``a_lengths`` goes with ``a``). Optional parameters (``state=None``,
    ...) are left out.

    >>> from lstmkit.tasks.charlm.model import CharLM, CharLMConfig
    >>> inputs = example_inputs(CharLM(CharLMConfig("abc", hidden_size=8, embedding_size=4)), batch=3, steps=5)
    >>> {name: (tuple(t.shape), t.dtype) for name, t in inputs.items()}
    {'ids': ((3, 5), torch.int64)}
    """
    own = getattr(model, "example_inputs", None)
    if callable(own):
        return dict(own(batch, steps))
    generator = torch.Generator().manual_seed(0)
    embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    recurrent = next((m for m in model.modules() if isinstance(m, Recurrent | _KerasRNN)), None)
    parameters = inspect.signature(model.forward).parameters.values()
    inputs: dict[str, Tensor] = {}
    for parameter in parameters:
        if parameter.kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            continue
        # several sequences get lengths of their own (steps, steps + 1, ...): their axes stay independent
        length = steps + sum(1 for tensor in inputs.values() if tensor.dim() >= 2)
        if "length" in parameter.name:
            owner = inputs.get(_lengths_owner(parameter.name))
            full = owner.shape[1] if owner is not None and owner.dim() >= 2 else steps
            lengths = torch.randint(1, full + 1, (batch,), generator=generator)
            lengths[0] = full
            inputs[parameter.name] = lengths
        elif parameter.default is not inspect.Parameter.empty:
            continue
        elif embedding is not None:
            low = 1 if embedding.num_embeddings > 1 else 0
            inputs[parameter.name] = torch.randint(low, embedding.num_embeddings, (batch, length), generator=generator)
        elif recurrent is not None and recurrent.input_size is not None:
            dtype = next(recurrent.parameters()).dtype
            inputs[parameter.name] = torch.randn(batch, length, recurrent.input_size, generator=generator, dtype=dtype)
        else:
            raise ExportError(
                f"cannot make an example for {type(model).__name__}.forward's {parameter.name!r}: the model has no "
                "embedding or recurrent layer to size it from; give it a method example_inputs(batch, steps)"
            )
    return inputs


def export_pretrained(
    directory: str | Path,
    path: str | Path,
    *,
    batch: int = 2,
    steps: int = 8,
    with_state: bool = False,
    **options: Any,
) -> OnnxExport:
    """Export a saved model: a task model's folder (any task; see :func:`lstmkit.tasks.load_model`)
    or a Keras 3 ``.keras`` file (see :func:`lstmkit.interop.keras_files.load_keras_file`), with
    inputs from :func:`example_inputs`; ``options`` go to :func:`export_onnx`. A model with a method
    ``onnx_module()`` is exported as the module it returns: the forecaster's takes and returns values
    in the data's units (its scaling inside the graph), as ``forecast predict`` reads and prints them.

    ``with_state=True`` also makes the initial recurrent state an input (``h_0``, ``c_0``), for a
    model whose ``forward(..., state=None)`` returns ``(output, state)`` such as charlm: a runtime
    can then feed the state back to generate step by step."""
    check_opset(options.get("opset_version"))
    if Path(directory).suffix == ".keras":
        from .keras_files import load_keras_file

        model: nn.Module = load_keras_file(directory)
    else:
        from ..tasks import load_model

        model = load_model(directory)
    own = getattr(model, "onnx_module", None)
    if callable(own):
        model = own()
    inputs = example_inputs(model, batch, steps)
    names, var_positional = _parameter_names(model)
    if with_state:
        slot = next((name for name in names if name in STATE_PARAMETERS), None)
        if slot is None:
            raise ExportError(f"{type(model).__name__}.forward takes no state argument (one of {STATE_PARAMETERS})")
        with torch.no_grad():
            returned = model(**inputs)
        state = returned[1] if isinstance(returned, tuple) and len(returned) == 2 else None
        if not isinstance(state, Tensor | tuple):
            raise ExportError(f"{type(model).__name__} does not return (output, state); cannot export its state")
        inputs[slot] = state
    if var_positional and not names:  # forward(*inputs), as a Keras model's: its inputs by their own names
        options.setdefault("input_names", list(inputs))
        return export_onnx(model, tuple(inputs.values()), path, **options)
    positional = []
    for name in names:  # positional up to the last given one; a skipped optional one stays None
        if name in inputs:
            positional.append(inputs.pop(name))
        elif inputs:
            positional.append(None)
    return export_onnx(model, tuple(positional), path, example_kwargs=inputs or None, **options)


__all__ = [
    "ExportError",
    "OnnxExport",
    "dynamic_sequence_problems",
    "example_inputs",
    "export_onnx",
    "export_pretrained",
    "onnxruntime_session",
    "traceable_engine",
]
