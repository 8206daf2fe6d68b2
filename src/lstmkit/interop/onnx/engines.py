"""The traceable engines lstmkit layers run on while they are exported: torch's fused kernels (ONNX's
own recurrent operators) or the reference loop (unrolled), and what keeps a layer from the first."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ...cells import Cell, GRUCell, LSTMCell, RNNCell
from ...engine import ENGINE_VARIABLE, fused_torch
from ...engine.kernels import torch_kernel_of
from ...keras.layers import _KerasRNN
from ...layers import Recurrent
from .common import ExportError
from .operators import operator_forward, operator_of, run_operator


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
    >>> dynamic_sequence_problems(lstmkit.Recurrent(lstmkit.LayerNormLSTMCell, 3, 4))
    ["Recurrent at '<root>': LayerNormLSTMCell (no ONNX recurrent operator computes it)"]
    """
    problems = []
    for name, sub in module.named_modules():
        where = f"{type(sub).__name__} at {name or '<root>'!r}"
        if isinstance(sub, Recurrent):
            cell = sub.cell(0, 0)
            if _cell_kernel(cell) is not None:
                reason = fused_torch.why_not(sub, masked=False, traced=False, lengths=None)
            elif operator_of(cell) is not None:
                reason = "ONNX's recurrent operators have no zoneout" if sub.zoneout else None
            else:
                reason = _describe_cell(cell)
            if reason:
                problems.append(f"{where}: {reason}")
        elif isinstance(sub, _KerasRNN):
            if sub.stateful:
                problems.append(f"{where}: stateful layers carry states between calls; an ONNX graph cannot")
            elif sub.built and _cell_kernel(sub.cell) is None and operator_of(sub.cell) is None:
                problems.append(f"{where}: {_describe_cell(sub.cell)}")
    return problems


def _keras_fused_forward(layer: _KerasRNN):
    """A forward for a Keras-semantics layer on torch's fused kernel (exact for the plain cells) or
    on its cell's ONNX operator (:func:`~.operators.operator_of`)."""

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
        if kernel is None and operator_of(cell) is None:
            raise ExportError(f"{layer._describe()}: {_describe_cell(cell)}; export with dynamic_sequence=False")
        state = layer._initial_state(initial_state, x.shape[0], x)
        x = x.transpose(0, 1)
        if layer.go_backwards:
            x = x.flip(0)
        hx = tuple(s.unsqueeze(0) for s in state)
        if kernel is None:
            output, result = run_operator([cell], x, None, hx)
            output = output[:, 0]
        else:
            weights = [cell.weight_ih, cell.weight_hh]
            if layer.use_bias:
                bias_hh = cell.bias_hh if cell.bias_hh is not None else torch.zeros_like(cell.bias_ih)
                weights += [cell.bias_ih, bias_hh]
            output, *result = getattr(torch._VF, kernel)(
                x, hx if len(hx) > 1 else hx[0], weights, layer.use_bias, 1, 0.0, False, False, False
            )
        states = tuple(s.squeeze(0) for s in result)
        output = output.transpose(0, 1) if layer.return_sequences else output[-1]
        return (output, *states) if layer.return_state else output

    return forward


def _recurrent_export_forward(layer: Recurrent) -> Callable[..., Any]:
    """The layer's forward on torch's fused kernels, or on its cells' ONNX operator
    (:func:`~.operators.operator_forward`), plus what ONNX runtimes do differently: for a sequence of
    length 0 they return a zero final state, lstmkit (and PackedSequence semantics) the initial state."""
    cell = layer.cell(0, 0)
    if _cell_kernel(cell) is None and operator_of(cell) is not None:
        original = operator_forward(layer)
    else:
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
