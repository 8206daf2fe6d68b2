"""A cell's traced step written as the C++ struct of a generated kernel.

:class:`Translator` writes the nodes of one traced graph (:mod:`.tracing`) as C++ statements over
``at::vec::Vectorized`` blocks of ``hidden_size`` columns (:mod:`.aten_ops` for the element-wise
operations); :func:`translate` writes the step and its vector-Jacobian product into the struct the
loops of ``csrc/generated_cell.h`` take, or raises :class:`~.tracing.Untranslatable` saying why not.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, fx

from ....cells import Cell
from ...compiling import parametrize_in
from .aten_ops import BINARY, COMPARISONS, FILLS, UNARY, VIEWS, literal
from .tracing import TRACE_BATCH, Untranslatable, summed_node, trace

# ----------------------------------------------------------------------------------------------
# values of the traced graphs as C++ expressions


@dataclass
class _Value:
    """A tensor of the step as C++ ``Vec`` expressions, one per block of ``hidden_size`` columns.

    kind: ``row`` (one row of a (B, width) tensor), ``col`` (a 1-D parameter, the same for every
    row), ``sum`` (a parameter-shaped sum over the batch: the blocks are this row's terms),
    ``const`` (one expression, any width). ``mask``: the blocks are comparison results (all bits
    set where true), usable only by ``where`` and conversion to numbers.
    """

    kind: str
    blocks: list[str]
    mask: bool = False

    def block(self, k: int) -> str:
        return self.blocks[0] if self.kind == "const" else self.blocks[k]


class Translator:
    """Writes the nodes of one traced graph as C++ statements, given its placeholders' values."""

    def __init__(self, hidden_size: int, prefix: str) -> None:
        self.H, self.prefix = hidden_size, prefix
        self.lines: list[str] = []
        self.values: dict[fx.Node, object] = {}
        self.emitted = 0  # values written so far: their names are prefix + number + _ + block

    # helpers ------------------------------------------------------------------------------

    def _shape(self, node: fx.Node) -> tuple[int, ...]:
        value = node.meta.get("val")
        if not isinstance(value, Tensor):
            raise Untranslatable(f"{node.format_node()} does not make a tensor")
        return tuple(value.shape)

    def _blocks(self, width: int, what: str) -> int:
        if width % self.H:
            raise Untranslatable(f"{what} is {width} wide, not a multiple of hidden_size {self.H}")
        return width // self.H

    def _kind_of(self, shape: tuple[int, ...]) -> tuple[str, int]:
        """(kind, blocks) a tensor of this shape can be: a row, a parameter, a number."""
        if len(shape) == 0 or all(size == 1 for size in shape):
            return "const", 1
        if len(shape) == 2 and shape[0] == TRACE_BATCH:
            return "row", self._blocks(shape[1], "a tensor")
        if len(shape) == 1 or (len(shape) == 2 and shape[0] == 1):
            return "col", self._blocks(shape[-1], "a parameter-shaped tensor")
        raise Untranslatable(f"a tensor of shape {list(shape)} is neither one row per sequence nor a parameter")

    def _value(self, item: object) -> _Value:
        if isinstance(item, fx.Node):
            value = self.values[item]
            if not isinstance(value, _Value):
                raise Untranslatable(f"{item.format_node()} is not a tensor")
            return value
        if isinstance(item, (bool, int, float)):
            return _Value("const", [literal(float(item))])
        raise Untranslatable(f"argument {item!r} is not a tensor or a number")

    def _emit(self, kind: str, expressions: Sequence[str], mask: bool = False) -> _Value:
        names = []
        self.emitted += 1
        for k, expression in enumerate(expressions):
            name = f"{self.prefix}{self.emitted}_{k}"
            self.lines.append(f"const Vec {name} = {expression};")
            names.append(name)
        return _Value(kind, names, mask)

    def _elementwise(
        self, node: fx.Node, args: Sequence[_Value], make: Callable[..., str], mask: bool = False, selects: bool = False
    ):
        """One node applied block by block; ``mask``: it makes a mask; ``selects``: it takes one (where)."""
        kinds = {a.kind for a in args}
        if "sum" in kinds:  # sum_b(x_b) stays a sum under linear maps and products with batch-free factors
            a = torch.ops.aten
            if node.target in (a.add.Tensor, a.sub.Tensor, a.neg.default):
                linear = kinds == {"sum"}
            elif node.target in (a.mul.Tensor, a.mul.Scalar):
                linear = [v.kind for v in args].count("sum") == 1 and kinds <= {"sum", "col", "const"}
            elif node.target in (a.div.Tensor, a.div.Scalar):
                linear = args[0].kind == "sum" and args[1].kind in ("col", "const")
            else:
                linear = False
            if not linear:
                raise Untranslatable(f"{node.format_node()} is not linear in a sum over the batch")
            kind = "sum"
        else:
            kind = "row" if "row" in kinds else "col" if "col" in kinds else "const"
        counts = {len(a.blocks) for a in args if a.kind != "const"}
        if len(counts) > 1:
            raise Untranslatable(f"{node.format_node()} mixes widths {sorted(c * self.H for c in counts)}")
        count = counts.pop() if counts else 1
        if any(a.mask for a in args) and not selects:
            raise Untranslatable(f"{node.format_node()} computes with a boolean tensor")
        return self._emit(kind, [make(*(a.block(k) for a in args)) for k in range(count)], mask)

    # one node -----------------------------------------------------------------------------

    def node(self, node: fx.Node) -> None:
        if node.op == "get_attr":
            constant = getattr(node.graph.owning_module, node.target)
            if isinstance(constant, Tensor) and constant.numel() == 1 and constant.is_floating_point():
                self.values[node] = _Value("const", [literal(constant.item())])
                return
            raise Untranslatable(f"the step uses a tensor it does not get as a parameter ({node.target})")
        if node.op != "call_function":
            raise Untranslatable(f"unexpected {node.op} node {node.format_node()}")
        self.values[node] = self._call(node, node.target, node.args, node.kwargs)

    def _call(self, node: fx.Node, target, args, kwargs):  # noqa: C901 - one case per operation
        a = torch.ops.aten
        if target is operator.getitem:
            return self.values[args[0]][args[1]]
        if target in UNARY:
            return self._elementwise(node, [self._value(args[0])], UNARY[target])
        if target in BINARY:
            mask = target in COMPARISONS
            return self._elementwise(node, [self._value(args[0]), self._value(args[1])], BINARY[target], mask)
        if target in (a.add.Tensor, a.sub.Tensor, a.add.Scalar, a.sub.Scalar):
            alpha = kwargs.get("alpha", 1)
            sign = "+" if target in (a.add.Tensor, a.add.Scalar) else "-"
            other = self._value(args[1])
            if alpha != 1:
                other = self._elementwise(node, [other, self._value(alpha)], BINARY[a.mul.Tensor])
            return self._elementwise(node, [self._value(args[0]), other], lambda x, y: f"({x} {sign} {y})")
        if target in (a.rsub.Scalar, a.rsub.Tensor):
            if kwargs.get("alpha", 1) != 1:
                raise Untranslatable("rsub with alpha")
            return self._elementwise(node, [self._value(args[1]), self._value(args[0])], lambda x, y: f"({x} - {y})")
        if target is a.pow.Tensor_Scalar:
            exponent = float(args[1])
            if exponent == 2.0:
                return self._elementwise(node, [self._value(args[0])], lambda x: f"({x} * {x})")
            return self._elementwise(node, [self._value(args[0])], lambda x: f"{x}.pow({literal(exponent)})")
        if target in (a.clamp.default, a.clamp.Tensor):
            value = self._value(args[0])
            low, high = (list(args[1:]) + [kwargs.get("min"), kwargs.get("max")])[:2]
            if low is not None:
                value = self._elementwise(node, [value, self._value(low)], BINARY[a.maximum.default])
            if high is not None:
                value = self._elementwise(node, [value, self._value(high)], BINARY[a.minimum.default])
            return value
        if target is a.threshold_backward.default:
            grad, x, threshold = self._value(args[0]), self._value(args[1]), self._value(args[2])
            return self._elementwise(
                node, [grad, x, threshold], lambda g, v, t: f"Vec::blendv({g}, Vec(T(0)), {v} <= {t})"
            )
        if target in (a.where.self, a.where.ScalarOther, a.where.ScalarSelf, a.where.Scalar):
            condition = self._value(args[0])
            if not condition.mask:
                raise Untranslatable("where() with a condition that is not a comparison")
            return self._elementwise(
                node,
                [condition, self._value(args[1]), self._value(args[2])],
                lambda c, x, y: f"Vec::blendv({y}, {x}, {c})",
                selects=True,
            )
        if target in (a.logical_and.default, a.logical_and_.default, a.logical_or.default, a.logical_or_.default):
            values = [self._value(args[0]), self._value(args[1])]
            if not all(v.mask for v in values):
                raise Untranslatable(f"{node.format_node()} on tensors that are not comparisons")
            op = "&" if target in (a.logical_and.default, a.logical_and_.default) else "|"
            return self._elementwise(node, values, lambda x, y: f"({x} {op} {y})", mask=True, selects=True)
        if target is a._to_copy.default:
            value = self._value(args[0])
            dtype = kwargs.get("dtype")
            if value.mask and dtype is not None and dtype.is_floating_point:
                return self._emit(value.kind, [f"Vec::blendv(Vec(T(0)), Vec(T(1)), {b})" for b in value.blocks])
            if dtype is None or dtype in (torch.float32, torch.float64):
                return value
            raise Untranslatable(f"conversion to {dtype}")
        if target in FILLS:
            return _Value("const", [literal(FILLS[target])])
        if target in (a.full_like.default, a.full.default, a.new_full.default):
            return _Value("const", [literal(float(args[-1]))])
        if target is a.scalar_tensor.default:
            return _Value("const", [literal(float(args[0]))])
        if target in VIEWS:
            return self._view(node, self._value(args[0]))
        if target in (a.split.Tensor, a.split_with_sizes.default):
            return self._split(node, self._value(args[0]), args[1], args[2] if len(args) > 2 else kwargs.get("dim", 0))
        if target is a.slice.Tensor:
            return self._slice(node, self._value(args[0]), *args[1:])
        if target is a.slice_backward.default:  # the gradient of a slice: zeros around it
            grad, sizes, dim, start, end, step = self._value(args[0]), *args[1:]
            rank = len(sizes)
            width = sizes[-1]
            begin, stop, stride = slice(start, end, step).indices(width)
            if dim % rank != rank - 1 or stride != 1 or grad.kind != "row":
                raise Untranslatable(f"{node.format_node()} is not the gradient of a slice of gate blocks")
            zero = literal(0.0)
            first, last = self._blocks(begin, "a slice start"), self._blocks(stop, "a slice end")
            blocks = [zero] * first + [grad.block(k) for k in range(last - first)]
            return _Value("row", blocks + [zero] * (self._blocks(width, "a tensor") - last))
        if target is a.cat.default:
            return self._cat(node, [self._value(item) for item in args[0]], args[1] if len(args) > 1 else 0)
        if target is a.sum.dim_IntList:
            value, dims = self._value(args[0]), list(args[1] or [])
            if value.kind != "row" or [d % 2 for d in dims] != [0]:
                raise Untranslatable(f"{node.format_node()} reduces over something other than the batch")
            return _Value("sum", value.blocks)
        name = getattr(target, "_opname", None) or getattr(target, "__name__", str(target))
        raise Untranslatable(f"operation {name} has no C++ translation")

    def _last_dim(self, node: fx.Node, value: _Value, dim: int) -> None:
        rank = len(self._shape(node.args[0]))
        if value.kind == "const" or dim % rank != rank - 1:
            raise Untranslatable(f"{node.format_node()} does not split or join the last dimension")

    def _view(self, node: fx.Node, value: _Value) -> _Value:
        kind, count = self._kind_of(self._shape(node))
        if value.kind == "const" or (kind == "const" and len(value.blocks) == 1):
            return value
        if count != len(value.blocks) or (value.kind == "row" and kind != "row"):
            raise Untranslatable(f"{node.format_node()} reshapes the step's tensors")
        return _Value(value.kind if value.kind == "sum" else kind, value.blocks, value.mask)

    def _split(self, node: fx.Node, value: _Value, sizes, dim: int) -> list[_Value]:
        self._last_dim(node, value, dim)
        width = len(value.blocks) * self.H
        sizes = [sizes] * math.ceil(width / sizes) if isinstance(sizes, int) else list(sizes)
        parts, start = [], 0
        for size in sizes:
            size = min(size, width - start)
            first, count = self._blocks(start, "a split point"), self._blocks(size, "a split part")
            parts.append(_Value(value.kind, value.blocks[first : first + count], value.mask))
            start += size
        return parts

    def _slice(self, node: fx.Node, value: _Value, dim: int = 0, start=None, end=None, step: int = 1) -> _Value:
        self._last_dim(node, value, dim)
        width = len(value.blocks) * self.H
        begin, stop, stride = slice(start, end, step).indices(width)
        if stride != 1:
            raise Untranslatable("a strided slice")
        first, last = self._blocks(begin, "a slice start"), self._blocks(stop, "a slice end")
        return _Value(value.kind, value.blocks[first:last], value.mask)

    def _cat(self, node: fx.Node, values: list[_Value], dim: int) -> _Value:
        kinds = {v.kind for v in values}
        if len(kinds) != 1 or "const" in kinds:
            raise Untranslatable(f"{node.format_node()} joins tensors of different kinds")
        rank = len(self._shape(node))
        if dim % rank != rank - 1:
            raise Untranslatable(f"{node.format_node()} does not join along the last dimension")
        return _Value(kinds.pop(), [b for v in values for b in v.blocks])


# ----------------------------------------------------------------------------------------------
# the C++ struct


@dataclass(frozen=True)
class Translation:
    """A cell's step in C++: the module's source and the cell's tensors it takes, in order."""

    source: str
    tensors: tuple[str, ...]  # parameters and buffers pointwise reads, after the four standard ones
    summed: bool  # xg and hg enter the step only as their sum (the loop then keeps xg alone)


def _translate_graph(
    graph: fx.Graph, hidden_size: int, prefix: str, summed: bool, states: int, tensor_blocks: Sequence[int]
) -> tuple[Translator, list]:
    """Statements for every node of ``graph`` and the values of its outputs."""
    t = Translator(hidden_size, prefix)
    placeholders = list(graph.find_nodes(op="placeholder"))
    gates = t._kind_of(tuple(placeholders[0].meta["val"].shape))[1]
    loads = {"xg": ("in.xg", "in.bias"), "hg": ("in.hg", "in.bias_hh")}
    if summed:
        node = summed_node(graph)
        if node is None:
            raise Untranslatable("xg and hg enter the step differently in its backward")
        t.values[node] = _Value(
            "row", [f"(in.load(in.xg, {k}, j, n) + in.load(in.bias, {k}, j, n))" for k in range(gates)]
        )
    else:
        for placeholder, (data, bias) in zip(placeholders[:2], loads.values(), strict=True):
            blocks = [f"(in.load({data}, {k}, j, n) + in.load({bias}, {k}, j, n))" for k in range(gates)]
            t.values[placeholder] = t._emit("row", blocks)
    for s, placeholder in enumerate(placeholders[2 : 2 + states]):
        t.values[placeholder] = t._emit("row", [f"in.load(in.state[{s}], 0, j, n)"])
    for q, (placeholder, blocks) in enumerate(zip(placeholders[2 + states :], tensor_blocks, strict=False)):
        t.values[placeholder] = t._emit("col", [f"in.load(in.params[{q}], {m}, j, n)" for m in range(blocks)])
    for s, placeholder in enumerate(placeholders[2 + states + len(tensor_blocks) :]):
        t.values[placeholder] = _Value("row", [f"d_new[{s}]"])
    for node in graph.nodes:
        if node.op in ("placeholder", "output") or node in t.values:
            continue
        t.node(node)
    (outputs,) = next(iter(graph.find_nodes(op="output"))).args
    return t, [t._value(item) for item in outputs]


def _assign(target: str, value: _Value, count: int, what: str, start: int = 0) -> list[str]:
    """``target[start + k] = block k`` for a row-wide output of ``count`` blocks."""
    if value.kind == "sum" or (value.kind != "const" and len(value.blocks) != count):
        raise Untranslatable(f"{what} has the wrong shape")
    if value.mask:
        raise Untranslatable(f"{what} is boolean")
    return [f"{target}[{start + k}] = {value.block(k)};" for k in range(count)]


def translate(cell: Cell) -> Translation:
    """The C++ module source of ``cell``'s step, or :class:`Untranslatable` saying why not."""
    H = cell.hidden_size
    if len(cell.state_sizes) > 2 or any(size != H for size in cell.state_sizes):
        raise Untranslatable(f"states of sizes {cell.state_sizes}: the native loop takes one or two of hidden_size")
    if parametrize_in(cell):
        raise Untranslatable("a parametrised tensor is computed on access")
    forward, backward, used = trace(cell)
    tensors = dict((*cell.named_parameters(), *cell.named_buffers()))
    blocks = []
    for name in used:
        if tensors[name].dim() != 1 or tensors[name].shape[0] % H:
            raise Untranslatable(f"{name} has shape {list(tensors[name].shape)}, not (k * hidden_size,)")
        blocks.append(tensors[name].shape[0] // H)
    states, gates = len(cell.state_sizes), cell.gate_count
    summed = summed_node(forward.graph) is not None
    f, next_state = _translate_graph(forward.graph, H, "f", summed, states, blocks)
    b, grads = _translate_graph(backward.graph, H, "b", summed, states, blocks)
    if summed and grads[0] is not grads[1] and grads[0].blocks != grads[1].blocks:
        raise Untranslatable("xg and hg get different gradients although they enter as a sum")
    forward_lines = f.lines + [
        line for s, v in enumerate(next_state) for line in _assign("next", v, 1, f"state {s}", s)
    ]
    backward_lines = b.lines + _assign("d_xg", grads[0], gates, "d xg") + _assign("d_hg", grads[1], gates, "d hg")
    for s in range(states):
        backward_lines += _assign("d_old", grads[2 + s], 1, f"the gradient of state {s}", s)
    offset = 0
    for name, count, grad in zip(used, blocks, grads[2 + states :], strict=True):
        if grad.kind == "sum":
            backward_lines += [
                f"lstmkit::accumulate(sums + {offset + m} * in.H + j, n, {grad.blocks[m]});" for m in range(count)
            ]
        elif not (grad.kind == "const" and grad.blocks[0] == literal(0.0)):
            raise Untranslatable(f"the gradient of {name} is not a sum over the batch")
        offset += count
    source = _render(cell, states, gates, summed, blocks, forward_lines, backward_lines)
    return Translation(source, tuple(used), summed)


def _render(cell, states, gates, summed, blocks, forward_lines, backward_lines) -> str:
    indent = "\n    "
    vec = "at::vec::Vectorized<T>"
    return f"""// {type(cell).__module__}.{type(cell).__qualname__}.pointwise, translated by lstmkit (generated.py).
#include "generated_cell.h"

struct GeneratedCell {{
  static constexpr int kStates = {states};
  static constexpr int kGates = {gates};
  static constexpr bool kSummed = {"true" if summed else "false"};
  static constexpr int kParams = {len(blocks)};
  static constexpr int64_t kParamBlocks[] = {{{", ".join(map(str, blocks or [0]))}}};

  template <typename T>
  static void forward(const lstmkit::StepIn<T>& in, int64_t j, int64_t n, {vec}* next) {{
    using Vec = {vec};
    {indent.join(forward_lines)}
  }}

  template <typename T>
  static void backward(const lstmkit::StepIn<T>& in, const {vec}* d_new, int64_t j, int64_t n, {vec}* d_xg,
                       {vec}* d_hg, {vec}* d_old, T* sums) {{
    using Vec = {vec};
    {indent.join(backward_lines)}
  }}
}};

LSTMKIT_GENERATED_MODULE(GeneratedCell)
"""
