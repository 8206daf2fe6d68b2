"""One conformance suite for every engine that runs a cell over a sequence, against the oracle.

Engines: ``native`` (the C++ kernels of the built-in cells, :func:`lstmkit.engine.native.run_cell`),
``fused`` (:func:`lstmkit.engine.fused.run_cell` with compilation off: the Python loop),
``generated`` (the same entry point with compilation on, for a cell whose ``pointwise`` translates
to C++: the native loop with a generated kernel) and ``reference`` (the plain autograd loop, the
oracle every other engine is compared with; itself checked against the NumPy loop of
``tests/oracles.py``).

Cells: every built-in cell and variant an engine runs, and user cells -- the CIFG LSTM of
``examples/custom_cell.py``, one with a peephole parameter, one with an ``nn.LayerNorm`` submodule
(Python loop only) and one that uses ``xg`` and ``hg`` apart with many operations (translated).

Settings: plain, reverse, a padded batch (lengths, one of them 0), an arbitrary ``valid`` mask with
``carry_output`` off and on, a recurrent mask, zoneout in training (the same seed draws the same
masks) and in evaluation, no biases, all at once, and a hidden size across the SIMD width.

The generated kernels are compiled once per kind of cell and machine (30-50 s each, five kinds, two
at a time) and loaded from the cache afterwards; the rest of the module takes about a minute.

What is checked:

* outputs, final states and the gradients of the input, the initial states and every parameter
  against the reference loop, in float64 (~1e-10) and float32 (~1e-5);
* ``gradcheck`` (every engine) and ``gradgradcheck`` (the engines compared with the reference loop,
  after a Hessian-vector product against the reference loop's) in float64 on small sizes, in fast
  mode (random projections of the Jacobians);
* gradients of parameters handed in by ``torch.func.functional_call``;
* once per engine x cell: ``torch.func.jacrev``, ``torch.autograd.functional.jacobian(...,
  vectorize=True)`` and ``torch.autograd.grad(..., is_grads_batched=True)`` against the Jacobian of
  the reference loop built one ``autograd.grad`` at a time, and ``torch.func.vmap`` over an extra
  leading batch dimension of the input against the reference loop run slice by slice.

What the engines do not do is marked ``xfail(strict=True)`` with the reason (:data:`KNOWN_FAILURES`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import core_helpers
import numpy as np
import oracles
import pytest
import torch
import torch.nn.functional as F
from core_helpers import CIFGCell, PeepholeCIFGCell, make_valid
from torch import Tensor, nn

import lstmkit
from lstmkit.engine import compiling, fused, native
from lstmkit.engine.native import generated
from lstmkit.engine.reference import run_sequence as run_reference

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: more intra-op threads only contend

NATIVE = native.is_available()  # compiles once per user and torch version, then cached


# ----------------------------------------------------------------------------------------------
# user cells


class NormCell(lstmkit.Cell):
    """A GRU-like cell whose xg and hg are used apart, with an nn.LayerNorm submodule on the
    candidate: runs on the Python loop (a layer norm does not translate to C++)."""

    gate_names = ("z", "n")

    def __init__(self, input_size, hidden_size, **kwargs):
        super().__init__(input_size, hidden_size, **kwargs)
        self.norm = nn.LayerNorm(hidden_size, dtype=self.weight_ih.dtype)

    def pointwise(self, xg, hg, state):
        (h,) = state
        x_z, x_n = xg.chunk(2, dim=-1)
        h_z, h_n = hg.chunk(2, dim=-1)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(self.norm(x_n + h_n * z))
        return ((1 - z) * n + z * h,), (z, n)


class GatedCell(lstmkit.Cell):
    """One state; xg and hg apart (a reset gate on the recurrent candidate, as in GRU); a (2H)
    gain; relu, clamp, exp, sqrt, abs, division, powers, where, comparisons and slices: most of
    what the C++ translation knows."""

    gate_names = ("r", "z", "n")

    def __init__(self, input_size, hidden_size, **kwargs):
        super().__init__(input_size, hidden_size, **kwargs)
        self.gain = nn.Parameter(torch.empty(2 * hidden_size, dtype=self.weight_ih.dtype))
        self.reset_parameters()

    def pointwise(self, xg, hg, state):
        (h,) = state
        size = self.hidden_size
        x_r, x_z, x_n = xg.chunk(3, dim=-1)
        h_rz, h_n = hg[:, : 2 * size], hg[:, 2 * size :]
        gain_r, gain_z = self.gain.split(size)
        r = torch.sigmoid(x_r + h_rz[:, :size] * (1 + gain_r))
        z = torch.clamp(torch.exp(-F.relu(x_z + h_rz[:, size:])) ** 2, 0.05, 0.95)
        n = torch.tanh(x_n + r * h_n) / torch.sqrt(1 + 0.1 * gain_z * gain_z) - gain_z.abs() * 0.1
        n = torch.where(n > -0.9, n, n * 0.5 - 0.45)
        return ((1 - z) * n + z * h,), (r, z, n)


# ----------------------------------------------------------------------------------------------
# cells and engines

CELLS: dict[str, Callable[..., lstmkit.Cell]] = {
    "rnn_tanh": lambda i, h, **kw: lstmkit.RNNCell(i, h, **kw),
    "rnn_relu": lambda i, h, **kw: lstmkit.RNNCell(i, h, nonlinearity="relu", **kw),
    "lstm": lambda i, h, **kw: lstmkit.LSTMCell(i, h, **kw),
    "lstm_projection": lambda i, h, **kw: lstmkit.LSTMCell(i, h, proj_size=h // 2 + 1, **kw),
    "peephole_lstm": lambda i, h, **kw: lstmkit.PeepholeLSTMCell(i, h, **kw),
    "layernorm_lstm": lambda i, h, **kw: lstmkit.LayerNormLSTMCell(i, h, **kw),
    "gru": lambda i, h, **kw: lstmkit.GRUCell(i, h, **kw),
    "gru_reset_before": lambda i, h, **kw: lstmkit.GRUCell(i, h, reset_after=False, **kw),
    "cifg": CIFGCell,
    "peephole_cifg": PeepholeCIFGCell,
    "norm": NormCell,
    "gated": GatedCell,
}
BUILT_IN = list(CELLS)[:8]

# which cells each engine runs (test_support_matrix checks that the engines agree)
FUSED = [kind for kind in CELLS if kind not in ("layernorm_lstm", "gru_reset_before")]  # these override project_*/step
TRANSLATED_NOT_BUILT = ("rnn_tanh", "rnn_relu", "peephole_lstm")  # translated in test_support_matrix only
ENGINE_CELLS: dict[str, list[str]] = {
    "native": BUILT_IN,
    "fused": FUSED,
    # what fused runs and translates to C++: not a projection (a state of another size), not a layer norm;
    # of the built-in cells (which run natively) the LSTM and the GRU only: each kind is a C++ build of
    # 30-40 s on a fresh machine
    "generated": [kind for kind in FUSED if kind not in ("lstm_projection", "norm", *TRANSLATED_NOT_BUILT)],
    "reference": list(CELLS),
}
COMPARED = ("native", "fused", "generated")  # the engines compared with the reference loop


def make_cell(kind: str, input_size: int, hidden_size: int, dtype: torch.dtype, bias: bool = True) -> lstmkit.Cell:
    cell = CELLS[kind](input_size, hidden_size, bias=bias, dtype=dtype)
    with torch.no_grad():  # move the layer-norm gains off 1 and shifts off 0, so every parameter matters
        for parameter in cell.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    return cell


def build_generated(kind: str) -> None:
    """Translate and build the generated kernel of a kind of cell (in a worker process)."""
    generated.kernel_for(make_cell(kind, 3, 4, torch.float64), 1, "1")


@pytest.fixture(scope="module", autouse=True)
def generated_kernels_built_two_at_a_time() -> None:
    """Each generated kernel is a C++ build of 30-50 s on one core: built by two worker processes side
    by side before the tests, which then load them from the disk cache, the module's builds take half
    the time on a fresh machine (where they are cached, the workers find them and return)."""
    if NATIVE:
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(build_generated, ENGINE_CELLS["generated"]))


@contextlib.contextmanager
def compile_setting(mode: bool) -> Iterator[None]:
    compiling.set_compile(mode)
    try:
        yield
    finally:
        compiling.set_compile(None)


def run_native(cell, x, state, **options):
    return native.run_cell(cell, x, state, **options)


def run_fused(cell, x, state, **options):
    """The Python loop: compilation off, so neither a generated kernel nor Inductor."""
    with compile_setting(False):
        return fused.run_cell(cell, x, state, **options)


def run_generated(cell, x, state, **options):
    """The fused engine's entry point with compilation on: a cell that translates runs natively."""
    with compile_setting(True):
        return fused.run_cell(cell, x, state, **options)


