"""Engine selection: argument, environment variable, fallback, and clear errors."""

import pytest
import torch

import lstmkit
from lstmkit import engine
from lstmkit.engine import native


def test_resolve_engine_prefers_argument_then_environment(monkeypatch) -> None:
    monkeypatch.delenv(engine.ENGINE_VARIABLE, raising=False)
    assert engine.resolve_engine() == "auto"
    monkeypatch.setenv(engine.ENGINE_VARIABLE, "reference")
    assert engine.resolve_engine() == "reference"
    assert engine.resolve_engine("native") == "native"


def test_unknown_engine_is_rejected(monkeypatch) -> None:
    with pytest.raises(
        ValueError, match=r"unknown engine 'fast': expected one of \('auto', 'native', 'torch', 'fused', 'reference'\)"
    ):
        lstmkit.LSTM(3, 4, engine="fast")
    monkeypatch.setenv(engine.ENGINE_VARIABLE, "gpu")
    with pytest.raises(ValueError, match="unknown LSTMKIT_ENGINE 'gpu'"):
        lstmkit.LSTM(3, 4)(torch.randn(2, 1, 3))


def test_native_forced_on_an_unsupported_cell_says_why() -> None:
    layer = lstmkit.Recurrent(lstmkit.LSTMCell, 3, 4, activation="relu", engine="native")
    with pytest.raises(ValueError, match=r"engine='native' cannot be used: it does not run LSTMCell\(3, 4\)"):
        layer(torch.randn(5, 2, 3))


def test_auto_uses_native_where_supported_and_reference_elsewhere(monkeypatch) -> None:
    if not native.is_available():
        pytest.skip("native engine not built here")
    calls = []
    original = native.run_cell
    monkeypatch.setattr(native, "run_cell", lambda *a, **k: calls.append(type(a[0]).__name__) or original(*a, **k))
    x = torch.randn(5, 2, 3)
    lstmkit.LSTM(3, 4, engine="auto")(x)
    lstmkit.GRU(3, 4, engine="auto")(x)
    lstmkit.GRU(3, 4, engine="auto", reset_after=False)(x)
    lstmkit.Recurrent(lstmkit.PeepholeLSTMCell, 3, 4, engine="auto")(x)
    lstmkit.Recurrent(lstmkit.LayerNormLSTMCell, 3, 4, engine="auto")(x)
    lstmkit.RNN(3, 4, engine="auto", zoneout=0.1)(x)  # not a plain stack: not torch's kernels
    lstmkit.LSTM(3, 4, engine="auto", proj_size=2)(x)
    lstmkit.Recurrent(lstmkit.LSTMCell, 3, 4, activation="relu", engine="auto")(x)  # no native relu LSTM
    lstmkit.LSTM(3, 4, engine="auto")(x, return_gates=True)  # tracing needs the reference loop
    lstmkit.LSTM(3, 4, engine="reference")(x)
    names = ["LSTMCell", "GRUCell", "GRUCell", "PeepholeLSTMCell", "LayerNormLSTMCell", "RNNCell", "LSTMCell"]
    assert calls == names


