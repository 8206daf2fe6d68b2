"""The implementations the suite times: torch.nn, a naive autograd loop, Keras 3 (torch backend),
and lstmkit's layers with and without extras; in float32, and in reduced precision (bfloat16
autocast, int8 dynamic quantization) beside torch.nn in the same precision.

Each :class:`Peer` builds, for a shape ``(T, B, I, H)`` and a mode, a function doing one call:
inference (``eval()``, ``torch.no_grad()``) or one training step (gradients set to ``None``,
forward, ``output.sum().backward()``). Inputs are time-major ``(T, B, I)`` except for Keras, which
gets its own batch-major ``(B, T, I)``. lstmkit rows use the public layers with ``engine="auto"``
unless the row says otherwise, so they pick up whichever engine lstmkit chooses.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

import lstmkit
from lstmkit.engine import torch_engine

Shape = tuple[int, int, int, int]  # T, B, I, H
Run = Callable[[], None]


@dataclass(frozen=True)
class Peer:
    """One row of the suite."""

    key: str  # short name (JSON, --only)
    label: str  # row label in the report
    family: str  # "lstm" or "gru": compared with nn.LSTM or nn.GRU
    build: Callable[[Shape, bool], Run]
    keras: bool = False
    steady_state: bool = False  # lstmkit auto engine: warm up past the compile threshold
    note: str = ""
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "int8" (dynamic quantization)
    modes: tuple[str, ...] = ("inference", "training")  # the modes the row runs in
    needs: Callable[[], str | None] | None = None  # why the row cannot run on this machine (None: it can)

    def unavailable(self) -> str | None:
        """Why this row cannot run on this machine, or ``None``."""
        return self.needs() if self.needs else None

    @property
    def baseline(self) -> str:
        return BASELINES[self.family]

    @property
    def gates(self) -> int:
        """Gate blocks of the weight matrices (for the GEMM flop count)."""
        return GATES[self.family]


BASELINES = {"lstm": "nn_lstm", "gru": "nn_gru"}
GATES = {"lstm": 4, "gru": 3}


# ----------------------------------------------------------------------------------------------
# cells written as users write them


class NaiveLSTM(nn.Module):
    """What a user writes: an LSTM cell by hand and a Python loop over time, autograd does the rest."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.ih = nn.Linear(input_size, 4 * hidden_size)
        self.hh = nn.Linear(hidden_size, 4 * hidden_size)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h = x.new_zeros(x.shape[1], self.hidden_size)
        c = x.new_zeros(x.shape[1], self.hidden_size)
        outputs = []
        for x_t in x:
            i, f, g, o = (self.ih(x_t) + self.hh(h)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs), (h, c)


class UserLSTMCell(lstmkit.Cell):
    """The same LSTM written as a user-defined lstmkit cell: only the pointwise step, in Python,
    so the user-cell row is compared like for like with the naive loop and ``nn.LSTM``."""

    gate_names = ("i", "f", "g", "o")
    state_names = ("h", "c")

    def pointwise(self, xg, hg, state):
        h, c = state
        i, f, g, o = (xg + hg).chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        return (h, c), (i, f, g, o)


class UserNormLSTMCell(UserLSTMCell):
    """The user LSTM cell with a layer norm on the cell state before the output's ``tanh``: a
    reduction over the features, which does not translate to C++, so the fused engine compiles its
    steps with TorchInductor instead (:mod:`lstmkit.engine.fused_inductor`)."""

    def __init__(self, input_size: int, hidden_size: int, **kwargs: Any) -> None:
        super().__init__(input_size, hidden_size, **kwargs)
        self.norm = nn.LayerNorm(hidden_size, dtype=self.weight_ih.dtype)

    def pointwise(self, xg, hg, state):
        h, c = state
        i, f, g, o = (xg + hg).chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(self.norm(c))
        return (h, c), (i, f, g, o)


# ----------------------------------------------------------------------------------------------
# one call


def _input(shape: Shape, batch_first: bool = False) -> Tensor:
    T, B, I, _ = shape
    generator = torch.Generator().manual_seed(1)
    return torch.randn((B, T, I) if batch_first else (T, B, I), generator=generator)


def make_run(module: nn.Module, forward: Callable[[], Tensor], training: bool) -> Run:
    """One inference call or one training step of ``module`` through ``forward()`` (kept as the
    returned function's ``forward`` attribute, to look at what computes the output)."""
    module.train(training)
    parameters = list(module.parameters())

    def infer() -> None:
        with torch.no_grad():
            forward()

    def train_step() -> None:
        for parameter in parameters:
            parameter.grad = None
        forward().sum().backward()

    run = train_step if training else infer
    run.forward = forward  # type: ignore[attr-defined]
    forward.module = module  # type: ignore[attr-defined]
    return run


