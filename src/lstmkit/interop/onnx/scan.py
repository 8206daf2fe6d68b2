"""ONNX ``Scan`` loops for the cells no recurrent operator computes: layer-norm LSTMs, projections,
other activations, zoneout (in evaluation, its expectation) and any user-defined cell whose ``step``
traces. One direction of one layer is one ``Scan`` whose body is the cell's step, so the graph takes
any batch size and any sequence length.

torch's TorchScript exporter writes no ``Scan`` from Python code, so it happens in two stages. While
the module is traced, each direction is one :class:`_ScanPlaceholder` call: its ``forward`` runs the
cell on the reference loop, its ``symbolic`` writes a node ``lstmkit::Scan`` and records the cell
(:func:`collecting_scans`). Then :func:`write_scan_bodies` exports each recorded cell's step
(:class:`_Step`) as a graph of its own and puts it as the body of a ``Scan`` in place of the node.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ...cells import Cell
from ...engine.reference import run_sequence as run_reference
from .common import ExportError

DOMAIN = "lstmkit"  # the placeholders' domain, gone from the written graph
_recorded: list[_Direction] | None = None


@dataclass(eq=False)
class _Direction:
    """One direction of one layer: the cell, which way it runs and its zoneout rate."""

    cell: Cell
    reverse: bool
    zoneout: float

    def run(self, x: Tensor, valid: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """The output ``(T, B, H)`` and the final states, by the reference loop."""
        result = run_reference(self.cell, x, state, valid=valid, reverse=self.reverse, zoneout=self.zoneout)
        return result.output, *result.state


class _Step(nn.Module):
    """One time step of a :class:`_Direction` as a ``Scan`` body: ``(*state, x_t, valid_t) -> (*state,
    output_t)``, as the reference loop computes it: a step past a sequence's length keeps the state and
    outputs zeros."""

    def __init__(self, direction: _Direction) -> None:
        super().__init__()
        self.cell = direction.cell
        self.zoneout = direction.zoneout

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        *state, x, valid = inputs
        new_state, _ = self.cell.step(self.cell.project_input(x.unsqueeze(0))[0], tuple(state))
        if self.zoneout:  # in evaluation, the expectation of the random update
            rate = self.zoneout
            new_state = tuple(rate * old + (1 - rate) * new for old, new in zip(state, new_state, strict=True))
        keep = valid.unsqueeze(-1)
        new_state = tuple(torch.where(keep, new, old) for new, old in zip(new_state, state, strict=True))
        return *new_state, torch.where(keep, new_state[0], torch.zeros_like(new_state[0]))


class _ScanPlaceholder(torch.autograd.Function):
    """One :class:`_Direction` over time-major ``x`` with the valid steps ``valid`` ``(T, B)`` from
    ``state``: the reference loop when run, a ``lstmkit::Scan`` node (recorded for
    :func:`write_scan_bodies`) when exported. The cell's parameters come last, unused by the node,
    so that the trace of ``forward`` knows every tensor it reads."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, valid: Tensor, direction: _Direction, states: int, *tensors: Tensor
    ) -> tuple[Tensor, ...]:
        return direction.run(x, valid, tuple(tensors[:states]))

    @staticmethod
    def symbolic(g: Any, x: Any, valid: Any, direction: _Direction, states: int, *tensors: Any) -> Any:
        if _recorded is None:
            raise ExportError("lstmkit's Scan placeholders are only written by export_onnx")
        _recorded.append(direction)
        state = tensors[:states]
        outputs = g.op(f"{DOMAIN}::Scan", x, valid, *state, index_i=len(_recorded) - 1, outputs=1 + states)
        outputs[0].setType(state[0].type().with_sizes([None, *state[0].type().varyingSizes()]))
        for output, initial in zip(outputs[1:], state, strict=True):
            output.setType(initial.type())
        return outputs


