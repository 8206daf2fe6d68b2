"""The traceable engines lstmkit layers run on while they are exported: with a dynamic sequence
length, torch's fused kernels (written as ONNX's recurrent operators by torch), else ONNX operators
(:mod:`.operators`) or ``Scan`` loops (:mod:`.scan`) that lstmkit writes; with a fixed one, the
reference loop (unrolled)."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ...cells import Cell
from ...engine import ENGINE_VARIABLE, torch_engine
from ...engine.kernels import torch_kernel_of
from ...keras.base import KerasRNN
from ...layers import Recurrent, merge_directions
from .common import ExportError
from .operators import operator_of, run_operator
from .scan import run_scans

# one layer's cells (one per direction), time-major input, lengths, initial states (D, B, size) ->
# the output (T, D, B, H) and the final states
LayerRunner = Callable[[Sequence[Cell], Tensor, Tensor | None, tuple[Tensor, ...]], tuple[Tensor, tuple[Tensor, ...]]]


def _cell_kernel(cell: Cell) -> str | None:
    """The ``torch._VF`` kernel computing ``cell`` exactly (what ONNX's LSTM/GRU/RNN ops compute;
    they have no projection)."""
    return None if getattr(cell, "proj_size", 0) else torch_kernel_of(cell)


def dynamic_sequence_problems(module: nn.Module) -> list[str]:
    """Why ``module`` cannot be exported, with a dynamic sequence length or a fixed one: one line per
    stateful Keras layer (empty when it can). Masks and gate traces are refused when they are passed.

    >>> import lstmkit
    >>> dynamic_sequence_problems(lstmkit.Recurrent(lstmkit.LayerNormLSTMCell, 3, 4))
    []
    >>> dynamic_sequence_problems(lstmkit.keras.LSTM(4, stateful=True, input_size=3))
    ["LSTM at '<root>': stateful layers carry states between calls; an ONNX graph cannot"]
    """
    reason = "stateful layers carry states between calls; an ONNX graph cannot"
    return [
        f"{type(sub).__name__} at {name or '<root>'!r}: {reason}"
        for name, sub in module.named_modules()
        if isinstance(sub, KerasRNN) and sub.stateful
    ]


def _layer_runner(cell: Cell, zoneout: float = 0.0) -> LayerRunner:
    """How one layer of ``cell`` runs in an exported graph when torch's fused kernels cannot run it:
    as its ONNX operator (:func:`~.operators.operator_of`), else as ``Scan`` loops (:mod:`.scan`)."""
    if operator_of(cell) is not None and not zoneout:
        return run_operator
    return functools.partial(run_scans, zoneout=zoneout)


def _keras_fused_forward(layer: KerasRNN) -> Callable[..., Any]:
    """A forward for a Keras-semantics layer on torch's fused kernel (exact for the plain cells), or
    as :func:`_layer_runner` runs its cell."""

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
        state = layer._initial_state(initial_state, x.shape[0], x)
        x = x.transpose(0, 1)
        if layer.go_backwards:
            x = x.flip(0)
        hx = tuple(s.unsqueeze(0) for s in state)
        if kernel is None:
            output, result = _layer_runner(cell)([cell], x, None, hx)
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


def _layer_forward(layer: Recurrent, run_layer: LayerRunner) -> Callable[..., Any]:
    """A forward for an lstmkit layer that runs each layer of its stack through ``run_layer`` (one
    ONNX operator, or one ``Scan`` per direction), so the exported graph takes any batch size and length."""

    def forward(
        input: Tensor, hx: Any = None, *, lengths: Any = None, mask: Tensor | None = None, return_gates: bool = False
    ) -> tuple[Tensor, Any]:
        if mask is not None or return_gates:
            raise ExportError(
                f"{type(layer).__name__} of {type(layer.cell(0, 0)).__name__}: masks and gate traces do not export "
                "with a dynamic sequence length; export with dynamic_sequence=False"
            )
        x, lengths, initial, _, batched, batch_first, _ = layer._prepare(input, hx, lengths, None)
        directions = layer.num_directions
        cells = layer.cells
        if initial is None:
            initial = tuple(x.new_zeros(len(cells), x.shape[1], size) for size in cells[0].state_sizes)
        finals = []
        for index in range(layer.num_layers):
            chosen = slice(index * directions, (index + 1) * directions)
            output, states = run_layer(cells[chosen], x, lengths, tuple(state[chosen] for state in initial))
            finals.append(states)
            if directions == 2 and index == layer.num_layers - 1 and layer.merge_mode != "concat":
                x = merge_directions(output[:, 0], output[:, 1], layer.merge_mode)
            else:
                x = output.permute(0, 2, 1, 3).flatten(2)  # (T, B, D * H), the directions side by side
        states = tuple(torch.cat(parts) for parts in zip(*finals, strict=True))
        if not batched:
            states = tuple(state.squeeze(1) for state in states)
        return layer._to_layout(x, batched, batch_first), states[0] if len(states) == 1 else states

    return forward


def _recurrent_export_forward(layer: Recurrent) -> Callable[..., Any]:
    """The layer's forward on torch's fused kernels when they can run it, else through
    :func:`_layer_runner`; plus what ONNX runtimes do differently: for a sequence of length 0 they
    return a zero final state, lstmkit (and PackedSequence semantics) the initial state."""
    cell = layer.cell(0, 0)
    if _cell_kernel(cell) is not None and torch_engine.why_not(layer, masked=False, traced=False, lengths=None) is None:
        original = type(layer).forward.__get__(layer)
    else:
        original = _layer_forward(layer, _layer_runner(cell, layer.zoneout))

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
    traceable engine: ``"torch"`` (what exports with a dynamic sequence length: lstmkit and
    Keras-semantics layers on torch's fused kernels where those compute them, else one ONNX operator
    or ``Scan`` per layer, see :func:`_layer_runner`) or ``"reference"`` (the plain Python loop, for
    any cell; tracing unrolls it). Everything is restored afterwards. Sets
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
    keras_layers = [sub for sub in module.modules() if isinstance(sub, KerasRNN)] if engine == "torch" else []
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
