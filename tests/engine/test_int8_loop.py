"""int8 inference on integer products (``csrc/int8_gemm.h`` on AVX512-VNNI, ``csrc/int8_avx2.h`` on
AVX2, :mod:`lstmkit.engine.int8_loop`); every test runs on the kernel the CPU has.

* the kernel's int32 sums equal an integer product exactly, on shapes whose k and n are not
  multiples of 4 or 64, one row included; the rows' quantization equals its definition bit for bit;
  the dequantized product equals the integer product scaled back;
* a plain LSTM or a GRU from ``lstmkit.quantize_int8`` under ``torch.no_grad`` runs the int8 loop
  (``explain`` says so): outputs and states within 1e-2 of the float32 layer on unit-scale input,
  close to the dequantizing path, and within rounding of a torch reference that quantizes the same
  way; one and two threads give the same bits;
* with ``lengths=``, PackedSequence input or ``mask=`` the int8 loop gives, at every valid step, the
  bits of each sequence run alone, zero (or the carried output) at padded steps, and stays within
  1e-2 of the float32 layer;
* the dequantizing path keeps ``return_gates=``, other cells, calls that may need a gradient, and
  CPUs without either kernel (``LSTMKIT_INT8_KERNEL=0`` in a fresh process);
* on a CPU with VNNI, the AVX2 kernel (``LSTMKIT_INT8_KERNEL=avx2``) gives the VNNI kernel's bits.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import lstmkit
from lstmkit.engine.int8_loop import kernel_isa, packed
from lstmkit.engine.native.build import load_extension

pytestmark = pytest.mark.skipif(
    kernel_isa() is None, reason="the int8 kernel needs AVX512-VNNI or AVX2 and the native engine"
)

INT8 = f"integer products on {kernel_isa()}"


def native():
    module = load_extension()
    assert module is not None
    return module


# m x k x n: one row, k and n off the groups of 4 and the slabs of 64, k = 1, a block's tail rows
SHAPES = [(1, 1, 1), (1, 5, 3), (1, 128, 512), (3, 7, 65), (4, 64, 64), (5, 513, 47), (17, 130, 200), (64, 256, 1024)]


@pytest.mark.parametrize(("m", "k", "n"), SHAPES)
def test_kernel_sums_equal_the_integer_product(m: int, k: int, n: int) -> None:
    generator = torch.Generator().manual_seed(m * 1000 + k + n)
    a8 = torch.randint(0, 256, (m, k), dtype=torch.uint8, generator=generator)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=generator)
    a8[0, 0], w[0, 0] = 255, -128  # the extremes
    got = native().int8_sums(a8, w)
    assert got.dtype == torch.int32 and got.shape == (m, n)
    assert torch.equal(got.long(), a8.long() @ w.long().T)


def quantize_rows(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition: q = round(a * 127 / max|a|) per row (half to even), scale max|a| / 127, a row
    of zeros all zeros with scale 0."""
    largest = a.abs().amax(dim=1)
    inverse = torch.where(largest > 0, 127 / largest, torch.zeros_like(largest))
    return torch.round(a * inverse[:, None]), largest / 127


def test_quantized_rows_follow_the_definition_bit_for_bit() -> None:
    a = torch.randn(37, 100)
    a[3] = 0
    a[5, :7] = torch.tensor([0.5, -0.5, 1.5, 2.5, -2.5, 127.0, -127.0])  # ties: half to even
    shifted, scale = native().int8_quantize_rows(a)
    want, want_scale = quantize_rows(a)
    assert torch.equal(shifted.int() - 128, want.int())
    assert torch.equal(scale, want_scale)


@pytest.mark.parametrize(("m", "k", "n"), [(1, 64, 256), (6, 33, 70), (200, 96, 512)])  # 200 rows: row threads
def test_dequantized_product_is_the_integer_product_scaled_back(m: int, k: int, n: int) -> None:
    torch.manual_seed(k)
    a = torch.randn(m, k)
    w = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    w_scale, bias = torch.rand(n) / 100, torch.randn(n)
    q, scale = quantize_rows(a)
    want = (q.double() @ w.double().T) * scale.double()[:, None] * w_scale.double() + bias.double()
    for b in (bias, None):
        got = native().int8_linear(a, w, w_scale, b)
        expected = want if b is not None else want - bias.double()
        torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-5)


