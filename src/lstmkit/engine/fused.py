"""The ``"fused"`` engine: a fused time loop for any cell whose maths is in :meth:`Cell.pointwise` --
user cells included.

The whole sequence (one layer, one direction) is one :class:`torch.autograd.Function`,
:class:`FusedSequenceFunction`:

* forward: the input projection is one matrix multiply over all ``T*B`` rows; each step one
  ``addmm`` (the recurrent multiply) and the cell's own ``pointwise``, zoneout and masking, run
  without building an autograd graph. Kept for backward: the projections ``xg``, every step's ``hg``
  and the state entering it.
* backward: one reverse loop. Per step the vector-Jacobian product of the step after the multiply
  (pointwise, zoneout, masking) is taken by recomputing it under autograd from the saved tensors,
  and the recurrent multiply is propagated by one matrix multiply. The weight gradients are single
  matrix multiplies over all steps at the end (``dW_hh = dHG^T H`` over the stacked ``T*B`` rows,
  ``dW_ih`` likewise, bias gradients as sums), as cuDNN and haste do. Parameters that ``pointwise``
  uses itself (peephole weights, a projection, ...) get their gradients from the per-step products,
  summed over steps.

**Compiled steps.** The per-step work in Python is a dozen small tensor operations each way, which
is what a small batch spends its time on. With compilation on (``$LSTMKIT_COMPILE``, see
:mod:`.compiling`), a cell whose step translates to C++ (:mod:`lstmkit.engine.native.generated`)
runs its whole sequence in the native loop instead of this one; any other has its steps compiled by
TorchInductor (:mod:`.fused_inductor`).

:func:`why_not` says which calls this engine runs: a cell whose ``step``, ``project_input`` and
``project_hidden`` are :class:`Cell`'s own (its maths all in ``pointwise``; also
``GRUCell(reset_after=True)``), input of the cell's floating dtype (float32/float64) and device,
no gate tracing. ``pointwise`` may use the cell's parameters and buffers, and may draw random
numbers (the backward replays each step's generator state; such a cell is never compiled). A tensor
requiring gradients that ``pointwise`` captures from elsewhere gets no gradient from this engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx
from torch.overrides import TorchFunctionMode

from ..cells import Cell, GRUCell, State
from . import fused_inductor
from .compiling import compile_mode
from .native import generated, is_available, run_generated
from .native.ops import bind_tensors, legacy_batched
from .options import SequenceOptions, SequenceResult, time_steps, zone_out_and_mask
from .reference import recomputed_gradients
from .reference import run_sequence as run_reference

_FLOATS = (torch.float32, torch.float64)


# ----------------------------------------------------------------------------------------------
# what the engine runs


def why_not(cell: object, inputs: Tensor | None = None, *, trace: bool = False) -> str | None:
    """Why :func:`run_cell` cannot run this call (``None`` when it can)."""
    if not isinstance(cell, Cell):
        return f"{type(cell).__name__} is not an lstmkit.Cell"
    if trace:
        return "gate tracing runs on the reference loop"
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return "under torch.compile, torch.export or torch.jit tracing the reference loop is traced instead"
    kind = type(cell)
    for method in ("step", "project_input", "project_hidden"):
        if method == "step" and kind.step is GRUCell.step and cell.reset_after:
            continue  # GRUCell.step is Cell.step when the reset gate acts after the multiply
        if getattr(kind, method) is not getattr(Cell, method):
            return f"{kind.__name__} overrides Cell.{method}, so its maths is not all in pointwise"
    weight = cell.weight_ih
    if weight.dtype not in _FLOATS:
        return f"its weights are {weight.dtype}, not float32/float64"
    if inputs is not None and (inputs.dtype != weight.dtype or inputs.device != weight.device):
        return f"the input is {inputs.dtype} on {inputs.device}, the cell {weight.dtype} on {weight.device}"
    return None


# ----------------------------------------------------------------------------------------------
# one step


@dataclass(frozen=True)
class _Options:
    """What shapes the step's maths, besides the cell (part of the compiled-step cache key)."""

    carry_output: bool  # (with valid) a masked step repeats the previous output
    rate: float  # zoneout rate
    zoneout_train: bool  # masks drawn (training) or the expectation (evaluation)
    masked: bool  # valid given
    recurrent_mask: bool
    bias_hh: bool
    states: int

    def zone_out_and_mask(self, state, new_state, keep, valid, previous) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """:func:`~lstmkit.engine.options.zone_out_and_mask` with these options."""
        return zone_out_and_mask(
            state, new_state, keep, valid, previous, zoneout=self.rate, carry_output=self.carry_output
        )


