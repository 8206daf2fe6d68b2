"""Keras 3 recurrent layers as batch-first PyTorch modules: ``LSTM``, ``GRU``, ``SimpleRNN`` (their
shared machinery: :mod:`lstmkit.keras.base`; ``Bidirectional``: :mod:`lstmkit.keras.bidirectional`).

Arguments, initialisation, masking and outputs follow Keras; the parameters live in an lstmkit cell
(``layer.cell.weight_ih`` ... in PyTorch layout and gate order) and are converted to Keras' layout
only at the boundary (:meth:`get_weights` / :meth:`set_weights`). Keras is never imported.

Shared arguments, as Keras' (keyword-only after ``units``): ``activation``, ``use_bias``,
``kernel_initializer``, ``recurrent_initializer``, ``bias_initializer`` (a name of
:data:`INITIALIZERS`, a number or a callable filling a tensor; drawn on Keras-layout shapes, so with
Keras' fans), ``kernel_regularizer``, ``recurrent_regularizer``, ``bias_regularizer`` and
``activity_regularizer`` (see :mod:`lstmkit.keras.regularizers`; their penalties are
:attr:`~lstmkit.keras.base.KerasRNN.losses`), ``dropout`` (on the inputs, one mask per sequence,
training only), ``recurrent_dropout`` (on ``h`` before the recurrent multiply, one mask per
sequence; as in Keras, LSTM and GRU then draw one mask per gate for ``h`` and for the inputs),
``return_sequences``, ``return_state``, ``go_backwards`` (the output sequence stays reversed),
``stateful`` (final states carried to the next call until
:meth:`~lstmkit.keras.base.KerasRNN.reset_state`), ``unroll`` (accepted for Keras' sake; it changes
nothing here) and ``zero_output_for_mask``; plus ``input_size``, ``device`` and ``dtype`` (a
floating ``torch.dtype`` or its name, e.g. ``"float32"``).

``forward(inputs (B, T, I), initial_state=None, mask=None, training=None)``: ``mask`` ``(B, T)``
marks real steps; masked steps keep the state and repeat the previous output (zeros before the
first real step), as Keras. ``training=None`` follows ``module.training``. Inputs, initial states
and masks may be NumPy arrays, as in Keras (cast to the layer's dtype); initial states also nested
lists.

Like Keras, a layer built without ``input_size`` creates its parameters on the first call, so an
optimizer must be created after that call (or pass ``input_size=`` to build at once).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..cells import Cell, GRUCell, LSTMCell, RNNCell
from ..functional import Activation
from .base import KerasRNN, keras_arguments
from .initializers import Initializer, initialize, resolve_keras_activation
from .regularizers import Regularizer


class LSTM(KerasRNN):
    """Keras ``LSTM``: ``recurrent_activation`` drives the gates, ``unit_forget_bias`` starts the
    forget bias at one. Returns ``output`` or, with ``return_state``, ``(output, h, c)``.
    ``implementation`` (1 or 2) is accepted as Keras takes it and changes no result: the per-gate
    dropout masks of Keras' implementation 1 are drawn whenever ``recurrent_dropout > 0``, which is
    when Keras' layer uses it. (Shared arguments: see the module docstring.)

        >>> import torch
        >>> from lstmkit.keras import LSTM
        >>> lstm = LSTM(8, return_sequences=True, return_state=True)
        >>> out, h, c = lstm(torch.randn(2, 5, 3), mask=torch.tensor([[1, 1, 1, 0, 0], [1] * 5]).bool())
        >>> tuple(out.shape), tuple(h.shape), [tuple(w.shape) for w in lstm.get_weights()]
        ((2, 5, 8), (2, 8), [(3, 32), (8, 32), (32,)])
    """

    gates = 4
    state_names = ("h", "c")

    def __init__(
        self,
        units: int,
        *,
        activation: str | Activation | None = "tanh",
        recurrent_activation: str | Activation | None = "sigmoid",
        use_bias: bool = True,
        kernel_initializer: Initializer = "glorot_uniform",
        recurrent_initializer: Initializer = "orthogonal",
        bias_initializer: Initializer = "zeros",
        kernel_regularizer: Regularizer = None,
        recurrent_regularizer: Regularizer = None,
        bias_regularizer: Regularizer = None,
        activity_regularizer: Regularizer = None,
        unit_forget_bias: bool = True,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        implementation: int = 2,
        zero_output_for_mask: bool = False,
        input_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__(units, device=device, dtype=dtype, **keras_arguments(locals()))

    def _make_cell(self, input_size: int, **factory: Any) -> Cell:
        return LSTMCell(
            input_size,
            self.units,
            bias=self.use_bias,
            activation=resolve_keras_activation(self.activation),
            gate_activation=resolve_keras_activation(self.recurrent_activation),
            **factory,
        )

    def _initial_bias(self, **factory: Any) -> Tensor:
        if not self.unit_forget_bias:
            return super()._initial_bias(**factory)
        units, init = self.units, self.bias_initializer  # as Keras: forget block is ones, the rest drawn
        parts = [initialize(init, (units,), **factory), torch.ones(units, **factory)]
        return torch.cat(parts + [initialize(init, (2 * units,), **factory)])


class GRU(KerasRNN):
    """Keras ``GRU``; ``reset_after=True`` (default) applies the reset gate after the recurrent
    multiply and has two biases, Keras ``bias`` of shape ``(2, 3 * units)``. Returns ``output`` or,
    with ``return_state``, ``(output, h)``. ``implementation``: as for :class:`LSTM`.
    (Shared arguments: see the module docstring.)

        >>> import torch
        >>> from lstmkit.keras import GRU
        >>> gru = GRU(4, reset_after=False, input_size=3)
        >>> tuple(gru(torch.randn(2, 5, 3)).shape), [tuple(w.shape) for w in gru.get_weights()]
        ((2, 4), [(3, 12), (4, 12), (12,)])
    """

    gates = 3

    def __init__(
        self,
        units: int,
        *,
        activation: str | Activation | None = "tanh",
        recurrent_activation: str | Activation | None = "sigmoid",
        use_bias: bool = True,
        kernel_initializer: Initializer = "glorot_uniform",
        recurrent_initializer: Initializer = "orthogonal",
        bias_initializer: Initializer = "zeros",
        kernel_regularizer: Regularizer = None,
        recurrent_regularizer: Regularizer = None,
        bias_regularizer: Regularizer = None,
        activity_regularizer: Regularizer = None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        implementation: int = 2,
        reset_after: bool = True,
        zero_output_for_mask: bool = False,
        input_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__(units, device=device, dtype=dtype, **keras_arguments(locals()))

    def _make_cell(self, input_size: int, **factory: Any) -> Cell:
        return GRUCell(
            input_size,
            self.units,
            bias=self.use_bias,
            reset_after=self.reset_after,
            activation=resolve_keras_activation(self.activation),
            gate_activation=resolve_keras_activation(self.recurrent_activation),
            **factory,
        )

    def _keeps_recurrent_bias(self) -> bool:
        return self.reset_after

    def _bias_shape(self) -> tuple[int, ...]:
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)


class SimpleRNN(KerasRNN):
    """Keras ``SimpleRNN``: ``h_t = activation(x_t W + h_{t-1} U + b)``. Returns ``output`` or,
    with ``return_state``, ``(output, h)``.
    (Shared arguments: see the module docstring.)

        >>> import torch
        >>> from lstmkit.keras import SimpleRNN
        >>> rnn = SimpleRNN(4, activation="relu", return_sequences=True, go_backwards=True)
        >>> tuple(rnn(torch.randn(2, 5, 3)).shape)
        (2, 5, 4)
    """

    def __init__(
        self,
        units: int,
        *,
        activation: str | Activation | None = "tanh",
        use_bias: bool = True,
        kernel_initializer: Initializer = "glorot_uniform",
        recurrent_initializer: Initializer = "orthogonal",
        bias_initializer: Initializer = "zeros",
        kernel_regularizer: Regularizer = None,
        recurrent_regularizer: Regularizer = None,
        bias_regularizer: Regularizer = None,
        activity_regularizer: Regularizer = None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        zero_output_for_mask: bool = False,
        input_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__(units, device=device, dtype=dtype, **keras_arguments(locals()))

    def _make_cell(self, input_size: int, **factory: Any) -> Cell:
        activation = resolve_keras_activation(self.activation)
        return RNNCell(input_size, self.units, bias=self.use_bias, nonlinearity=activation, **factory)
