"""bfloat16 products under CPU autocast (``lstmkit.engine.precision``; ``csrc/loop.h``, "GEMM precision").

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the layers keep their float32 weights and the
native kernels run every product of at least 4M multiply-adds (``kMinBf16Macs``) on bfloat16
operands through oneDNN, with float32 results; the smaller per-step products run the AVX512-BF16
kernel of ``csrc/bf16_gemm.h`` where the CPU has it (:data:`SMALL_BF16`), else float32. Gates,
states and weight gradients stay float32. What is checked:

* every native kernel (and a generated user cell, when its C++ build is cached) through
  :func:`cell_sequence` with and without :func:`bf16_gemms`, in every option: output, final states
  and gradients within bfloat16 tolerance of the float32 call *and* measurably off it -- a result
  equal to float32 means the bfloat16 products did not run. The per-step products (inputs too
  narrow for the input projection to cross 4M) and the backward's products (from the float32
  forward's saved tensors) are shown to take bfloat16 on their own; the threshold is checked to the
  row, and the row blocks of two threads;
* the layers under autocast against their own float32 run (outputs, states, every gradient) and
  against oracles that share nothing with lstmkit's float32 path: ``torch.nn`` in float32 with
  copied weights, and the NumPy loop of ``tests/oracles.py`` for the peephole and layer-norm LSTMs;
* precision semantics: result dtypes as ``torch.nn``'s under autocast (asserted against
  ``torch.nn``, not hard-coded), float32 weights and gradients, no bfloat16 products under float16
  autocast, disabled autocast or on the engines without them, the setting per thread and restored
  after an exception, products below the threshold in bfloat16 with AVX512-BF16 and exactly float32
  without;
* 30 Adam steps under autocast against the same run in float32, and ``torch.compile(fullgraph=True)``.

One intra-op thread (as most core test modules): the whole batch is then one row block, and the
sizes below make every product of a call cross 4M (:func:`products` asserts it). On more threads
the per-step product of a row block is smaller and may stay float32 (see ``RowBlocks``), which
:func:`test_row_blocks_on_two_threads` covers with a batch big enough for its blocks.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Callable

import numpy as np
import oracles
import pytest
import torch
from core_helpers import CIFGCell, torch_nn_under_autocast
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkit
from lstmkit.engine import compiling, native, precision
from lstmkit.engine.kernels import kernel_of
from lstmkit.engine.native import generated, ops
from lstmkit.engine.native.build import load_extension
from lstmkit.engine.native.functions import cell_sequence
from lstmkit.engine.native.generated import kernels
from lstmkit.engine.native.ops import BF16, KERNELS, STANDARD
from lstmkit.engine.precision import bf16_gemms, bf16_gemms_active
from lstmkit.validation import ShapeError

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not native.is_available(), reason="no C++ toolchain for the native engine"),
]

MIN_BF16_MACS = 4 << 20  # csrc/loop.h, kMinBf16Macs
# whether per-step products under the threshold run bfloat16 too (csrc/bf16_gemm.h, AVX512-BF16)
SMALL_BF16 = native.is_available() and bool(load_extension().avx512_bf16)
TOLERANCE = 2e-2  # outputs and final states: relative to the float32 result's norm
GRAD_TOLERANCE = 5e-2  # gradients
# A ReLU's derivative switches where a pre-activation changes sign: the few units bfloat16 products move
# across zero pass all or none of their gradient, which puts the gradients of a ReLU RNN some 3-5% off
# float32 (torch.nn.RNN's own under autocast as much: 4-5% at these sizes), while its backward alone,
# from the same forward, is 0.3% off (test_kernel_backward_products_take_bf16 keeps 5% there).
RELU_GRAD_TOLERANCE = 1e-1
CHANGED = 1e-5  # at least this far from float32, or the bfloat16 products did not run
STEPS = 6


@pytest.fixture(autouse=True)
def bf16_products_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """The layers take bfloat16 products only on a CPU with bf16 hardware; the tests here check those
    products, which a CPU without it emulates: the layers are told the hardware is there."""
    monkeypatch.setattr(precision, "_BF16_HARDWARE", True)


def autocast(dtype: torch.dtype = torch.bfloat16, enabled: bool = True):
    return torch.autocast("cpu", dtype=dtype, enabled=enabled)


def relative(got: Tensor, want: Tensor) -> float:
    """``|got - want| / |want|`` (Frobenius norms), in float64."""
    got, want = got.detach().double(), want.detach().double()
    return ((got - want).norm() / want.norm()).item()


def assert_bf16(got: Tensor, want: Tensor, what: str, tolerance: float = TOLERANCE) -> None:
    """``got`` (a bfloat16-product result) is within ``tolerance`` of ``want`` (float32), and not what
    float32 products give: ``want`` rounded to ``got``'s dtype (a bfloat16 result of float32 products
    is exactly the float32 result rounded, see test_products_below_the_threshold_stay_float32)."""
    assert got.shape == want.shape, what
    error = relative(got, want)
    assert error <= tolerance, f"{what}: {error:.2e} from float32 (tolerance {tolerance})"
    changed = relative(got, want.detach().to(got.dtype))
    assert changed > CHANGED, f"{what}: {changed:.2e} from float32: the bfloat16 products did not run"


# ----------------------------------------------------------------------------------------------
# the kernels, through cell_sequence

CellFactory = Callable[[int, int], lstmkit.Cell]
# kernel -> (cell, input size, hidden size, batch): on one thread every product of a call crosses 4M
KERNEL_CASES: dict[str, tuple[CellFactory, int, int, int]] = {
    "lstm": (lambda i, h: lstmkit.LSTMCell(i, h), 128, 128, 64),
    "lstm_projection": (lambda i, h: lstmkit.LSTMCell(i, h, proj_size=h // 2), 128, 256, 128),
    "peephole_lstm": (lambda i, h: lstmkit.PeepholeLSTMCell(i, h), 128, 128, 64),
    "layernorm_lstm": (lambda i, h: lstmkit.LayerNormLSTMCell(i, h), 128, 128, 64),
    "gru": (lambda i, h: lstmkit.GRUCell(i, h), 128, 256, 64),
    "gru_reset_before": (lambda i, h: lstmkit.GRUCell(i, h, reset_after=False), 128, 256, 64),
    "rnn_tanh": (lambda i, h: lstmkit.RNNCell(i, h), 128, 256, 64),
    "rnn_relu": (lambda i, h: lstmkit.RNNCell(i, h, nonlinearity="relu"), 128, 256, 64),
}
KERNEL_NAMES = list(KERNEL_CASES)
assert sorted(KERNEL_NAMES) == sorted(KERNELS)  # a new kernel needs a case here


def products(kernel: str, cell: lstmkit.Cell, steps: int, batch: int) -> dict[str, int]:
    """The multiply-adds of each product a forward call of ``kernel`` makes (per-step ones per step)."""
    gates, inputs = cell.weight_ih.shape
    hidden, recurrent = cell.hidden_size, cell.recurrent_size
    found = {"input projection": steps * batch * inputs * gates}
    if kernel == "gru":
        found["h W_hh^T"] = batch * hidden * gates
    elif kernel == "gru_reset_before":
        found |= {"h W_hrz^T": batch * hidden * 2 * hidden, "(r h) W_hn^T": batch * hidden * hidden}
    else:
        found["h W_hh^T"] = batch * recurrent * gates
    if kernel == "lstm_projection":
        found["m W_hr^T"] = batch * hidden * recurrent
    return found


def make_cell(factory: CellFactory, inputs: int, hidden: int) -> lstmkit.Cell:
    cell = factory(inputs, hidden)
    with torch.no_grad():  # layer-norm gains off 1, shifts off 0, peepholes of some weight: every one matters
        for name, parameter in cell.named_parameters():
            if name not in (*STANDARD, "weight_hr"):
                parameter.add_(0.2 * torch.randn_like(parameter))
    return cell


def kernel_params(kernel: str, cell: lstmkit.Cell, own: tuple[str, ...] | None = None) -> list[Tensor]:
    """The kernel's parameter list (the standard four, then its own), as cell_sequence takes it."""
    tensors = dict(cell.named_parameters())
    names = (*STANDARD, *(KERNELS[kernel][0] if own is None else own))
    return [tensors[name] for name in names]


