"""The fused engine's steps compiled by TorchInductor, for a cell whose step does not translate to C++.

With compilation on (:mod:`.compiling`), the fused engine (:mod:`.fused`) runs a cell whose step
translates to C++ in the native loop (:mod:`.native.generated`). For any other cell the forward step
(recurrent ``addmm`` + pointwise + zoneout + masking) and the backward step (its vector-Jacobian
product via :func:`torch.func.vjp`, the recurrent multiply's input gradient, the parameter-gradient
sums) are each traced once with :func:`torch.fx.experimental.proxy_tensor.make_fx` and compiled by
TorchInductor into one call (:class:`_CompiledSteps`). The compiled code is cached in the process per
kind of cell (its class and plain attributes, which include its sizes), batch size, dtype and
option set -- both directions of a layer share it -- and on disk by Inductor. A cell that cannot be
traced (data-dependent Python control flow) or compiled (no C++ compiler) falls back to the eager
steps with one warning; a cell that draws random numbers, a parametrised one and calls off the CPU
are never compiled.

The compiled steps are faster than the eager ones once compiled, and a compile costs seconds
(docs/engine.md has the figures); ``lstmkit bench`` times them (the row ``user_norm_lstm``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..cells import State
from .compiling import (
    COMPILE_VARIABLE,
    HotCounters,
    PointwiseModule,
    WarnOnce,
    compile_mode,
    fingerprint,
    parametrize_in,
)

if TYPE_CHECKING:
    from .fused import _Bound, _EagerSteps, _Options


class _CompiledSteps:
    """The same step functions traced with ``make_fx`` and compiled by TorchInductor: one call
    each per step, with flat tensor arguments whose layout the options fix. Their tensors are the
    cell's parameters and buffers that ``pointwise`` uses (``bound.used``). Each function is traced
    from the first real call's arguments; the backward once per set of parameters needing gradients."""

    def __init__(self, options: _Options) -> None:
        self.options = options
        self.carry = options.carry_output and options.masked
        self._forward: Callable | None = None
        self._backward: dict[tuple[int, ...], Callable] = {}

    # what the traced functions compute -----------------------------------------------------

    def _forward_function(self, bound: _Bound) -> Callable:
        options, module = self.options, PointwiseModule(bound.cell)
        names = [bound.names[k] for k in bound.used]

        def forward(*flat):
            xg, hg, state, keep, valid, previous, tensors = self._unpack_forward(flat, len(names))
            new_state = module.functional(names, tensors, xg, hg, state)
            new_state, output = options.zone_out_and_mask(state, new_state, keep, valid, previous)
            return (*new_state, *([] if output is None else [output]))

        return forward

    def _backward_function(self, bound: _Bound, differentiated: tuple[int, ...]) -> Callable:
        """``differentiated``: positions in ``bound.used`` of the tensors whose gradients are summed."""
        options, module, carry = self.options, PointwiseModule(bound.cell), self.carry
        names = [bound.names[k] for k in bound.used]

        def backward(*flat):
            xg, hg, state, keep, valid, grad_state, grad_out, w_hh, mask, tensors, sums = self._unpack_backward(
                flat, len(names), len(differentiated)
            )

            def step(xg, hg, state, previous, chosen):
                mixed = list(tensors)
                for k, t in zip(differentiated, chosen, strict=True):
                    mixed[k] = t
                new_state = module.functional(names, mixed, xg, hg, state)
                new_state, output = options.zone_out_and_mask(state, new_state, keep, valid, (*previous, None)[0])
                return (*new_state, *([] if output is None else [output]))

            previous = (torch.zeros_like(grad_out),) if carry else ()
            chosen = tuple(tensors[k] for k in differentiated)
            _, pull = torch.func.vjp(step, xg, hg, tuple(state), previous, chosen)
            grads = list(grad_state)
            if valid is None:
                grads[0] = grads[0] + grad_out
            else:
                grads.append(grad_out)
            d_xg, d_hg, d_state, d_previous, d_chosen = pull(tuple(grads))
            d_state = list(d_state)
            d_h = torch.mm(d_hg, w_hh)
            d_state[0] = d_state[0] + (d_h if mask is None else d_h * mask)
            new_sums = [s + g for s, g in zip(sums, d_chosen, strict=True)]
            return (d_xg, d_hg, *d_state, *d_previous, *new_sums)

        return backward

    # flat argument layouts ----------------------------------------------------------------

    def _pack_step(
        self, xg: Tensor, hg: Tensor, state: State, keep: Sequence[Tensor] | None, valid: Tensor | None
    ) -> list[Tensor]:
        """The arguments both traced functions start with, in the layout the options fix."""
        return [xg, hg, *state, *(keep or ()), *([] if valid is None else [valid])]

    def _unpack_step(self, items: Iterator[Tensor]) -> tuple:
        """What :meth:`_pack_step` packed: ``xg, hg, state, keep, valid`` from the front of ``items``."""
        options, count = self.options, self.options.states
        xg, hg = next(items), next(items)
        state = [next(items) for _ in range(count)]
        keep = [next(items) for _ in range(count)] if options.zoneout_train else None
        valid = next(items) if options.masked else None
        return xg, hg, state, keep, valid

    def _unpack_forward(self, flat: Sequence[Tensor], tensor_count: int) -> tuple:
        items = iter(flat)
        step = self._unpack_step(items)
        previous = next(items) if self.carry else None
        tensors = [next(items) for _ in range(tensor_count)]
        return *step, previous, tensors

    def _unpack_backward(self, flat: Sequence[Tensor], tensor_count: int, sum_count: int) -> tuple:
        items = iter(flat)
        step = self._unpack_step(items)
        grad_state = [next(items) for _ in range(self.options.states)]
        grad_out = next(items)
        w_hh = next(items)
        mask = next(items) if self.options.recurrent_mask else None
        tensors = [next(items) for _ in range(tensor_count)]
        sums = [next(items) for _ in range(sum_count)]
        return *step, grad_state, grad_out, w_hh, mask, tensors, sums

    @staticmethod
    def _compile(function: Callable, args: list[Tensor]) -> Callable:
        from torch._inductor import compile as inductor_compile
        from torch.fx.experimental.proxy_tensor import make_fx

        with warnings.catch_warnings(), torch.no_grad():  # Inductor's imports warn about torch.jit.script_method
            warnings.simplefilter("ignore", DeprecationWarning)
            return inductor_compile(make_fx(function)(*args), args)

    # the step interface -------------------------------------------------------------------

    def forward(self, bound: _Bound, xg, state, keep, valid, previous, hg_out):
        hg = bound.recurrent(state[0], hg_out)  # outside the compiled code: straight into hg_out
        args = self._pack_step(xg, hg, state, keep, valid)
        args += [previous] if self.carry else []
        args += [bound.tensors[k] for k in bound.used]
        if self._forward is None:
            self._forward = self._compile(self._forward_function(bound), args)
        result = self._forward(*args)
        count = self.options.states
        state = tuple(r.contiguous() for r in result[:count])  # the next call expects the traced strides
        return hg, state, result[count] if valid is not None else None

    def backward(self, bound: _Bound, xg, hg, state, keep, valid, grad_state, grad_out, sums):
        # ``sums`` follows ``bound.wanted``; a parameter pointwise never touches gets no gradient
        summed = [n for n, k in enumerate(bound.wanted) if k in bound.used]
        differentiated = tuple(bound.used.index(bound.wanted[n]) for n in summed)
        args = [*self._pack_step(xg, hg, state, keep, valid), *grad_state, grad_out]
        args += [bound.weight_hh, *([] if bound.mask is None else [bound.mask])]
        args += [bound.tensors[k] for k in bound.used]
        args += [torch.zeros_like(bound.tensors[bound.wanted[n]]) if sums[n] is None else sums[n] for n in summed]
        compiled = self._backward.get(differentiated)
        if compiled is None:
            compiled = self._backward[differentiated] = self._compile(
                self._backward_function(bound, differentiated), args
            )
        result = compiled(*args)
        count, carry = self.options.states, self.carry
        d_state = [r.contiguous() for r in result[2 : 2 + count]]
        d_previous = result[2 + count] if carry else None
        new_sums = list(sums)
        for n, g in zip(summed, result[2 + count + carry :], strict=True):
            new_sums[n] = g
        return result[0], result[1], d_state, d_previous, new_sums