RUN = {"native": run_native, "fused": run_fused, "generated": run_generated, "reference": run_reference}


def prepare(engine: str, kind: str, cell: lstmkit.Cell) -> None:
    """Build what the engine needs before a test runs it (outside any torch.func transform), and
    make sure the generated engine really runs the generated kernel rather than falling back.

    One generated C++ module serves a kind of cell at every hidden size, so in a process that used
    the kind at another size first -- a model with two layers of one user cell -- the kernel is a
    shared one (the recomputation behind double backward once took the first cell's sizes). Each
    generated-engine test makes that so (a cell one unit wider first), rather than depending on
    which test happened to run first."""
    if engine in ("native", "generated") and not NATIVE:
        pytest.skip("the native engine cannot be built on this machine")
    if engine == "generated":
        with torch.random.fork_rng():
            other = CELLS[kind](cell.input_size, cell.hidden_size + 1, bias=cell.bias, dtype=cell.weight_ih.dtype)
        generated.kernel_for(other, 1, "1")
        assert generated.kernel_for(cell, 1, "1") is not None, generated.why_not(cell)


# ----------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class Setting:
    """The options of one run (:class:`lstmkit.engine.SequenceOptions`) and how the cell is built."""

    valid: str = "none"  # make_valid kind: "none", "lengths" (one sequence of length 0), "holes"
    carry_output: bool = False
    reverse: bool = False
    recurrent_mask: bool = False
    zoneout: float = 0.0
    training: bool = False
    bias: bool = True
    hidden: int = 5

    def options(self, steps: int, batch: int, recurrent_size: int, dtype: torch.dtype) -> dict:
        options = {"valid": make_valid(self.valid, steps, batch), "carry_output": self.carry_output}
        options |= {"reverse": self.reverse, "zoneout": self.zoneout, "training": self.training}
        if self.recurrent_mask:  # dropout-like: zeros and 1 / keep
            options["recurrent_mask"] = (torch.rand(batch, recurrent_size) > 0.4).to(dtype) / 0.6
        return options

    @property
    def random(self) -> bool:
        return bool(self.zoneout and self.training)


