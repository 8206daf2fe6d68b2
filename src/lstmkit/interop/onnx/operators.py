"""ONNX's ``LSTM`` and ``GRU`` operators for the cells they compute but torch's fused kernels do not:
the peephole LSTM (the operator's peephole input ``P``) and the GRU that resets before the recurrent
multiply (``linear_before_reset=0``). An lstmkit layer of such cells exports, one operator per
layer, with dynamic batch and sequence axes.

Each layer is one :class:`_RecurrentOperator` call: while tracing, its ``forward`` runs the lstmkit
cells on the reference loop and its ``symbolic`` writes the operator, fed the cells' weights in ONNX's
layout (gates ``i, o, f, c`` for the LSTM and ``z, r, h`` for the GRU; torch's are ``i, f, g, o`` and
``r, z, n``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...cells import Cell
from ...engine.kernels import kernel_of
from ...engine.reference import run_sequence as run_reference

# the native kernel of a cell (lstmkit.engine.kernels.kernel_of) -> the ONNX operator computing it
OPERATORS = {"peephole_lstm": "LSTM", "gru_reset_before": "GRU"}
# ONNX's gate order as indices into lstmkit's (= torch's) chunks of the weights and biases
GATE_ORDER = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2)}
INT32 = 6  # onnx.TensorProto.INT32: the type of the operators' sequence_lens


def operator_of(cell: Cell) -> str | None:
    """The ONNX operator (``"LSTM"``, ``"GRU"``) computing ``cell`` where torch's kernels do not, or
    ``None``.

    >>> import lstmkit
    >>> operator_of(lstmkit.PeepholeLSTMCell(2, 3)), operator_of(lstmkit.GRUCell(2, 3, reset_after=False))
    ('LSTM', 'GRU')
    >>> operator_of(lstmkit.LSTMCell(2, 3)) is None
    True
    """
    return OPERATORS.get(kernel_of(cell) or "")


@dataclass(frozen=True)
class _Layer:
    """What the operator's ``symbolic`` needs besides tensors, and the cells ``forward`` runs."""

    operator: str
    hidden_size: int
    cells: tuple[Cell, ...]  # one per direction

    def run(self, x: Tensor, lengths: Tensor | None, h0: Tensor, c0: Tensor | None) -> tuple[Tensor, ...]:
        """The operator's outputs computed by the cells: ``Y (T, D, B, H)``, ``Y_h (D, B, H)`` and, for
        the LSTM, ``Y_c``; zero outputs past each length, as ONNX's operators give."""
        valid = None if lengths is None else torch.arange(x.shape[0], device=x.device)[:, None] < lengths[None]
        results = []
        for direction, cell in enumerate(self.cells):
            state = (h0[direction],) if c0 is None else (h0[direction], c0[direction])
            results.append(run_reference(cell, x, state, valid=valid, reverse=direction == 1))
        finals = zip(*(result.state for result in results), strict=True)
        return torch.stack([result.output for result in results], 1), *(torch.stack(final) for final in finals)


def _absent(g: Any) -> Any:
    """An omitted optional input of an ONNX node."""
    node = g.op("prim::Constant")
    node.setType(torch._C.OptionalType.ofTensor())
    return node


def _given(value: Any) -> bool:
    """Whether an argument of ``symbolic`` is a value (not ``None``, as Python or as a graph constant)."""
    return value is not None and not value.node().mustBeNone()


class _RecurrentOperator(torch.autograd.Function):
    """One layer (all its directions) as ONNX's ``LSTM`` or ``GRU`` operator. The cells' parameters
    come last, unused by the operator, so that the trace of ``forward`` knows every tensor it reads."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        lengths: Tensor | None,
        h0: Tensor,
        c0: Tensor | None,
        w: Tensor,
        r: Tensor,
        b: Tensor,
        p: Tensor | None,
        layer: _Layer,
        *parameters: Tensor,
    ) -> tuple[Tensor, ...]:
        return layer.run(x, lengths, h0, c0)

    @staticmethod
    def symbolic(
        g: Any, x: Any, lengths: Any, h0: Any, c0: Any, w: Any, r: Any, b: Any, p: Any, layer: _Layer, *parameters: Any
    ) -> Any:
        sequence_lens = g.op("Cast", lengths, to_i=INT32) if _given(lengths) else _absent(g)
        attributes: dict[str, Any] = {"hidden_size_i": layer.hidden_size}
        if len(layer.cells) == 2:
            attributes["direction_s"] = "bidirectional"
        if layer.operator == "LSTM":
            return g.op("LSTM", x, w, r, b, sequence_lens, h0, c0, p, outputs=3, **attributes)
        return g.op("GRU", x, w, r, b, sequence_lens, h0, outputs=2, linear_before_reset_i=0, **attributes)


def _onnx_layout(tensor: Tensor, operator: str) -> Tensor:
    """A weight or bias with its gate blocks in ONNX's order."""
    chunks = tensor.chunk(len(GATE_ORDER[operator]))
    return torch.cat([chunks[index] for index in GATE_ORDER[operator]])


def _weights(cells: Sequence[Cell], operator: str) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """The operator's ``W``, ``R``, ``B`` and (LSTM) ``P`` inputs for the cells of one layer."""
    w = torch.stack([_onnx_layout(cell.weight_ih, operator) for cell in cells])
    r = torch.stack([_onnx_layout(cell.weight_hh, operator) for cell in cells])
    biases = []
    for cell in cells:
        zeros = cell.weight_ih.new_zeros(cell.weight_ih.shape[0])
        pair = [zeros if bias is None else bias for bias in (cell.bias_ih, cell.bias_hh)]
        biases.append(torch.cat([_onnx_layout(bias, operator) for bias in pair]))
    p = None
    if operator == "LSTM":  # the peepholes of the input, output and forget gates
        p = torch.stack([torch.cat([cell.weight_ci, cell.weight_co, cell.weight_cf]) for cell in cells])
    return w, r, torch.stack(biases), p


def run_operator(
    cells: Sequence[Cell], x: Tensor, lengths: Tensor | None, initial: tuple[Tensor, ...]
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One layer of ``cells`` (one per direction, the second reversed) over time-major ``x`` ``(T, B,
    I)`` from the states ``initial`` ``(D, B, size)`` each, as its ONNX operator: the output ``(T, D,
    B, H)`` (zero past each length) and the final states ``(D, B, size)``."""
    operator = operator_of(cells[0])
    assert operator is not None
    layer = _Layer(operator, cells[0].hidden_size, tuple(cells))
    h0, c0 = initial[0], initial[1] if len(initial) > 1 else None
    parameters = [parameter for cell in cells for parameter in cell.parameters()]
    output, *states = _RecurrentOperator.apply(x, lengths, h0, c0, *_weights(cells, operator), layer, *parameters)
    return output, tuple(states)


__all__ = ["OPERATORS", "operator_of", "run_operator"]