def setting_options(setting: str, steps: int, batch: int, cell: lstmkit.Cell) -> dict:
    """cell_sequence's options for one setting, drawn from a generator of their own."""
    generator = torch.Generator().manual_seed(5)
    lengths = torch.randint(0, steps + 1, (batch,), generator=generator)
    lengths[:2] = torch.tensor([steps, 0])  # a full sequence and an empty one
    valid = torch.arange(steps)[:, None] < lengths[None, :]
    keep = (torch.rand(batch, cell.recurrent_size, generator=generator) > 0.3).float() / 0.7
    zoneout = tuple(torch.rand(steps, batch, size, generator=generator) < 0.3 for size in cell.state_sizes)
    return {
        "plain": {},
        "lengths": {"valid": valid},
        "reverse": {"reverse": True},
        "recurrent_dropout": {"recurrent_mask": keep},
        "zoneout_train": {"zoneout_masks": zoneout},
        "zoneout_eval": {"zoneout_rate": 0.3},
        "everything": {"valid": valid, "carry_output": True, "reverse": True, "recurrent_mask": keep,
                       "zoneout_masks": zoneout},
    }[setting]  # fmt: skip


KERNEL_SETTINGS = ["plain", "lengths", "reverse", "recurrent_dropout", "zoneout_train", "zoneout_eval", "everything"]


def inputs_for(cell: lstmkit.Cell, steps: int, batch: int) -> tuple[Tensor, tuple[Tensor, ...]]:
    x = torch.randn(steps, batch, cell.input_size)
    state = tuple(0.5 * torch.randn(batch, size) for size in cell.state_sizes)
    return x, state


def float32_and_bf16(kernel: str, cell: lstmkit.Cell, x: Tensor, state: tuple[Tensor, ...]) -> list:
    """``(name, bf16 result, float32 result)`` for the output and each final state of an inference
    call of ``kernel`` with ``cell``'s parameters, without and with :func:`bf16_gemms`."""
    params = kernel_params(kernel, cell)
    with torch.no_grad():
        want = cell_sequence(kernel, x, params, state, eps=getattr(cell, "eps", 0.0))
        with bf16_gemms():
            got = cell_sequence(kernel, x, params, state, eps=getattr(cell, "eps", 0.0))
    return list(zip(("output", *cell.state_names), (got[0], *got[1]), (want[0], *want[1]), strict=True))


def run_kernel(kernel: str, cell: lstmkit.Cell, params: list[Tensor], x: Tensor, state: tuple[Tensor, ...],
               bf16: bool, **options) -> tuple[list[Tensor], list[Tensor], list[str]]:  # fmt: skip
    """``(output, *final states)`` of one call, the gradients of a loss of them with respect to the
    input, every parameter and the initial states, and those gradients' names. The backward runs
    outside :func:`bf16_gemms`: the call's precision travels with it."""
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    with bf16_gemms(bf16):
        output, final = cell_sequence(kernel, x, params, state, eps=getattr(cell, "eps", 0.0), **options)
    generator = torch.Generator().manual_seed(9)  # the same loss for both precisions
    loss = (output * torch.randn(output.shape, generator=generator)).sum()
    loss = loss + sum((s * torch.randn(s.shape, generator=generator)).sum() for s in final)
    grads = torch.autograd.grad(loss, [x, *params, *state])
    named = {id(p): name for name, p in cell.named_parameters()}
    names = ["input", *(named[id(p)] for p in params), *(f"{n}0" for n in cell.state_names)]
    return [output, *final], list(grads), names