def run_scans(
    cells: Sequence[Cell], x: Tensor, lengths: Tensor | None, initial: tuple[Tensor, ...], zoneout: float = 0.0
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One layer of ``cells`` (one per direction, the second reversed) over time-major ``x`` ``(T, B,
    I)`` from the states ``initial`` ``(D, B, size)`` each, one ``Scan`` per direction: the output
    ``(T, D, B, H)`` (zero past each length) and the final states ``(D, B, size)``."""
    if lengths is None:
        valid = x.new_ones(x.shape[:2], dtype=torch.bool)
    else:
        valid = torch.arange(x.shape[0], device=x.device)[:, None] < lengths[None]
    outputs, finals = [], []
    for index, cell in enumerate(cells):
        direction = _Direction(cell, reverse=index == 1, zoneout=zoneout)
        state = [s[index] for s in initial]
        output, *final = _ScanPlaceholder.apply(x, valid, direction, len(state), *state, *cell.parameters())
        outputs.append(output)
        finals.append(final)
    return torch.stack(outputs, 1), tuple(torch.stack(parts) for parts in zip(*finals, strict=True))


@contextlib.contextmanager
def collecting_scans() -> Iterator[list[_Direction]]:
    """Within the block, the placeholders torch's exporter writes record their directions in the
    list yielded, by index (not thread-safe)."""
    global _recorded
    saved, _recorded = _recorded, []
    try:
        yield _recorded
    finally:
        _recorded = saved


def _step_graph(direction: _Direction, opset: int | None, prefix: str) -> Any:
    """The ONNX graph of one step of ``direction`` (:class:`_Step`), every name prefixed by ``prefix``."""
    import onnx

    cell = direction.cell
    like = next(cell.parameters())
    example = [torch.zeros(2, size, dtype=like.dtype) for size in cell.state_sizes]
    example += [torch.zeros(2, cell.input_size, dtype=like.dtype), torch.ones(2, dtype=torch.bool)]
    states = [f"state_{i}" for i in range(len(cell.state_sizes))]
    inputs, outputs = [*states, "x", "valid"], [f"next_{name}" for name in states] + ["output"]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice; TracerWarnings of the cell's checks
        try:
            torch.onnx.export(
                _Step(direction).eval(),
                tuple(example),
                buffer,
                dynamo=False,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=dict.fromkeys([*inputs, *outputs], {0: "batch"}),
                opset_version=opset,
            )
        except torch.onnx.OnnxExporterError as error:
            reason = " ".join(str(error).split("[Caused by", 1)[0].split())[:300]
            raise ExportError(
                f"the step of {type(cell).__name__} does not export as the body of an ONNX Scan ({reason}); "
                "export with dynamic_sequence=False to unroll the loop"
            ) from None
    graph = onnx.load_from_string(buffer.getvalue()).graph
    for node in graph.node:
        node.name = prefix + node.name
        node.input[:] = [prefix + name if name else name for name in node.input]
        node.output[:] = [prefix + name if name else name for name in node.output]
    for values in (graph.input, graph.output, graph.value_info, graph.initializer):
        for value in values:
            value.name = prefix + value.name
    return graph


def write_scan_bodies(path: Path, directions: Sequence[_Direction], opset: int | None) -> None:
    """Replace each ``lstmkit::Scan`` placeholder of the graph at ``path`` by ONNX's ``Scan`` over its
    direction's step (``Scan`` inputs: the states, then ``x`` and ``valid``, scanned along axis 0,
    backwards for a reversed direction; outputs: the final states, then the outputs)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    nodes = []
    for node in model.graph.node:
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        index = helper.get_node_attr_value(node, "index")
        direction = directions[index]
        x, valid, *states = node.input
        output, *finals = node.output
        way = int(direction.reverse)
        body = _step_graph(direction, opset, prefix=f"scan{index}/")
        nodes.append(
            helper.make_node(
                "Scan",
                [*states, x, valid],
                [*finals, output],
                name=f"scan{index}",
                body=body,
                num_scan_inputs=2,
                scan_input_directions=[way, way],
                scan_output_directions=[way],
            )
        )
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    imports = [entry for entry in model.opset_import if entry.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(imports)
    onnx.save(model, str(path))


__all__ = ["collecting_scans", "run_scans", "write_scan_bodies"]
