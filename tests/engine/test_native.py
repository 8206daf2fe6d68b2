"""What is particular to the native (C++) engine: the batch split between threads, empty
sequences and batches, torch.nn's own layers as a second oracle in float32, partial gradients,
the layout of the gradients it hands back and reads, the LSTM/GRU entry points, the instruction
set of the build, and bad arguments raising Python errors. Its agreement with the reference loop
for every cell and option (outputs, states, gradients, gradcheck, gradgradcheck, torch.func) is
in ``tests/engine/test_conformance.py``. The module is skipped when the extension cannot be built here.
"""

from __future__ import annotations

import core_helpers
import pytest
import torch
from core_helpers import make_valid
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import lstmkit
from lstmkit.engine import native
from lstmkit.engine.native import ops
from lstmkit.engine.reference import run_sequence

if not native.is_available():  # compiles once per user and torch version (~30 s), then cached
    pytest.skip("the native engine cannot be built on this machine", allow_module_level=True)


CELLS = {
    "lstm": lambda i, h, **kw: lstmkit.LSTMCell(i, h, **kw),
    "lstm_projection": lambda i, h, **kw: lstmkit.LSTMCell(i, h, proj_size=h // 2 + 1, **kw),
    "gru": lambda i, h, **kw: lstmkit.GRUCell(i, h, **kw),
    "gru_reset_before": lambda i, h, **kw: lstmkit.GRUCell(i, h, reset_after=False, **kw),
    "rnn_tanh": lambda i, h, **kw: lstmkit.RNNCell(i, h, **kw),
    "rnn_relu": lambda i, h, **kw: lstmkit.RNNCell(i, h, nonlinearity="relu", **kw),
    "peephole_lstm": lambda i, h, **kw: lstmkit.PeepholeLSTMCell(i, h, **kw),
    "layernorm_lstm": lambda i, h, **kw: lstmkit.LayerNormLSTMCell(i, h, **kw),
}
KINDS = list(CELLS)
NEW_KINDS = [kind for kind in KINDS if kind not in ("lstm", "gru")]  # beyond the first two kernels


def make_cell(kind: str, input_size: int, hidden_size: int, dtype: torch.dtype, bias: bool = True) -> lstmkit.Cell:
    cell = CELLS[kind](input_size, hidden_size, bias=bias, dtype=dtype)
    with torch.no_grad():  # move the layer-norm gains off 1 and shifts off 0, so every parameter matters
        for parameter in cell.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    assert native.kernel_of(cell) == kind
    return cell


def run_both(cell: lstmkit.Cell, steps: int, batch: int, **options) -> tuple[dict, dict]:
    """The reference loop and the native engine from identical inputs (see :func:`core_helpers.run_both`)."""
    return core_helpers.run_both(native.run_cell, cell, steps, batch, **options)


def assert_same(expected: dict, actual: dict, dtype: torch.dtype, kind: str = "") -> None:
    tolerance = core_helpers.ENGINE_TOLERANCE[dtype]
    if kind == "layernorm_lstm" and dtype == torch.float32:
        # the layer norms' backward cancels terms: in float32 both engines are ~2e-6 off the float64
        # answer (relative to the largest value), so their element-wise gap reaches a few 1e-5
        tolerance = {"rtol": 1e-4, "atol": 1e-4}
    core_helpers.assert_same(expected, actual, **tolerance)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_split_across_threads(kind: str) -> None:
    """Enough rows for the batch to be split between threads: the pointwise pass (at::parallel_for),
    or the whole loop, a block of rows per thread (RowBlocks; 48 + 49 rows, or 3 + 4 on 2 threads)."""
    cell = make_cell(kind, 8, 32, torch.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # whatever the machine has
    try:
        for batch in (97, 7):
            valid = make_valid("holes", 4, batch)
            mask = (torch.rand(batch, cell.recurrent_size) > 0.4).double() / 0.6
            options = {"valid": valid, "carry_output": True, "reverse": True, "recurrent_mask": mask}
            expected, actual = run_both(cell, 4, batch, **options)
            assert_same(expected, actual, torch.float64)
            expected, actual = run_both(cell, 4, batch, zoneout=0.3, training=True)  # zoneout masks, by blocks
            assert_same(expected, actual, torch.float64)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_sequence_and_batch(kind: str) -> None:
    """T = 0 gives back the initial state, B = 0 empty tensors; forward and backward, all options."""
    cell = make_cell(kind, 3, 5, torch.float64)
    for steps, batch in ((0, 3), (4, 0)):
        x = torch.randn(steps, batch, 3, dtype=torch.float64, requires_grad=True)
        state = tuple(torch.randn(batch, size, dtype=torch.float64, requires_grad=True) for size in cell.state_sizes)
        options = {
            "valid": torch.ones(steps, batch, dtype=torch.bool),
            "recurrent_mask": torch.ones(batch, cell.recurrent_size, dtype=torch.float64),
            "zoneout": 0.3,
            "training": True,
            "carry_output": True,
        }
        result = native.run_cell(cell, x, state, **options)
        assert result.output.shape == (steps, batch, cell.recurrent_size)
        if steps == 0:
            assert all(torch.equal(got, want) for got, want in zip(result.state, state, strict=True))
        (result.output.sum() + sum(s.sum() for s in result.state)).backward()
        assert all(p.grad is not None and not p.grad.isnan().any() for p in cell.parameters())


TORCH_LAYERS = {
    "lstm": lambda: nn.LSTM(16, 64),
    "lstm_projection": lambda: nn.LSTM(16, 64, proj_size=24),
    "gru": lambda: nn.GRU(16, 40),
    "rnn_tanh": lambda: nn.RNN(16, 40),
    "rnn_relu": lambda: nn.RNN(16, 40, nonlinearity="relu"),
}


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
# 1-3 rows: the few-rows product (csrc/gemm.h; W_hh^T as dot products forward, W_hh's rows scaled and
# summed backward); 8 and 9 rows: a block of rows per thread (RowBlocks, 4 + 4 and 4 + 5 rows, MKL's
# packed weight per block size)
@pytest.mark.parametrize("batch", [1, 2, 3, 8, 9])
@pytest.mark.parametrize("kernel", list(TORCH_LAYERS))
def test_matches_torch_float32(kernel: str, batch: int) -> None:
    """A longer float32 run of a kernel against torch.nn's own layer (oneDNN for the LSTM): outputs,
    final states and the gradients of every weight."""
    layer = TORCH_LAYERS[kernel]()
    x = torch.randn(60, batch, 16)
    sizes = (layer.proj_size or layer.hidden_size, layer.hidden_size)[: len(native.KERNELS[kernel][1])]
    initial = tuple(torch.randn(1, batch, size) for size in sizes)
    output, final = layer(x, initial if len(initial) > 1 else initial[0])
    final = final if isinstance(final, tuple) else (final,)
    weights = list(layer.parameters())  # weight_ih, weight_hh, bias_ih, bias_hh(, weight_hr): the kernel's order
    native_output, native_final = native.cell_sequence(kernel, x, weights, tuple(s[0] for s in initial))
    for want, got in ((output, native_output), *zip((s[0] for s in final), native_final, strict=True)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    expected = torch.autograd.grad(output.sum() + (final[-1] ** 2).sum(), weights)
    actual = torch.autograd.grad(native_output.sum() + (native_final[-1] ** 2).sum(), weights)
    for want, got in zip(expected, actual, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_no_grad_and_partial_grads() -> None:
    cell = lstmkit.LSTMCell(4, 6, dtype=torch.float64)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    state = (torch.zeros(3, 6, dtype=torch.float64), torch.zeros(3, 6, dtype=torch.float64))
    with torch.no_grad():
        result = native.run_cell(cell, x, state)
    assert not result.output.requires_grad
    torch.testing.assert_close(result.output, run_sequence(cell, x, state).output.detach())
    # input and initial state need no gradient: only the parameters get one
    native_grads = torch.autograd.grad(native.run_cell(cell, x, state).output.sum(), list(cell.parameters()))
    reference_grads = torch.autograd.grad(run_sequence(cell, x, state).output.sum(), list(cell.parameters()))
    for want, got in zip(reference_grads, native_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_bias_grads_are_separate_tensors() -> None:
    cell = lstmkit.LSTMCell(2, 3, dtype=torch.float64)
    result = native.run_cell(cell, torch.randn(4, 2, 2, dtype=torch.float64), cell.initial_state(2, cell.weight_ih))
    result.output.sum().backward()
    torch.testing.assert_close(cell.bias_ih.grad, cell.bias_hh.grad)
    assert cell.bias_ih.grad.data_ptr() != cell.bias_hh.grad.data_ptr()


class PassThrough(TorchFunctionMode):
    """A torch function mode that changes nothing, but under which calls go through the operators."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", KINDS)
def test_eager_calls_match_the_operators(kind: str) -> None:
    """Plain eager calls skip the operators' dispatch (the loops called from an autograd Function);
    under a torch function mode the operators run. Both give the same outputs, states, gradients and
    second-order gradients, bit for bit."""
    cell = make_cell(kind, 4, 6, torch.float64)
    x = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    state = tuple((0.5 * torch.randn_like(s)).requires_grad_() for s in cell.initial_state(3, x))
    tensors = [x, *state, *cell.parameters()]

    def run() -> tuple[object, list[torch.Tensor]]:
        result = native.run_cell(cell, x, state)
        loss = (result.output**2).sum() + sum((s**3).sum() for s in result.state)
        grads = torch.autograd.grad(loss, tensors, create_graph=True)
        second = torch.autograd.grad(sum((g**2).sum() for g in grads), tensors, allow_unused=True)
        return result, [result.output, *result.state, *grads, *(g for g in second if g is not None)]

    eager, eager_values = run()
    with PassThrough():
        dispatched, dispatched_values = run()
    assert type(eager.output.grad_fn).__name__ == "_EagerSequenceBackward"
    assert "lstmkit_sequence_forward" in type(dispatched.output.grad_fn).__name__
    assert all(ops.is_native_node(r.output.grad_fn) for r in (eager, dispatched))
    assert len(eager_values) == len(dispatched_values) > 2 + len(tensors)
    for got, want in zip(eager_values, dispatched_values, strict=True):
        assert torch.equal(got, want)


def test_dispatch_modes_see_the_operators() -> None:
    """What a dispatch mode (fake tensors, flop counters, profilers of ops) sees of a layer: the two
    operators, forward and backward, not the C++ calls of the eager path."""
    seen: set[str] = set()

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.add(str(func))
            return func(*args, **(kwargs or {}))

    layer = lstmkit.LSTM(4, 6)
    with Record():
        layer(torch.randn(5, 3, 4))[0].sum().backward()
    assert {"lstmkit.sequence_forward.default", "lstmkit.sequence_backward.default"} <= seen


def valid_args(dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    steps, batch, inputs, hidden = 3, 2, 4, 5
    return {
        "input": torch.randn(steps, batch, inputs, dtype=dtype),
        "weight_ih": torch.randn(4 * hidden, inputs, dtype=dtype),
        "weight_hh": torch.randn(4 * hidden, hidden, dtype=dtype),
        "bias_ih": torch.randn(4 * hidden, dtype=dtype),
        "bias_hh": torch.randn(4 * hidden, dtype=dtype),
        "h0": torch.zeros(batch, hidden, dtype=dtype),
        "c0": torch.zeros(batch, hidden, dtype=dtype),
    }


def lstm_call(input, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, **options):
    """An LSTM call of :func:`native.cell_sequence` from the arguments of :func:`valid_args`."""
    return native.cell_sequence("lstm", input, [weight_ih, weight_hh, bias_ih, bias_hh], (h0, c0), **options)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"input": torch.randn(3, 2, 4, dtype=torch.float64)}, TypeError, "dtype"),
        ({"h0": torch.zeros(2, 5, dtype=torch.float64)}, TypeError, "h0"),
        ({"input": torch.randn(3, 2, 4).to(torch.int64)}, TypeError, "float32 or float64"),
        ({"input": torch.randn(2, 3, 4).transpose(0, 1)}, ValueError, "contiguous"),
        ({"weight_hh": torch.randn(5, 20).t()}, ValueError, "contiguous"),
        ({"input": torch.randn(3, 2, 7)}, ValueError, "weight_ih"),
        ({"input": torch.randn(3, 4)}, ValueError, "3-D"),
        ({"h0": torch.zeros(3, 5)}, ValueError, "h0"),
        ({"c0": torch.zeros(2, 6)}, ValueError, "c0"),
        ({"weight_hh": torch.randn(20, 4)}, ValueError, "weight_hh"),
        ({"bias_ih": torch.randn(19)}, ValueError, "bias_ih"),
        ({"bias_hh": None}, ValueError, "bias"),
    ],
)
def test_bad_arguments_raise(change: dict, error: type[Exception], message: str) -> None:
    args = valid_args() | change
    with pytest.raises(error, match=message):
        lstm_call(**args)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"valid": torch.ones(3, 2)}, TypeError, "bool"),
        ({"valid": torch.ones(2, 3, dtype=torch.bool)}, ValueError, "valid"),
        ({"recurrent_mask": torch.ones(2, 4)}, ValueError, "recurrent_mask"),
        ({"recurrent_mask": torch.ones(2, 5, dtype=torch.float64)}, TypeError, "recurrent_mask"),
        ({"zoneout_masks": (torch.ones(3, 2, 5), torch.ones(3, 2))}, ValueError, "zoneout_c"),
        ({"zoneout_rate": 1.5}, ValueError, "zoneout_rate"),
    ],
)
def test_bad_options_raise(options: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        lstm_call(**valid_args(), **options)


def test_bad_gru_arguments_raise() -> None:
    x, w_ih, w_hh, h0 = torch.randn(3, 2, 4), torch.randn(15, 4), torch.randn(15, 5), torch.zeros(2, 5)

    def gru(w_hh=w_hh, h0=h0, **options):
        return native.cell_sequence("gru", x, [w_ih, w_hh, None, None], (h0,), **options)

    gru()  # the valid call
    with pytest.raises(ValueError, match=r"weight_hh must have shape \(3H, H\)"):
        gru(w_hh=torch.randn(20, 5))
    with pytest.raises(TypeError, match="h0"):
        gru(h0=torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous"):
        gru(h0=torch.zeros(5, 2).t())
    with pytest.raises(ValueError, match="zoneout_h"):
        gru(zoneout_masks=(torch.zeros(3, 2, 4),))


def cell_args(kind: str, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, list, tuple, float]:
    """A valid cell_sequence call of ``kind``: input, parameter slots, initial state, eps."""
    cell = make_cell(kind, 4, 5, dtype)
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", *native.KERNELS[kind][0])
    params = [getattr(cell, name).detach() for name in names]
    state = tuple(torch.zeros(2, size, dtype=dtype) for size in cell.state_sizes)
    return torch.randn(3, 2, 4, dtype=dtype), params, state, getattr(cell, "eps", 0.0)


SPOILERS = {
    "dtype": (TypeError, "must have dtype", lambda p: p.double()),
    "shape": (ValueError, "must have shape", lambda p: p[:-1]),
    "non-contiguous": (ValueError, "contiguous", lambda p: torch.stack([p, p], -1)[..., 0]),
    "missing": (ValueError, "required", lambda p: None),
}


@pytest.mark.parametrize("spoiler", list(SPOILERS))
@pytest.mark.parametrize(
    ("kind", "slot"),
    [("peephole_lstm", 4), ("peephole_lstm", 6), ("layernorm_lstm", 5), ("layernorm_lstm", 7)]
    + [(kind, 1) for kind in NEW_KINDS],
)
def test_bad_cell_arguments_raise(kind: str, slot: int, spoiler: str) -> None:
    x, params, state, eps = cell_args(kind)
    native.cell_sequence(kind, x, params, state, eps=eps)  # the valid call
    error, message, spoil = SPOILERS[spoiler]
    params[slot] = spoil(params[slot])
    with pytest.raises(error, match=message):
        native.cell_sequence(kind, x, params, state, eps=eps)


def test_bad_calls_raise() -> None:
    x, params, state, eps = cell_args("layernorm_lstm")
    with pytest.raises(ValueError, match="unknown kernel 'lstm2'"):
        native.cell_sequence("lstm2", x, params, state)
    with pytest.raises(ValueError, match="takes 8 parameters, got 4"):
        native.cell_sequence("layernorm_lstm", x, params[:4], state)
    with pytest.raises(ValueError, match="takes 2 initial states, got 1"):
        native.cell_sequence("layernorm_lstm", x, params, state[:1])
    with pytest.raises(ValueError, match="eps"):
        native.cell_sequence("layernorm_lstm", x, params, state, eps=-1.0)
    with pytest.raises(ValueError, match="weight_hh must have shape \\(H, H\\)"):
        native.cell_sequence("rnn_tanh", x, [torch.randn(5, 4), torch.randn(10, 5), None, None], state[:1])


def test_supports() -> None:
    for kind in KINDS:
        assert native.supports(make_cell(kind, 2, 3, torch.float32))
        assert native.supports(make_cell(kind, 2, 3, torch.float64))
        assert not native.supports(make_cell(kind, 2, 3, torch.float32), trace=True)
        assert not native.supports(make_cell(kind, 2, 3, torch.float32), torch.randn(1, 1, 2, dtype=torch.float64))
    assert not native.supports(lstmkit.LSTMCell(2, 3, activation="relu"))
    assert not native.supports(lstmkit.LSTMCell(2, 3, dtype=torch.float16))
    assert not native.supports(lstmkit.GRUCell(2, 3, gate_activation="hard_sigmoid"))
    assert not native.supports(lstmkit.GRUCell(2, 3, reset_after=False, activation="relu"))
    assert not native.supports(lstmkit.RNNCell(2, 3, nonlinearity="elu"))

    class MyPeephole(lstmkit.PeepholeLSTMCell):  # a subclass may change the maths: not native
        pass

    assert not native.supports(MyPeephole(2, 3))
    with pytest.raises(ValueError, match="does not support"):
        native.run_cell(MyPeephole(2, 3), torch.randn(2, 1, 2), (torch.zeros(1, 3),) * 2)


def test_run_cell_names_bad_arguments() -> None:
    """run_cell checks its arguments as the fused engine does (``SequenceOptions.check``), before C++ sees them."""
    cell = lstmkit.LSTMCell(3, 4)
    x = torch.randn(5, 2, 3)
    state = cell.initial_state(2, x)
    with pytest.raises(ValueError, match=r"expected inputs of shape \(T, B, 3\) for LSTMCell\(3, 4\), got \(5, 2\)"):
        native.run_cell(cell, x[:, :, 0], state)
    with pytest.raises(ValueError, match=r"expected state c of shape \(2, 4\), torch.float32 on cpu; got \(3, 4\)"):
        native.run_cell(cell, x, (state[0], torch.zeros(3, 4)))
    with pytest.raises(ValueError, match=r"valid must be a \(T, B\) = \(5, 2\) tensor, got \(2, 5\)"):
        native.run_cell(cell, x, state, valid=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"recurrent_mask must be a constant \(requires_grad=False\)"):
        native.run_cell(cell, x, state, recurrent_mask=torch.ones(2, 4, requires_grad=True))
    with pytest.raises(ValueError, match=r"zoneout must be a number in \[0, 1\), got -0.1"):
        native.run_cell(cell, x, state, zoneout=-0.1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'zonout'"):
        native.run_cell(cell, x, state, zonout=0.1)


def test_instruction_set_is_the_best_the_cpu_has(monkeypatch: pytest.MonkeyPatch) -> None:
    """The build picks the widest vectors the CPU's flags allow; LSTMKIT_ISA may ask for a lesser one,
    never for one the CPU lacks."""
    from lstmkit.engine.native import build

    avx512 = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"}
    cases = [
        (avx512, "", "avx512"),
        (avx512, "avx2", "avx2"),
        (avx512, "generic", "generic"),
        ({"avx2", "fma", "avx512f"}, "", "avx2"),  # AVX-512 without the BW/VL/DQ parts ATen's code uses
        ({"avx2", "fma"}, "avx512", "avx2"),  # asked for what the CPU lacks: ignored
        ({"avx2"}, "", "generic"),  # AVX2 without FMA
        (set(), "nonsense", "generic"),
    ]
    for flags, requested, expected in cases:
        monkeypatch.setattr(build, "cpu_flags", lambda flags=flags: flags)
        monkeypatch.setenv("LSTMKIT_ISA", requested)
        assert build.instruction_set() == expected, (flags, requested)
        assert f"-DCPU_CAPABILITY={expected.upper()}" in build.compile_flags(expected) or expected == "generic"
    assert build.build_directory("avx2") != build.build_directory("avx512")  # never the wrong binary


LOSSES = {  # each hands backward a differently laid out dL/d output
    "sum": lambda out: out.sum(),  # expanded: every stride 0
    "row sums": lambda out: (out.sum(-1) * torch.arange(out.shape[1], dtype=out.dtype)).sum(),  # strides (0, 1, 0)
    "batch-major": lambda out: (out.transpose(0, 1) * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum(),
    "dense": lambda out: (out**2).sum(),
}


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("batch", [3, 10])  # 10: a block of rows per thread
def test_gradient_layouts(loss: str, batch: int) -> None:
    """The gradient of the output is read in its own layout (expanded, per-row, transposed) rather
    than copied out: every weight's gradient matches torch.nn.LSTM's."""
    layer = nn.LSTM(6, 20, dtype=torch.float64)
    x = torch.randn(7, batch, 6, dtype=torch.float64)
    weights = list(layer.parameters())
    expected = torch.autograd.grad(LOSSES[loss](layer(x)[0]), weights)
    initial = (torch.zeros(batch, 20, dtype=torch.float64),) * 2
    output, _ = native.cell_sequence("lstm", x, weights, initial)
    actual = torch.autograd.grad(LOSSES[loss](output), weights)
    for want, got in zip(expected, actual, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