@pytest.mark.parametrize("setting", KERNEL_SETTINGS)
@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_kernel_bf16_matches_float32(kernel: str, setting: str) -> None:
    """Output and final states within 2e-2 of the float32 call, every gradient within 5%, all of them
    off float32; the results stay float32 tensors."""
    factory, inputs, hidden, batch = KERNEL_CASES[kernel]
    cell = make_cell(factory, inputs, hidden)
    assert kernel_of(cell) == kernel
    small = {name: macs for name, macs in products(kernel, cell, STEPS, batch).items() if macs < MIN_BF16_MACS}
    assert not small, f"products under the bfloat16 threshold: {small}"
    params = kernel_params(kernel, cell)
    x, state = inputs_for(cell, STEPS, batch)
    options = setting_options(setting, STEPS, batch, cell)
    want, want_grads, names = run_kernel(kernel, cell, params, x, state, False, **options)
    got, got_grads, _ = run_kernel(kernel, cell, params, x, state, True, **options)
    for what, g, w in zip(("output", *cell.state_names), got, want, strict=True):
        assert g.dtype == torch.float32, what
        assert_bf16(g, w, what)
    tolerance = RELU_GRAD_TOLERANCE if kernel == "rnn_relu" else GRAD_TOLERANCE
    for what, g, w in zip(names, got_grads, want_grads, strict=True):
        assert g.dtype == torch.float32, what
        assert_bf16(g, w, f"d {what}", tolerance)


# the per-step products alone: inputs so narrow that the input projection stays under 4M
NARROW = 4


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_kernel_per_step_products_take_bf16(kernel: str) -> None:
    factory, _, hidden, batch = KERNEL_CASES[kernel]
    cell = make_cell(factory, NARROW, hidden)
    found = products(kernel, cell, STEPS, batch)
    assert found.pop("input projection") < MIN_BF16_MACS <= min(found.values())
    for what, g, w in float32_and_bf16(kernel, cell, *inputs_for(cell, STEPS, batch)):
        assert_bf16(g, w, what)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_kernel_backward_products_take_bf16(kernel: str) -> None:
    """The backward operator alone, from the float32 forward's saved tensors: its "+bf16" form gives
    every gradient within 5% of the float32 backward, and off it."""
    factory, inputs, hidden, batch = KERNEL_CASES[kernel]
    cell = make_cell(factory, inputs, hidden)
    params = [p.detach() for p in kernel_params(kernel, cell)]
    x, state = inputs_for(cell, STEPS, batch)
    eps = getattr(cell, "eps", 0.0)
    ops = torch.ops.lstmkit
    with torch.no_grad():
        results = ops.sequence_forward(kernel, x, params, list(state), None, None, [], 0.0, False, False, eps, True)
        saved = results[1 + len(state) :]
        grad_output = torch.randn_like(results[0])
        grad_state = [torch.randn_like(s) for s in state]
        needs = [True] * (1 + len(params))
        want, got = (
            ops.sequence_backward(
                name, grad_output, grad_state, x, params, saved, None, None, [], 0.0, False, False, eps, needs
            )
            for name in (kernel, kernel + BF16)
        )
    names = ["input", *STANDARD, *KERNELS[kernel][0], *cell.state_names]
    for what, g, w in zip(names, got, want, strict=True):
        assert g.dtype == torch.float32, what
        assert_bf16(g, w, f"d {what}", GRAD_TOLERANCE)


@pytest.mark.parametrize("batch", [63, 64])
def test_kernel_threshold_is_4m_multiply_adds(batch: int) -> None:
    """(63 x 128) x (128 x 512) is 4,128,768 multiply-adds: float32, bit for bit, unless the CPU runs
    the AVX512-BF16 kernel below the threshold; 64 rows make 4,194,304 = 4M: bfloat16 through oneDNN.
    (The narrow input keeps the input projection under 4M either way.)"""
    cell = lstmkit.LSTMCell(NARROW, 128)
    found = products("lstm", cell, STEPS, batch)
    assert found["input projection"] < MIN_BF16_MACS
    assert (found["h W_hh^T"] >= MIN_BF16_MACS) == (batch == 64)
    for what, g, w in float32_and_bf16("lstm", cell, *inputs_for(cell, STEPS, batch)):
        if batch == 64 or SMALL_BF16:
            assert_bf16(g, w, what)
        else:
            assert torch.equal(g, w), what


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_fewer_than_8_rows_in_all_multiply_in_float32(kernel: str) -> None:
    """Packing a weight for bfloat16 products costs more than it saves below 8 rows in all (steps
    times batch, csrc/gemm.h packing_pays): one step of one sequence, the call of text generation,
    gives float32's result bit for bit; 8 rows in all, as 8 steps or a batch of 8, bfloat16 products
    (on a CPU with AVX512-BF16)."""
    factory, inputs, hidden, _ = KERNEL_CASES[kernel]
    cell = factory(inputs, hidden)
    for steps, batch in ((1, 1), (7, 1), (1, 7), (8, 1), (1, 8)):
        for what, g, w in float32_and_bf16(kernel, cell, *inputs_for(cell, steps, batch)):
            if steps * batch >= 8 and SMALL_BF16:  # (else these small products are float32 anyway)
                assert_bf16(g, w, f"{what} ({steps} x {batch})")
            else:
                assert torch.equal(g, w), f"{what} ({steps} x {batch})"


