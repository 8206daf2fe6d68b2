"""The native time loops as PyTorch operators, so that the dispatcher sees them.

Two custom operators (:mod:`torch.library`) wrap the C++ entry points of ``csrc/entry.h``:

* ``lstmkit::sequence_forward(kernel, x, params, state0, valid, recurrent_mask, zoneout,
  zoneout_rate, reverse, carry_output, eps, store) -> [output, final states..., saved...]``
* ``lstmkit::sequence_backward(kernel, grad_output, grad_state, x, params, saved, valid,
  recurrent_mask, zoneout, zoneout_rate, reverse, carry_output, eps, needs) -> [dx, d params..., d states...]``

Registered with each: a fake implementation (shapes and strides from the arguments alone, for
``torch.compile`` and ``torch.export`` with symbolic sizes), a vmap rule (one call per vmapped
slice), an autocast rule (float32: the kernels compute in float32/float64) and, on the forward,
the autograd formula. Its backward runs the native backward loop; when the backward itself is
differentiated (``create_graph=True``: gradient penalties, ``gradgradcheck``, Hessians) it instead
recomputes the sequence on the reference loop (:mod:`lstmkit.engine.reference`) with the same
tensors and masks and differentiates that, so second-order gradients are exact rather than zero.

``kernel`` names a built-in kernel (:data:`lstmkit.engine.native.KERNELS`) or a generated cell's
module (``"generated:<module name>"``, :func:`register_generated`), optionally followed by
:data:`BF16` (``"lstm+bf16"``): a float32 call whose GEMMs run on bfloat16 operands with float32
results, the gates and states staying float32 (``csrc/gemm.h``, "GEMM precision").
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Optional

import torch
from torch import Tensor

from ...cells import Cell, GRUCell, LayerNormLSTMCell, LSTMCell, PeepholeLSTMCell, RNNCell
from .build import load_extension, unavailable_reason

GENERATED_PREFIX = "generated:"
BF16 = "+bf16"  # a kernel name's suffix: the call's GEMMs on bfloat16 operands, float32 results
# Kernels whose forward, when it stores for the backward, keeps x_t beside the h entering step t
# (ForwardLoop's beside_input): the h history is then the h part of (T + 1, B, I + R) rows, unless a
# recurrent mask is given.
_BESIDE_INPUT = ("rnn_tanh", "rnn_relu", "lstm", "lstm_projection", "peephole_lstm", GENERATED_PREFIX)


class NativeEngineUnavailable(RuntimeError):
    """The C++ extension could not be built on this machine (see the warning emitted once)."""


# kernel -> its parameter slots after weight_ih, weight_hh, bias_ih, bias_hh, and its states
KERNELS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "rnn_tanh": ((), ("h",)),
    "rnn_relu": ((), ("h",)),
    "lstm": ((), ("h", "c")),
    "lstm_projection": (("weight_hr",), ("h", "c")),
    "peephole_lstm": (("weight_ci", "weight_cf", "weight_co"), ("h", "c")),
    "layernorm_lstm": (("ln_weight_ih", "ln_weight_hh", "ln_weight_c", "ln_bias_c"), ("h", "c")),
    "gru": ((), ("h",)),
    "gru_reset_before": ((), ("h",)),
}
STANDARD = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # every kernel's first four parameters


@dataclass(frozen=True)
class _Generated:
    module: ModuleType
    tensors: tuple[str, ...]  # the cell's tensors the step takes after the standard four
    summed: bool  # xg and hg enter the step as a sum: the forward keeps xg only
    cell: Cell  # a cell of this kind, for the differentiable recomputation


_generated: dict[str, _Generated] = {}


def register_generated(module: ModuleType, tensors: tuple[str, ...], summed: bool, cell: Cell) -> str:
    """The kernel name under which the operators run a generated cell's ``module`` for cells like
    ``cell`` (same kind and sizes: :func:`lstmkit.engine.compiling.fingerprint`); called once
    per kind. One module serves every size, so the name also counts the registrations: a
    recomputation builds on a cell of the right sizes."""
    name = f"{GENERATED_PREFIX}{module.__name__}/{len(_generated)}"
    _generated[name] = _Generated(module, tensors, summed, cell)
    return name


def base_kernel(kernel: str) -> str:
    """``kernel`` without its precision suffix (:data:`BF16`)."""
    return kernel.removesuffix(BF16)


def _module(kernel: str) -> tuple[ModuleType, str]:
    """The extension module that runs ``kernel``, and the kernel's name inside it."""
    if kernel.startswith(GENERATED_PREFIX):
        return _generated[base_kernel(kernel)].module, "generated" + kernel[len(base_kernel(kernel)) :]
    module = load_extension()
    if module is None:
        raise NativeEngineUnavailable(f"the lstmkit native engine is unavailable: {unavailable_reason()}")
    return module, kernel