@dataclass
class _Bound:
    """The per-call constants of the step functions."""

    cell: Cell
    weight_hh: Tensor
    bias_hh: Tensor | None
    mask: Tensor | None
    names: tuple[str, ...]  # parameters and buffers of the cell, in this order in ``tensors``
    tensors: tuple[Tensor, ...]
    wanted: tuple[int, ...]  # indices into ``tensors`` whose gradients backward computes
    used: tuple[int, ...] = ()  # indices into ``tensors`` that pointwise reads (found at the first step)

    def recurrent(self, h: Tensor, out: Tensor) -> Tensor:
        """``hg = W_hh (h * mask) + b_hh`` into ``out``: the recurrent multiply of one step."""
        if self.mask is not None:
            h = h * self.mask
        if self.bias_hh is None:
            return torch.mm(h, self.weight_hh.t(), out=out)
        return torch.addmm(self.bias_hh, h, self.weight_hh.t(), out=out)


class _EagerSteps:
    """The step functions run op by op (no compilation)."""

    def __init__(self, cell: Cell, options: _Options) -> None:
        self.cell, self.options = cell, options

    def forward(self, bound: _Bound, xg, state, keep, valid, previous, hg_out):
        hg = bound.recurrent(state[0], hg_out)
        new_state, _ = self.cell.pointwise(xg, hg, state)
        new_state, output = self.options.zone_out_and_mask(state, new_state, keep, valid, previous)
        return hg, new_state, output

    def backward(self, bound: _Bound, xg, hg, state, keep, valid, grad_state, grad_out, sums):
        options = self.options
        carry = options.carry_output and options.masked
        with torch.enable_grad():
            xg = xg.detach().requires_grad_()
            hg = hg.detach().requires_grad_()
            state = tuple(s.detach().requires_grad_() for s in state)
            previous = torch.zeros_like(grad_out).requires_grad_() if carry else None
            new_state, _ = self.cell.pointwise(xg, hg, state)
            new_state, output = options.zone_out_and_mask(state, new_state, keep, valid, previous)
            if output is None:
                outs, grads = list(new_state), list(grad_state)
                grads[0] = grads[0] + grad_out
            else:
                outs, grads = [*new_state, output], [*grad_state, grad_out]
            inputs = [xg, hg, *state, *([previous] if carry else []), *(bound.tensors[k] for k in bound.wanted)]
            used = [k for k, o in enumerate(outs) if o.requires_grad]
            found = _vjp([outs[k] for k in used], inputs, [grads[k] for k in used])
        count = options.states
        head = 2 + count + carry  # the step's tensor inputs: gradients materialised (zero if unused)
        d_xg, d_hg, *d_state = (
            torch.zeros_like(i) if g is None else g for g, i in zip(found[:head], inputs, strict=False)
        )
        d_previous = d_state.pop() if carry else None
        d_h = torch.mm(d_hg, bound.weight_hh)
        d_state[0] = d_state[0] + (d_h if bound.mask is None else d_h * bound.mask)
        sums = [s if g is None else g if s is None else s + g for s, g in zip(sums, found[head:], strict=True)]
        return d_xg, d_hg, d_state, d_previous, sums


def _vjp(outputs: list[Tensor], inputs: list[Tensor], grads: list[Tensor]) -> tuple[Tensor | None, ...]:
    """``torch.autograd.grad(outputs, inputs, grads, allow_unused=True)`` without its Python-side
    argument checks (as costly as a small step's backward itself); the
    gradients here have the outputs' shapes by construction."""
    if _engine_run_backward is None:
        return torch.autograd.grad(outputs, inputs, grads, allow_unused=True)
    return _engine_run_backward(tuple(outputs), tuple(grads), False, False, tuple(inputs), True, accumulate_grad=False)


try:
    from torch.autograd.graph import _engine_run_backward
except ImportError:  # pragma: no cover - older or newer torch: the public function
    _engine_run_backward = None