@pytest.mark.parametrize("kernel", ["lstm", "peephole_lstm", "layernorm_lstm", "rnn_tanh"])
def test_row_blocks_on_two_threads(kernel: str) -> None:
    """On two threads these kernels run the time loop on two row blocks, each with its own per-step
    product: with 128 rows each block's crosses 4M (the narrow input keeps the input projection
    under it), so the bfloat16 product of a block's rows is what makes the difference."""
    factory, _, hidden, _ = KERNEL_CASES[kernel]
    batch = 128
    cell = make_cell(factory, NARROW, hidden)
    found = products(kernel, cell, STEPS, batch // 2)
    assert found.pop("input projection") < MIN_BF16_MACS <= min(found.values())
    params = kernel_params(kernel, cell)
    x, state = inputs_for(cell, STEPS, batch)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want, want_grads, names = run_kernel(kernel, cell, params, x, state, False)
        got, got_grads, _ = run_kernel(kernel, cell, params, x, state, True)
    finally:
        torch.set_num_threads(threads)
    for what, g, w in zip(("output", *cell.state_names), got, want, strict=True):
        assert_bf16(g, w, what)
    for what, g, w in zip(names, got_grads, want_grads, strict=True):
        assert_bf16(g, w, f"d {what}", GRAD_TOLERANCE)


@pytest.fixture
def cached_builds_only(monkeypatch):
    """Load a generated cell's module only if it is built already: a build is ~60 s, which this file
    does not spend (tests/engine/test_conformance.py and tests/engine/test_generated.py build CIFGCell's)."""
    build = kernels.compile_module

    def load_if_built(name, sources, directory, **kwargs):
        if not any(next(directory.rglob(f"{stem}.so"), None) for stem in (name, f"{name}_noomp")):
            pytest.skip(f"the generated module {name} is not built yet (a C++ build of ~60 s)")
        return build(name, sources, directory, **kwargs)

    monkeypatch.setattr(kernels, "compile_module", load_if_built)


@pytest.mark.usefixtures("cached_builds_only")
def test_generated_cell_bf16_matches_float32() -> None:
    """A user cell translated to C++ (the CIFG LSTM of examples/custom_cell.py): the kernel through
    cell_sequence with every option at once, and a layer of it under autocast."""
    cell = CIFGCell(128, 256)  # gates 3H: 64 x 256 x 768 per step
    made = generated.kernel_for(cell, 1, "1")
    assert made is not None, generated.why_not(cell)
    kernel, translation = made
    params = kernel_params(kernel, cell, translation.tensors)
    batch = 64
    found = products(kernel, cell, STEPS, batch)
    assert min(found.values()) >= MIN_BF16_MACS, found
    x, state = inputs_for(cell, STEPS, batch)
    options = setting_options("everything", STEPS, batch, cell)
    want, want_grads, names = run_kernel(kernel, cell, params, x, state, False, **options)
    got, got_grads, _ = run_kernel(kernel, cell, params, x, state, True, **options)
    for what, g, w in zip(("output", *cell.state_names), got, want, strict=True):
        assert_bf16(g, w, what)
    for what, g, w in zip(names, got_grads, want_grads, strict=True):
        assert_bf16(g, w, f"d {what}", GRAD_TOLERANCE)

    layer = lstmkit.Recurrent(CIFGCell, 128, 256)
    x = torch.randn(STEPS, batch, 128)
    compiling.set_compile(True)
    try:
        want = layer(x)[0]
        assert ops.is_native_node(want.grad_fn)  # the generated kernel ran
        with autocast():
            got = layer(x)[0]
    finally:
        compiling.set_compile(None)
    assert got.dtype == torch.bfloat16
    assert_bf16(got, want, "layer output")


# ----------------------------------------------------------------------------------------------
# the layers under autocast

LayerFactory = Callable[..., lstmkit.Recurrent]
# name -> (layer of these options, batch): every product of the call crosses 4M on one thread
LAYERS: dict[str, tuple[LayerFactory, int]] = {
    "lstm": (lambda **kw: lstmkit.LSTM(128, 128, **kw), 64),
    "lstm-proj": (lambda **kw: lstmkit.LSTM(128, 256, proj_size=128, **kw), 128),
    "gru": (lambda **kw: lstmkit.GRU(128, 256, **kw), 64),
    "gru-reset-before": (lambda **kw: lstmkit.GRU(128, 256, reset_after=False, **kw), 64),
    "rnn-tanh": (lambda **kw: lstmkit.RNN(128, 256, engine="native", **kw), 64),  # "auto" runs torch's kernel
    "rnn-relu": (lambda **kw: lstmkit.RNN(128, 256, nonlinearity="relu", engine="native", **kw), 64),
    "peephole": (lambda **kw: lstmkit.Recurrent(lstmkit.PeepholeLSTMCell, 128, 128, **kw), 64),
    "layernorm": (lambda **kw: lstmkit.Recurrent(lstmkit.LayerNormLSTMCell, 128, 128, **kw), 64),
}
# setting -> (layer options, training mode, whether the call takes lengths)
LAYER_SETTINGS: dict[str, tuple[dict, bool, bool]] = {
    "plain": ({}, True, False),
    "lengths": ({}, True, True),
    "bidirectional": ({"bidirectional": True}, True, True),
    "recurrent_dropout": ({"recurrent_dropout": 0.3}, True, False),
    "zoneout_train": ({"zoneout": 0.3}, True, True),
    "zoneout_eval": ({"zoneout": 0.3}, False, False),
}


def layer_hx(layer: lstmkit.Recurrent, batch: int) -> tuple[Tensor, ...]:
    count = layer.num_layers * layer.num_directions
    return tuple(0.5 * torch.randn(count, batch, size) for size in layer.cells[0].state_sizes)


def lengths_for(batch: int, steps: int = STEPS) -> Tensor:
    lengths = torch.randint(1, steps + 1, (batch,), generator=torch.Generator().manual_seed(3))
    lengths[0] = steps
    return lengths


def run_layer(layer: lstmkit.Recurrent, x: Tensor, hx: tuple[Tensor, ...], *, bf16: bool, lengths=None,
              seed: int = 4) -> tuple[list[Tensor], dict[str, Tensor]]:  # fmt: skip
    """``(output, *final states)`` of one call (under autocast when ``bf16``; masks drawn from the
    same seed either way) and the gradients of a loss of them: input, initial states, every parameter."""
    layer.zero_grad()
    x = x.clone().requires_grad_()
    hx = tuple(h.clone().requires_grad_() for h in hx)
    torch.manual_seed(seed)
    with autocast(enabled=bf16):
        output, state = layer(x, hx if len(hx) > 1 else hx[0], lengths=lengths)
    results = [output, *(state if isinstance(state, tuple) else (state,))]
    generator = torch.Generator().manual_seed(9)
    loss = sum((r.float() * torch.randn(r.shape, generator=generator)).sum() for r in results)
    loss.backward()
    grads = {"input": x.grad, **{f"hx {k}": h.grad for k, h in enumerate(hx)}}
    grads |= {name: p.grad.clone() for name, p in layer.named_parameters()}
    return results, grads


@pytest.mark.parametrize("setting", list(LAYER_SETTINGS))
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_under_autocast_matches_float32(name: str, setting: str) -> None:
    """The layer under autocast against the same call in float32: output and final states within
    2e-2 and off float32, every gradient (input, initial states, each weight) within 5%, in float32."""
    factory, batch = LAYERS[name]
    options, training, with_lengths = LAYER_SETTINGS[setting]
    layer = factory(**options).train(training)
    x = torch.randn(STEPS, batch, layer.input_size)
    hx = layer_hx(layer, batch)
    lengths = lengths_for(batch) if with_lengths else None
    want, want_grads = run_layer(layer, x, hx, bf16=False, lengths=lengths)
    got, got_grads = run_layer(layer, x, hx, bf16=True, lengths=lengths)
    for what, g, w in zip(("output", *layer.cells[0].state_names), got, want, strict=True):
        # with projections c_n stays float32, as torch.nn.LSTM's (test_result_dtypes_are_torch_nn_s)
        projected_c = what == "c" and getattr(layer, "proj_size", 0)
        assert g.dtype == (torch.float32 if projected_c else layer.autocast_output_dtype), what
        assert_bf16(g, w, what)
    tolerance = RELU_GRAD_TOLERANCE if name == "rnn-relu" else GRAD_TOLERANCE
    for what, w in want_grads.items():
        g = got_grads[what]
        assert g.dtype == torch.float32, what
        error = relative(g, w)
        assert error <= tolerance, f"d {what}: {error:.2e} from float32"
    assert all(p.dtype == torch.float32 for p in layer.parameters())


# ----------------------------------------------------------------------------------------------
# oracles that share nothing with lstmkit's float32 path

TORCH_TWINS: dict[str, tuple[Callable[[], lstmkit.Recurrent], type[nn.Module], dict]] = {
    "lstm": (lambda: lstmkit.LSTM(128, 128), nn.LSTM, {}),
    "lstm-2-bi": (lambda: lstmkit.LSTM(128, 128, num_layers=2, bidirectional=True), nn.LSTM,
                  {"num_layers": 2, "bidirectional": True}),
    "lstm-proj": (lambda: lstmkit.LSTM(128, 256, proj_size=128), nn.LSTM, {"proj_size": 128}),
    "gru": (lambda: lstmkit.GRU(128, 256), nn.GRU, {}),
    "rnn": (lambda: lstmkit.RNN(128, 256, engine="native"), nn.RNN, {}),
}  # fmt: skip


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")  # torch.nn's, autocast
@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("name", list(TORCH_TWINS))
def test_layer_under_autocast_matches_torch_nn_in_float32(name: str, grad: bool) -> None:
    """torch.nn in float32 with copied weights as the oracle: output and final states within 2e-2.
    (Without gradients the plain LSTM runs torch's own kernel under autocast where oneDNN has bf16
    kernels.) The error is of the size torch.nn's own under autocast has: at most twice it."""
    ours_factory, theirs_class, options = TORCH_TWINS[name]
    ours = ours_factory()
    theirs = theirs_class(ours.input_size, ours.hidden_size, **options)
    theirs.load_state_dict(ours.state_dict())
    batch = 128
    x = torch.randn(STEPS, batch, ours.input_size)
    with torch.set_grad_enabled(grad):
        want_output, want_state = theirs(x)
        with autocast():
            got_output, got_state = ours(x)
        torch_result = torch_nn_under_autocast(theirs, x)
    pairs = [("output", got_output, want_output)]
    if isinstance(want_state, tuple):
        pairs += [(n, g, w) for n, g, w in zip(("h_n", "c_n"), got_state, want_state, strict=True)]
    else:
        pairs.append(("h_n", got_state, want_state))
    for what, g, w in pairs:
        error = relative(g, w)
        assert error <= TOLERANCE, f"{what}: {error:.2e} from torch.nn in float32"
    error = relative(got_output, want_output)
    assert error > CHANGED  # bfloat16 products ran
    if torch_result is None:
        return  # torch.nn.LSTM cannot run under autocast on this CPU
    torch_error = relative(torch_result[0], want_output)
    assert error <= 2 * torch_error, f"{error:.2e} vs torch.nn's own {torch_error:.2e} under autocast"


def test_inference_with_lengths_under_autocast_matches_torch_nn_in_float32() -> None:
    """Inference with lengths under autocast runs the native loop (torch's LSTM over a PackedSequence
    has no oneDNN forward): torch.nn in float32 over the packed sequence as the oracle, output and
    final states within 2e-2 and off float32."""
    ours = lstmkit.LSTM(128, 128)
    theirs = nn.LSTM(128, 128)
    theirs.load_state_dict(ours.state_dict())
    batch = 128
    x = torch.randn(STEPS, batch, ours.input_size)
    lengths = torch.randint(1, STEPS + 1, (batch,))
    with torch.no_grad():
        packed, (want_h, want_c) = theirs(pack_padded_sequence(x, lengths, enforce_sorted=False))
        want, _ = pad_packed_sequence(packed, total_length=STEPS)
        with autocast():
            assert lstmkit.engine.explain(ours, x, lengths=lengths).engine == "native"
            got, (got_h, got_c) = ours(x, lengths=lengths)
    for what, g, w in (("output", got, want), ("h_n", got_h, want_h), ("c_n", got_c, want_c)):
        assert_bf16(g, w, what)


NUMPY_TWINS = {
    "peephole": (lstmkit.PeepholeLSTMCell, oracles.peephole_lstm_step),
    "layernorm": (lstmkit.LayerNormLSTMCell, oracles.layernorm_lstm_step),
}


@pytest.mark.parametrize("bidirectional", [False, True], ids=["one-way", "bidirectional"])
@pytest.mark.parametrize("name", list(NUMPY_TWINS))
def test_layer_under_autocast_matches_numpy_oracle(name: str, bidirectional: bool) -> None:
    """The cells torch.nn has not: the NumPy float64 loop of tests/oracles.py (written from the
    equations) over a padded batch, against the layer under autocast."""
    cell, step = NUMPY_TWINS[name]
    layer = lstmkit.Recurrent(cell, 128, 128, bidirectional=bidirectional)
    with torch.no_grad():  # every parameter matters: gains off 1, shifts off 0, peepholes of some weight
        for flat, parameter in layer.named_parameters():
            if not flat.startswith(("weight_ih", "weight_hh", "bias_")):
                parameter.add_(0.2 * torch.randn_like(parameter))
    batch = 64
    x = torch.randn(STEPS, batch, 128)
    lengths = lengths_for(batch)
    hx = layer_hx(layer, batch)
    with autocast():
        output, state = layer(x, hx, lengths=lengths)
    want_output, finals, _ = oracles.run_stack(
        step, oracles.layer_params(layer, 1, bidirectional), x.double().numpy(), bidirectional=bidirectional,
        initial=[tuple(s[k].double().numpy() for s in hx) for k in range(layer.num_directions)],
        valid=oracles.valid_from_lengths(lengths.tolist(), STEPS),
    )  # fmt: skip
    want_state = [np.stack([final[k] for final in finals]) for k in range(2)]
    for what, g, w in zip(("output", "h_n", "c_n"), (output, *state), (want_output, *want_state), strict=True):
        w = torch.from_numpy(w)
        error = relative(g, w)
        assert error <= TOLERANCE, f"{what}: {error:.2e} from the NumPy oracle"


# ----------------------------------------------------------------------------------------------
# precision semantics

DTYPE_TWINS = {
    "lstm": (lstmkit.LSTM, nn.LSTM),
    "lstm-proj": (functools.partial(lstmkit.LSTM, proj_size=3), functools.partial(nn.LSTM, proj_size=3)),
    "gru": (lstmkit.GRU, nn.GRU),
    "rnn": (lstmkit.RNN, nn.RNN),
}


def dtype_cases() -> list:
    cases = []
    for name in DTYPE_TWINS:
        for form in ("padded", "packed"):
            for grad in (True, False):
                ident = f"{name}-{form}-{'training' if grad else 'inference'}"
                cases.append(pytest.param(name, form, grad, id=ident))
    return cases


@pytest.mark.parametrize(("name", "form", "grad"), dtype_cases())
def test_result_dtypes_are_torch_nn_s(name: str, form: str, grad: bool) -> None:
    """Output and final states come out in the dtype torch.nn's layer gives under the same autocast."""
    ours_class, theirs_class = DTYPE_TWINS[name]
    ours = ours_class(4, 8)
    theirs = theirs_class(4, 8)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(5, 3, 4)
    data = pack_padded_sequence(x, [5, 3, 2]) if form == "packed" else x
    with torch.set_grad_enabled(grad):
        with autocast():
            ours_result = ours(data)
        theirs_result = torch_nn_under_autocast(theirs, data)
    if theirs_result is None:
        pytest.skip("torch.nn.LSTM cannot run under bf16 autocast on this CPU (no AVX-512): no oracle")
    found = [ours_result, theirs_result]
    dtypes = []
    for output, state in found:
        output = output.data if form == "packed" else output
        dtypes.append([t.dtype for t in (output, *(state if isinstance(state, tuple) else (state,)))])
    assert dtypes[0] == dtypes[1]


def test_weights_and_gradients_stay_float32() -> None:
    """Autocast changes neither the weights nor the dtype of their gradients, the optimizer's state
    or the state_dict; a bfloat16 input under autocast is taken as its float32 value."""
    for layer in (lstmkit.LSTM(16, 8, bidirectional=True), lstmkit.GRU(16, 8), lstmkit.RNN(16, 8),
                  lstmkit.Recurrent(lstmkit.LayerNormLSTMCell, 16, 8)):  # fmt: skip
        optimizer = torch.optim.Adam(layer.parameters())
        x = torch.randn(5, 3, 16)
        with autocast():
            output = layer(x)[0]
            from_bf16 = layer(x.to(torch.bfloat16))[0]
            from_rounded = layer(x.to(torch.bfloat16).float())[0]
        assert torch.equal(from_bf16, from_rounded)
        output.float().pow(2).sum().backward()
        optimizer.step()
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in layer.parameters())
        assert all(v.dtype == torch.float32 for v in layer.state_dict().values())
        assert all(t.dtype == torch.float32 for s in optimizer.state.values() for t in s.values() if t.dim())


