"""Recurrent cells, each written as its equations read.

Every cell splits into two parts (docs/cells_and_layers.md, "your own cell"):

1. an input projection ``xg = W_ih x + b_ih`` that does not depend on the state, so a layer
   computes it for all time steps in one matrix multiply (:meth:`Cell.project_input`), and
2. a recurrent step: ``hg = W_hh h + b_hh`` (:meth:`Cell.project_hidden`) followed by pointwise
   gate math (:meth:`Cell.pointwise`).

A new cell only names its gates and states and writes :meth:`Cell.pointwise`. Gate blocks are
stacked along the last dimension of ``weight_ih``/``weight_hh`` in the order of ``gate_names``.
"""

from __future__ import annotations

import math
from typing import ClassVar, TypedDict, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import Activation, activation_name, resolve_activation
from .init import GateInit
from .validation import ArgumentError

State = tuple[Tensor, ...]
Gates = tuple[Tensor, ...]


class InitOptions(TypedDict, total=False):
    """The long-memory initialisation options every cell takes (see :mod:`lstmkit.init`)."""

    forget_bias: float | None
    chrono_init: int | None
    recurrent_init: str


class Cell(nn.Module):
    """Base class of all cells: parameters named like PyTorch's, one-step call like ``nn.LSTMCell``.

    Subclasses set ``gate_names`` (one name per block of ``hidden_size`` rows in ``weight_ih``),
    ``state_names`` (``state[0]`` is always the hidden state ``h`` that is fed back and output)
    and implement :meth:`pointwise`.

    Example: a coupled input-forget gate LSTM (the forget gate is ``1 - i``)::

        >>> import torch, lstmkit
        >>> class CIFGCell(lstmkit.Cell):
        ...     gate_names = ("i", "g", "o")
        ...     state_names = ("h", "c")
        ...     def pointwise(self, xg, hg, state):
        ...         h, c = state
        ...         i, g, o = (xg + hg).chunk(3, dim=-1)
        ...         i, g, o = torch.sigmoid(i), torch.tanh(g), torch.sigmoid(o)
        ...         c = (1 - i) * c + i * g          # c_t = (1 - i) * c_{t-1} + i * g
        ...         h = o * torch.tanh(c)            # h_t = o * tanh(c_t)
        ...         return (h, c), (i, g, o)
        >>> cell = CIFGCell(4, 8)
        >>> h, c = cell(torch.randn(2, 4))
        >>> tuple(h.shape), tuple(c.shape)
        ((2, 8), (2, 8))
    """

    gate_names: ClassVar[tuple[str, ...]] = ()
    state_names: ClassVar[tuple[str, ...]] = ("h",)
    forget_gate: ClassVar[str | None] = None  # the gate whose bias forget_bias and chrono_init set
    input_gate: ClassVar[str | None] = None  # the gate chrono_init sets to -b_f (None: coupled to f)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        forget_bias: float | None = None,
        chrono_init: int | None = None,
        recurrent_init: str = "uniform",
    ) -> None:
        super().__init__()
        if not self.gate_names:
            raise TypeError(f"{type(self).__name__} must set gate_names, e.g. ('i', 'f', 'g', 'o')")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ArgumentError(f"{name} must be a positive int, got {value!r}")
            if value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        factory = {"device": device, "dtype": dtype}
        rows = self.gate_count * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(rows, self.recurrent_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(rows, **factory))
            self.bias_hh = nn.Parameter(torch.empty(rows, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        # subclasses that add parameters pass no options here and call _initialize once they exist
        self._initialize(InitOptions(forget_bias=forget_bias, chrono_init=chrono_init, recurrent_init=recurrent_init))

    def _initialize(self, init: InitOptions) -> None:
        """Take the long-memory options (checked against this cell) and draw every parameter: the
        last step of a constructor, so that the options' own draws come after torch.nn's."""
        self.gate_init = GateInit(**init)
        self.gate_init.check(self)
        self.reset_parameters()

    @property
    def gate_count(self) -> int:
        return len(self.gate_names)

    @property
    def recurrent_size(self) -> int:
        """Size of the hidden state ``h`` that is fed back into ``weight_hh`` and output."""
        return self.hidden_size

    @property
    def state_sizes(self) -> tuple[int, ...]:
        return (self.recurrent_size,) + (self.hidden_size,) * (len(self.state_names) - 1)

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as in ``torch.nn``, then
        the cell's ``forget_bias``, ``chrono_init`` and ``recurrent_init`` (:mod:`lstmkit.init`);
        nothing for a cell on the meta device (no values to set, and no random draws: a cell built
        to recompute a sequence may be built inside a vmap)."""
        if self.weight_ih.is_meta:
            return
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)
        self.gate_init.apply(self)

    def project_input(self, x: Tensor) -> Tensor:
        """``xg = W_ih x + b_ih`` for any leading shape; layers call it once for all steps."""
        return F.linear(x, self.weight_ih, self.bias_ih)

    def project_hidden(self, h: Tensor) -> Tensor:
        """``hg = W_hh h + b_hh``: the recurrent matrix multiply of one step."""
        return F.linear(h, self.weight_hh, self.bias_hh)

    def pointwise(self, xg: Tensor, hg: Tensor, state: State) -> tuple[State, Gates]:
        """Gate math of one step: returns the new state and the gate activations (for tracing)."""
        raise NotImplementedError

    def step(self, xg: Tensor, state: State, recurrent_mask: Tensor | None = None) -> tuple[State, Gates]:
        """One time step given the projected input; ``recurrent_mask`` drops units of ``h``
        before the recurrent multiply (variational recurrent dropout)."""
        h = state[0] if recurrent_mask is None else state[0] * recurrent_mask
        return self.pointwise(xg, self.project_hidden(h), state)

    def initial_state(self, batch_size: int, like: Tensor) -> State:
        return tuple(like.new_zeros(batch_size, size) for size in self.state_sizes)

    def forward(self, input: Tensor, hx: Tensor | State | None = None) -> Tensor | State:
        """One step, as ``torch.nn.LSTMCell/GRUCell/RNNCell``: input ``(B, I)`` or ``(I,)``;
        returns ``h`` for single-state cells, the state tuple otherwise."""
        from .validation import check_cell_input

        batched, input, state = check_cell_input(self, input, hx)
        state, _ = self.step(self.project_input(input), state)
        if not batched:
            state = tuple(s.squeeze(0) for s in state)
        return state[0] if len(state) == 1 else state

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")
        options = self.gate_init.describe()
        return text + ", " + options if options else text


class RNNCell(Cell):
    """Elman RNN cell: ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.

    ``nonlinearity`` is ``"tanh"`` or ``"relu"`` as in ``torch.nn.RNNCell``, or any name of
    :data:`lstmkit.functional.ACTIVATIONS` or a callable.

        >>> import torch, lstmkit
        >>> lstmkit.RNNCell(3, 5, nonlinearity="relu")(torch.randn(2, 3)).shape
        torch.Size([2, 5])
    """

    gate_names = ("h",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str | Activation = "tanh",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **init: Unpack[InitOptions],
    ) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype, **init)
        self.activation = resolve_activation(nonlinearity)
        self.nonlinearity = activation_name(nonlinearity)

    def pointwise(self, xg: Tensor, hg: Tensor, state: State) -> tuple[State, Gates]:
        h = self.activation(xg + hg)  # h_t = act(W x_t + U h_{t-1} + b)
        return (h,), (h,)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"


class LSTMCell(Cell):
    """Long short-term memory cell (Hochreiter & Schmidhuber 1997, with a forget gate).

    Gates in PyTorch's order ``i, f, g, o``. With ``proj_size > 0`` the hidden state is
    projected, ``h_t = W_hr (o * tanh(c_t))``, as in ``torch.nn.LSTM``.

        >>> import torch, lstmkit
        >>> h, c = lstmkit.LSTMCell(3, 5)(torch.randn(2, 3))
        >>> tuple(h.shape), tuple(c.shape)
        ((2, 5), (2, 5))
    """

    gate_names = ("i", "f", "g", "o")
    state_names = ("h", "c")
    forget_gate, input_gate = "f", "i"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        proj_size: int = 0,
        activation: str | Activation = "tanh",
        gate_activation: str | Activation = "sigmoid",
        **init: Unpack[InitOptions],
    ) -> None:
        sized = isinstance(hidden_size, int) and not isinstance(hidden_size, bool) and hidden_size > 0
        bad = not isinstance(proj_size, int) or isinstance(proj_size, bool) or not 0 <= proj_size < hidden_size
        if sized and bad:  # a bad hidden_size is reported first, by Cell
            raise ValueError(f"proj_size must be an int in [0, hidden_size={hidden_size}), got {proj_size!r}")
        self.proj_size = proj_size
        super().__init__(input_size, hidden_size, bias, device, dtype, **({} if proj_size else init))
        self.activation = resolve_activation(activation)
        self.gate_activation = resolve_activation(gate_activation)
        if proj_size:
            self.weight_hr = nn.Parameter(torch.empty(proj_size, hidden_size, device=device, dtype=dtype))
            self._initialize(init)

    @property
    def recurrent_size(self) -> int:
        return self.proj_size or self.hidden_size

    def pointwise(self, xg: Tensor, hg: Tensor, state: State) -> tuple[State, Gates]:
        _, c = state
        i, f, g, o = (xg + hg).chunk(4, dim=-1)
        i = self.gate_activation(i)  # input gate
        f = self.gate_activation(f)  # forget gate
        g = self.activation(g)  # candidate cell
        o = self.gate_activation(o)  # output gate
        c = f * c + i * g  # c_t = f * c_{t-1} + i * g
        h = o * self.activation(c)  # h_t = o * tanh(c_t)
        if self.proj_size:
            h = F.linear(h, self.weight_hr)  # h_t = W_hr h_t
        return (h, c), (i, f, g, o)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text + f", proj_size={self.proj_size}" if self.proj_size else text


class PeepholeLSTMCell(Cell):
    """LSTM with peephole connections (Gers & Schmidhuber 2000).

    The input and forget gates see the previous cell state, the output gate sees the new one,
    through diagonal weights ``weight_ci``, ``weight_cf``, ``weight_co`` (one per unit).

        >>> import torch, lstmkit
        >>> h, c = lstmkit.PeepholeLSTMCell(3, 5)(torch.randn(2, 3))
        >>> tuple(h.shape)
        (2, 5)
    """

    gate_names = ("i", "f", "g", "o")
    state_names = ("h", "c")
    forget_gate, input_gate = "f", "i"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **init: Unpack[InitOptions],
    ) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype)
        for name in ("weight_ci", "weight_cf", "weight_co"):
            self.register_parameter(name, nn.Parameter(torch.empty(hidden_size, device=device, dtype=dtype)))
        self._initialize(init)

    def pointwise(self, xg: Tensor, hg: Tensor, state: State) -> tuple[State, Gates]:
        _, c_prev = state
        i, f, g, o = (xg + hg).chunk(4, dim=-1)
        i = torch.sigmoid(i + self.weight_ci * c_prev)  # i = σ(W_i x + U_i h + w_ci ⊙ c_{t-1})
        f = torch.sigmoid(f + self.weight_cf * c_prev)  # f = σ(W_f x + U_f h + w_cf ⊙ c_{t-1})
        g = torch.tanh(g)  # candidate
        c = f * c_prev + i * g  # c_t = f * c_{t-1} + i * g
        o = torch.sigmoid(o + self.weight_co * c)  # o = σ(W_o x + U_o h + w_co ⊙ c_t)
        h = o * torch.tanh(c)  # h_t = o * tanh(c_t)
        return (h, c), (i, f, g, o)


class GRUCell(Cell):
    """Gated recurrent unit (Cho et al. 2014), gates in PyTorch's order ``r, z, n``.

    ``reset_after=True`` (PyTorch, Keras default): ``n = tanh(W_n x + b_in + r * (U_n h + b_hn))``.
    ``reset_after=False`` (original paper, Keras option): ``n = tanh(W_n x + b_in + U_n (r * h) + b_hn)``.
    Then ``h_t = (1 - z) * n + z * h_{t-1}``.

        >>> import torch, lstmkit
        >>> lstmkit.GRUCell(3, 5, reset_after=False)(torch.randn(2, 3)).shape
        torch.Size([2, 5])
    """

    gate_names = ("r", "z", "n")
    forget_gate = "z"  # h_t = (1 - z) * n + z * h_{t-1}: z keeps memory, 1 - z lets the input in

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        reset_after: bool = True,
        activation: str | Activation = "tanh",
        gate_activation: str | Activation = "sigmoid",
        **init: Unpack[InitOptions],
    ) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype, **init)
        self.reset_after = reset_after
        self.activation = resolve_activation(activation)
        self.gate_activation = resolve_activation(gate_activation)

    def pointwise(self, xg: Tensor, hg: Tensor, state: State) -> tuple[State, Gates]:
        (h_prev,) = state
        x_r, x_z, x_n = xg.chunk(3, dim=-1)
        h_r, h_z, h_n = hg.chunk(3, dim=-1)
        r = self.gate_activation(x_r + h_r)  # reset gate
        z = self.gate_activation(x_z + h_z)  # update gate
        n = self.activation(x_n + r * h_n)  # candidate: tanh(W_n x + r * (U_n h))
        h = (1 - z) * n + z * h_prev  # h_t = (1 - z) * n + z * h_{t-1}
        return (h,), (r, z, n)

    def step(self, xg: Tensor, state: State, recurrent_mask: Tensor | None = None) -> tuple[State, Gates]:
        if self.reset_after:
            return super().step(xg, state, recurrent_mask)
        (h_prev,) = state
        h = h_prev if recurrent_mask is None else h_prev * recurrent_mask
        size = self.hidden_size
        b_rz, b_n = (None, None) if self.bias_hh is None else self.bias_hh.split([2 * size, size])
        w_rz, w_n = self.weight_hh.split([2 * size, size])
        x_r, x_z, x_n = xg.chunk(3, dim=-1)
        h_r, h_z = F.linear(h, w_rz, b_rz).chunk(2, dim=-1)
        r = self.gate_activation(x_r + h_r)  # reset gate
        z = self.gate_activation(x_z + h_z)  # update gate
        n = self.activation(x_n + F.linear(r * h, w_n, b_n))  # candidate: tanh(W_n x + U_n (r * h))
        h = (1 - z) * n + z * h_prev  # h_t = (1 - z) * n + z * h_{t-1}
        return (h,), (r, z, n)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.reset_after else text + ", reset_after=False"


class LayerNormLSTMCell(Cell):
    """LSTM with layer normalisation, as in haste's LayerNormLSTM (Ba et al. 2016).

    ``gates = LN(W_ih x) + b_ih + LN(W_hh h) + b_hh``, ``c_t = f * c_{t-1} + i * g``,
    ``h_t = o * tanh(LN(c_t))``. Each LN normalises its whole vector and has a learned gain
    (``ln_weight_ih``, ``ln_weight_hh``, ``ln_weight_c``); the cell's LN also a shift
    (``ln_bias_c``). The biases come after the normalisation.

        >>> import torch, lstmkit
        >>> h, c = lstmkit.LayerNormLSTMCell(3, 5)(torch.randn(2, 3))
        >>> tuple(c.shape)
        (2, 5)
    """

    gate_names = ("i", "f", "g", "o")
    state_names = ("h", "c")
    forget_gate, input_gate = "f", "i"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        eps: float = 1e-5,
        **init: Unpack[InitOptions],
    ) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.eps = eps
        factory = {"device": device, "dtype": dtype}
        self.ln_weight_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory))
        self.ln_weight_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory))
        self.ln_weight_c = nn.Parameter(torch.empty(hidden_size, **factory))
        self.ln_bias_c = nn.Parameter(torch.empty(hidden_size, **factory))
        self._initialize(init)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        # called from Cell.__init__ before the LN parameters exist; a meta cell has no values
        if "ln_bias_c" not in self._parameters or self.weight_ih.is_meta:
            return
        with torch.no_grad():
            for gain in (self.ln_weight_ih, self.ln_weight_hh, self.ln_weight_c):
                gain.fill_(1.0)
            self.ln_bias_c.zero_()

    def _normalized(self, projection: Tensor, gain: Tensor, bias: Tensor | None) -> Tensor:
        out = F.layer_norm(projection, gain.shape, gain, None, self.eps)
        return out if bias is None else out + bias

    def project_input(self, x: Tensor) -> Tensor:
        return self._normalized(F.linear(x, self.weight_ih), self.ln_weight_ih, self.bias_ih)

    def project_hidden(self, h: Tensor) -> Tensor:
        return self._normalized(F.linear(h, self.weight_hh), self.ln_weight_hh, self.bias_hh)

    def pointwise(self, xg: Tensor, hg: Tensor, state: State) -> tuple[State, Gates]:
        _, c = state
        i, f, g, o = (xg + hg).chunk(4, dim=-1)
        i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)  # input, forget, output gates
        g = torch.tanh(g)  # candidate cell
        c = f * c + i * g  # c_t = f * c_{t-1} + i * g
        c_norm = F.layer_norm(c, (self.hidden_size,), self.ln_weight_c, self.ln_bias_c, self.eps)
        h = o * torch.tanh(c_norm)  # h_t = o * tanh(LN(c_t))
        return (h, c), (i, f, g, o)
