"""Initialisations for long memory, as options of every gated cell and layer.

Three options, each off by default (then a cell starts as ``torch.nn``'s does, draw for draw):

* ``forget_bias=b`` (Gers et al. 2000; Jozefowicz et al. 2015): the forget gate's bias starts at
  ``b``, so the cell starts keeping ``sigmoid(b)`` of its memory per step (``b = 1``: 73%, instead
  of about 50% with torch's draw around 0).
* ``chrono_init=T_max`` (Tallec & Ollivier 2018): forget biases spread so that the units' memory
  times cover ``[2, T_max]`` steps, and input biases their opposites.
* ``recurrent_init="orthogonal"``: every gate block of ``weight_hh`` orthogonal (Saxe et al. 2014),
  so that no block shrinks or grows ``h`` at the start.

A gate's bias is the sum ``b = b_ih + b_hh`` (both enter the same pre-activation). The options put
the whole value on ``bias_ih`` and zero the gate's block of ``bias_hh``, so the total is exactly
the value asked for: as Keras' ``unit_forget_bias`` (one bias, whose forget block is 1; lstmkit's
Keras layers load Keras' bias into ``bias_ih``), not as the common torch recipe that fills both
biases with 1 (a total of 2). The other gates' biases keep their draws.

In a GRU, ``h_t = (1 - z) * n + z * h_{t-1}`` (torch's and Cho et al.'s convention): the update
gate ``z`` is the share of memory kept, the GRU's forget gate. ``forget_bias`` and ``chrono_init``
set ``b_z``; the GRU has no separate input gate (``1 - z`` is it), so nothing else changes.
A cell without a forget gate (:class:`~lstmkit.RNNCell`, custom cells) refuses both.

    >>> import torch, lstmkit
    >>> lstm = lstmkit.LSTM(3, 4, forget_bias=1.0, recurrent_init="orthogonal")
    >>> (lstm.bias_ih_l0 + lstm.bias_hh_l0)[4:8].tolist()          # the f block (gates i, f, g, o)
    [1.0, 1.0, 1.0, 1.0]
    >>> w = lstm.weight_hh_l0[8:12]                                # the g block
    >>> torch.allclose(w @ w.T, torch.eye(4), atol=1e-6)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .validation import ArgumentError

if TYPE_CHECKING:
    from .cells import Cell

RECURRENT_INITS = ("uniform", "orthogonal")


def orthogonal_(tensor: Tensor) -> Tensor:
    """Fill a 2-D tensor with orthonormal rows or columns (whichever are fewer), drawn uniformly
    (Haar measure; Saxe et al. 2014), as Keras' ``Orthogonal(gain=1)``: ``W W^T = I`` for a wide or
    square ``W``, ``W^T W = I`` for a tall one.

        >>> w = orthogonal_(torch.empty(3, 5))
        >>> torch.allclose(w @ w.T, torch.eye(3), atol=1e-6)
        True
    """
    if tensor.dim() != 2:
        raise ValueError(f"the orthogonal initializer needs a 2-D tensor, got shape {tuple(tensor.shape)}")
    rows, cols = tensor.shape
    sample = torch.randn(max(rows, cols), min(rows, cols), dtype=torch.float64)
    q, r = torch.linalg.qr(sample)
    q = q * torch.sign(torch.diagonal(r))  # make the decomposition unique, hence uniformly distributed
    with torch.no_grad():
        return tensor.copy_(q.T if rows < cols else q)


def chrono_bias(size: int, t_max: int, like: Tensor) -> Tensor:
    """``size`` forget-gate biases of the chrono initialization (Tallec & Ollivier 2018):
    ``b_f ~ log(U([1, T_max - 1]))``. A unit then forgets in ``1 / (1 - sigmoid(b_f)) = 1 + u``
    steps, ``u ~ U([1, T_max - 1])``: memory times spread over ``[2, T_max]``.

        >>> b = chrono_bias(1000, 100, torch.empty(0))
        >>> bool(b.min() >= 0) and bool(b.max() <= math.log(99))
        True
    """
    u = like.new_empty(size).uniform_(1.0, t_max - 1.0)  # u ~ U([1, T_max - 1])
    return torch.log(u)  # b_f = log(u)


def gate_block(cell: Cell, gate: str) -> slice:
    """The rows of ``gate``'s block in the cell's stacked weights and biases (order ``gate_names``).

    >>> import lstmkit
    >>> gate_block(lstmkit.LSTMCell(2, 3), "f"), gate_block(lstmkit.GRUCell(2, 3), "z")
    (slice(3, 6, None), slice(3, 6, None))
    """
    start = cell.gate_names.index(gate) * cell.hidden_size
    return slice(start, start + cell.hidden_size)


def set_gate_bias(cell: Cell, gate: str, value: float | Tensor) -> None:
    """Make ``gate``'s total bias ``b = b_ih + b_hh`` equal ``value``: ``b_ih = value``, ``b_hh = 0``."""
    block = gate_block(cell, gate)
    with torch.no_grad():
        cell.bias_ih[block] = value
        if cell.bias_hh is not None:
            cell.bias_hh[block] = 0.0


