"""The entry points the layers call into the native time loops (:mod:`.ops`, PyTorch operators).

Two levels:

* :func:`cell_sequence` -- stateless, tensors in, tensors out, strict: every tensor must be a
  contiguous CPU tensor of the input's dtype (float32 or float64) and the right shape, else the C++
  code raises ``TypeError``/``ValueError``.
* :func:`run_cell` -- mirrors :func:`lstmkit.engine.reference.run_sequence` for the built-in cells
  :func:`supports` accepts (same arguments, same :class:`SequenceResult`, same random draws for
  zoneout). It makes its inputs contiguous.

Every cell has a kernel in ``csrc/`` (:data:`KERNELS`) with the same two entry points, forward and
backward of a whole sequence, both registered as operators in :mod:`.ops`. Both levels need the
compiled extension: :func:`is_available` says whether it could be built.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import torch
from torch import Tensor

from ...cells import Cell, State
from ..kernels import kernel_of
from ..options import SequenceOptions, SequenceResult
from ..precision import bf16_gemms_active
from .build import load_extension
from .ops import BF16, GENERATED_PREFIX, KERNELS, sequence


def is_available() -> bool:
    """Whether the native engine can run here (compiles the extension on the first call; a
    constant to torch.compile)."""
    return load_extension() is not None


# What torch.compiler.assume_constant_result(is_available) does, without importing torch._dynamo
# (a second) whenever lstmkit is imported: torch.compile calls it instead of tracing the build.
is_available._dynamo_marked_constant = True  # type: ignore[attr-defined]


def cell_sequence(
    kernel: str,
    input: Tensor,
    params: list[Tensor | None],
    state: State,
    *,
    valid: Tensor | None = None,
    reverse: bool = False,
    carry_output: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_masks: State | None = None,
    zoneout_rate: float = 0.0,
    eps: float = 0.0,
) -> tuple[Tensor, State]:
    """Run one layer direction of a cell's ``kernel`` (a key of :data:`KERNELS`, or a generated cell's
    ``"generated:..."`` name from :func:`.ops.register_generated`) over ``input``
    ``(T, B, I)`` natively; returns ``(output, final_state)``.

    ``params``: ``weight_ih, weight_hh, bias_ih, bias_hh`` in PyTorch's layout (both biases or
    neither), then the kernel's own (``KERNELS[kernel][0]``); ``state``: one ``(B, H)`` tensor per
    state (``h`` is ``(B, P)`` with a projection ``weight_hr (P, H)``).

    ``valid`` ``(T, B)`` bool: at an invalid step the state is carried, the output is zero or, with
    ``carry_output``, the previous output. ``reverse`` walks ``t = T-1 .. 0``. ``recurrent_mask``
    (shaped like ``h``) multiplies ``h`` before the recurrent multiply. Zoneout: ``zoneout_masks``,
    one ``(T, B, size)`` mask per state (bool or 0/1), keeps the old value where set (training);
    without masks, ``zoneout_rate`` mixes ``rate * old + (1 - rate) * new`` (evaluation). ``eps``:
    the layer norms' epsilon (``layernorm_lstm``). Under :func:`~lstmkit.engine.precision.bf16_gemms`
    a float32 call runs its GEMMs on bfloat16 operands (the kernel's :data:`~.ops.BF16` form).
    """
    if kernel not in KERNELS and not kernel.startswith(GENERATED_PREFIX):
        raise ValueError(f"unknown kernel {kernel!r}: expected one of {sorted(KERNELS)}")
    if input.dtype == torch.float32 and bf16_gemms_active():
        kernel += BF16
    masks = [] if zoneout_masks is None else [m.to(input.dtype) if m.dtype == torch.bool else m for m in zoneout_masks]
    # keep what the backward needs when it may run; a jit trace bakes the flag in, so it always keeps it
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (input, *params, *state))
    store = needs_grad or torch.jit.is_tracing()
    results = sequence(
        kernel, input, [input.new_empty(0) if p is None else p for p in params], list(state), valid, recurrent_mask,
        masks, float(zoneout_rate), bool(reverse), bool(carry_output), float(eps), store,
    )  # fmt: skip
    return results[0], tuple(results[1 : 1 + len(state)])


def _floats_on_cpu(cell: Cell, inputs: Tensor | None) -> bool:
    weight = cell.weight_ih
    if weight.device.type != "cpu" or weight.dtype not in (torch.float32, torch.float64):
        return False
    return inputs is None or (inputs.device.type == "cpu" and inputs.dtype == weight.dtype)


def supports(cell: object, inputs: Tensor | None = None, *, trace: bool = False) -> bool:
    """Whether :func:`run_cell` can run ``cell``: :class:`RNNCell` (tanh or relu),
    :class:`LSTMCell` (with or without a projection), :class:`PeepholeLSTMCell`, :class:`LayerNormLSTMCell`,
    :class:`GRUCell` (either ``reset_after``) -- not subclasses -- with their standard activations,
    float32/float64 on the CPU, no gate tracing. Does not build the extension (see :func:`is_available`)."""
    if trace or kernel_of(cell) is None:
        return False
    return _floats_on_cpu(cell, inputs)


def run_cell(cell: Cell, inputs: Tensor, state: State, **options: Any) -> SequenceResult:
    """:func:`lstmkit.engine.reference.run_sequence` natively, for a cell :func:`supports` accepts.

    Same arguments (except ``trace``) and result; zoneout masks are drawn exactly as the reference
    draws them, so under the same seed both engines compute the same thing.
    """
    if not supports(cell, inputs):
        raise ValueError(f"the native engine does not support {cell!r} with {inputs.dtype} input on {inputs.device}")
    kernel = kernel_of(cell)
    return _run(cell, kernel, KERNELS[kernel][0], inputs, state, options)


def run_generated(cell: Cell, kernel: str, tensors: tuple[str, ...], inputs: Tensor, state: State, **options: Any
                  ) -> SequenceResult:  # fmt: skip
    """:func:`run_cell` for a cell whose step :mod:`~lstmkit.engine.native.generated` compiled into
    the operators' ``kernel`` (:func:`.ops.register_generated`); ``tensors``: the names of the
    parameters and buffers that step takes."""
    return _run(cell, kernel, tensors, inputs, state, options)


def _run(
    cell: Cell,
    kernel: str,
    own: tuple[str, ...],
    inputs: Tensor,
    state: State,
    options: dict[str, Any],
) -> SequenceResult:
    options = SequenceOptions(**options)
    state = options.check(cell, inputs, state)
    masks = options.zoneout_masks(state, inputs.shape[0])
    bias_ih, bias_hh = cell.bias_ih, cell.bias_hh
    if (bias_ih is None) != (bias_hh is None):  # one bias per gate (Keras layers): the other is zero
        bias_ih = torch.zeros_like(bias_hh) if bias_ih is None else bias_ih
        bias_hh = torch.zeros_like(bias_ih) if bias_hh is None else bias_hh
    params = [cell.weight_ih, cell.weight_hh, bias_ih, bias_hh, *(attrgetter(name)(cell) for name in own)]
    output, final = cell_sequence(
        kernel,
        inputs.contiguous(),
        [None if p is None else p.contiguous() for p in params],
        tuple(s.contiguous() for s in state),
        valid=None if options.valid is None else options.valid.to(torch.bool).contiguous(),
        reverse=options.reverse,
        carry_output=options.carry_output,
        recurrent_mask=None if options.recurrent_mask is None else options.recurrent_mask.contiguous(),
        zoneout_masks=None if masks[0] is None else tuple(masks),
        zoneout_rate=options.zoneout,
        eps=getattr(cell, "eps", 0.0),
    )
    return SequenceResult(output, final)