FLOAT32_LAYERS = {
    "lstm": lambda: lstmkit.LSTM(128, 128),
    "gru": lambda: lstmkit.GRU(128, 256),
    "rnn": lambda: lstmkit.RNN(128, 256),  # torch's kernel
    "rnn-native": lambda: lstmkit.RNN(128, 256, engine="native"),
    "peephole": lambda: lstmkit.Recurrent(lstmkit.PeepholeLSTMCell, 128, 128),
}


@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("name", list(FLOAT32_LAYERS))
def test_float16_or_disabled_autocast_computes_in_float32(name: str, grad: bool) -> None:
    """bfloat16 products are for bfloat16 autocast only: under float16 autocast, or bfloat16 autocast
    with enabled=False, a layer of float32 weights gives its float32 results bit for bit."""
    layer = FLOAT32_LAYERS[name]()
    x = torch.randn(STEPS, 64, 128)
    with torch.set_grad_enabled(grad):
        want = layer(x)
        for context in (autocast(torch.float16), autocast(enabled=False)):
            with context:
                got = layer(x)
            assert torch.equal(got[0], want[0])
            for g, w in zip(*(s if isinstance(s, tuple) else (s,) for s in (got[1], want[1])), strict=True):
                assert torch.equal(g, w)
    with torch.set_grad_enabled(grad), autocast():
        assert not torch.equal(layer(x)[0].float(), want[0])  # while bfloat16 autocast does change them