def _placeholder(like: Tensor) -> Tensor:
    """What stands for an absent tensor (a bias of a cell without biases, a gradient not asked for)
    in an operator's lists of tensors: an empty tensor (lists of optional tensors do not take part
    in the operators' autograd)."""
    return like.new_empty(0)


def _optional(params: Sequence[Tensor]) -> list[Tensor | None]:
    return [p if p.numel() else None for p in params]


# ----------------------------------------------------------------------------------------------
# the operators


def _forward_call(
    kernel: str,
    x: Tensor,
    params: list[Tensor],
    state0: list[Tensor],
    valid: Optional[Tensor],  # noqa: UP045 - torch.library reads the annotation
    recurrent_mask: Optional[Tensor],  # noqa: UP045
    zoneout: list[Tensor],
    zoneout_rate: float,
    reverse: bool,
    carry_output: bool,
    eps: float,
    store: bool,
) -> list[Tensor]:
    module, name = _module(kernel)
    results = module.forward(
        name, x, _optional(params), state0, valid, recurrent_mask, zoneout, zoneout_rate, reverse, carry_output, eps,
        store,
    )  # fmt: skip
    return list(results)


def _backward_call(
    kernel: str,
    grad_output: Tensor,
    grad_state: list[Tensor],
    x: Tensor,
    params: list[Tensor],
    saved: list[Tensor],
    valid: Optional[Tensor],  # noqa: UP045
    recurrent_mask: Optional[Tensor],  # noqa: UP045
    zoneout: list[Tensor],
    zoneout_rate: float,
    reverse: bool,
    carry_output: bool,
    eps: float,
    needs: list[bool],
) -> list[Tensor]:
    module, name = _module(kernel)
    results = module.backward(
        name, grad_output, grad_state, x, _optional(params), saved, valid, recurrent_mask, zoneout, zoneout_rate,
        reverse, carry_output, eps, needs,
    )  # fmt: skip
    # every result its own contiguous tensor: dW_ih and dW_hh are column blocks of one product, and a
    # kernel may hand back one tensor for two results (the layer norms' shared gradients)
    inputs = {t.untyped_storage().data_ptr() for t in (grad_output, *grad_state, x, *saved) if t.numel()}
    owned: list[Tensor] = []
    for r in results:
        r = _placeholder(x) if r is None else r.contiguous()
        if r.numel() and r.untyped_storage().data_ptr() in inputs:
            r = r.clone()
        inputs.add(r.untyped_storage().data_ptr())
        owned.append(r)
    return owned


sequence_forward = torch.library.custom_op("lstmkit::sequence_forward", mutates_args=())(_forward_call)
sequence_backward = torch.library.custom_op("lstmkit::sequence_backward", mutates_args=())(_backward_call)


# ----------------------------------------------------------------------------------------------
# fake implementations: what each call returns, from the arguments' shapes