class _Reads(TorchFunctionMode):
    """Records every tensor an operation receives: which parameters and buffers ``pointwise`` reads."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        stack = [*args, *kwargs.values()]
        while stack:
            item = stack.pop()
            if isinstance(item, Tensor):
                self.seen.add(id(item))
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
        return func(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# the autograd Function


@dataclass
class _Spec:
    """Everything of a call that is not a differentiable tensor."""

    cell: Cell
    options: _Options
    reverse: bool
    names: tuple[str, ...]  # the cell's parameters then buffers, in this order after the states
    parameters: int  # how many of ``names`` are parameters
    valid: Tensor | None
    recurrent_mask: Tensor | None
    keep: list[Tensor] | None  # zoneout masks (T, B, size) per state, training only
    grad_enabled: bool  # autograd on at the call
    rng: list[Tensor] | None = field(default=None)  # generator state before each step (random pointwise)


class FusedSequenceFunction(torch.autograd.Function):
    """A whole sequence of any :class:`Cell` (one layer, one direction) as one autograd node.

    ``apply(spec, x, weight_ih, weight_hh, bias_ih, bias_hh, *state, *parameters)`` returns
    ``(output, *final_state)``; ``parameters`` are all the cell's parameters in
    ``named_parameters`` order (the four matrix-multiply ones again, for a pointwise that uses
    them itself; autograd adds the two parts). Masks are constants.

    A backward that is differentiated in turn (``create_graph=True``) recomputes the sequence on the
    reference loop and differentiates that, so second-order gradients are exact.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        spec: _Spec,
        x: Tensor,
        weight_ih: Tensor,
        weight_hh: Tensor,
        bias_ih: Tensor | None,
        bias_hh: Tensor | None,
        *rest: Tensor,
    ) -> tuple[Tensor, ...]:
        cell, options = spec.cell, spec.options
        count = options.states
        initial = tuple(rest[:count])
        needs_grad = spec.grad_enabled and any(ctx.needs_input_grad[1:])  # (needs_input_grad ignores no_grad)
        steps, batch, _ = x.shape
        rows = steps * batch
        flat = x.reshape(rows, -1)
        xg = torch.mm(flat, weight_ih.t()) if bias_ih is None else torch.addmm(bias_ih, flat, weight_ih.t())
        xg = xg.view(steps, batch, -1)
        buffers = [b for _, b in cell.named_buffers()]
        bound = _Bound(cell, weight_hh, bias_hh, spec.recurrent_mask, spec.names, (*rest[count:], *buffers), ())
        order = time_steps(steps, spec.reverse)
        # the first step runs eagerly: it checks what pointwise returns and whether it draws random numbers
        t = order[0]
        keep = None if spec.keep is None else [m[t] for m in spec.keep]
        valid = None if spec.valid is None else spec.valid[t]
        previous = torch.zeros_like(initial[0]) if options.carry_output and options.masked else None
        hg_all = x.new_empty(steps, batch, weight_hh.shape[0])
        before = torch.get_rng_state()
        with _Reads() as reads:
            hg, state, output = _EagerSteps(cell, options).forward(
                bound, xg[t], initial, keep, valid, previous, hg_all[t]
            )
        bound.used = tuple(k for k, tensor in enumerate(bound.tensors) if id(tensor) in reads.seen)
        random = not torch.equal(before, torch.get_rng_state())
        _check_step(cell, state, initial)
        state = tuple(part.contiguous() for part in state)
        if random and needs_grad:
            spec.rng = [before]
        states: list[State] = [initial, state]
        outputs: list[Tensor] = [x] * steps
        outputs[t] = state[0] if output is None else output
        impl = fused_inductor.steps_for(_EagerSteps(cell, options), options, bound, x, random)
        previous = output
        for s in range(1, steps):
            t = order[s]
            keep = None if spec.keep is None else [m[t] for m in spec.keep]
            valid = None if spec.valid is None else spec.valid[t]
            if spec.rng is not None:
                spec.rng.append(torch.get_rng_state())
            hg, state, output = impl.forward(bound, xg[t], state, keep, valid, previous, hg_all[t])
            outputs[t] = state[0] if output is None else output
            previous = output
            states.append(state)
        output = torch.stack(outputs)
        if needs_grad:
            entering = states[-2::-1] if spec.reverse else states[:-1]  # the state entering step t, by time
            h_in = torch.stack([s[0] for s in entering])  # for dW_hh; the steps' states stay a list
            ctx.save_for_backward(x, weight_ih, weight_hh, xg, hg_all, h_in, *initial)
            ctx.states = states[1:-1]
            ctx.spec, ctx.bound, ctx.impl = spec, bound, impl
            ctx.parameters = rest[count:]
        return (output, *(s if s is not r else s.clone() for s, r in zip(state, initial, strict=True)))

    @staticmethod
    def backward(ctx: FunctionCtx, grad_output: Tensor | None, *grad_final: Tensor | None) -> tuple[Tensor | None, ...]:
        # differentiated in turn, or batched gradients (autograd's own vmap: is_grads_batched, jacobian)
        if torch.is_grad_enabled() or any(legacy_batched(g) for g in (grad_output, *grad_final)):
            return _differentiable_backward(ctx, grad_output, grad_final)
        # pointwise reads the cell's tensors itself: those the forward saw (functional_call may have
        # put others back since)
        with torch.no_grad(), bind_tensors(ctx.spec.cell, dict(zip(ctx.spec.names, ctx.parameters, strict=False))):
            return _backward(ctx, grad_output, grad_final)