@pytest.mark.parametrize("name", ["lstm", "gru", "peephole"])
def test_without_bf16_hardware_the_products_stay_float32(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU without bf16 hardware (where a bfloat16 product is emulated) bfloat16 autocast gives
    the float32 results and gradients, in torch.nn's result dtype; a bfloat16 layer given bfloat16
    input computes with float32 copies of its weights."""
    monkeypatch.setattr(precision, "_BF16_HARDWARE", False)
    layer = FLOAT32_LAYERS[name]()
    x = torch.randn(STEPS, 64, 128)
    want = layer(x)[0]
    want.sum().backward()
    want_grads = grads_of(layer)
    layer.zero_grad()
    with autocast():
        got = layer(x)[0]
        assert "float32 products" in lstmkit.engine.explain(layer, x).reason
    assert got.dtype == layer.autocast_output_dtype
    torch.testing.assert_close(got, want.to(got.dtype), rtol=0, atol=0)
    got.float().sum().backward()
    for key, value in grads_of(layer).items():
        torch.testing.assert_close(value, want_grads[key], rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        halved = copy.deepcopy(layer).bfloat16()
        widened = copy.deepcopy(halved).float()
        got = halved(x.bfloat16())[0]
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got, widened(x.bfloat16().float())[0].bfloat16(), rtol=0, atol=0)


def test_bf16_gemms_is_restored_after_an_exception_and_per_thread() -> None:
    assert not bf16_gemms_active()
    with bf16_gemms():
        with pytest.raises(RuntimeError, match="inside"), bf16_gemms(False):
            assert not bf16_gemms_active()
            raise RuntimeError("inside")
        assert bf16_gemms_active()  # the outer setting, back
        seen = []
        thread = threading.Thread(target=lambda: seen.append(bf16_gemms_active()))
        thread.start()
        thread.join()
        assert seen == [False]  # another thread does not see this one's setting
    assert not bf16_gemms_active()
    with pytest.raises(KeyError), bf16_gemms():
        raise KeyError("out")
    assert not bf16_gemms_active()

    # a layer call that raises under autocast leaves no setting behind
    layer = lstmkit.LSTM(128, 128)
    x = torch.randn(STEPS, 64, 128)
    want = layer(x)[0]
    with pytest.raises(ShapeError, match="feature size"), autocast():
        layer(torch.randn(STEPS, 64, 127))
    assert not bf16_gemms_active()
    assert torch.equal(layer(x)[0], want)


TINY = {
    "lstm": lambda: lstmkit.LSTM(4, 8),
    "lstm-2-bi": lambda: lstmkit.LSTM(4, 8, num_layers=2, bidirectional=True),
    "gru": lambda: lstmkit.GRU(4, 8),
    "rnn-native": lambda: lstmkit.RNN(4, 8, engine="native"),
    "peephole": lambda: lstmkit.Recurrent(lstmkit.PeepholeLSTMCell, 4, 8),
    "layernorm": lambda: lstmkit.Recurrent(lstmkit.LayerNormLSTMCell, 4, 8),
}


@pytest.mark.parametrize("name", list(TINY))
def test_products_below_the_threshold(name: str) -> None:
    """A tiny layer's products are far under 4M multiply-adds. With the AVX512-BF16 kernel its
    per-step products take bfloat16: within bfloat16 tolerance of float32, and off it. Without, under
    autocast its output is the float32 output rounded to the result dtype, bit for bit, and its
    gradients are float32's."""
    layer = TINY[name]()
    x = torch.randn(STEPS, 3, 4)
    hx = layer_hx(layer, 3)
    lengths = torch.tensor([STEPS, 2, 4])
    results = []
    for bf16 in (False, True):
        layer.zero_grad()
        torch.manual_seed(0)
        with autocast(enabled=bf16):
            output, state = layer(x, hx if len(hx) > 1 else hx[0], lengths=lengths)
        output.float().sum().backward()  # an upstream gradient of ones: exact in bfloat16
        results.append(([output, *(state if isinstance(state, tuple) else (state,))], grads_of(layer)))
    (want, want_grads), (got, got_grads) = results
    for g, w in zip(got, want, strict=True):
        assert g.dtype == layer.autocast_output_dtype
        if SMALL_BF16:
            assert relative(g.float(), w) <= TOLERANCE
        else:
            assert torch.equal(g, w.to(g.dtype))
    if SMALL_BF16:
        assert any(not torch.equal(got_grads[key], w) for key, w in want_grads.items())
    for key, w in want_grads.items():
        if SMALL_BF16:
            assert relative(got_grads[key], w) <= GRAD_TOLERANCE, key
        else:
            assert torch.equal(got_grads[key], w), key


def grads_of(module: nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters()}


ENGINES_WITHOUT_BF16 = {
    "reference": lambda: lstmkit.LSTM(128, 128, engine="reference"),
    "fused": lambda: lstmkit.Recurrent(CIFGCell, 128, 256),  # the Python loop (compilation off)
}


@pytest.mark.parametrize("name", list(ENGINES_WITHOUT_BF16))
def test_engines_without_bf16_products_compute_in_float32(name: str) -> None:
    """The reference loop and the fused engine's Python loop compute in float32 under autocast: the
    float32 result rounded to bfloat16, at sizes where the native kernels would take bfloat16."""
    layer = ENGINES_WITHOUT_BF16[name]()
    x = torch.randn(STEPS, 64, 128)
    compiling.set_compile(False)
    try:
        want = layer(x)[0]
        with autocast():
            got = layer(x)[0]
    finally:
        compiling.set_compile(None)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, want.to(torch.bfloat16))


