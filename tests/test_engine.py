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
    with pytest.raises(ValueError, match=r"unknown engine 'fast': expected one of \('auto', 'native', 'reference'\)"):
        lstmkit.LSTM(3, 4, engine="fast")
    monkeypatch.setenv(engine.ENGINE_VARIABLE, "gpu")
    with pytest.raises(ValueError, match="unknown LSTMKIT_ENGINE 'gpu'"):
        lstmkit.LSTM(3, 4)(torch.randn(2, 1, 3))


def test_native_forced_on_an_unsupported_cell_says_why() -> None:
    layer = lstmkit.Recurrent(lstmkit.PeepholeLSTMCell, 3, 4, engine="native")
    with pytest.raises(ValueError, match="engine='native' cannot be used: it does not run PeepholeLSTMCell"):
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
    lstmkit.LSTM(3, 4, engine="auto")(x, return_gates=True)  # tracing needs the reference loop
    lstmkit.LSTM(3, 4, engine="reference")(x)
    assert calls == ["LSTMCell", "GRUCell"]


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