def _torch_peer(kind: type[nn.Module]) -> Callable[[Shape, bool], Run]:
    def build(shape: Shape, training: bool) -> Run:
        torch.manual_seed(0)
        module, x = kind(shape[2], shape[3]), _input(shape)
        return make_run(module, lambda: module(x)[0], training)

    return build


def _autocast(build: Callable[[Shape, bool], Run]) -> Callable[[Shape, bool], Run]:
    """``build``'s call with the forward under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (the
    backward runs outside, as in a training loop)."""

    def build_autocast(shape: Shape, training: bool) -> Run:
        forward = build(shape, training).forward  # type: ignore[attr-defined]
        module = forward.module  # type: ignore[attr-defined]

        def under_autocast() -> Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return forward()

        return make_run(module, under_autocast, training)

    return build_autocast


def _onednn_bf16() -> str | None:
    if torch_engine.onednn_bf16():
        return None
    return "torch.nn.LSTM fails under bf16 autocast on this CPU (oneDNN has no bf16 kernels without AVX-512)"


def _quantized(quantize: Callable[[nn.Module], nn.Module]) -> Callable[[Shape, bool], Run]:
    """Inference of an ``nn.LSTM``-shaped layer after int8 dynamic quantization by ``quantize``."""

    def build(shape: Shape, training: bool) -> Run:
        if training:
            raise ValueError("int8 dynamically quantized layers run inference only")
        torch.manual_seed(0)
        module, x = quantize(lstmkit.LSTM(shape[2], shape[3]).eval()), _input(shape)
        return make_run(module, lambda: module(x)[0], training)

    return build


def _torch_quantize_dynamic(module: nn.Module) -> nn.Module:
    plain = nn.LSTM(module.input_size, module.hidden_size)
    plain.load_state_dict(module.state_dict())
    # torch's quantize_dynamic swaps submodules only: the LSTM goes in a container
    return torch.ao.quantization.quantize_dynamic(nn.Sequential(plain), {nn.LSTM}, dtype=torch.qint8)[0]


