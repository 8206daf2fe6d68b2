"""A cell's step and its vector-Jacobian product as ATen graphs, traced with
:func:`torch.fx.experimental.proxy_tensor.make_fx` on example tensors of :data:`TRACE_BATCH` rows,
for :mod:`.translation`; what cannot be traced or translated raises :class:`Untranslatable`."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, fx

from ....cells import Cell
from ...compiling import PointwiseModule
from ..ops import STANDARD

TRACE_BATCH = 3  # rows of the example tensors the step is traced with


class Untranslatable(ValueError):
    """The cell's step uses something the C++ translation does not cover (the message says what)."""


def trace(cell: Cell) -> tuple[fx.GraphModule, fx.GraphModule, list[str]]:
    """The step and its vector-Jacobian product as ATen graphs, and the tensors they read."""
    from torch.fx.experimental.proxy_tensor import make_fx

    module = PointwiseModule(cell)
    named = [(n, t) for n, t in (*cell.named_parameters(), *cell.named_buffers())]
    for name, tensor in named:
        if not tensor.is_floating_point():
            raise Untranslatable(f"{name} is a {tensor.dtype} tensor")
    generator = torch.Generator().manual_seed(0)
    width = cell.gate_count * cell.hidden_size

    def example(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator)

    projections = [example(TRACE_BATCH, width), example(TRACE_BATCH, width)]
    states = [example(TRACE_BATCH, size) for size in cell.state_sizes]
    count = len(states)

    def run(names: Sequence[str], xg, hg, state, tensors):
        return module.functional(names, tensors, xg, hg, state)

    def trace(function: Callable, args: list[Tensor]) -> fx.GraphModule:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                return make_fx(function)(*args)
        except Exception as error:  # data-dependent control flow, unsupported Python, ...
            raise Untranslatable(f"tracing pointwise failed ({type(error).__name__}: {error})") from error

    names = [n for n, _ in named]
    tensors = [t.detach().float() for _, t in named]
    forward = trace(
        lambda xg, hg, *rest: run(names, xg, hg, rest[:count], rest[count:]), [*projections, *states, *tensors]
    )
    read = [node.users != {} for node in forward.graph.find_nodes(op="placeholder")][2 + count :]
    used = [n for n, r in zip(names, read, strict=True) if r]
    for name in used:
        if name in STANDARD:
            raise Untranslatable(f"pointwise uses {name} itself")
    tensors = [t for t, r in zip(tensors, read, strict=True) if r]
    forward = trace(
        lambda xg, hg, *rest: run(used, xg, hg, rest[:count], rest[count:]), [*projections, *states, *tensors]
    )

    def vjp(xg, hg, *rest):
        state, chosen, cotangents = rest[:count], rest[count : count + len(used)], rest[count + len(used) :]
        _, pull = torch.func.vjp(lambda *a: run(used, a[0], a[1], a[2], a[3]), xg, hg, tuple(state), tuple(chosen))
        d_xg, d_hg, d_state, d_chosen = pull(tuple(cotangents))
        return (d_xg, d_hg, *d_state, *d_chosen)

    cotangents = [example(TRACE_BATCH, size) for size in cell.state_sizes]
    backward = trace(vjp, [*projections, *states, *tensors, *cotangents])
    return forward, backward, used


def summed_node(graph: fx.Graph) -> fx.Node | None:
    """The node ``xg + hg`` when the two projections enter the step only through it."""
    xg, hg = list(graph.find_nodes(op="placeholder"))[:2]
    users = set(xg.users) | set(hg.users)
    if len(users) != 1:
        return None
    (node,) = users
    plain = node.target is torch.ops.aten.add.Tensor and node.kwargs.get("alpha", 1) == 1
    return node if plain and set(node.args) == {xg, hg} and len(xg.users) == len(hg.users) == 1 else None
