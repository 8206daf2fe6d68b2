"""Layers against independent oracles: ``torch.nn.LSTM/GRU/RNN`` with copied weights (padded and
PackedSequence runs), the NumPy loop of ``tests/oracles.py`` and gradcheck in float64."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import oracles
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import lstmkit
from lstmkit import Recurrent

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: more intra-op threads only contend

T, B, I, H = 4, 3, 3, 4

TOL = {torch.float64: {"rtol": 1e-9, "atol": 1e-11}, torch.float32: {"rtol": 1e-4, "atol": 2e-5}}
NP_TOL = {"rtol": 1e-10, "atol": 1e-12}


KINDS = {
    "lstm": (lstmkit.LSTM, nn.LSTM, {}),
    "gru": (lstmkit.GRU, nn.GRU, {}),
    "rnn_tanh": (lstmkit.RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (lstmkit.RNN, nn.RNN, {"nonlinearity": "relu"}),
}
STEPS = {
    "lstm": (oracles.lstm_step, {}),
    "gru": (oracles.gru_step, {}),
    "rnn_tanh": (oracles.rnn_step, {"nonlinearity": "tanh"}),
    "rnn_relu": (oracles.rnn_step, {"nonlinearity": "relu"}),
}


def make_pair(kind: str, dtype: torch.dtype = torch.float64, **options):
    """An lstmkit layer and a torch.nn layer with the same weights (copied lstmkit -> torch)."""
    kit_cls, ref_cls, extra = KINDS[kind]
    kit = kit_cls(I, H, dtype=dtype, **extra, **options)
    ref = ref_cls(I, H, dtype=dtype, **extra, **options)
    ref.load_state_dict(kit.state_dict())
    return kit, ref


def state_sizes(kind: str, proj_size: int = 0) -> tuple[int, ...]:
    return (proj_size or H, H) if kind == "lstm" else (H,)


def as_tuple(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def hx_arg(kind: str, states: tuple[torch.Tensor, ...]):
    return states if kind == "lstm" else states[0]


def assert_np(actual: torch.Tensor, expected: np.ndarray, **tol) -> None:
    np.testing.assert_allclose(oracles.to_numpy(actual), expected, **(tol or NP_TOL))


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_()


def compare_param_grads(kit: nn.Module, ref: nn.Module, tol: dict) -> None:
    ref_params = dict(ref.named_parameters())
    kit_params = dict(kit.named_parameters())
    assert list(kit_params) == list(ref_params)
    for name, p in kit_params.items():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, ref_params[name].grad, **tol, msg=lambda m, name=name: f"{name}: {m}")


def random_like_outputs(out: torch.Tensor, states: tuple[torch.Tensor, ...]):
    g = torch.Generator().manual_seed(1234)
    return torch.randn(out.shape, generator=g, dtype=out.dtype), [
        torch.randn(s.shape, generator=g, dtype=s.dtype) for s in states
    ]


def weighted_loss(out, states, w_out, w_states) -> torch.Tensor:
    loss = (out * w_out).sum()
    for s, w in zip(states, w_states, strict=True):
        loss = loss + (s * w).sum()
    return loss


# ---------------------------------------------------------------------------------------------
# parity grid vs torch.nn: outputs, final states, gradients wrt input, initial states, parameters


def _grid():
    for kind in KINDS:
        for num_layers, bidirectional, batch_first, bias, init, unbatched in itertools.product(
            (1, 2), (False, True), (False, True), (True, False), (False, True), (False, True)
        ):
            for proj in (0, 2) if kind == "lstm" else (0,):
                name = (
                    f"{kind}-L{num_layers}-{'bi' if bidirectional else 'uni'}-{'bf' if batch_first else 'tf'}"
                    f"-{'bias' if bias else 'nobias'}-proj{proj}-{'hx' if init else 'nohx'}"
                    f"-{'unbatched' if unbatched else 'batched'}"
                )
                yield pytest.param(kind, num_layers, bidirectional, batch_first, bias, proj, init, unbatched, id=name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind,num_layers,bidirectional,batch_first,bias,proj,init,unbatched", list(_grid()))
def test_parity_with_torch(kind, num_layers, bidirectional, batch_first, bias, proj, init, unbatched, dtype) -> None:
    options = {"num_layers": num_layers, "bidirectional": bidirectional, "batch_first": batch_first, "bias": bias}
    if proj:
        options["proj_size"] = proj
    kit, ref = make_pair(kind, dtype, **options)
    tol = TOL[dtype]
    directions = 2 if bidirectional else 1
    if unbatched:
        x = torch.randn(T, I, dtype=dtype)
    else:
        x = torch.randn(B, T, I, dtype=dtype) if batch_first else torch.randn(T, B, I, dtype=dtype)
    batch_shape = () if unbatched else (B,)
    hx = (
        tuple(torch.randn(num_layers * directions, *batch_shape, s, dtype=dtype) for s in state_sizes(kind, proj))
        if init
        else None
    )

    xk, xr = leaf(x), leaf(x)
    hk = tuple(leaf(s) for s in hx) if init else None
    hr = tuple(leaf(s) for s in hx) if init else None
    out_k, st_k = kit(xk, hx_arg(kind, hk) if init else None)
    out_r, st_r = ref(xr, hx_arg(kind, hr) if init else None)
    st_k, st_r = as_tuple(st_k), as_tuple(st_r)

    assert out_k.shape == out_r.shape and out_k.dtype == dtype
    torch.testing.assert_close(out_k, out_r, **tol)
    assert len(st_k) == len(st_r)
    for a, b in zip(st_k, st_r, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, **tol)

    w_out, w_states = random_like_outputs(out_r, st_r)
    weighted_loss(out_k, st_k, w_out, w_states).backward()
    weighted_loss(out_r, st_r, w_out, w_states).backward()
    torch.testing.assert_close(xk.grad, xr.grad, **tol)
    if init:
        for a, b in zip(hk, hr, strict=True):
            torch.testing.assert_close(a.grad, b.grad, **tol)
    compare_param_grads(kit, ref, tol)


# ---------------------------------------------------------------------------------------------
# state_dict, load_state_dict, all_weights


STATE_DICT_CASES = [
    ("lstm", {}),
    ("lstm", {"num_layers": 3, "bidirectional": True}),
    ("lstm", {"num_layers": 2, "bidirectional": True, "proj_size": 2}),
    ("lstm", {"num_layers": 2, "bidirectional": True, "proj_size": 2, "bias": False}),
    ("gru", {"num_layers": 2, "bidirectional": True}),
    ("gru", {"num_layers": 2, "bias": False}),
    ("rnn_tanh", {"num_layers": 2, "bidirectional": True}),
    ("rnn_relu", {"num_layers": 3, "bias": False}),
]


@pytest.mark.parametrize("kind,options", STATE_DICT_CASES)
def test_state_dict_keys_and_shapes_identical(kind: str, options: dict) -> None:
    kit_cls, ref_cls, extra = KINDS[kind]
    kit, ref = kit_cls(I, H, **extra, **options), ref_cls(I, H, **extra, **options)
    assert list(kit.state_dict()) == list(ref.state_dict())
    assert [tuple(v.shape) for v in kit.state_dict().values()] == [tuple(v.shape) for v in ref.state_dict().values()]
    assert [n for n, _ in kit.named_parameters()] == [n for n, _ in ref.named_parameters()]


@pytest.mark.parametrize("kind,options", STATE_DICT_CASES)
def test_load_state_dict_both_directions(kind: str, options: dict) -> None:
    kit_cls, ref_cls, extra = KINDS[kind]
    x = torch.randn(T, B, I, dtype=torch.float64)

    ref = ref_cls(I, H, dtype=torch.float64, **extra, **options)
    kit = kit_cls(I, H, dtype=torch.float64, **extra, **options)
    assert not all(torch.equal(a, b) for a, b in zip(kit.parameters(), ref.parameters(), strict=True))
    kit.load_state_dict(ref.state_dict())  # torch -> lstmkit
    for a, b in zip(kit(x), ref(x), strict=True):
        for u, v in zip(as_tuple(a), as_tuple(b), strict=True):
            torch.testing.assert_close(u, v, **TOL[torch.float64])

    kit2 = kit_cls(I, H, dtype=torch.float64, **extra, **options)
    ref2 = ref_cls(I, H, dtype=torch.float64, **extra, **options)
    ref2.load_state_dict(kit2.state_dict())  # lstmkit -> torch
    for a, b in zip(kit2(x), ref2(x), strict=True):
        for u, v in zip(as_tuple(a), as_tuple(b), strict=True):
            torch.testing.assert_close(u, v, **TOL[torch.float64])


def test_load_state_dict_assign_and_dtype_conversion_rebind_cells() -> None:
    """Replaced parameter objects (assign=True, .double()) are the ones the cells compute with."""
    kit = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True)
    ref = nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    single = {k: v.float() for k, v in ref.state_dict().items()}
    kit.load_state_dict(single, assign=True)
    kit.double()
    ref.load_state_dict({k: v.double() for k, v in single.items()})
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.testing.assert_close(kit(x)[0], ref(x)[0], **TOL[torch.float64])
    kit.load_state_dict(nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=torch.float64).state_dict(), assign=True)
    ref.load_state_dict(kit.state_dict())
    torch.testing.assert_close(kit(x)[0], ref(x)[0], **TOL[torch.float64])


@pytest.mark.parametrize("kind,options", STATE_DICT_CASES)
def test_all_weights_structure(kind: str, options: dict) -> None:
    kit_cls, ref_cls, extra = KINDS[kind]
    kit, ref = kit_cls(I, H, **extra, **options), ref_cls(I, H, **extra, **options)
    assert [[tuple(p.shape) for p in group] for group in kit.all_weights] == [
        [tuple(p.shape) for p in group] for group in ref.all_weights
    ]
    # same grouping and order as torch's names, and the very parameter objects of the layer
    for group, names in zip(kit.all_weights, ref._all_weights, strict=True):
        assert len(group) == len(names)
        for p, name in zip(group, names, strict=True):
            assert p is getattr(kit, name), name


# ---------------------------------------------------------------------------------------------
# lengths= and PackedSequence vs torch.nn's PackedSequence runs


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths_as", ["list", "tensor"])
def test_lengths_match_torch_packed(kind, num_layers, bidirectional, batch_first, lengths_as) -> None:
    steps, batch = 6, 4
    lengths = [3, 6, 1, 4]  # unsorted, one full-length
    options = {"num_layers": num_layers, "bidirectional": bidirectional, "batch_first": batch_first}
    kit, ref = make_pair(kind, torch.float64, **options)
    shape = (batch, steps, I) if batch_first else (steps, batch, I)
    x = torch.randn(shape, dtype=torch.float64)
    hx = tuple(
        torch.randn(num_layers * (2 if bidirectional else 1), batch, s, dtype=torch.float64) for s in state_sizes(kind)
    )
    xk, xr = leaf(x), leaf(x)
    hk, hr = tuple(leaf(s) for s in hx), tuple(leaf(s) for s in hx)

    arg = lengths if lengths_as == "list" else torch.tensor(lengths, dtype=torch.int32)
    out_k, st_k = kit(xk, hx_arg(kind, hk), lengths=arg)
    packed = pack_padded_sequence(xr, lengths, batch_first=batch_first, enforce_sorted=False)
    out_p, st_r = ref(packed, hx_arg(kind, hr))
    out_r, _ = pad_packed_sequence(out_p, batch_first=batch_first, total_length=steps)
    st_k, st_r = as_tuple(st_k), as_tuple(st_r)

    tol = TOL[torch.float64]
    torch.testing.assert_close(out_k, out_r, **tol)  # zeros past each length on both sides
    for a, b in zip(st_k, st_r, strict=True):
        torch.testing.assert_close(a, b, **tol)

    w_out, w_states = random_like_outputs(out_r, st_r)
    weighted_loss(out_k, st_k, w_out, w_states).backward()
    weighted_loss(out_r, st_r, w_out, w_states).backward()
    torch.testing.assert_close(xk.grad, xr.grad, **tol)
    for a, b in zip(hk, hr, strict=True):
        torch.testing.assert_close(a.grad, b.grad, **tol)
    compare_param_grads(kit, ref, tol)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_relu"])
@pytest.mark.parametrize("enforce_sorted", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
def test_packed_in_packed_out_matches_torch(kind, enforce_sorted, bidirectional, with_hx) -> None:
    steps = 5
    lengths = [5, 4, 2, 1] if enforce_sorted else [2, 5, 1, 4]
    batch = len(lengths)
    kit, ref = make_pair(kind, torch.float64, num_layers=2, bidirectional=bidirectional, batch_first=True)
    x = torch.randn(batch, steps, I, dtype=torch.float64)
    hx = (
        tuple(torch.randn(2 * (2 if bidirectional else 1), batch, s, dtype=torch.float64) for s in state_sizes(kind))
        if with_hx
        else None
    )
    xk, xr = leaf(x), leaf(x)
    pk = pack_padded_sequence(xk, lengths, batch_first=True, enforce_sorted=enforce_sorted)
    pr = pack_padded_sequence(xr, lengths, batch_first=True, enforce_sorted=enforce_sorted)
    out_k, st_k = kit(pk, hx_arg(kind, hx) if with_hx else None)
    out_r, st_r = ref(pr, hx_arg(kind, hx) if with_hx else None)

    assert isinstance(out_k, PackedSequence)
    tol = TOL[torch.float64]
    torch.testing.assert_close(out_k.data, out_r.data, **tol)
    assert torch.equal(out_k.batch_sizes, out_r.batch_sizes)
    for a, b in ((out_k.sorted_indices, out_r.sorted_indices), (out_k.unsorted_indices, out_r.unsorted_indices)):
        assert (a is None and b is None) or torch.equal(a, b)
    for a, b in zip(as_tuple(st_k), as_tuple(st_r), strict=True):
        torch.testing.assert_close(a, b, **tol)

    (out_k.data * out_r.data.detach().cos()).sum().backward()
    (out_r.data * out_r.data.detach().cos()).sum().backward()
    torch.testing.assert_close(xk.grad, xr.grad, **tol)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_zero_length_gives_initial_state_and_zero_outputs(kind, bidirectional, batch_first) -> None:
    steps, lengths = 5, [3, 0, 5, 0]
    batch, num_layers, directions = len(lengths), 2, 2 if bidirectional else 1
    options = {"num_layers": num_layers, "bidirectional": bidirectional, "batch_first": batch_first}
    kit, ref = make_pair(kind, torch.float64, **options)
    x = torch.randn(steps, batch, I, dtype=torch.float64)
    hx = tuple(torch.randn(num_layers * directions, batch, s, dtype=torch.float64) for s in state_sizes(kind))
    out, states = kit(x.transpose(0, 1) if batch_first else x, hx_arg(kind, hx), lengths=lengths)
    out = out.transpose(0, 1) if batch_first else out
    states = as_tuple(states)

    step, opts = STEPS[kind]
    want, finals, _ = oracles.run_stack(
        step,
        oracles.layer_params(kit, num_layers, bidirectional),
        x.numpy(),
        num_layers=num_layers,
        bidirectional=bidirectional,
        initial=[tuple(s[k].numpy() for s in hx) for k in range(num_layers * directions)],
        valid=oracles.valid_from_lengths(lengths, steps),
        **opts,
    )
    assert_np(out, want)
    for k, s in enumerate(states):
        assert_np(s, np.stack([f[k] for f in finals]))
    for b in (1, 3):  # the empty sequences: zero outputs, initial state untouched
        assert torch.all(out[:, b] == 0)
        for s, s0 in zip(states, hx, strict=True):
            assert torch.equal(s[:, b], s0[:, b])

    # the non-empty sequences agree with torch.nn on a packed batch of just them
    keep = [0, 2]
    packed = pack_padded_sequence(x[:, keep], [lengths[k] for k in keep], enforce_sorted=False)
    out_p, st_r = ref(packed, hx_arg(kind, tuple(s[:, keep].contiguous() for s in hx)))
    out_r, _ = pad_packed_sequence(out_p, total_length=steps)
    torch.testing.assert_close(out[:, keep], out_r, **TOL[torch.float64])
    for a, b in zip(states, as_tuple(st_r), strict=True):
        torch.testing.assert_close(a[:, keep], b, **TOL[torch.float64])


# ---------------------------------------------------------------------------------------------
# mask= (Keras semantics) vs the NumPy loop

MASK_CELLS = {
    "lstm": (lambda **kw: lstmkit.LSTM(I, H, **kw), oracles.lstm_step, {}, (H, H)),
    "lstm_proj": (lambda **kw: lstmkit.LSTM(I, H, proj_size=2, **kw), oracles.lstm_step, {}, (2, H)),
    "gru": (lambda **kw: lstmkit.GRU(I, H, **kw), oracles.gru_step, {}, (H,)),
    "gru_reset_before": (
        lambda **kw: lstmkit.GRU(I, H, reset_after=False, **kw),
        oracles.gru_step,
        {"reset_after": False},
        (H,),
    ),
    "rnn": (lambda **kw: lstmkit.RNN(I, H, **kw), oracles.rnn_step, {}, (H,)),
    "peephole": (
        lambda **kw: Recurrent(lstmkit.PeepholeLSTMCell, I, H, **kw),
        oracles.peephole_lstm_step,
        {},
        (H, H),
    ),
    "layernorm": (
        lambda **kw: Recurrent(lstmkit.LayerNormLSTMCell, I, H, **kw),
        oracles.layernorm_lstm_step,
        {},
        (H, H),
    ),
}


def randomize(module: nn.Module, scale: float = 0.7) -> nn.Module:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.uniform_(-scale, scale)
    return module


def numpy_run(model, name: str, x_tm: np.ndarray, *, hx=None, **kw):
    """The NumPy stack for ``model`` (a MASK_CELLS entry) on time-major ``x_tm``."""
    _, step, opts, sizes = MASK_CELLS[name]
    batch = x_tm.shape[1]
    directions = 2 if model.bidirectional else 1
    initial = None if hx is None else [tuple(s[k] for s in hx) for k in range(model.num_layers * directions)]
    return oracles.run_stack(
        step,
        oracles.layer_params(model, model.num_layers, model.bidirectional),
        x_tm,
        num_layers=model.num_layers,
        bidirectional=model.bidirectional,
        initial=initial,
        zero_state=lambda index: tuple(np.zeros((batch, s)) for s in sizes),
        **opts,
        **kw,
    )


# (T, B) masks, True = real step: holes in the middle, leading masked steps, trailing masked steps
MASK = np.array(
    [
        [1, 0, 1, 1, 0],
        [0, 0, 1, 1, 1],
        [1, 0, 0, 1, 1],
        [1, 1, 0, 0, 1],
        [0, 1, 1, 0, 0],
        [1, 1, 0, 1, 0],
    ],
    dtype=bool,
)


@pytest.mark.parametrize("name", sorted(MASK_CELLS))
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (1, True), (2, True)])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
def test_mask_matches_numpy_keras_semantics(name, num_layers, bidirectional, batch_first, with_hx) -> None:
    steps, batch = MASK.shape
    model = randomize(
        MASK_CELLS[name][0](
            num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, dtype=torch.float64
        )
    )
    x = torch.randn(steps, batch, I, dtype=torch.float64)
    mask = torch.from_numpy(MASK)
    sizes, directions = MASK_CELLS[name][3], 2 if bidirectional else 1
    # a non-zero initial state: outputs before the first valid step are still zero (not h_0)
    hx = tuple(torch.randn(num_layers * directions, batch, s, dtype=torch.float64) for s in sizes) if with_hx else None
    hx_in = None if hx is None else (hx if len(hx) > 1 else hx[0])
    out, states = model(x.transpose(0, 1) if batch_first else x, hx_in, mask=mask.T if batch_first else mask)
    out = out.transpose(0, 1) if batch_first else out
    hx_np = None if hx is None else [s.numpy() for s in hx]
    # Keras: one direction repeats the previous output at masked steps; Bidirectional outputs zeros there
    want, finals, _ = numpy_run(model, name, x.numpy(), hx=hx_np, valid=MASK, carry_output=not bidirectional)
    assert_np(out, want)
    for k, s in enumerate(as_tuple(states)):
        assert_np(s, np.stack([f[k] for f in finals]))


def test_mask_semantics_spelled_out() -> None:
    """Keras: leading masked steps output 0, a masked step repeats the previous output, state carries;
    a bidirectional layer (Keras Bidirectional with return_sequences) outputs 0 at masked steps."""
    x = torch.randn(5, 1, I, dtype=torch.float64)
    mask = torch.tensor([[0], [1], [0], [1], [0]], dtype=torch.bool)
    one_way = lstmkit.GRU(I, H, dtype=torch.float64)
    out, h_n = one_way(x, mask=mask)
    assert torch.all(out[0] == 0)  # before the first valid step
    assert torch.equal(out[2], out[1]) and torch.equal(out[4], out[3])
    plain_out, plain_h = one_way(x[[1, 3]])  # the state skipped the masked steps
    torch.testing.assert_close(h_n, plain_h, **TOL[torch.float64])
    torch.testing.assert_close(out[3], plain_out[1], **TOL[torch.float64])

    model = lstmkit.GRU(I, H, bidirectional=True, dtype=torch.float64)
    out, h_n = model(x, mask=mask)
    fwd, bwd = out[..., :H], out[..., H:]
    assert torch.all(out[[0, 2, 4]] == 0)
    plain_out, plain_h = model(x[[1, 3]])
    torch.testing.assert_close(h_n, plain_h, **TOL[torch.float64])
    torch.testing.assert_close(fwd[3], plain_out[1, :, :H], **TOL[torch.float64])
    torch.testing.assert_close(bwd[1], plain_out[0, :, H:], **TOL[torch.float64])


def test_mask_unbatched_and_float_mask() -> None:
    model = randomize(lstmkit.LSTM(I, H, bidirectional=True, dtype=torch.float64))
    x = torch.randn(6, I, dtype=torch.float64)
    mask = MASK[:, 1]
    out, (h_n, c_n) = model(x, mask=torch.from_numpy(mask).double())  # 0/1 floats count as a mask
    want, finals, _ = numpy_run(model, "lstm", x.numpy()[:, None], valid=mask[:, None], carry_output=False)
    assert out.shape == (6, 2 * H) and h_n.shape == (2, H)
    assert_np(out, want[:, 0])
    assert_np(h_n, np.stack([f[0][0] for f in finals]))
    assert_np(c_n, np.stack([f[1][0] for f in finals]))


def test_all_true_mask_equals_plain_run() -> None:
    model = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64)
    a, b = model(x, mask=torch.ones(T, B, dtype=torch.bool)), model(x)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# merge modes


@pytest.mark.parametrize("mode", ["sum", "mul", "ave"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_merge_modes_combine_concat_halves(mode, kind, num_layers, with_lengths) -> None:
    kit_cls, _, _ = KINDS[kind]
    concat = kit_cls(I, H, num_layers=num_layers, bidirectional=True, batch_first=True, dtype=torch.float64)
    merged = kit_cls(
        I, H, num_layers=num_layers, bidirectional=True, batch_first=True, merge_mode=mode, dtype=torch.float64
    )
    assert list(merged.state_dict()) == list(concat.state_dict())
    merged.load_state_dict(concat.state_dict())
    assert merged.output_size == H and concat.output_size == 2 * H
    x = torch.randn(B, T, I, dtype=torch.float64)
    lengths = [4, 1, 3] if with_lengths else None
    out_c, st_c = concat(x, lengths=lengths)
    out_m, st_m = merged(x, lengths=lengths)
    f, b = out_c[..., :H], out_c[..., H:]
    expected = {"sum": f + b, "mul": f * b, "ave": (f + b) / 2}[mode]
    assert out_m.shape == (B, T, H)
    torch.testing.assert_close(out_m, expected, **TOL[torch.float64])
    for a, c in zip(as_tuple(st_m), as_tuple(st_c), strict=True):
        torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_merge_mode_matches_numpy_stack() -> None:
    model = randomize(lstmkit.GRU(I, H, num_layers=2, bidirectional=True, merge_mode="mul", dtype=torch.float64))
    x = torch.randn(T, B, I, dtype=torch.float64)
    out, _ = model(x)
    want, _, _ = numpy_run(model, "gru", x.numpy(), merge_mode="mul")
    assert_np(out, want)


def test_merge_directions_function() -> None:
    f, b = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(lstmkit.merge_directions(f, b, "concat"), torch.cat([f, b], -1))
    torch.testing.assert_close(lstmkit.merge_directions(f, b, "ave"), (f + b) / 2)


# ---------------------------------------------------------------------------------------------
# recurrent dropout


def test_recurrent_dropout_eval_is_no_dropout() -> None:
    kit, ref = make_pair("lstm", torch.float64, num_layers=2, bidirectional=True)
    noisy = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, recurrent_dropout=0.5, dtype=torch.float64)
    noisy.load_state_dict(kit.state_dict())
    noisy.eval()
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.testing.assert_close(noisy(x)[0], ref(x)[0], **TOL[torch.float64])
    noisy.train()
    assert not torch.allclose(noisy(x)[0], ref(x)[0])


def test_recurrent_dropout_zero_in_training_is_plain() -> None:
    kit, ref = make_pair("gru", torch.float64, num_layers=2, bidirectional=True)
    kit.train()
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.testing.assert_close(kit(x)[0], ref(x)[0], **TOL[torch.float64])


@pytest.mark.parametrize("name", ["lstm", "lstm_proj", "gru", "gru_reset_before", "peephole", "layernorm"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_recurrent_dropout_known_mask_matches_numpy(monkeypatch, name, with_lengths) -> None:
    model = randomize(
        MASK_CELLS[name][0](num_layers=2, bidirectional=True, recurrent_dropout=0.4, dtype=torch.float64)
    ).train()
    g = torch.Generator().manual_seed(7)
    calls: list[tuple[int, int]] = []
    masks: list[torch.Tensor] = []

    def known_mask(self, batch_size, size, like):
        calls.append((batch_size, size))
        m = torch.bernoulli(torch.full((batch_size, size), 0.6, dtype=like.dtype), generator=g) / 0.6
        masks.append(m)
        return m

    monkeypatch.setattr(Recurrent, "_recurrent_dropout_mask", known_mask)
    x = torch.randn(T, B, I, dtype=torch.float64)
    lengths = [4, 2, 3] if with_lengths else None
    out, states = model(x, lengths=lengths)

    recurrent_size = MASK_CELLS[name][3][0]
    assert calls == [(B, recurrent_size)] * 4  # one mask per layer and direction, none per time step
    valid = oracles.valid_from_lengths(lengths, T) if with_lengths else None
    want, finals, _ = numpy_run(model, name, x.numpy(), valid=valid, h_masks=[m.numpy() for m in masks])
    assert_np(out, want)
    for k, s in enumerate(as_tuple(states)):
        assert_np(s, np.stack([f[k] for f in finals]))


@pytest.fixture
def dropout_masks(monkeypatch) -> list[torch.Tensor]:
    """Every recurrent-dropout mask the layers draw, in order (the real ones, recorded)."""
    made: list[torch.Tensor] = []
    original_mask = Recurrent._recurrent_dropout_mask

    def spy_mask(self, batch_size, size, like):
        m = original_mask(self, batch_size, size, like)
        made.append(m)
        return m

    monkeypatch.setattr(Recurrent, "_recurrent_dropout_mask", spy_mask)
    return made


def test_recurrent_dropout_mask_is_constant_over_time(monkeypatch, dropout_masks) -> None:
    """Every step of a sequence sees the same mask object; a fresh one for each layer and direction."""
    model = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, recurrent_dropout=0.5, engine="reference").train()
    seen: list[tuple[int, torch.Tensor | None]] = []
    original_step = lstmkit.LSTMCell.step

    def spy_step(self, xg, state, recurrent_mask=None):
        seen.append((id(self), recurrent_mask))
        return original_step(self, xg, state, recurrent_mask)

    monkeypatch.setattr(lstmkit.LSTMCell, "step", spy_step)
    steps = 6
    model(torch.randn(steps, B, I))
    assert len(seen) == 4 * steps and len(dropout_masks) == 4
    for run in range(4):
        chunk = seen[run * steps : (run + 1) * steps]
        assert len({cell for cell, _ in chunk}) == 1
        assert all(mask is dropout_masks[run] for _, mask in chunk)
    for m in dropout_masks:  # Bernoulli(keep) / keep, one row per sequence
        assert m.shape == (B, H)
        assert torch.all((m == 0) | torch.isclose(m, torch.tensor(2.0)))


def test_recurrent_dropout_real_mask_reproduced_by_numpy(dropout_masks) -> None:
    model = randomize(lstmkit.LSTM(I, H, bidirectional=True, recurrent_dropout=0.5, dtype=torch.float64)).train()
    x = torch.randn(8, 6, I, dtype=torch.float64)
    out, _ = model(x)
    assert any((m == 0).any() for m in dropout_masks)
    want, _, _ = numpy_run(model, "lstm", x.numpy(), h_masks=[m.numpy() for m in dropout_masks])
    assert_np(out, want)


# ---------------------------------------------------------------------------------------------
# zoneout


@pytest.mark.parametrize("name", ["lstm", "gru", "peephole", "lstm_proj"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_zoneout_eval_is_expectation(name, with_lengths) -> None:
    rate = 0.3
    model = randomize(MASK_CELLS[name][0](num_layers=2, bidirectional=True, zoneout=rate, dtype=torch.float64)).eval()
    x = torch.randn(T, B, I, dtype=torch.float64)
    lengths = [4, 1, 3] if with_lengths else None
    out, states = model(x, lengths=lengths)
    valid = oracles.valid_from_lengths(lengths, T) if with_lengths else None
    want, finals, _ = numpy_run(model, name, x.numpy(), valid=valid, zoneout=rate)
    assert_np(out, want)
    for k, s in enumerate(as_tuple(states)):
        assert_np(s, np.stack([f[k] for f in finals]))
    # and it is not the plain run
    plain, _, _ = numpy_run(model, name, x.numpy(), valid=valid)
    assert not np.allclose(want, plain)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_zoneout_training_keeps_old_or_takes_new(name) -> None:
    rate, steps, batch = 0.2, 6, 16
    model = randomize(MASK_CELLS[name][0](bidirectional=True, zoneout=rate, dtype=torch.float64)).train()
    _, step, opts, sizes = MASK_CELLS[name]
    x = torch.randn(steps, batch, I, dtype=torch.float64)
    out, states, trace = model(x, return_gates=True)
    params = oracles.layer_params(model, 1, True)
    kept = fresh = 0
    for direction, key in enumerate(("l0", "l0_reverse")):
        names = ("h", "c")[: len(sizes)]
        traced = [oracles.to_numpy(trace[key][n]) for n in names]
        order = range(steps - 1, -1, -1) if direction else range(steps)
        old = tuple(np.zeros((batch, s)) for s in sizes)
        for t in order:
            new, _ = step(params["_" + key], x.numpy()[t], old, **opts)
            for k in range(len(sizes)):
                is_old = np.isclose(traced[k][t], old[k], rtol=1e-12, atol=1e-14)
                is_new = np.isclose(traced[k][t], new[k], rtol=1e-12, atol=1e-14)
                assert np.all(is_old | is_new), (key, t, names[k])
                kept += int((is_old & ~is_new).sum())
                fresh += int((is_new & ~is_old).sum())
            old = tuple(traced[k][t] for k in range(len(sizes)))
        for k, s in enumerate(as_tuple(states)):
            np.testing.assert_array_equal(oracles.to_numpy(s[direction]), old[k])
    total = kept + fresh
    assert 0.1 < kept / total < 0.3  # about `rate` of the units kept their old value (not 1 - rate)
    # the output is the zoned-out h
    np.testing.assert_array_equal(oracles.to_numpy(out[..., :H]), oracles.to_numpy(trace["l0"]["h"]))


def test_zoneout_training_differs_from_eval_and_rate_zero_is_plain() -> None:
    kit, ref = make_pair("lstm", torch.float64, num_layers=2, bidirectional=True)
    zoned = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, zoneout=0.5, dtype=torch.float64)
    zoned.load_state_dict(kit.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    assert not torch.allclose(zoned.train()(x)[0], zoned.eval()(x)[0])
    kit.train()
    torch.testing.assert_close(kit(x)[0], ref(x)[0], **TOL[torch.float64])
    zero = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, zoneout=0.0, dtype=torch.float64).train()
    zero.load_state_dict(kit.state_dict())
    torch.testing.assert_close(zero(x)[0], ref(x)[0], **TOL[torch.float64])


# ---------------------------------------------------------------------------------------------
# return_gates


@pytest.mark.parametrize("name", ["lstm", "lstm_proj", "gru", "peephole", "rnn"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_return_gates_trace_matches_numpy(name, batch_first, with_lengths) -> None:
    _, step, opts, sizes = MASK_CELLS[name]
    model = randomize(
        MASK_CELLS[name][0](num_layers=2, bidirectional=True, batch_first=batch_first, dtype=torch.float64)
    )
    x = torch.randn(T, B, I, dtype=torch.float64)
    lengths = [4, 2, 3] if with_lengths else None
    out, states, trace = model(x.transpose(0, 1) if batch_first else x, lengths=lengths, return_gates=True)
    plain_out, plain_states = model(x.transpose(0, 1) if batch_first else x, lengths=lengths)
    torch.testing.assert_close(out, plain_out, **TOL[torch.float64])  # traced runs use the reference engine

    valid = oracles.valid_from_lengths(lengths, T) if with_lengths else None
    _, _, want = numpy_run(model, name, x.numpy(), valid=valid)
    state_names = ("h", "c")[: len(sizes)]
    gate_names = {"lstm": "ifgo", "lstm_proj": "ifgo", "peephole": "ifgo", "gru": "rzn", "rnn": ""}[name]
    assert set(trace) == {"l0", "l0_reverse", "l1", "l1_reverse"}
    for key, layer_trace in trace.items():
        assert set(layer_trace) == set(gate_names) | set(state_names), key
        for gate in gate_names:
            got = layer_trace[gate]
            assert got.shape == ((B, T, H) if batch_first else (T, B, H)), (key, gate)
            got = got.transpose(0, 1) if batch_first else got
            assert_np(got, want[key][gate])
        for k, s in enumerate(state_names):
            got = layer_trace[s]
            assert got.shape == ((B, T, sizes[k]) if batch_first else (T, B, sizes[k])), (key, s)
            got = got.transpose(0, 1) if batch_first else got
            assert_np(got, want[key]["__states__"][k])
            # the state after the last processed step is the final state
            index = {"l0": 0, "l0_reverse": 1, "l1": 2, "l1_reverse": 3}[key]
            last = got[0] if key.endswith("reverse") else got[-1]
            torch.testing.assert_close(last, as_tuple(states)[k][index], rtol=0, atol=0)


def test_return_gates_unbatched_shapes() -> None:
    model = lstmkit.LSTM(I, H, bidirectional=True, proj_size=2)
    out, (h_n, c_n), trace = model(torch.randn(T, I), return_gates=True)
    assert out.shape == (T, 4) and h_n.shape == (2, 2) and c_n.shape == (2, H)
    for key in ("l0", "l0_reverse"):
        assert {k: tuple(v.shape) for k, v in trace[key].items()} == {
            "i": (T, H),
            "f": (T, H),
            "g": (T, H),
            "o": (T, H),
            "h": (T, 2),
            "c": (T, H),
        }
    torch.testing.assert_close(trace["l0"]["c"][-1], c_n[0], rtol=0, atol=0)
    torch.testing.assert_close(trace["l0_reverse"]["c"][0], c_n[1], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# dropout between layers


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_dropout_between_layers(kind) -> None:
    kit, ref = make_pair(kind, torch.float64, num_layers=3, bidirectional=True, dropout=0.5)
    kit.eval()
    ref.eval()
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.testing.assert_close(kit(x)[0], ref(x)[0], **TOL[torch.float64])
    evaluated = kit(x)[0]
    kit.train()
    trained = kit(x)
    assert not torch.allclose(trained[0], evaluated)
    # the first layer sees no dropout: its final state is the same in training and evaluation
    torch.testing.assert_close(as_tuple(trained[1])[0][:2], as_tuple(ref(x)[1])[0][:2], **TOL[torch.float64])

    no_drop, _ = make_pair(kind, torch.float64, num_layers=3, bidirectional=True, dropout=0.0)
    no_drop.load_state_dict(kit.state_dict())
    no_drop.train()
    torch.testing.assert_close(no_drop(x)[0], evaluated, **TOL[torch.float64])


def test_dropout_with_one_layer_warns_like_torch() -> None:
    with pytest.warns(UserWarning, match="dropout"):
        lstmkit.LSTM(I, H, dropout=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lstmkit.LSTM(I, H, num_layers=2, dropout=0.3)


# ---------------------------------------------------------------------------------------------
# gradcheck of whole layers over cells torch.nn does not have


GRADCHECK_LAYERS = {
    "peephole": lambda: Recurrent(lstmkit.PeepholeLSTMCell, 2, 2, num_layers=2, bidirectional=True),
    "layernorm": lambda: Recurrent(lstmkit.LayerNormLSTMCell, 2, 3, bidirectional=True),
    "gru_reset_before": lambda: lstmkit.GRU(2, 2, num_layers=2, bidirectional=True, reset_after=False),
    "lstm_proj": lambda: lstmkit.LSTM(2, 3, bidirectional=True, proj_size=2),
}


@pytest.mark.parametrize("name", sorted(GRADCHECK_LAYERS))
@pytest.mark.parametrize("extra", ["lengths", "mask"])
def test_gradcheck_layer(name, extra) -> None:
    model = randomize(GRADCHECK_LAYERS[name]().double())
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in model.parameters())
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    kwargs = {"lengths": [3, 2]} if extra == "lengths" else {"mask": torch.tensor([[1, 0], [0, 1], [1, 1]]).bool()}

    def fn(x, *ps):
        out, states = torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (x,), kwargs)
        return (out, *as_tuple(states))

    assert torch.autograd.gradcheck(fn, (x, *params))


# ---------------------------------------------------------------------------------------------
# property-based: random shapes and lengths, LSTM and GRU vs torch.nn via PackedSequence


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["lstm", "gru"]),
    steps=st.integers(1, 5),
    input_size=st.integers(1, 4),
    hidden_size=st.integers(1, 4),
    num_layers=st.integers(1, 2),
    bidirectional=st.booleans(),
    lengths_data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_match_torch_packed(
    kind, steps, input_size, hidden_size, num_layers, bidirectional, lengths_data, seed
) -> None:
    lengths = lengths_data.draw(st.lists(st.integers(1, steps), min_size=1, max_size=4), label="lengths")
    torch.manual_seed(seed)
    kit_cls, ref_cls, _ = KINDS[kind]
    options = {"num_layers": num_layers, "bidirectional": bidirectional, "dtype": torch.float64}
    kit, ref = kit_cls(input_size, hidden_size, **options), ref_cls(input_size, hidden_size, **options)
    ref.load_state_dict(kit.state_dict())
    x = torch.randn(steps, len(lengths), input_size, dtype=torch.float64)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_p, st_r = ref(packed)
    out_r, _ = pad_packed_sequence(out_p, total_length=steps)

    out_k, st_k = kit(x, lengths=lengths)
    torch.testing.assert_close(out_k, out_r, **TOL[torch.float64])
    for a, b in zip(as_tuple(st_k), as_tuple(st_r), strict=True):
        torch.testing.assert_close(a, b, **TOL[torch.float64])

    out_pk, st_pk = kit(packed)
    torch.testing.assert_close(out_pk.data, out_p.data, **TOL[torch.float64])
    assert torch.equal(out_pk.batch_sizes, out_p.batch_sizes)
    for a, b in zip(as_tuple(st_pk), as_tuple(st_r), strict=True):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


def test_trace_of_packed_input_follows_batch_first() -> None:
    model = lstmkit.LSTM(I, H, batch_first=True, dtype=torch.float64)
    x = torch.randn(B, T, I, dtype=torch.float64)
    lengths = [T, 2, 3][:B] + [1] * max(0, B - 3)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    _, _, packed_trace = model(packed, return_gates=True)
    _, _, padded_trace = model(x, lengths=lengths, return_gates=True)
    assert packed_trace["l0"]["i"].shape == (B, T, H)
    torch.testing.assert_close(packed_trace["l0"]["c"], padded_trace["l0"]["c"])