def _saved_shapes(kernel: str, steps, batch, gates: int, hidden, store: bool) -> list[tuple | None]:
    """The shapes of the tensors a kernel's forward keeps after the histories (``None``: empty)."""
    kernel = base_kernel(kernel)
    if kernel.startswith(GENERATED_PREFIX):
        hg = [] if _generated[kernel].summed else [(steps, batch, gates)]
        return [(steps, batch, gates), *hg]
    base = (steps, batch, gates)
    rows = steps * batch
    return {
        "lstm_projection": [base, (steps, batch, hidden)],
        "layernorm_lstm": [base]
        + ([base, (steps, batch, hidden), (steps, batch, 2), (rows, gates), (rows, 1), (rows, 1)] if store else []),
        "gru": [base, (steps, batch, hidden) if store else None],
        "gru_reset_before": [base, (steps, batch, hidden)],
    }.get(kernel, [base])


@sequence_forward.register_fake
def _(kernel, x, params, state0, valid, recurrent_mask, zoneout, zoneout_rate, reverse, carry_output, eps, store):
    steps, batch, inputs = x.shape
    recurrent = state0[0].shape[1]
    hidden = state0[-1].shape[1] if len(state0) > 1 else recurrent
    if base_kernel(kernel) == "lstm_projection":
        hidden = params[4].shape[1]
    torch._check(steps > 0, lambda: "the native loops need at least one time step")
    beside = store and recurrent_mask is None and kernel.startswith(_BESIDE_INPUT)
    h_history = (
        x.new_empty(steps + 1, batch, inputs + recurrent)[:, :, inputs:]
        if beside
        else x.new_empty(steps + 1, batch, recurrent)
    )
    histories = [h_history] + [x.new_empty(steps + 1, batch, s.shape[1]) for s in state0[1:]]
    h_rec = _placeholder(x) if recurrent_mask is None else x.new_empty(steps, batch, recurrent)
    gates = params[0].shape[0]
    saved = [
        _placeholder(x) if shape is None else x.new_empty(shape)
        for shape in _saved_shapes(kernel, steps, batch, gates, hidden, store)
    ]
    finals = [s.new_empty(s.shape) for s in state0]
    return [x.new_empty(steps, batch, recurrent), *finals, *histories, h_rec, *saved]


@sequence_backward.register_fake
def _(kernel, grad_output, grad_state, x, params, saved, valid, recurrent_mask, zoneout, rate, reverse, carry, eps,
      needs):  # fmt: skip
    wanted = [p.numel() > 0 and need for p, need in zip(params, needs[1:], strict=True)]
    dparams = [p.new_empty(p.shape) if want else _placeholder(x) for p, want in zip(params, wanted, strict=True)]
    dx = x.new_empty(x.shape) if needs[0] else _placeholder(x)
    return [dx, *dparams, *(g.new_empty(g.shape) for g in grad_state)]


# ----------------------------------------------------------------------------------------------
# autograd


def _setup_context(ctx, inputs, output, eager: bool = False) -> None:
    """What the backward needs; ``eager``: it calls the backward loop directly (:func:`sequence`)."""
    kernel, x, params, state0, valid, rmask, zoneout, rate, reverse, carry, eps, store = inputs
    states = len(state0)
    saved = output[1 + states :]
    ctx.counts = (len(params), states, len(zoneout))
    ctx.options = (kernel, rate, reverse, carry, eps)
    ctx.eager = eager
    ctx.needs = [x.requires_grad, *(p.requires_grad for p in params)]
    ctx.save_for_backward(x, *params, *state0, valid, rmask, *zoneout, *saved)
    # the kept tensors are outputs only to reach the backward: no gradient flows into them, and none
    # is made up as zeros for them (nor for an unused final state)
    ctx.mark_non_differentiable(*saved)
    ctx.set_materialize_grads(False)


def _unpack(ctx) -> tuple:
    x, *rest = ctx.saved_tensors
    n_params, states, n_zoneout = ctx.counts
    params, rest = rest[:n_params], rest[n_params:]
    state0, (valid, rmask), rest = rest[:states], rest[states : states + 2], rest[states + 2 :]
    return x, params, list(state0), valid, rmask, list(rest[:n_zoneout]), list(rest[n_zoneout:])