def test_auto_falls_back_when_the_extension_is_unavailable(monkeypatch) -> None:
    monkeypatch.setattr(native, "is_available", lambda: False)
    kit = lstmkit.LSTM(3, 4, dtype=torch.float64, engine="auto")
    ref = torch.nn.LSTM(3, 4, dtype=torch.float64)
    ref.load_state_dict(kit.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(kit(x)[0], ref(x)[0])


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_engines_agree_on_a_training_step(kind) -> None:
    if not native.is_available():
        pytest.skip("native engine not built here")
    models = {
        name: getattr(lstmkit, kind)(3, 5, num_layers=2, bidirectional=True, engine=name)
        for name in ("native", "reference")
    }
    models["reference"].load_state_dict(models["native"].state_dict())
    x = torch.randn(6, 4, 3)
    grads = {}
    for name, model in models.items():
        out, _ = model(x, lengths=[6, 2, 4, 1])
        out.square().sum().backward()
        grads[name] = {n: p.grad for n, p in model.named_parameters()}
    for n in grads["native"]:
        torch.testing.assert_close(grads["native"][n], grads["reference"][n], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_torch_engine_matches_torch_nn(kind, with_lengths) -> None:
    options = dict(num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    kit = getattr(lstmkit, kind)(3, 5, engine="torch", **options)
    ref = getattr(torch.nn, kind)(3, 5, **options)
    ref.load_state_dict(kit.state_dict())
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    states = (torch.randn(4, 4, 5, dtype=torch.float64),) * (2 if kind == "LSTM" else 1)
    hx = states if kind == "LSTM" else states[0]
    lengths = [6, 2, 5, 1] if with_lengths else None
    out, h = kit(x, hx, lengths=lengths)
    if with_lengths:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        want, want_h = ref(packed, hx)
        want, _ = torch.nn.utils.rnn.pad_packed_sequence(want, batch_first=True, total_length=6)
    else:
        want, want_h = ref(x, hx)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(h, want_h)


def test_torch_engine_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="engine='torch' cannot be used: torch's fused kernels do not support zoneout"):
        lstmkit.LSTM(3, 4, zoneout=0.1, engine="torch")(torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="engine='torch' cannot be used: torch has no fused kernel for Peephole"):
        lstmkit.Recurrent(lstmkit.PeepholeLSTMCell, 3, 4, engine="torch")(torch.randn(5, 2, 3))


def test_auto_sends_lstm_inference_to_torch_and_training_elsewhere(monkeypatch) -> None:
    if not native.is_available():
        pytest.skip("native engine not built here")
    from lstmkit.engine import torch_engine

    calls = []
    original = torch_engine.run_layers
    monkeypatch.setattr(torch_engine, "run_layers", lambda *a, **k: calls.append("torch") or original(*a, **k))
    lstm = lstmkit.LSTM(3, 4, engine="auto")
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        lstm(x)
        lstm(x, mask=torch.ones(5, 2, dtype=torch.bool))  # masks: not torch's
        lstm(x, lengths=[5, 3])  # lengths: torch's PackedSequence kernel runs without oneDNN, native is faster
        lstm(torch.nn.utils.rnn.pack_padded_sequence(x, [5, 3]))
    lstm(x)  # needs gradients: native
    lstmkit.GRU(3, 4, engine="auto")(x)  # GRU: native is faster than torch's
    assert calls == ["torch"]


@pytest.mark.parametrize("rate", [0.02, 0.1, 0.5, 0.9, 0.999])
def test_zoneout_masks_are_bernoulli_of_the_rate(rate: float) -> None:
    """The masks (16-bit uniform integers, four from each 64-bit draw) keep an old value with the
    zoneout rate, in every one of the four lanes a draw fills, and repeat under the same seed."""
    options = engine.SequenceOptions(zoneout=rate, training=True)
    state = (torch.zeros(64, 30), torch.zeros(64, 50))
    torch.manual_seed(3)
    masks = options.zoneout_masks(state, 100)
    assert [(m.shape, m.dtype) for m in masks] == [((100, 64, 30), torch.bool), ((100, 64, 50), torch.bool)]
    lanes = masks[1].flatten().view(-1, 4).double()
    spread = 5 * (rate * (1 - rate) / lanes.shape[0]) ** 0.5  # five standard deviations of one lane's mean
    assert torch.allclose(lanes.mean(0), torch.full((4,), rate, dtype=torch.float64), atol=spread, rtol=0)
    assert abs(masks[0].double().mean().item() - rate) < spread
    torch.manual_seed(3)
    assert all(torch.equal(a, b) for a, b in zip(masks, options.zoneout_masks(state, 100), strict=True))


def test_zoneout_masks_only_in_training() -> None:
    state = (torch.zeros(2, 3),)
    assert engine.SequenceOptions(zoneout=0.3, training=False).zoneout_masks(state, 4) == [None]
    assert engine.SequenceOptions(zoneout=0.0, training=True).zoneout_masks(state, 4) == [None]