@dataclass(frozen=True)
class GateInit:
    """A cell's long-memory initialisation options (see the module docstring); the defaults do
    nothing. ``forget_bias`` and ``chrono_init`` both set the forget gate, so at most one is given.

    Names: ``forget_bias`` as TensorFlow's ``LSTMCell`` (which adds it at every step; here it is
    the bias's starting value, a trained parameter); ``chrono_init`` after the paper's "chrono
    initialization"; ``recurrent_init`` rather than Keras' ``recurrent_initializer`` because Keras
    draws one orthogonal matrix for all gates together (``(units, 4 * units)``: its gate blocks
    are not orthogonal themselves), while this draws one per gate block.

        >>> GateInit(forget_bias=1.0, chrono_init=100)
        Traceback (most recent call last):
        ...
        ValueError: pass forget_bias or chrono_init, not both: both set the forget gate's bias
    """

    forget_bias: float | None = None
    chrono_init: int | None = None
    recurrent_init: str = "uniform"

    def __post_init__(self) -> None:
        bias = self.forget_bias
        if bias is not None and (not isinstance(bias, int | float) or isinstance(bias, bool)):
            raise ArgumentError(f"forget_bias must be a number or None, got {type(bias).__name__} {bias!r}")
        if bias is not None and not math.isfinite(bias):
            raise ValueError(f"forget_bias must be finite, got {bias!r}")
        t_max = self.chrono_init
        if t_max is not None and (not isinstance(t_max, int) or isinstance(t_max, bool)):
            raise ArgumentError(f"chrono_init must be an int (T_max, in steps) or None, got {t_max!r}")
        if t_max is not None and t_max < 2:
            raise ValueError(f"chrono_init is T_max, the longest dependency in steps: at least 2, got {t_max}")
        if bias is not None and t_max is not None:
            raise ValueError("pass forget_bias or chrono_init, not both: both set the forget gate's bias")
        if self.recurrent_init not in RECURRENT_INITS:
            raise ValueError(f"unknown recurrent_init {self.recurrent_init!r}: expected one of {RECURRENT_INITS}")

    @property
    def sets_forget_gate(self) -> bool:
        return self.forget_bias is not None or self.chrono_init is not None

    def check(self, cell: Cell) -> None:
        """Refuse options the cell cannot take: a forget-gate option for a cell without a forget
        gate or without biases."""
        if not self.sets_forget_gate:
            return
        option = "forget_bias" if self.forget_bias is not None else "chrono_init"
        if cell.forget_gate is None:
            raise ValueError(
                f"{option} needs a forget gate; {type(cell).__name__} has none (gates {cell.gate_names}): "
                "LSTM-family cells have f, GRUCell its update gate z"
            )
        if not cell.bias:
            raise ValueError(f"{option} sets a bias: build the cell with bias=True")

    def apply(self, cell: Cell) -> None:
        """Apply the options to the cell's freshly drawn parameters (a no-op with the defaults)."""
        with torch.no_grad():
            if self.recurrent_init == "orthogonal":
                for gate in cell.gate_names:  # one orthogonal W_hh per gate block
                    orthogonal_(cell.weight_hh[gate_block(cell, gate)])
            if self.forget_bias is not None:
                set_gate_bias(cell, cell.forget_gate, self.forget_bias)  # b_f = forget_bias
            if self.chrono_init is not None:
                b_f = chrono_bias(cell.hidden_size, self.chrono_init, cell.bias_ih)  # b_f ~ log(U([1, T_max - 1]))
                set_gate_bias(cell, cell.forget_gate, b_f)
                if cell.input_gate is not None:
                    set_gate_bias(cell, cell.input_gate, -b_f)  # b_i = -b_f

    def describe(self) -> str:
        """The options that differ from the defaults, as keyword arguments (``""`` for none).

        >>> GateInit(chrono_init=200, recurrent_init="orthogonal").describe()
        "chrono_init=200, recurrent_init='orthogonal'"
        """
        parts = [f"forget_bias={self.forget_bias!r}"] if self.forget_bias is not None else []
        parts += [f"chrono_init={self.chrono_init!r}"] if self.chrono_init is not None else []
        parts += [f"recurrent_init={self.recurrent_init!r}"] if self.recurrent_init != "uniform" else []
        return ", ".join(parts)


def initialize(
    module: torch.nn.Module,
    *,
    forget_bias: float | None = None,
    chrono_init: int | None = None,
    recurrent_init: str = "uniform",
) -> None:
    """Give every cell of ``module`` (a cell or a layer) these options and apply them to its
    current parameters now, without redrawing the others; ``reset_parameters()`` re-applies them.

        >>> import lstmkit
        >>> gru = lstmkit.GRU(2, 3)
        >>> initialize(gru, forget_bias=2.0)
        >>> (gru.bias_ih_l0 + gru.bias_hh_l0)[3:6].tolist()                # the z block (r, z, n)
        [2.0, 2.0, 2.0]
    """
    from .cells import Cell

    options = GateInit(forget_bias, chrono_init, recurrent_init)
    cells = [module] if isinstance(module, Cell) else list(getattr(module, "cells", []))
    if not cells:
        raise TypeError(f"expected an lstmkit cell or layer, got {type(module).__name__}")
    for cell in cells:
        options.check(cell)
    for cell in cells:
        cell.gate_init = options
        options.apply(cell)
