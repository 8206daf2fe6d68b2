"""The short way through plain inference calls (``lstmkit.layers.plain_call``).

Oracles: ``torch.nn`` layers with copied weights (the kernel the short way runs is torch's, so in
float32 the results agree to rounding, and under bf16 autocast to bf16's), and the full path of the
same layer, reached by a call with gradients on and the weights frozen (it then runs torch's kernel
too), which must give the same numbers. The plans kept on a layer must follow every change that
alters its choice.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

import lstmkit
from lstmkit.engine import torch_engine
from lstmkit.engine.precision import bf16_hardware
from lstmkit.validation import DtypeError, ShapeError

AUTOCAST = [False, True] if bf16_hardware() else [False]


def _twins(kind: str, **options: object) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ours = {"lstm": lstmkit.LSTM, "gru": lstmkit.GRU, "rnn": lstmkit.RNN}[kind](6, 10, **options).eval()
    theirs = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind](6, 10, **options).eval()
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _random_hx(layer: nn.Module, batch: int | None) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """An initial state for ``batch`` sequences (``None``: one unbatched sequence)."""
    layers = layer.num_layers * (2 if layer.bidirectional else 1)
    lead = (layers,) if batch is None else (layers, batch)
    h = torch.randn(*lead, getattr(layer, "proj_size", 0) or layer.hidden_size)
    return (h, torch.randn(*lead, layer.hidden_size)) if isinstance(layer, lstmkit.LSTM) else h


def _full_path(layer: nn.Module, *args: object) -> object:
    """``layer(*args)`` the full way: with gradients on (the short way takes none) and the weights
    frozen, so that it still runs torch's kernel; the weights are restored after."""
    frozen = [p for p in layer.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            return layer(*args)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _three_ways(ours: nn.Module, theirs: nn.Module, autocast: bool, x: torch.Tensor, hx: object) -> tuple:
    """``ours(x, hx)`` the short way and the full way, and ``theirs(x, hx)``, under bf16 autocast or not."""
    args = (x,) if hx is None else (x, hx)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        with torch.no_grad():
            short, expected = ours(*args), theirs(*args)
        return short, _full_path(ours, *args), expected


def _close(ours: object, theirs: object, tolerance: float) -> None:
    if isinstance(ours, tuple):
        assert isinstance(theirs, tuple) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            _close(a, b, tolerance)
        return
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("autocast", AUTOCAST)
@pytest.mark.parametrize(
    ("kind", "options", "shape"),
    [
        ("lstm", {}, (7, 3, 6)),
        ("lstm", {"batch_first": True}, (3, 7, 6)),
        ("lstm", {}, (7, 6)),  # unbatched
        ("lstm", {"num_layers": 2, "bidirectional": True}, (7, 3, 6)),
        ("lstm", {"proj_size": 4}, (7, 3, 6)),
        ("lstm", {}, (9, 1, 6)),  # one sequence of many steps: torch's kernel on two threads
        ("gru", {"num_layers": 2}, (7, 3, 6)),
        ("rnn", {"nonlinearity": "relu"}, (7, 3, 6)),
    ],
)
def test_plain_inference_matches_torch_nn_and_the_full_path(
    kind: str, options: dict, shape: tuple[int, ...], autocast: bool
) -> None:
    ours, theirs = _twins(kind, **options)
    x = torch.randn(*shape)
    batch = None if len(shape) == 2 else shape[0 if options.get("batch_first") else 1]
    tolerance = 2e-2 if autocast else 1e-6
    for hx in (None, _random_hx(ours, batch)):
        short, full, expected = _three_ways(ours, theirs, autocast, x, hx)
        assert ours._plain_plans, "the call did not go the short way"
        _close(short, full, 1e-6)  # torch's kernel with gradients on may pick another oneDNN algorithm
        if kind == "lstm" or not autocast:  # torch.nn.GRU/RNN run float32 under autocast, lstmkit's bf16 GEMMs
            _close(short, expected, tolerance)


def test_bfloat16_layers_on_bfloat16_input_go_the_short_way_as_the_full_one() -> None:
    ours, _ = _twins("lstm")
    ours = ours.bfloat16()
    x = torch.randn(7, 3, 6).bfloat16()
    with torch.no_grad():
        short = ours(x)
    assert short[0].dtype == torch.bfloat16 and ours._plain_plans
    _close(short, _full_path(ours, x), 0.0)


def _torch_kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = torch_engine.run_layers

    def counting(*args: object, **kwargs: object):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch_engine, "run_layers", counting)
    return calls