SETTINGS: dict[str, Setting] = {
    "plain": Setting(),
    "reverse": Setting(reverse=True),
    "lengths": Setting(valid="lengths"),
    "valid": Setting(valid="holes"),
    "valid_carry": Setting(valid="holes", carry_output=True),
    "valid_carry_reverse": Setting(valid="holes", carry_output=True, reverse=True),
    "recurrent_mask": Setting(recurrent_mask=True),
    "zoneout_train": Setting(zoneout=0.3, training=True, valid="lengths"),
    "zoneout_eval": Setting(zoneout=0.3),
    "no_bias": Setting(bias=False, valid="lengths", reverse=True),
    "everything": Setting("holes", carry_output=True, reverse=True, recurrent_mask=True, zoneout=0.25, training=True),
    "wide": Setting(hidden=19, valid="holes", reverse=True),  # across the SIMD width: tail handling
}
SMALL = [name for name in SETTINGS if name != "wide"]  # for gradcheck
# for gradgradcheck, one setting per option (lengths and carry_output without reverse are in others)
SECOND_ORDER = [name for name in SMALL if name not in ("lengths", "valid_carry")]
FUNCTORCH = Setting(valid="holes", carry_output=True, reverse=True, recurrent_mask=True)  # no random draws


# ----------------------------------------------------------------------------------------------
# known failures