def _gradients(ctx, grads: Sequence[Tensor | None], differentiable: bool) -> tuple[Tensor | None, list, list]:
    """``(dx, d params, d initial states)`` of the forward saved in ``ctx``, given the gradients of
    its results (``None`` where a result was not used); as a graph when ``differentiable``."""
    kernel, rate, reverse, carry, eps = ctx.options
    x, params, state0, valid, rmask, zoneout, saved = _unpack(ctx)
    grad_output = grads[0] if grads[0] is not None else x.new_zeros(x.shape[0], x.shape[1], state0[0].shape[1])
    grad_state = [torch.zeros_like(s) if g is None else g for s, g in zip(state0, grads[1:], strict=False)]
    if differentiable:
        return _differentiable_backward(
            kernel, x, params, state0, valid, rmask, zoneout, rate, reverse, carry, eps, grad_output, grad_state
        )
    backward = _backward_call if ctx.eager else sequence_backward
    results = backward(
        kernel, grad_output, grad_state, x, params, saved, valid, rmask, zoneout, rate, reverse, carry, eps, ctx.needs
    )
    dparams = [g if need else None for g, need in zip(results[1 : 1 + len(params)], ctx.needs[1:], strict=True)]
    return results[0] if ctx.needs[0] else None, dparams, results[1 + len(params) :]


_LEGACY_BATCHED = torch._C._parse_dispatch_key("Batched")  # torch.autograd's own vmap (is_grads_batched, jacobian)


def legacy_batched(tensor: Tensor | None) -> bool:
    return tensor is not None and torch._C._dispatch_keys(tensor).has(_LEGACY_BATCHED)


def _differentiated(grads: Sequence[Tensor | None]) -> bool:
    """Whether a backward must be a graph. Grad mode is on in a backward only when it is
    differentiated in turn (create_graph=True). The legacy vmap of is_grads_batched and
    jacobian(vectorize=True) has no rule for operators returning lists, so batched gradients also
    take the differentiable path (ATen operators only)."""
    return torch.is_grad_enabled() or any(legacy_batched(g) for g in grads)


def _backward(ctx, grads: list[Tensor | None]) -> tuple:
    dx, dparams, dstates = _gradients(ctx, grads, differentiable=_differentiated(grads))
    return (None, dx, dparams, dstates, None, None, [None] * ctx.counts[2], None, None, None, None, None)


torch.library.register_autograd("lstmkit::sequence_forward", _backward, setup_context=_setup_context)


def _differentiable_backward(kernel, x, params, state0, valid, rmask, zoneout, rate, reverse, carry, eps, grad_output,
                             grad_state):  # fmt: skip
    """The gradients of the sequence, as a graph: recomputed on the reference loop from the tensors
    the forward saw (:func:`lstmkit.engine.reference.recomputed_gradients`)."""
    from ..reference import recomputed_gradients

    masks = [m != 0 for m in zoneout] or None
    with _bound_cell(kernel, x, params, state0, eps) as cell:
        found = recomputed_gradients(
            cell, x, tuple(state0), [x, *params, *state0], [grad_output, *grad_state], valid=valid,
            carry_output=carry, reverse=reverse, recurrent_mask=rmask, zoneout=rate, training=masks is not None,
            zoneout_masks=masks,
        )  # fmt: skip
    return found[0], found[1 : 1 + len(params)], found[1 + len(params) :]


@functools.lru_cache(maxsize=64)
def _builtin_cell(kernel: str, input_size: int, hidden_size: int, proj_size: int, bias: bool, eps: float) -> Cell:
    """A cell computing ``kernel`` (on the meta device: its tensors are bound per call)."""
    common = {"bias": bias, "device": "meta"}
    factories: dict[str, Callable[[], Cell]] = {
        "rnn_tanh": lambda: RNNCell(input_size, hidden_size, nonlinearity="tanh", **common),
        "rnn_relu": lambda: RNNCell(input_size, hidden_size, nonlinearity="relu", **common),
        "lstm": lambda: LSTMCell(input_size, hidden_size, **common),
        "lstm_projection": lambda: LSTMCell(input_size, hidden_size, proj_size=proj_size, **common),
        "peephole_lstm": lambda: PeepholeLSTMCell(input_size, hidden_size, **common),
        "layernorm_lstm": lambda: LayerNormLSTMCell(input_size, hidden_size, eps=eps, **common),
        "gru": lambda: GRUCell(input_size, hidden_size, reset_after=True, **common),
        "gru_reset_before": lambda: GRUCell(input_size, hidden_size, reset_after=False, **common),
    }
    return factories[kernel]()  # on the meta device: no initial values drawn (it may run inside a vmap)