# ----------------------------------------------------------------------------------------------
# training and torch.compile


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = lstmkit.LSTM(16, 128)
        self.head = nn.Linear(128, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.lstm(x)[0]).squeeze(-1)


def train(bf16: bool, steps: int = 30) -> tuple[list[float], Regressor]:
    """Adam on a running-sum regression (64 sequences of 12 steps), forward under autocast when
    ``bf16``, backward and optimizer step outside it (as lstmkit's Trainer does)."""
    torch.manual_seed(0)
    model = Regressor()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(12, 64, 16)
    target = torch.tanh(0.5 * x[..., :3].sum(-1).cumsum(0) / 3)  # a function of the whole prefix
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        with autocast(enabled=bf16):
            prediction = model(x)
        loss = (prediction.float() - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, model


def test_training_under_autocast_follows_float32() -> None:
    """30 Adam steps: the loss under autocast ends within 10% of the float32 run's (same seed), both
    well under where they started; weights, gradients and Adam's moments stay float32."""
    want, _ = train(bf16=False)
    got, model = train(bf16=True)
    assert got != want  # the bfloat16 products ran
    assert want[-1] < 0.5 * want[0] and got[-1] < 0.5 * got[0], (want, got)
    assert abs(got[-1] - want[-1]) <= 0.1 * want[-1], (got[-1], want[-1])
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())