def int8_pair(kind: str = "lstm", **kwargs) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    layer = (lstmkit.LSTM if kind == "lstm" else lstmkit.GRU)(16, 32, **kwargs).eval()
    return layer, lstmkit.quantize_int8(layer)


def lstm_pair(**kwargs) -> tuple[torch.nn.Module, torch.nn.Module]:
    return int8_pair("lstm", **kwargs)


def states(state: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return (state,) if isinstance(state, torch.Tensor) else tuple(state)


LAYOUTS = {
    "one": {},
    "two-bidirectional": {"num_layers": 2, "bidirectional": True},
    "no-bias-batch-first": {"bias": False, "batch_first": True},
    "sum-merge": {"bidirectional": True, "merge_mode": "sum"},
}


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_int8_layer_within_1e_2_of_float32_and_close_to_dequantizing(kind: str, name: str) -> None:
    layer, small = int8_pair(kind, **LAYOUTS[name])
    x = torch.randn(5, 12, 16) if small.batch_first else torch.randn(12, 5, 16)
    layers = small.num_layers * small.num_directions
    hx = tuple(torch.randn(layers, 5, 32) / 2 for _ in layer._cells[0].state_names)
    with torch.no_grad():
        assert f"{INT8} (kernel '{kind}+int8')" in lstmkit.engine.explain(small, x).reason
        for state in (None, hx if kind == "lstm" else hx[0]):
            out, final = small(x, state)
            want, want_final = layer(x, state)
            dequantized, deq_final, _ = small(x, state, return_gates=True)  # the dequantizing path
            assert out.dtype == torch.float32 and out.shape == want.shape
            results = [(out, *states(final)), (want, *states(want_final)), (dequantized, *states(deq_final))]
            for got, float32, other in zip(*results, strict=True):
                assert got.shape == float32.shape
                assert (got - float32).abs().max() <= 1e-2
                assert (got - other).abs().max() <= 1e-2
            assert not torch.equal(out, dequantized)  # the integer path ran, not the dequantized one


def reference_int8(small: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One layer, zero state: the int8 loop's arithmetic written with torch, products as float64 sums
    of the integers (exact), the rest float32. Returns the output and the final states."""

    def product(a: torch.Tensor, name: str) -> torch.Tensor:
        weights = small.parametrizations[name]
        q, scale = quantize_rows(a)
        sums = q.double() @ weights.original0.double().T
        return (sums * scale.double()[:, None] * weights.original1.double().T).float()

    steps, batch, _ = x.shape
    hidden = small.hidden_size
    gates_x = product(x.reshape(steps * batch, -1), "weight_ih_l0").view(steps, batch, -1) + small.bias_ih_l0
    h, c, outputs = torch.zeros(batch, hidden), torch.zeros(batch, hidden), []
    for t in range(steps):
        gates_h = product(h, "weight_hh_l0") + small.bias_hh_l0
        if isinstance(small, lstmkit.LSTM):
            i, f, g, o = (gates_x[t] + gates_h).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        else:
            (xr, xz, xn), (hr, hz, hn) = gates_x[t].chunk(3, dim=1), gates_h.chunk(3, dim=1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            h = (1 - z) * torch.tanh(xn + r * hn) + z * h
        outputs.append(h)
    return (torch.stack(outputs), h, c) if isinstance(small, lstmkit.LSTM) else (torch.stack(outputs), h)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_int8_layer_computes_what_its_definition_says(kind: str) -> None:
    """Against the torch reference of the same quantization, within 1e-4: each quantized value may
    differ by one where the kernel's float32 h and the reference's sit on either side of a rounding
    tie (the activations differ in the last bits), which moves a product by at most a row's scale
    times a weight, about 1e-3 at worst and far rarer than every step."""
    _, small = int8_pair(kind)
    x = torch.randn(20, 6, 16)
    with torch.no_grad():
        out, final = small(x)
        want = reference_int8(small, x)
    for got, expected in zip((out, *(s[0] for s in states(final))), want, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_reverse_direction_and_unbatched_input() -> None:
    layer, small = lstm_pair(bidirectional=True)
    x = torch.randn(9, 16)  # one unbatched sequence
    with torch.no_grad():
        out, (h_n, _) = small(x)
        want, (want_h, _) = layer(x)
        batched = small(x.unsqueeze(1))[0].squeeze(1)
    assert out.shape == (9, 64) and h_n.shape == (2, 32)
    assert (out - want).abs().max() <= 1e-2 and (h_n - want_h).abs().max() <= 1e-2
    torch.testing.assert_close(out, batched, rtol=0, atol=0)


@pytest.mark.parametrize(("batch", "hidden"), [(64, 32), (2, 512)])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_two_threads_compute_the_same_bits(kind: str, batch: int, hidden: int) -> None:
    """Every row is quantized, summed and activated on its own, so how the threads share the work
    changes nothing: 64 rows run as two row blocks (each thread its rows for the whole loop), 2 rows
    of a wide layer share the per-step product by W's slabs, and the input projection's 640 rows (or
    20) by rows."""
    torch.manual_seed(0)
    small = lstmkit.quantize_int8((lstmkit.LSTM if kind == "lstm" else lstmkit.GRU)(16, hidden).eval())
    x = torch.randn(10, batch, 16)
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            one = small(x)
            torch.set_num_threads(2)
            two = small(x)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip((one[0], *states(one[1])), (two[0], *states(two[1])), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_variable_lengths_give_each_sequence_alone_bit_for_bit(kind: str, bidirectional: bool) -> None:
    """Rows never meet (each is quantized and summed on its own), so a padded batch must give, at
    every valid step and in the final states, the very bits of each sequence run alone; padded steps
    output zero. The float32 layer with the same lengths is the oracle for the values."""
    layer, small = int8_pair(kind, num_layers=2, bidirectional=bidirectional, batch_first=True)
    lengths = [12, 3, 7, 1, 12]
    x = torch.randn(5, 12, 16)
    with torch.no_grad():
        assert f"{INT8} (kernel '{kind}+int8')" in lstmkit.engine.explain(small, x, lengths=lengths).reason
        out, final = small(x, lengths=lengths)
        want, want_final = layer(x, lengths=lengths)
        packing = torch.nn.utils.rnn.pack_padded_sequence
        packed = packing(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
        packed_out, packed_final = small(packed)
        for b, length in enumerate(lengths):
            alone, alone_final = small(x[b : b + 1, :length])
            assert torch.equal(out[b, :length], alone[0])
            assert not out[b, length:].any()
            for got, expected in zip(states(final), states(alone_final), strict=True):
                assert torch.equal(got[:, b], expected[:, 0])
    for got, expected in zip((out, *states(final)), (want, *states(want_final)), strict=True):
        assert (got - expected).abs().max() <= 1e-2
    unpacked, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True)
    assert torch.equal(unpacked, out)
    for got, expected in zip(states(packed_final), states(final), strict=True):
        assert torch.equal(got, expected)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_mask_with_holes_carries_state_and_output_as_the_float32_layer(kind: str) -> None:
    """A mask may skip steps anywhere (Keras' semantics): a skipped step keeps the state and, with one
    direction, repeats the previous output; with two directions it outputs zero."""
    torch.manual_seed(1)
    mask = torch.rand(10, 4) > 0.3
    mask[0] = True
    x = torch.randn(10, 4, 16)
    for bidirectional in (False, True):
        layer, small = int8_pair(kind, bidirectional=bidirectional)
        with torch.no_grad():
            assert INT8 in lstmkit.engine.explain(small, x, mask=mask).reason
            out, final = small(x, mask=mask)
            want, want_final = layer(x, mask=mask)
            dequantized, _, _ = small(x, mask=mask, return_gates=True)
        for got, expected in zip((out, *states(final)), (want, *states(want_final)), strict=True):
            assert (got - expected).abs().max() <= 1e-2
        assert (out - dequantized).abs().max() <= 1e-2
        skipped = ~mask[1:]
        if bidirectional:
            assert not out[1:][skipped].any()
        else:
            assert torch.equal(out[1:][skipped], out[:-1][skipped])  # the previous output, repeated


def test_the_integer_path_never_dequantizes_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """The int8 loop reads the int8 values and scales; dequantizing every weight at every call (what
    binding the cells does) would cost more than a short sequence's whole forward. The dequantizing
    path, by definition, does dequantize."""
    from lstmkit.engine.precision import Int8Weight

    calls = []
    original = Int8Weight.forward
    monkeypatch.setattr(Int8Weight, "forward", lambda self, *args: calls.append(1) or original(self, *args))
    _, small = lstm_pair(num_layers=2, bidirectional=True)
    x = torch.randn(6, 3, 16)
    with torch.no_grad():
        small(x)
        small(x, lengths=[6, 2, 4])
        assert calls == []
        small(x, return_gates=True)
    assert len(calls) == 8  # the four weight matrices of each of two layers


@pytest.mark.parametrize(
    ("call", "why"),
    [
        ({"return_gates": True}, "return_gates= run on the dequantized weights"),
        ({"return_gates": True, "lengths": [12, 3, 7]}, "return_gates= run on the dequantized weights"),
    ],
)
def test_options_the_int8_loop_lacks_fall_back_to_dequantizing(call: dict, why: str) -> None:
    layer, small = lstm_pair()
    x = torch.randn(12, 3, 16)
    with torch.no_grad():
        reason = lstmkit.engine.explain(small, x, **call).reason
        assert f"int8 weights dequantized ({why})" in reason and INT8 not in reason
        got, want = small(x, **call)[0], layer(x, **call)[0]
    assert (got - want).abs().max() <= 1e-2


def test_calls_that_may_need_a_gradient_and_other_cells_fall_back() -> None:
    layer, small = lstm_pair()
    x = torch.randn(8, 3, 16, requires_grad=True)
    assert "a gradient may be asked for" in lstmkit.engine.explain(small, x).reason
    small(x)[0].sum().backward()  # the dequantizing path's gradient reaches the input
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        assert "a gradient" not in lstmkit.engine.explain(small, x).reason
    others = [
        lstmkit.GRU(16, 32, reset_after=False),
        lstmkit.LSTM(16, 32, proj_size=8),
        lstmkit.RNN(16, 32),
        lstmkit.Recurrent(lstmkit.PeepholeLSTMCell, 16, 32),
    ]
    with torch.no_grad():
        for model in others:
            reason = lstmkit.engine.explain(lstmkit.quantize_int8(model.eval()), x).reason
            assert "only the plain LSTM and the GRU (reset_after=True) have an int8 kernel" in reason
    reference = lstmkit.quantize_int8(lstmkit.LSTM(16, 32, engine="reference").eval())
    with torch.no_grad():
        assert "engine='reference' was asked for" in lstmkit.engine.explain(reference, x).reason


def test_the_native_entry_refuses_bad_arguments() -> None:
    _, small = lstm_pair()
    w_ih, w_hh = small.parametrizations.weight_ih_l0, small.parametrizations.weight_hh_l0
    x, state = torch.randn(4, 2, 16), torch.zeros(2, 32)
    args = [packed(native(), w_ih), packed(native(), w_hh), None, state, state, False]
    with pytest.raises(ValueError, match=r"weight_ih must be \(4H, I\) = \(128, 15\), got \(128, 16\)"):
        native().lstm_int8(torch.randn(4, 2, 15), *args)
    with pytest.raises(ValueError, match="weight_hh must be"):
        native().lstm_int8(x, args[0], args[0], *args[2:])
    with pytest.raises(ValueError, match="one scale per row"):
        native().Int8Packed(w_ih.original0, w_ih.original1[:5])
    with pytest.raises(ValueError, match=r"valid must be a contiguous \(T, B\) = \(4, 2\) mask"):
        native().lstm_int8(x, *args, torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="valid must be bool"):
        native().lstm_int8(x, *args, torch.ones(4, 2))
    with pytest.raises(TypeError, match="float32"):
        native().lstm_int8(x.double(), *args)
    with pytest.raises(TypeError, match="int8"):
        native().int8_sums(torch.zeros(2, 16, dtype=torch.uint8), w_hh.original0.float())


FALLBACK_SCRIPT = """
import torch, lstmkit
from lstmkit.engine.native.build import load_extension
assert load_extension().int8_kernel == ""
torch.manual_seed(0)
layer = lstmkit.LSTM(16, 32).eval()
small = lstmkit.quantize_int8(layer)
x = torch.randn(12, 5, 16)
with torch.no_grad():
    reason = lstmkit.engine.explain(small, x).reason
    assert "int8 weights dequantized (the CPU has neither AVX512-VNNI nor AVX2" in reason, reason
    got, want = small(x)[0], layer(x)[0]
    full = small(x, lengths=[12] * 5)[0]
assert (got - want).abs().max() <= 1e-2
assert (full - want).abs().max() <= 1e-2  # the dequantizing path with lengths (bf16 products: the native loop)
print("ok")
"""


def test_without_the_int8_kernel_the_dequantizing_path_runs() -> None:
    """LSTMKIT_INT8_KERNEL=0 gives the paths of a CPU without an int8 kernel (read once, so in a fresh
    process)."""
    env = {**os.environ, "LSTMKIT_INT8_KERNEL": "0"}
    done = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


SAME_BITS_SCRIPT = """
import sys, torch, lstmkit
from lstmkit.engine.native.build import load_extension
assert load_extension().int8_kernel == sys.argv[2], load_extension().int8_kernel
outputs = {}
for kind in ("lstm", "gru"):
    torch.manual_seed(0)
    layer = (lstmkit.LSTM if kind == "lstm" else lstmkit.GRU)(40, 72, num_layers=2, bidirectional=True).eval()
    x = torch.randn(9, 7, 40)
    with torch.no_grad():
        outputs[kind] = lstmkit.quantize_int8(layer)(x, lengths=[9, 3, 9, 1, 5, 9, 2])
torch.save(outputs, sys.argv[1])
"""


@pytest.mark.skipif(kernel_isa() != "AVX512-VNNI", reason="compares the AVX2 kernel with the VNNI one")
def test_the_avx2_kernel_gives_the_vnni_kernels_bits(tmp_path) -> None:
    """Both kernels multiply the same quantized values into the same int32 sums and scale them back with
    the same float32 operations: LSTMKIT_INT8_KERNEL=avx2 (fresh processes, each kernel in one) changes
    no bit of the outputs or final states."""
    results = []
    for setting, isa in (("", "AVX512-VNNI"), ("avx2", "AVX2")):
        path = tmp_path / f"{isa}.pt"
        env = {**os.environ, "LSTMKIT_INT8_KERNEL": setting}
        done = subprocess.run(
            [sys.executable, "-c", SAME_BITS_SCRIPT, str(path), isa],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        results.append(torch.load(path))
    vnni, avx2 = results
    for kind in ("lstm", "gru"):
        output, final = vnni[kind]
        assert torch.equal(avx2[kind][0], output)
        for got, want in zip(states(avx2[kind][1]), states(final), strict=True):
            assert torch.equal(got, want)


def test_weights_are_packed_once_and_repacked_when_they_change() -> None:
    """The packed copy of a weight serves every call until the weight changes: in place
    (``load_state_dict``) or swapped; a changed weight computes what a fresh layer of it computes."""
    first, small = lstm_pair()
    weight = small.parametrizations.weight_hh_l0
    x = torch.randn(6, 3, 16)
    with torch.no_grad():
        small(x)
        kept = packed(native(), weight)
        small(x)
        assert packed(native(), weight) is kept and kept.shape == (128, 32)
        torch.manual_seed(1)
        other = lstmkit.quantize_int8(lstmkit.LSTM(16, 32).eval())
        small.load_state_dict(other.state_dict())  # copies into the same tensors, in place
        assert torch.equal(small(x)[0], other(x)[0])
        assert packed(native(), weight) is not kept
        weight.original1.mul_(2)  # the scales alone: the outputs double before the nonlinearity
        assert not torch.equal(small(x)[0], other(x)[0])