@contextlib.contextmanager
def _bound_cell(kernel: str, x: Tensor, params: Sequence[Tensor | None], state0: Sequence[Tensor], eps: float
                ) -> Iterator[Cell]:  # fmt: skip
    """A cell that computes ``kernel`` with ``params`` (the kernel's parameter list) as its tensors."""
    kernel = base_kernel(kernel)
    if kernel.startswith(GENERATED_PREFIX):
        cell, own = _generated[kernel].cell, _generated[kernel].tensors
    else:
        proj = params[4].shape[0] if kernel == "lstm_projection" else 0
        hidden = state0[-1].shape[1] if len(state0) > 1 else state0[0].shape[1]
        cell = _builtin_cell(kernel, x.shape[2], hidden, proj, params[2].numel() > 0, float(eps))
        own = KERNELS[kernel][0]
    tensors = dict(zip((*STANDARD, *own), _optional(params), strict=True))
    with bind_tensors(cell, tensors):
        yield cell


@contextlib.contextmanager
def bind_tensors(module: torch.nn.Module, tensors: dict[str, Tensor | None]) -> Iterator[None]:
    """Within the block, ``module``'s parameters and buffers named in ``tensors`` (dotted paths)
    are those tensors; their own are put back afterwards."""
    previous = []
    for path, tensor in tensors.items():
        owner_path, _, leaf = path.rpartition(".")
        owner = module.get_submodule(owner_path)
        store = owner._parameters if leaf in owner._parameters else owner._buffers
        previous.append((store, leaf, store.get(leaf)))
        store[leaf] = tensor
    try:
        yield
    finally:
        for store, leaf, tensor in reversed(previous):
            store[leaf] = tensor


# ----------------------------------------------------------------------------------------------
# autocast and vmap


for _op in ("lstmkit::sequence_forward", "lstmkit::sequence_backward"):
    torch.library.register_autocast(_op, "cpu", torch.float32)


def _slice(arg, dim, index: int):
    if dim is None:
        return arg
    if isinstance(arg, (list, tuple)):
        return [_slice(a, d, index) for a, d in zip(arg, dim, strict=True)]
    return arg.select(dim, index)


def _vmap_by_slices(op: Callable) -> Callable:
    """A vmap rule for ``op`` (which returns a list of tensors): one call per slice, stacked."""

    def rule(info, in_dims, *args):
        calls = [op(*(_slice(a, d, i) for a, d in zip(args, in_dims, strict=True))) for i in range(info.batch_size)]
        stacked = [torch.stack(column) for column in zip(*calls, strict=True)]
        return stacked, [0] * len(stacked)

    return rule


torch.library.register_vmap("lstmkit::sequence_forward", _vmap_by_slices(sequence_forward))
torch.library.register_vmap("lstmkit::sequence_backward", _vmap_by_slices(sequence_backward))


# ----------------------------------------------------------------------------------------------
# under torch.func transforms, and in plain eager calls


class _FunctorchSequence(torch.autograd.Function):
    """The forward operator with the same autograd formula, as an autograd Function that torch.func
    can transform: the operators' registered autograd is not visible to ``grad``/``jacrev``/``vjp``
    (torch 2.13). It calls the operators, so that their vmap rules apply. Tensors travel flat
    (``x, *params, *state0, valid, rmask, *zoneout``) so autograd sees them all."""

    generate_vmap_rule = True

    @staticmethod
    def forward(layout, x, *flat):  # type: ignore[override]
        return tuple(sequence_forward(*_structured(layout, x, flat)))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        layout, x, *flat = inputs
        _setup_context(ctx, _structured(layout, x, flat), output)

    @staticmethod
    def backward(ctx, *grads):
        # torch.func runs every backward with grad mode on and differentiates through its own levels:
        # the native backward, whose operator a nested transform would refuse rather than get wrong
        return _flat_gradients(ctx, grads, differentiable=False)