@pytest.mark.parametrize(
    "change",
    ["engine", "environment", "zoneout", "train with recurrent dropout", "gradients", "batch of one on one thread"],
)
def test_a_kept_plan_follows_every_change_of_the_choice(change: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ours, theirs = _twins("lstm")
    x = torch.randn(7, 1 if "one" in change else 3, 6)
    calls = _torch_kernel_calls(monkeypatch)
    with torch.no_grad():
        ours(x)
    assert calls == [1]
    if change == "engine":
        ours.engine = "reference"
    elif change == "environment":
        monkeypatch.setenv("LSTMKIT_ENGINE", "reference")
    elif change == "zoneout":
        ours.zoneout = 0.3
    elif change == "train with recurrent dropout":
        ours.recurrent_dropout = 0.3
        ours.train()
    elif change == "batch of one on one thread":
        monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    with torch.set_grad_enabled(change == "gradients"):
        out, _ = ours(x)
    assert calls == [1], f"after a change of {change} torch's kernel still ran"
    if change in ("engine", "environment", "gradients", "batch of one on one thread"):
        torch.testing.assert_close(out, theirs(x)[0], rtol=1e-5, atol=1e-5)


def test_weights_replaced_or_parametrized_after_a_call_are_the_ones_used() -> None:
    ours, theirs = _twins("lstm")
    x = torch.randn(7, 3, 6)
    with torch.no_grad():
        ours(x)
        ours.weight_hh_l0.mul_(2.0)
        theirs.weight_hh_l0.mul_(2.0)
        torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=1e-6, atol=1e-6)
    parametrizations.weight_norm(ours, "weight_ih_l0")
    with torch.no_grad():
        ours.parametrizations.weight_ih_l0.original0.mul_(0.5)  # the norms halve: the weight does
        theirs.weight_ih_l0.mul_(0.5)
        torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=1e-5, atol=1e-5)


def test_int8_layers_in_training_follow_a_change_of_dropout() -> None:
    """The int8 loop has no dropout between layers: a layer in training mode given dropout after a call
    goes the way that drops (the dequantized weights), not the kept integer plan."""
    torch.manual_seed(0)
    layer = lstmkit.quantize_int8(lstmkit.LSTM(6, 10, num_layers=2), inplace=True).train()
    x = torch.randn(7, 3, 6)
    with torch.no_grad():
        first = layer(x)[0]
        layer.dropout = 0.5
        dropped = [layer(x)[0] for _ in range(2)]
    assert not torch.equal(dropped[0], dropped[1]), "no dropout: the kept integer plan ran"
    assert not torch.equal(first, dropped[0])


@pytest.mark.parametrize("autocast", AUTOCAST)
def test_int8_weights_after_a_call_run_the_int8_way(autocast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    ours, theirs = _twins("lstm")
    x = torch.randn(7, 3, 6)
    calls = _torch_kernel_calls(monkeypatch)
    with torch.no_grad():
        ours(x)
    quantized = lstmkit.quantize_int8(ours, inplace=True)
    for hx in (None, _random_hx(quantized, 3)):
        short, full, expected = _three_ways(quantized, theirs, autocast, x, hx)
        _close(short, full, 0.0)  # the full way runs the same integer kernel
        assert short[0].dtype == expected[0].dtype  # torch.nn's dtype, under autocast too
        torch.testing.assert_close(short[0].float(), expected[0].float(), rtol=0, atol=3e-2)
    assert calls == [1], "the int8 layer ran torch's float kernel"
    assert any(plan is not None and plan.int8 for plan in quantized._plain_plans.values())


@pytest.mark.parametrize(
    ("x", "error", "words"),
    [
        (torch.randn(7, 3, 5), ShapeError, "expected input feature size 6, got 5"),
        (torch.randn(7, 3, 6, dtype=torch.float64), DtypeError, "float64"),
        (torch.randn(0, 3, 6), ShapeError, "0 time steps"),
        (torch.randn(6), ValueError, "rank 3"),
    ],
)
def test_bad_input_gets_the_full_paths_errors_without_gradients(x: torch.Tensor, error: type, words: str) -> None:
    ours, _ = _twins("lstm")
    for _ in range(2):  # before and after a plan is kept for well-formed input
        with torch.no_grad(), pytest.raises(error, match=words):
            ours(x)
        with torch.no_grad():
            ours(torch.randn(7, 3, 6))