def _differentiable_backward(ctx: FunctionCtx, grad_output: Tensor | None, grad_final) -> tuple[Tensor | None, ...]:
    """The gradients as a graph: recomputed on the reference loop from the tensors the forward saw,
    with the same masks and random draws (:func:`lstmkit.engine.reference.recomputed_gradients`)."""
    spec: _Spec = ctx.spec
    x, *_ = ctx.saved_tensors
    initial = list(ctx.saved_tensors[6:])
    parameters = list(ctx.parameters)
    bound = bind_tensors(spec.cell, dict(zip(spec.names, parameters, strict=False)))
    with bound, torch.random.fork_rng(devices=[]):
        if spec.rng is not None:
            torch.set_rng_state(spec.rng[0])
        grad = recomputed_gradients(
            spec.cell, x, tuple(initial), [x, *initial, *parameters], [grad_output, *grad_final], valid=spec.valid,
            carry_output=spec.options.carry_output, reverse=spec.reverse, recurrent_mask=spec.recurrent_mask,
            zoneout=spec.options.rate, training=spec.keep is not None, zoneout_masks=spec.keep,
        )  # fmt: skip
    count = len(initial)
    return (None, grad[0], None, None, None, None, *grad[1 : 1 + count], *grad[1 + count :])


def _backward(ctx: FunctionCtx, grad_output: Tensor | None, grad_final) -> tuple[Tensor | None, ...]:
    spec: _Spec = ctx.spec
    bound: _Bound = ctx.bound
    options = spec.options
    x, weight_ih, weight_hh, xg, hg_all, h_in, *initial = ctx.saved_tensors
    states = [tuple(initial), *ctx.states]  # the state entering each step
    need = ctx.needs_input_grad
    steps, batch = x.shape[:2]
    first = 6 + options.states  # where the parameters start among the inputs of apply
    bound.wanted = tuple(k for k in range(spec.parameters) if need[first + k])
    impl: _EagerSteps = ctx.impl  # or the compiled steps, with the same interface
    grad_state = [
        torch.zeros_like(s) if g is None else g.contiguous() for g, s in zip(grad_final, initial, strict=True)
    ]
    if grad_output is None:
        grad_output = x.new_zeros(steps, batch, h_in.shape[-1])
    grad_output = grad_output.contiguous()
    sums: list[Tensor | None] = [None] * len(bound.wanted)
    d_previous = None
    shared = True
    dxg: list[Tensor] = [xg] * steps
    dhg: list[Tensor] = [xg] * steps
    order = time_steps(steps, spec.reverse)
    for s in range(steps - 1, -1, -1):
        t = order[s]
        grad_out = grad_output[t] if d_previous is None else grad_output[t] + d_previous
        keep = None if spec.keep is None else [m[t] for m in spec.keep]
        valid = None if spec.valid is None else spec.valid[t]
        state = states[s]
        if spec.rng is not None:
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(spec.rng[s])
                result = impl.backward(bound, xg[t], hg_all[t], state, keep, valid, grad_state, grad_out, sums)
        else:
            result = impl.backward(bound, xg[t], hg_all[t], state, keep, valid, grad_state, grad_out, sums)
        dxg[t], dhg[t], grad_state, d_previous, sums = result
        shared = shared and _same(dxg[t], dhg[t])
    dxg_all = torch.stack(dxg).view(steps * batch, -1)
    # xg and hg enter pointwise as a sum in most cells: then their gradients are one tensor, stacked once
    dhg_all = dxg_all if shared else torch.stack(dhg).view(steps * batch, -1)
    if bound.mask is not None:
        h_in = h_in * bound.mask
    grad_x = torch.mm(dxg_all, weight_ih).view_as(x) if need[1] else None
    grad_w_ih = torch.mm(dxg_all.t(), x.reshape(steps * batch, -1)) if need[2] else None
    grad_w_hh = torch.mm(dhg_all.t(), h_in.reshape(steps * batch, -1)) if need[3] else None
    grad_b_ih = dxg_all.sum(0) if need[4] else None
    grad_b_hh = dhg_all.sum(0) if need[5] else None
    grad_state = [g if need[6 + k] else None for k, g in enumerate(grad_state)]
    grad_parameters: list[Tensor | None] = [None] * spec.parameters
    for k, g in zip(bound.wanted, sums, strict=True):
        grad_parameters[k] = g
    return (None, grad_x, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, *grad_state, *grad_parameters)