class _EagerSequence(torch.autograd.Function):
    """The same for eager calls on plain CPU tensors (:func:`_plain_eager`), calling the C++ loops
    directly: the operators' dispatch costs about 0.3 ms a training call (forward and backward), as
    much as the loops of a small layer (docs/engine.md). The forward takes ``ctx`` (no
    ``setup_context``), which spares autograd a signature binding per call."""

    @staticmethod
    def forward(ctx, layout, x, *flat):  # type: ignore[override]
        args = _structured(layout, x, flat)
        results = _forward_call(*args)
        _setup_context(ctx, args, results, eager=True)
        return tuple(results)

    @staticmethod
    def backward(ctx, *grads):
        return _flat_gradients(ctx, grads, differentiable=_differentiated(grads))


def _flat_gradients(ctx, grads: Sequence[Tensor | None], differentiable: bool) -> tuple:
    """The Functions' gradients, one per flat input (:func:`_gradients`)."""
    dx, dparams, dstates = _gradients(ctx, grads, differentiable=differentiable)
    return (None, dx, *dparams, *dstates, *([None] * (2 + ctx.counts[2])))


def _structured(layout: tuple, x: Tensor, flat: Sequence[Tensor | None]) -> list:
    kernel, n_params, states, rate, reverse, carry, eps, store = layout
    params, state0 = list(flat[:n_params]), list(flat[n_params : n_params + states])
    valid, rmask = flat[n_params + states : n_params + states + 2]
    zoneout = list(flat[n_params + states + 2 :])
    return [kernel, x, params, state0, valid, rmask, zoneout, rate, reverse, carry, eps, store]


_PLAIN = (Tensor, torch.nn.Parameter)


def is_native_node(grad_fn: object) -> bool:
    """Whether an autograd node is the native loops' backward (the operator's or, in eager calls,
    :class:`_EagerSequence`'s)."""
    name = type(grad_fn).__name__
    return "lstmkit_sequence_forward" in name or name == "_EagerSequenceBackward"


def _plain_eager(tensors: Sequence[Tensor | None]) -> bool:
    """Whether a call may skip the operators: plain CPU tensors, outside torch.compile, tracing,
    autocast (the operators' rule casts to float32) and any torch function or dispatch mode (fake
    tensors, flop counters, ...), which must see the operator."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.is_autocast_enabled("cpu"):
        return False
    if torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled():
        return False
    return all(t is None or (type(t) in _PLAIN and t.device.type == "cpu") for t in tensors)


def sequence(kernel: str, x: Tensor, params: list[Tensor], state0: list[Tensor], valid: Tensor | None,
             recurrent_mask: Tensor | None, zoneout: list[Tensor], zoneout_rate: float, reverse: bool,
             carry_output: bool, eps: float, store: bool) -> list[Tensor]:  # fmt: skip
    """``lstmkit::sequence_forward``, differentiable, also under torch.func transforms; plain eager
    calls run the C++ loops without the operators' dispatch (:class:`_EagerSequence`). An absent
    parameter (a cell without biases) is an empty tensor."""
    args = (kernel, x, params, state0, valid, recurrent_mask, zoneout, zoneout_rate, reverse, carry_output, eps, store)
    flat = (*params, *state0, valid, recurrent_mask, *zoneout)
    layout = (kernel, len(params), len(state0), zoneout_rate, reverse, carry_output, eps, store)
    if torch._C._are_functorch_transforms_active():
        return list(_FunctorchSequence.apply(layout, x, *flat))
    if not _plain_eager((x, *flat)):
        return sequence_forward(*args)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *flat)):
        return list(_EagerSequence.apply(layout, x, *flat))
    return _forward_call(*args)