@dataclass(frozen=True)
class Known:
    """Cases that fail today: ``tests`` of ``engine``, for ``cells`` (all when empty), raising
    ``raises``, and why."""

    tests: tuple[str, ...]
    engine: str
    reason: str
    raises: type[Exception] = Exception
    cells: tuple[str, ...] = ()


KNOWN_FAILURES: list[Known] = []  # none today; an entry marks its cases xfail(strict=True)


def cases(test: str, engines, settings=(None,), dtypes=(None,)) -> list:
    """pytest params ``(engine, kind[, setting][, dtype])`` for every cell each engine runs, marked
    xfail(strict=True) where :data:`KNOWN_FAILURES` says so."""
    params = []
    for engine in engines:
        for kind in ENGINE_CELLS[engine]:
            marks = [
                pytest.mark.xfail(strict=True, raises=known.raises, reason=known.reason)
                for known in KNOWN_FAILURES
                if test in known.tests and engine == known.engine and (not known.cells or kind in known.cells)
            ]
            for setting in settings:
                for dtype in dtypes:
                    values = [engine, kind, setting, dtype]
                    ident = "-".join(str(v).removeprefix("torch.") for v in values if v is not None)
                    params.append(pytest.param(*(v for v in values if v is not None), id=ident, marks=marks))
    return params


def close(got: Tensor, want: Tensor, what: str) -> None:
    """float64 agreement with the reference loop, naming what differs."""
    torch.testing.assert_close(got, want, **core_helpers.ENGINE_TOLERANCE[torch.float64], msg=lambda m: f"{what}: {m}")


def tolerance(kind: str, dtype: torch.dtype) -> dict:
    if dtype == torch.float32 and kind in ("layernorm_lstm", "norm"):
        # the layer norms' backward cancels terms: in float32 both engines are ~2e-6 off the float64
        # answer (relative to the largest value), so their element-wise gap reaches a few 1e-5
        return {"rtol": 1e-4, "atol": 1e-4}
    return core_helpers.ENGINE_TOLERANCE[dtype]


# ----------------------------------------------------------------------------------------------
# outputs, final states and first-order gradients against the reference loop


@pytest.mark.parametrize(
    ("engine", "kind", "setting", "dtype"),
    cases("matches_reference", COMPARED, list(SETTINGS), [torch.float64, torch.float32]),
)
def test_matches_reference(engine: str, kind: str, setting: str, dtype: torch.dtype) -> None:
    """Output, final states and the gradients of the input, initial states and every parameter."""
    spec = SETTINGS[setting]
    steps, batch = 6, 5
    cell = make_cell(kind, 3, spec.hidden, dtype, spec.bias)
    prepare(engine, kind, cell)
    options = spec.options(steps, batch, cell.recurrent_size, dtype)
    expected, actual = core_helpers.run_both(RUN[engine], cell, steps, batch, **options)
    core_helpers.assert_same(expected, actual, **tolerance(kind, dtype))


ORACLE_STEPS = {
    "rnn_tanh": (oracles.rnn_step, {"nonlinearity": "tanh"}),
    "rnn_relu": (oracles.rnn_step, {"nonlinearity": "relu"}),
    "lstm": (oracles.lstm_step, {}),
    "lstm_projection": (oracles.lstm_step, {}),
    "peephole_lstm": (oracles.peephole_lstm_step, {}),
    "layernorm_lstm": (oracles.layernorm_lstm_step, {}),
    "gru": (oracles.gru_step, {"reset_after": True}),
    "gru_reset_before": (oracles.gru_step, {"reset_after": False}),
    "cifg": (oracles.cifg_step, {}),
}


