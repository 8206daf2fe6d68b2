"""What each ATen operation of a traced step becomes in C++: expressions over ``at::vec::Vectorized``
blocks (``Vec``) of one row's columns, for :mod:`.translation`.

:data:`UNARY` and :data:`BINARY` map an operation to a function of its operands' expressions;
:data:`COMPARISONS` are the binary ones whose result is a mask (all bits set where true);
:data:`VIEWS` change no values; :data:`FILLS` make a constant. The operations with arguments beyond
their operands (``add`` with ``alpha``, ``clamp``, ``where``, slicing, ...) are in
:meth:`.translation.Translator.node`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def literal(value: float) -> str:
    if math.isnan(value):
        return "Vec(std::numeric_limits<T>::quiet_NaN())"
    if math.isinf(value):
        return f"Vec({'-' if value < 0 else ''}std::numeric_limits<T>::infinity())"
    return f"Vec(T({float(value)!r}))"


UNARY: dict[object, Callable[[str], str]] = {}
BINARY: dict[object, Callable[[str, str], str]] = {}
COMPARISONS: set[object] = set()  # binary operations whose result is a mask


def _sign(x: str) -> str:
    positive = f"Vec::blendv(Vec(T(0)), Vec(T(1)), {x} > Vec(T(0)))"
    return f"Vec::blendv({positive}, Vec(T(-1)), {x} < Vec(T(0)))"


def _register() -> None:
    a = torch.ops.aten
    UNARY.update({
        a.neg.default: lambda x: f"{x}.neg()",
        a.sigmoid.default: lambda x: f"lstmkit::sigmoid({x})",
        a.tanh.default: lambda x: f"lstmkit::tanh({x})",
        a.relu.default: lambda x: f"at::vec::clamp_min({x}, Vec(T(0)))",
        a.exp.default: lambda x: f"lstmkit::fast_exp({x})",
        a.log.default: lambda x: f"{x}.log()",
        a.sqrt.default: lambda x: f"{x}.sqrt()",
        a.rsqrt.default: lambda x: f"{x}.rsqrt()",
        a.reciprocal.default: lambda x: f"{x}.reciprocal()",
        a.abs.default: lambda x: f"{x}.abs()",
        a.sgn.default: _sign,
        a.sign.default: _sign,
    })  # fmt: skip
    BINARY.update({
        a.mul.Tensor: lambda x, y: f"({x} * {y})",
        a.mul.Scalar: lambda x, y: f"({x} * {y})",
        a.div.Tensor: lambda x, y: f"({x} / {y})",
        a.div.Scalar: lambda x, y: f"({x} / {y})",
        a.maximum.default: lambda x, y: f"at::vec::maximum({x}, {y})",
        a.minimum.default: lambda x, y: f"at::vec::minimum({x}, {y})",
        a.clamp_min.default: lambda x, y: f"at::vec::maximum({x}, {y})",
        a.clamp_max.default: lambda x, y: f"at::vec::minimum({x}, {y})",
        a.sigmoid_backward.default: lambda g, y: f"({g} * lstmkit::dsigmoid({y}))",
        a.tanh_backward.default: lambda g, y: f"({g} * lstmkit::dtanh({y}))",
        a.pow.Tensor_Tensor: lambda x, y: f"{x}.pow({y})",
    })  # fmt: skip
    for name, op in (("gt", ">"), ("lt", "<"), ("ge", ">="), ("le", "<="), ("eq", "=="), ("ne", "!=")):
        for overload in ("Tensor", "Scalar"):
            BINARY[getattr(getattr(a, name), overload)] = lambda x, y, op=op: f"({x} {op} {y})"
            COMPARISONS.add(getattr(getattr(a, name), overload))


_register()
VIEWS = {
    torch.ops.aten.view.default,
    torch.ops.aten._unsafe_view.default,
    torch.ops.aten.reshape.default,
    torch.ops.aten.expand.default,
    torch.ops.aten.unsqueeze.default,
    torch.ops.aten.squeeze.dim,
    torch.ops.aten.squeeze.default,
    torch.ops.aten.alias.default,
    torch.ops.aten.clone.default,
    torch.ops.aten.detach.default,
    torch.ops.aten.contiguous.default,
    torch.ops.aten.lift_fresh_copy.default,
}
FILLS = {
    torch.ops.aten.zeros_like.default: 0.0,
    torch.ops.aten.ones_like.default: 1.0,
    torch.ops.aten.zeros.default: 0.0,
    torch.ops.aten.ones.default: 1.0,
    torch.ops.aten.new_zeros.default: 0.0,
    torch.ops.aten.new_ones.default: 1.0,
}