def _lstmkit_peer(make: Callable[[int, int], nn.Module], lengths: bool = False) -> Callable[[Shape, bool], Run]:
    def build(shape: Shape, training: bool) -> Run:
        torch.manual_seed(0)
        module, x = make(shape[2], shape[3]), _input(shape)
        if not lengths:
            return make_run(module, lambda: module(x)[0], training)
        T, B = shape[0], shape[1]
        # lengths spread evenly over [T/2, T] (one sequence of length T), in a shuffled order
        spread = torch.linspace(T, max(1, T // 2), B).round().long()
        spread = spread[torch.randperm(B, generator=torch.Generator().manual_seed(2))]
        return make_run(module, lambda: module(x, lengths=spread)[0], training)

    return build


# ----------------------------------------------------------------------------------------------
# Keras


def keras_status() -> tuple[Any, str | None]:
    """``(keras, None)`` when Keras 3 runs on the torch backend here, else ``(None, reason)``.
    Sets ``KERAS_BACKEND=torch`` unless it is set already."""
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except Exception as error:  # ImportError, or a backend that fails to load
        return None, f"keras not importable ({type(error).__name__}: {error})"
    backend = keras.backend.backend()
    if backend != "torch":
        return None, f"keras uses the {backend!r} backend (set KERAS_BACKEND=torch before it is imported)"
    return keras, None


def _keras_peer(layer_name: str) -> Callable[[Shape, bool], Run]:
    def build(shape: Shape, training: bool) -> Run:
        keras, reason = keras_status()
        if keras is None:
            raise RuntimeError(reason)
        keras.utils.set_random_seed(0)
        layer = getattr(keras.layers, layer_name)(shape[3], return_sequences=True)
        x = _input(shape, batch_first=True)
        layer(x[:1, :1])  # build the weights
        return make_run(layer, lambda: layer(x, training=training), training)

    return build


# ----------------------------------------------------------------------------------------------
# the rows


def _layer(cell: type[lstmkit.Cell], **options: Any) -> Callable[[int, int], nn.Module]:
    return lambda input_size, hidden_size: lstmkit.Recurrent(cell, input_size, hidden_size, **options)


PEERS: tuple[Peer, ...] = (
    Peer("nn_lstm", "torch.nn.LSTM", "lstm", _torch_peer(nn.LSTM)),
    Peer("naive_lstm", "naive loop (autograd)", "lstm", _torch_peer(NaiveLSTM), note="hand-written cell"),
    Peer("keras_lstm", "Keras 3 LSTM (torch)", "lstm", _keras_peer("LSTM"), keras=True),
    Peer("lstmkit_lstm", "lstmkit.LSTM", "lstm", _lstmkit_peer(lstmkit.LSTM), steady_state=True),
    Peer(
        "reference_lstm",
        "lstmkit.LSTM, reference engine",
        "lstm",
        _lstmkit_peer(partial(lstmkit.LSTM, engine="reference")),
    ),
    Peer("peephole", "peephole LSTM", "lstm", _lstmkit_peer(_layer(lstmkit.PeepholeLSTMCell)), steady_state=True),
    Peer("layernorm", "layer-norm LSTM", "lstm", _lstmkit_peer(_layer(lstmkit.LayerNormLSTMCell)), steady_state=True),
    Peer(
        "masked",
        "masked LSTM (lengths)",
        "lstm",
        _lstmkit_peer(lstmkit.LSTM, lengths=True),
        steady_state=True,
        note="lengths spread over [T/2, T]; flops counted for all T steps",
    ),
    Peer(
        "recurrent_dropout",
        "recurrent-dropout LSTM",
        "lstm",
        _lstmkit_peer(partial(lstmkit.LSTM, recurrent_dropout=0.25)),
        steady_state=True,
        note="p=0.25; inference is a plain LSTM",
    ),
    Peer(
        "zoneout",
        "zoneout LSTM",
        "lstm",
        _lstmkit_peer(partial(lstmkit.LSTM, zoneout=0.1)),
        steady_state=True,
        note="p=0.1",
    ),
    Peer(
        "user_lstm",
        "user-defined cell (LSTM)",
        "lstm",
        _lstmkit_peer(_layer(UserLSTMCell)),
        steady_state=True,
        note="the LSTM as a user cell: Python pointwise step, the maths of the naive loop",
    ),
    Peer(
        "user_norm_lstm",
        "user-defined cell (LSTM + LayerNorm)",
        "lstm",
        _lstmkit_peer(_layer(UserNormLSTMCell)),
        steady_state=True,
        note="the user LSTM with a layer norm on c, which does not translate to C++: its steps compiled by "
        "TorchInductor after the warm-up",
    ),
    Peer(
        "nn_lstm_bf16",
        "torch.nn.LSTM, bf16 autocast",
        "lstm",
        _autocast(_torch_peer(nn.LSTM)),
        precision="bf16",
        needs=_onednn_bf16,
    ),
    Peer(
        "lstmkit_lstm_bf16",
        "lstmkit.LSTM, bf16 autocast",
        "lstm",
        _autocast(_lstmkit_peer(lstmkit.LSTM)),
        steady_state=True,
        precision="bf16",
    ),
    Peer(
        "nn_lstm_int8",
        "torch quantized LSTM (int8 dynamic)",
        "lstm",
        _quantized(_torch_quantize_dynamic),
        precision="int8",
        modes=("inference",),
    ),
    Peer(
        "lstmkit_lstm_int8",
        "lstmkit.quantize_int8(LSTM)",
        "lstm",
        _quantized(lstmkit.quantize_int8),
        precision="int8",
        modes=("inference",),
        note="int8 weights (a scale per row); int8 activations (a scale per row) and exact integer products "
        "on AVX512-VNNI or AVX2, else the weights dequantized",
    ),
    Peer("nn_gru", "torch.nn.GRU", "gru", _torch_peer(nn.GRU)),
    Peer("keras_gru", "Keras 3 GRU (torch)", "gru", _keras_peer("GRU"), keras=True),
    Peer("lstmkit_gru", "lstmkit.GRU", "gru", _lstmkit_peer(lstmkit.GRU), steady_state=True),
    Peer(
        "nn_gru_bf16",
        "torch.nn.GRU, bf16 autocast",
        "gru",
        _autocast(_torch_peer(nn.GRU)),
        precision="bf16",
        note="torch.nn.GRU computes in float32 under CPU autocast",
    ),
    Peer(
        "lstmkit_gru_bf16",
        "lstmkit.GRU, bf16 autocast",
        "gru",
        _autocast(_lstmkit_peer(lstmkit.GRU)),
        steady_state=True,
        precision="bf16",
    ),
    Peer(
        "reference_gru",
        "lstmkit.GRU, reference engine",
        "gru",
        _lstmkit_peer(partial(lstmkit.GRU, engine="reference")),
    ),
)

BY_KEY = {peer.key: peer for peer in PEERS}


def get(key: str) -> Peer:
    try:
        return BY_KEY[key]
    except KeyError:
        raise ValueError(f"unknown implementation {key!r}: expected one of {', '.join(BY_KEY)}") from None


def select(keys: list[str] | None = None, keras: bool = True) -> list[Peer]:
    """The peers to run, in report order; the torch.nn baseline of every family asked for is
    always included."""
    chosen = list(PEERS) if not keys else [get(key) for key in keys]
    families = {peer.family for peer in chosen}
    wanted = {peer.key for peer in chosen} | {BASELINES[family] for family in families}
    return [peer for peer in PEERS if peer.key in wanted and (keras or not peer.keras)]