def test_compile_fullgraph_under_autocast_matches_eager() -> None:
    """torch.compile(fullgraph=True) under autocast: one graph with the "+bf16" operator, the eager
    autocast result within 1e-2 (gradients too); a float32 call afterwards gets a float32 graph."""
    layer = lstmkit.LSTM(128, 128, bidirectional=True)
    kernels: list[str] = []

    def backend(graph_module, example_inputs):
        for node in graph_module.graph.nodes:
            if node.op == "call_function" and str(node.target) == "lstmkit.sequence_forward.default":
                kernels.append(node.args[0])
        return graph_module.forward

    compiled = torch.compile(layer, fullgraph=True, backend=backend)
    x = torch.randn(STEPS, 64, 128)
    lengths = lengths_for(64)
    results = []
    for run in (compiled, layer):
        xx = x.clone().requires_grad_()
        with autocast():
            output, (h_n, c_n) = run(xx, lengths=lengths)
        output.float().pow(2).sum().backward()
        results.append((output, h_n, c_n, xx.grad, grads_of(layer)))
        layer.zero_grad()
    assert kernels == ["lstm+bf16", "lstm+bf16"], kernels  # both directions
    (*got, got_grads), (*want, want_grads) = results
    for what, g, w in zip(("output", "h_n", "c_n", "d input"), got, want, strict=True):
        assert g.dtype == w.dtype, what
        assert relative(g, w) <= 1e-2, what
    for key, w in want_grads.items():
        assert relative(got_grads[key], w) <= 1e-2, key
    want = layer(x, lengths=lengths)[0]
    assert torch.equal(compiled(x, lengths=lengths)[0], want)
    assert kernels[2:] == ["lstm", "lstm"], kernels


@pytest.mark.slow  # ~15 s: Inductor compiles the graph
def test_compile_with_inductor_under_autocast_matches_eager() -> None:
    layer = lstmkit.LSTM(128, 128)
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(STEPS, 64, 128)
    results = []
    for run in (compiled, layer):
        xx = x.clone().requires_grad_()
        with autocast():
            output = run(xx)[0]
        output.float().pow(2).sum().backward()
        results.append((output, xx.grad, grads_of(layer)))
        layer.zero_grad()
    (got, got_dx, got_grads), (want, want_dx, want_grads) = results
    assert got.dtype == want.dtype == torch.bfloat16
    assert relative(got, want) <= 1e-2 and relative(got_dx, want_dx) <= 1e-2
    for key, w in want_grads.items():
        assert got_grads[key].dtype == torch.float32, key
        assert relative(got_grads[key], w) <= 1e-2, key


FALLBACK_SCRIPT = """
import torch
from lstmkit.engine.native.build import load_extension
from lstmkit.engine.native.functions import cell_sequence
from lstmkit.engine.precision import bf16_gemms
torch.set_num_threads(1)
assert not load_extension().avx512_bf16
torch.manual_seed(0)
for hidden, batch, large in ((128, 64, True), (8, 3, False)):
    params = [torch.randn(4 * hidden, 4) / 2, torch.randn(4 * hidden, hidden) / hidden**0.5,
              torch.randn(4 * hidden), torch.randn(4 * hidden)]
    x, state = torch.randn(6, batch, 4), (torch.zeros(batch, hidden), torch.zeros(batch, hidden))
    want = cell_sequence("lstm", x, params, state)[0]
    with bf16_gemms():
        got = cell_sequence("lstm", x, params, state)[0]
    error = float((got - want).norm() / want.norm())
    # oneDNN's bfloat16 product from 4M multiply-adds on (64 x 128 x 512 = 4,194,304), float32 below
    assert (1e-5 < error < 2e-2) if large else torch.equal(got, want), (hidden, error)
print("ok")
"""


@pytest.mark.skipif(not SMALL_BF16, reason="the AVX512-BF16 kernel does not run here: its fallback is the default")
def test_without_the_bf16_kernel_onednn_takes_the_large_products_and_float32_the_rest() -> None:
    """LSTMKIT_BF16_KERNEL=0 gives the paths of a CPU without AVX512-BF16 (read once, so in a fresh
    process): oneDNN's bfloat16 product from 4M multiply-adds on, float32 below, bit for bit."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "LSTMKIT_BF16_KERNEL": "0"}
    done = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.skipif(not SMALL_BF16, reason="needs the AVX512-BF16 kernel of the per-step products")
@pytest.mark.parametrize(("batch", "inputs", "hidden"), [(8, 5, 7), (13, 16, 32), (40, 33, 20)])
@pytest.mark.parametrize("reverse", [False, True])
def test_training_forward_step_is_the_exact_bf16_product(batch: int, inputs: int, hidden: int, reverse: bool) -> None:
    """A training call's step (the AVX512-BF16 kernel's products, x kept beside h for the backward)
    against a float64 LSTM step whose products take the operands rounded to bfloat16, as the kernel's
    do: within float32 rounding of its sums, where products of float32 operands are ~1e-3 off."""
    torch.manual_seed(batch)
    cell = lstmkit.LSTMCell(inputs, hidden)
    x, h0, c0 = torch.randn(1, batch, inputs), torch.randn(batch, hidden), torch.randn(batch, hidden)
    params = kernel_params("lstm", cell)
    results = torch.ops.lstmkit.sequence_forward(
        "lstm" + BF16, x, [p.detach() for p in params], [h0, c0], None, None, [], 0.0, reverse, False, 0.0, True
    )
    h1, c1 = results[1], results[2]

    def rounded(t: Tensor) -> Tensor:
        return t.detach().bfloat16().double()

    w_ih, w_hh, b_ih, b_hh = (p.detach().double() for p in params[:4])
    gates = rounded(x[0]) @ rounded(w_ih).T + rounded(h0) @ rounded(w_hh).T + b_ih + b_hh
    i, f, g, o = gates.chunk(4, dim=1)
    c_want = torch.sigmoid(f) * c0.double() + torch.sigmoid(i) * torch.tanh(g)
    h_want = torch.sigmoid(o) * torch.tanh(c_want)
    assert (c1.double() - c_want).abs().max() < 2e-5
    assert (h1.double() - h_want).abs().max() < 2e-5