class _Steps:
    """Compiled steps when available, else (and after any failure) the eager ones."""

    def __init__(self, eager: _EagerSteps, counter) -> None:
        self.eager, self.counter = eager, counter

    def _run(self, method: str, *args):
        counter = self.counter
        if counter.compiled is not None:
            try:
                return getattr(counter.compiled, method)(*args)
            except Exception as error:  # tracing (data-dependent control flow) or the C++ build failed
                counter.compiled, counter.failed = None, f"{type(error).__name__}: {error}"
                name = type(self.eager.cell).__name__
                _warn(
                    self.eager.cell,
                    f"lstmkit: could not compile the steps of {name} ({counter.failed}); "
                    f"running them uncompiled (set {COMPILE_VARIABLE}=0 to skip trying)",
                )
        return getattr(self.eager, method)(*args)

    def forward(self, *args):
        return self._run("forward", *args)

    def backward(self, *args):
        return self._run("backward", *args)


_compiled = HotCounters(size=64)  # per kind of cell, shape and options: a _CompiledSteps
_warn = WarnOnce()


def steps_for(eager: _EagerSteps, options: _Options, bound: _Bound, x: Tensor, random: bool) -> _EagerSteps | _Steps:
    """The step functions for one call: compiled ones when the setting asks for it and they could be
    made, else ``eager``; counts the call's steps towards the setting's threshold."""
    cell = eager.cell
    mode = compile_mode()
    if mode == "0" or random or x.device.type != "cpu" or parametrize_in(cell):
        return eager
    used = tuple((bound.names[k], tuple(bound.tensors[k].shape)) for k in bound.used)
    key = (options, used, tuple(bound.weight_hh.shape), cell.state_sizes, x.shape[1], x.dtype, fingerprint(cell))
    counter = _compiled.count(key, x.shape[0])
    if counter.due(mode):
        counter.compiled = _CompiledSteps(options)
    return _Steps(eager, counter)