@pytest.mark.parametrize("setting", [name for name, s in SETTINGS.items() if not s.random])
@pytest.mark.parametrize("kind", list(ORACLE_STEPS))
def test_reference_matches_numpy(kind: str, setting: str) -> None:
    """The oracle itself: the reference loop against the NumPy loop of tests/oracles.py (written
    from the equations), outputs and final states in float64. (Zoneout in training draws its
    masks in the engines; that the engines agree on them is checked above.)"""
    spec = SETTINGS[setting]
    steps, batch = 6, 5
    cell = make_cell(kind, 3, spec.hidden, torch.float64, spec.bias)
    options = spec.options(steps, batch, cell.recurrent_size, torch.float64)
    x = torch.randn(steps, batch, 3, dtype=torch.float64)
    state = tuple(torch.randn(batch, size, dtype=torch.float64) for size in cell.state_sizes)
    with torch.no_grad():
        result = run_reference(cell, x, state, **options)
    step, extra = ORACLE_STEPS[kind]
    valid, mask = options["valid"], options.get("recurrent_mask")
    output, final, _ = oracles.run_direction(
        step, oracles.cell_params(cell), x.numpy(), tuple(s.numpy() for s in state),
        valid=None if valid is None else valid.numpy(), carry_output=spec.carry_output, reverse=spec.reverse,
        h_mask=None if mask is None else mask.numpy(), zoneout=spec.zoneout, **extra,
    )  # fmt: skip
    for got, want in zip((result.output, *result.state), (output, *final), strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# gradcheck and gradgradcheck


class EngineCall(nn.Module):
    """An engine's run of ``cell`` as a module, so that :func:`torch.func.functional_call` can hand
    it the cell's parameters as plain tensors (function inputs for gradcheck and torch.func)."""

    def __init__(self, engine: str, cell: lstmkit.Cell, options: dict, seed: int | None = None) -> None:
        super().__init__()
        self.engine, self.cell, self.options, self.seed = engine, cell, options, seed

    def forward(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        if self.seed is not None:  # zoneout in training: the same masks at every call
            torch.manual_seed(self.seed)
        result = RUN[self.engine](self.cell, x, state, **self.options)
        return (result.output, *result.state)


@dataclass
class Problem:
    """A small float64 call of one engine: ``function(*inputs)`` returns ``(output, *final_state)``;
    ``inputs`` are the input, the initial states and every parameter of the cell, all requiring
    gradients. ``functional``: the parameters are tensors of their own, handed to the cell by
    :func:`torch.func.functional_call` (what torch.func's transforms need); otherwise they are the
    cell's own parameters (gradcheck perturbs its inputs in place, which the cell then sees)."""

    call: EngineCall
    names: list[str]
    inputs: tuple[Tensor, ...]
    functional: bool

    def function(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        states = len(self.call.cell.state_sizes)
        x, state, params = tensors[0], tensors[1 : 1 + states], tensors[1 + states :]
        if not self.functional:
            return self.call(x, *state)
        parameters = {f"cell.{name}": p for name, p in zip(self.names, params, strict=True)}
        return torch.func.functional_call(self.call, parameters, (x, *state))

    def with_engine(self, engine: str) -> Problem:
        return replace(self, call=EngineCall(engine, self.call.cell, self.call.options, self.call.seed))


def problem(engine: str, kind: str, spec: Setting, functional: bool = False, steps: int = 3, batch: int = 2,
            inputs: int = 3, hidden: int = 4) -> Problem:  # fmt: skip
    cell = make_cell(kind, inputs, hidden, torch.float64, spec.bias)
    prepare(engine, kind, cell)
    options = spec.options(steps, batch, cell.recurrent_size, torch.float64)
    names = [name for name, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_() if functional else p for p in cell.parameters()]
    x = torch.randn(steps, batch, inputs, dtype=torch.float64, requires_grad=True)
    state = [torch.randn(batch, size, dtype=torch.float64, requires_grad=True) for size in cell.state_sizes]
    call = EngineCall(engine, cell, options, seed=7 if spec.random else None)
    return Problem(call, names, (x, *state, *params), functional)


GRADCHECK_ENGINES = (*COMPARED, "reference")


@pytest.mark.parametrize(("engine", "kind", "setting"), cases("gradcheck", GRADCHECK_ENGINES, SMALL))
def test_gradcheck(engine: str, kind: str, setting: str) -> None:
    p = problem(engine, kind, SETTINGS[setting])
    assert torch.autograd.gradcheck(p.function, p.inputs, fast_mode=True)


@pytest.mark.slow  # ~15 s in all
@pytest.mark.parametrize(("engine", "kind"), cases("gradcheck_full", COMPARED))
def test_gradcheck_full(engine: str, kind: str) -> None:
    """Every Jacobian entry (gradcheck's slow mode), once per engine x cell, with every option on."""
    p = problem(engine, kind, SETTINGS["everything"])
    assert torch.autograd.gradcheck(p.function, p.inputs)


def second_order(p: Problem) -> list[Tensor]:
    """``d/d inputs <w, d<v, outputs>/d inputs>`` for fixed random ``v`` and ``w``: a Hessian-vector
    product of the sequence (zeros where nothing depends on an input)."""
    generator = torch.Generator().manual_seed(11)
    outputs = p.function(*p.inputs)
    cotangents = [torch.randn(out.shape, dtype=out.dtype, generator=generator) for out in outputs]
    grads = torch.autograd.grad(outputs, p.inputs, cotangents, create_graph=True, allow_unused=True)
    directions = [torch.randn(x.shape, dtype=x.dtype, generator=generator) for x in p.inputs]
    total = sum((g * d).sum() for g, d in zip(grads, directions, strict=True) if g is not None and g.requires_grad)
    if not isinstance(total, Tensor):  # no gradient has a graph: every second-order term is zero
        return [torch.zeros_like(x) for x in p.inputs]
    found = torch.autograd.grad(total, p.inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(p.inputs, found, strict=True)]


@pytest.mark.parametrize(("engine", "kind", "setting"), cases("gradgradcheck", COMPARED, SECOND_ORDER))
def test_gradgradcheck(engine: str, kind: str, setting: str) -> None:
    """Second order: first a Hessian-vector product against the reference loop's (cheap, and says
    which input is off), then finite differences of the first-order gradients. (The reference loop
    is not in this grid: the other engines differentiate their backward by recomputing on it, so
    every cell's reference double backward is checked through one of them.)"""
    p = problem(engine, kind, SETTINGS[setting])
    names = ["input", *p.call.cell.state_names, *p.names]
    expected = second_order(p.with_engine("reference"))
    for name, got, want in zip(names, second_order(p), expected, strict=True):
        close(got, want, name)
    assert torch.autograd.gradgradcheck(p.function, p.inputs, fast_mode=True)


# ----------------------------------------------------------------------------------------------
# torch.func and batched gradients, once per engine x cell


def baseline_jacobian(p: Problem) -> list[list[Tensor]]:
    """``J[out][in]`` of the reference loop, one ``autograd.grad`` per output element (no vmap)."""
    reference = p.with_engine("reference")
    outputs = reference.function(*p.inputs)
    jacobian = [[x.new_zeros(*out.shape, *x.shape) for x in p.inputs] for out in outputs]
    for o, out in enumerate(outputs):
        for index in np.ndindex(*out.shape):
            grads = torch.autograd.grad(out[index], p.inputs, retain_graph=True, allow_unused=True)
            for i, g in enumerate(grads):
                if g is not None:
                    jacobian[o][i][index] = g
    return jacobian


def assert_jacobian(actual, expected: list[list[Tensor]]) -> None:
    assert len(actual) == len(expected)
    for o, (got_row, want_row) in enumerate(zip(actual, expected, strict=True)):
        for i, (got, want) in enumerate(zip(got_row, want_row, strict=True)):
            close(got, want, f"d result {o} / d input {i}")


@pytest.mark.parametrize(("engine", "kind"), cases("jacrev", GRADCHECK_ENGINES))
def test_jacrev(engine: str, kind: str) -> None:
    p = problem(engine, kind, FUNCTORCH, functional=True)
    expected = baseline_jacobian(p)
    actual = torch.func.jacrev(p.function, argnums=tuple(range(len(p.inputs))))(*p.inputs)
    assert_jacobian(actual, expected)


@pytest.mark.parametrize(("engine", "kind"), cases("jacobian_vectorized", GRADCHECK_ENGINES))
def test_jacobian_vectorized(engine: str, kind: str) -> None:
    p = problem(engine, kind, FUNCTORCH, functional=True)
    expected = baseline_jacobian(p)
    actual = torch.autograd.functional.jacobian(p.function, p.inputs, vectorize=True)
    assert_jacobian(actual, expected)


@pytest.mark.parametrize(("engine", "kind"), cases("grads_batched", GRADCHECK_ENGINES))
def test_grads_batched(engine: str, kind: str) -> None:
    """``autograd.grad(..., is_grads_batched=True)``: a batch of 3 cotangents at once."""
    p = problem(engine, kind, FUNCTORCH)
    outputs = p.function(*p.inputs)
    cotangents = [torch.randn(3, *out.shape, dtype=out.dtype) for out in outputs]
    actual = torch.autograd.grad(outputs, p.inputs, cotangents, is_grads_batched=True, allow_unused=True)
    reference = p.with_engine("reference").function(*p.inputs)
    for n in range(3):
        want = torch.autograd.grad(reference, p.inputs, [v[n] for v in cotangents], retain_graph=True)
        for i, (got, w) in enumerate(zip(actual, want, strict=True)):
            assert got is not None, f"no gradient for input {i}"
            close(got[n], w, f"cotangent {n}, input {i}")


@pytest.mark.parametrize(("engine", "kind"), cases("functional_call", GRADCHECK_ENGINES))
def test_functional_call(engine: str, kind: str) -> None:
    """Parameters handed in by ``torch.func.functional_call`` (stateless use of a module, as
    torch.func's transforms need) get the gradients the cell's own parameters get from the reference loop."""
    p = problem(engine, kind, FUNCTORCH, functional=True)
    outputs = p.function(*p.inputs)
    cotangents = [torch.randn_like(out) for out in outputs]
    actual = torch.autograd.grad(outputs, p.inputs, cotangents, allow_unused=True)
    own = [*p.inputs[: -len(p.names)], *p.call.cell.parameters()]
    reference = replace(p.with_engine("reference"), functional=False)
    expected = torch.autograd.grad(reference.function(*own), own, cotangents)
    names = ["input", *p.call.cell.state_names, *p.names]
    for name, got, want in zip(names, actual, expected, strict=True):
        assert got is not None, f"no gradient for {name}"
        close(got, want, name)


@pytest.mark.parametrize(("engine", "kind"), cases("vmap", GRADCHECK_ENGINES))
def test_vmap(engine: str, kind: str) -> None:
    """``torch.func.vmap`` over an extra leading dimension of the input (initial states and
    parameters shared): the reference loop run slice by slice."""
    p = problem(engine, kind, FUNCTORCH, functional=True)
    x, rest = p.inputs[0], p.inputs[1:]
    xs = torch.randn(4, *x.shape, dtype=x.dtype)
    actual = torch.func.vmap(lambda x: p.function(x, *rest))(xs)
    reference = p.with_engine("reference")
    with torch.no_grad():
        slices = [reference.function(x, *rest) for x in xs]
    for k, got in enumerate(actual):
        want = torch.stack([s[k] for s in slices])
        close(got, want, f"result {k}")


# ----------------------------------------------------------------------------------------------
# the grid itself


def test_support_matrix() -> None:
    """Each engine runs exactly the cells the grid gives it: a change in what an engine supports
    shows up here rather than as silently fewer (or failing) cases."""
    for kind in CELLS:
        cell = make_cell(kind, 3, 4, torch.float64)
        assert native.supports(cell) == (kind in ENGINE_CELLS["native"]), kind
        runs_fused = fused.why_not(cell) is None
        assert runs_fused == (kind in ENGINE_CELLS["fused"]), kind
        try:
            generated.translate(cell)
            translates = True
        except generated.Untranslatable:
            translates = False
        assert (runs_fused and translates) == (kind in (*ENGINE_CELLS["generated"], *TRANSLATED_NOT_BUILT)), kind
