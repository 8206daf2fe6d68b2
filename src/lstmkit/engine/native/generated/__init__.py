"""User-defined cells compiled into the native time loop: ``pointwise`` translated to C++.

A cell whose maths is all in :meth:`lstmkit.Cell.pointwise` is traced twice with
:func:`torch.fx.experimental.proxy_tensor.make_fx` -- the step, and its vector-Jacobian product
through :func:`torch.func.vjp` -- and each ATen operation of the two graphs is written as
``at::vec::Vectorized`` code over one row's columns ``[j, j + n)``. The C++
struct goes into the loops of ``csrc/generated_cell.h``, which are those of the built-in kernels:
input projection as one GEMM, packed recurrent GEMM per step, one pass per step over the rows,
weight gradients as single GEMMs, masks, zoneout and reverse from ``loop.h``. The module is built
with ``torch.utils.cpp_extension`` under a name made from the source's hash, so it is compiled once
per kind of cell and machine and then loaded from the cache.

What translates: element-wise maths on tensors of one row (``(B, k*H)``), on the cell's own 1-D
parameters and buffers (``k*H`` wide, broadcast over the batch) and on Python numbers -- the
arithmetic operators, ``sigmoid``, ``tanh``, ``relu``, ``exp``, ``log``, ``sqrt``, ``rsqrt``,
``abs``, ``clamp``, ``maximum``/``minimum``, powers, comparisons and ``where`` -- and the
splitting and joining of gate blocks along the last dimension at multiples of ``hidden_size``
(``chunk``, ``split``, slices, ``cat``). Up to two states (``h`` and one more), each
``hidden_size`` wide. Anything else (a reduction over the features, random numbers, a captured
tensor, another shape) raises :class:`Untranslatable` and the cell runs on the Python fused loop.

In four steps, one module each: :mod:`.tracing` (the ATen graphs), :mod:`.aten_ops` (what each
element-wise operation becomes in C++), :mod:`.translation` (the graphs as the C++ struct),
:mod:`.kernels` (building, registering with the operators of :mod:`lstmkit.engine.native.ops`,
caching per kind of cell; :func:`why_not` says why a cell runs on the Python loop).
"""

from .kernels import build, kernel_for, why_not
from .tracing import Untranslatable
from .translation import Translation, translate

__all__ = ["Translation", "Untranslatable", "build", "kernel_for", "translate", "why_not"]