def _same(a: Tensor, b: Tensor) -> bool:
    return a is b or (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride())


def _check_step(cell: Cell, new: State, old: Sequence[Tensor]) -> None:
    if len(new) != len(old) or any(n.shape != o.shape for n, o in zip(new, old, strict=False)):
        raise ValueError(
            f"{type(cell).__name__}.pointwise returned states of shapes {[tuple(n.shape) for n in new]}, "
            f"expected {[tuple(o.shape) for o in old]} (state_names {type(cell).state_names})"
        )


# ----------------------------------------------------------------------------------------------
# entry point


def _generated_kernel(cell: Cell, inputs: Tensor):
    """The cell's step compiled into the native loop (:mod:`lstmkit.engine.native.generated`) when
    the compile setting asks for it and the step translates, else ``None``."""
    if inputs.device.type != "cpu" or not is_available():
        return None
    return generated.kernel_for(cell, inputs.shape[0], compile_mode())


def run_cell(cell: Cell, inputs: Tensor, state: State, **options: Any) -> SequenceResult:
    """:func:`lstmkit.engine.reference.run_sequence` as one fused autograd node, for a call
    :func:`why_not` accepts. Same arguments (except ``trace``) and result; zoneout masks are drawn
    exactly as the reference draws them."""
    given = options
    options = SequenceOptions(**given)
    state = options.check(cell, inputs, state)
    reason = why_not(cell, inputs)
    if reason:
        raise ValueError(f"the fused engine cannot run {cell!r}: {reason}")
    if inputs.shape[0] == 0 or inputs.shape[1] == 0:
        raise ValueError(f"inputs must have at least one step and one sequence, got shape {tuple(inputs.shape)}")
    kernel = _generated_kernel(cell, inputs)
    if kernel is not None:
        name, translation = kernel
        return run_generated(cell, name, translation.tensors, inputs, state, **given)
    if torch._C._are_functorch_transforms_active():  # torch.func cannot transform FusedSequenceFunction
        return run_reference(cell, inputs, state, **given)
    state = tuple(s.contiguous() for s in state)
    valid, recurrent_mask = options.valid, options.recurrent_mask
    keep = options.zoneout_masks(state, inputs.shape[0])
    step_options = _Options(
        carry_output=bool(options.carry_output) and valid is not None,
        rate=float(options.zoneout),
        zoneout_train=keep[0] is not None,
        masked=valid is not None,
        recurrent_mask=recurrent_mask is not None,
        bias_hh=cell.bias_hh is not None,
        states=len(state),
    )
    parameters = list(cell.named_parameters())
    spec = _Spec(
        cell=cell,
        options=step_options,
        reverse=bool(options.reverse),
        names=tuple(name for name, _ in parameters) + tuple(name for name, _ in cell.named_buffers()),
        parameters=len(parameters),
        valid=None if valid is None else valid.to(torch.bool).contiguous(),
        recurrent_mask=None if recurrent_mask is None else recurrent_mask.contiguous(),
        keep=None if keep[0] is None else list(keep),
        grad_enabled=torch.is_grad_enabled(),
    )
    output, *final = FusedSequenceFunction.apply(
        spec, inputs, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, *state, *(p for _, p in parameters)
    )
    return SequenceResult(output, tuple(final))


__all__ = ["FusedSequenceFunction", "run_cell", "why_not"]
