"""Keras 3 recurrent layers as batch-first PyTorch modules: ``LSTM``, ``GRU``, ``SimpleRNN``, ``Bidirectional``.

Arguments, initialisation, masking and outputs follow Keras; the parameters live in an lstmkit cell
(``layer.cell.weight_ih`` ... in PyTorch layout and gate order) and are converted to Keras' layout
only at the boundary (:meth:`get_weights` / :meth:`set_weights`). Keras is never imported.

Shared arguments, as Keras' (keyword-only after ``units``): ``activation``, ``use_bias``,
``kernel_initializer``, ``recurrent_initializer``, ``bias_initializer`` (a name of
:data:`INITIALIZERS`, a number or a callable filling a tensor; drawn on Keras-layout shapes, so with
Keras' fans), ``kernel_regularizer``, ``recurrent_regularizer``, ``bias_regularizer`` and
``activity_regularizer`` (see :mod:`lstmkit.keras.regularizers`; their penalties are
:attr:`~_KerasRNN.losses`), ``dropout`` (on the inputs, one mask per sequence, training only),
``recurrent_dropout`` (on ``h`` before the recurrent multiply, one mask per sequence; as in Keras,
LSTM and GRU then draw one mask per gate for ``h`` and for the inputs), ``return_sequences``,
``return_state``, ``go_backwards`` (the output sequence stays reversed), ``stateful`` (final states
carried to the next call until :meth:`~_KerasRNN.reset_state`), ``unroll`` (accepted for Keras'
sake; it changes nothing here) and ``zero_output_for_mask``; plus ``input_size``, ``device`` and
``dtype`` (a floating ``torch.dtype`` or its name, e.g. ``"float32"``).

``forward(inputs (B, T, I), initial_state=None, mask=None, training=None)``: ``mask`` ``(B, T)``
marks real steps; masked steps keep the state and repeat the previous output (zeros before the
first real step), as Keras. ``training=None`` follows ``module.training``. Inputs, initial states
and masks may be NumPy arrays, as in Keras (cast to the layer's dtype); initial states also nested
lists.

Like Keras, a layer built without ``input_size`` creates its parameters on the first call, so an
optimizer must be created after that call (or pass ``input_size=`` to build at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells import Cell, GRUCell, LSTMCell, RNNCell, State
from ..engine import SequenceResult, run_sequence
from ..engine.reference import run_sequence as run_reference
from ..functional import MERGE_MODES as TORCH_MERGE_MODES
from ..functional import Activation, check_merge_mode, dropout_mask, merge_directions
from ..validation import check_mask, check_probability, check_states, check_tensor
from .initializers import Initializer, check_initializer, initialize, resolve_keras_activation
from .layout import cell_to_keras, check_weights, load_keras
from .regularizers import Regularizer, resolve_regularizer

StateArg = Tensor | np.ndarray | Sequence[Any] | None
MERGE_MODES = (*TORCH_MERGE_MODES, None)  # None: Bidirectional returns both directions' outputs
REGULARIZERS = ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer")


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A floating ``torch.dtype`` from itself or its name (``"float32"``, as Keras takes dtypes)."""
    resolved = getattr(torch, dtype.removeprefix("torch."), None) if isinstance(dtype, str) else dtype
    if dtype is not None and not (isinstance(resolved, torch.dtype) and resolved.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype or its name, e.g. 'float32', got {dtype!r}")
    return resolved


class _KerasRNN(nn.Module):
    """Shared machinery of the Keras-style layers; subclasses say which cell and gates."""

    gates: ClassVar[int] = 1
    state_names: ClassVar[tuple[str, ...]] = ("h",)
    cell: Cell | None

    def __init__(
        self, units: int, *, device: Any = None, dtype: torch.dtype | str | None = None, **config: Any
    ) -> None:
        super().__init__()
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"units must be a positive int, got {units!r}")
        for key in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
            check_initializer(key, config[key])
        for key in ("activation", "recurrent_activation"):
            if key in config:
                resolve_keras_activation(config[key])
        check_probability("dropout", config["dropout"])
        check_probability("recurrent_dropout", config["recurrent_dropout"])
        _check_flag("unroll", config["unroll"])
        implementation = config.get("implementation", 2)
        if implementation not in (1, 2) or isinstance(implementation, bool):
            raise ValueError(f"implementation must be 1 or 2, got {implementation!r}")
        self._penalties = {key: resolve_regularizer(key, config[key]) for key in REGULARIZERS}
        self._config_keys = ("units", *(key for key in config if key != "input_size"))
        self.units = units
        for key in self._config_keys[1:]:  # activation, use_bias, return_sequences, ... as attributes
            setattr(self, key, config[key])
        self._factory = {"device": device, "dtype": _resolve_dtype(dtype)}
        self.cell = None
        self._states: tuple[Tensor, ...] | None = None
        self._activity_losses: list[Tensor] = []
        if config["input_size"] is not None:
            self.build(config["input_size"])

    # -- construction ---------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (Keras names), enough to build a fresh copy."""
        return {**{key: getattr(self, key) for key in self._config_keys}, "input_size": self.input_size}

    @property
    def built(self) -> bool:
        return self.cell is not None

    @property
    def input_size(self) -> int | None:
        return None if self.cell is None else self.cell.input_size

    def _make_cell(self, input_size: int, **factory: Any) -> Cell:
        raise NotImplementedError

    def _keeps_recurrent_bias(self) -> bool:
        """Keras has one bias per gate (a second one only for reset-after GRU): drop torch's bias_hh."""
        return False

    def build(self, input_size: int, **factory: Any) -> None:
        """Create the parameters for ``input_size`` features (called by the first forward if needed)."""
        factory = {key: value if value is not None else factory.get(key) for key, value in self._factory.items()}
        cell = self._make_cell(input_size, **factory)
        if self.use_bias and not self._keeps_recurrent_bias():
            cell.register_parameter("bias_hh", None)
        self.cell = cell
        self.reset_parameters()

    def keras_weight_shapes(self, input_size: int | str | None = None) -> list[tuple]:
        """Shapes of ``[kernel, recurrent_kernel(, bias)]`` as Keras stores them (``input_size``
        defaults to the built one; a name stands in for it in messages when unknown)."""
        input_size = input_size or self.input_size
        columns = self.gates * self.units
        shapes = [(input_size, columns), (self.units, columns)]
        return shapes + [self._bias_shape()] if self.use_bias else shapes

    def _bias_shape(self) -> tuple[int, ...]:
        return (self.gates * self.units,)

    def _initial_bias(self, **factory: Any) -> Tensor:
        return initialize(self.bias_initializer, self._bias_shape(), **factory)

    def reset_parameters(self) -> None:
        """Re-draw the weights with the layer's initializers, on Keras-layout shapes (Keras' fans)."""
        if self.cell is None:
            return
        factory = {"device": self.cell.weight_ih.device, "dtype": self.cell.weight_ih.dtype}
        shapes = self.keras_weight_shapes()
        weights = [initialize(self.kernel_initializer, shapes[0], **factory)]
        weights.append(initialize(self.recurrent_initializer, shapes[1], **factory))
        if self.use_bias:
            weights.append(self._initial_bias(**factory))
        load_keras(self.cell, weights)

    # -- weights in Keras layout ----------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """``[kernel, recurrent_kernel(, bias)]`` as Keras' ``get_weights()`` returns them."""
        return [] if self.cell is None else [w.cpu().numpy() for w in cell_to_keras(self.cell)]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Load Keras' ``get_weights()``; an unbuilt layer is built for the kernel's input size."""
        if self.cell is None and weights and np.ndim(weights[0]) == 2:
            self.build(int(np.shape(weights[0])[0]))
        shapes = self.keras_weight_shapes(self.input_size or "input_size")
        arrays = check_weights(self._describe(), ("kernel", "recurrent_kernel", "bias"), shapes, weights)
        assert self.cell is not None  # the shapes matched, so the kernel gave the input size
        like = self.cell.weight_ih
        load_keras(self.cell, [torch.as_tensor(a).to(like) for a in arrays])

    # -- running --------------------------------------------------------------------------------
    @property
    def states(self) -> tuple[Tensor, ...] | None:
        """The carried states of a stateful layer (``None`` before the first call)."""
        return self._states

    def reset_state(self) -> None:
        """Zero the carried states of a stateful layer (Keras 3 ``reset_state``)."""
        if self._states is not None:
            self._states = tuple(torch.zeros_like(s) for s in self._states)

    def reset_states(self) -> None:
        """Zero the carried states of a stateful layer (Keras' older name of :meth:`reset_state`)."""
        self.reset_state()

    # -- regularization -------------------------------------------------------------------------
    @property
    def losses(self) -> list[Tensor]:
        """Keras' ``layer.losses``: the activity regularizer's penalties from the last call (one per
        returned tensor, divided by the batch size, as Keras), then the kernel, recurrent kernel and
        bias penalties computed from the current weights. Scalar tensors, differentiable: add them
        to the training loss."""
        return [*self._activity_losses, *self._weight_losses()]

    def _weight_losses(self) -> list[Tensor]:
        """The weight regularizers' penalties (none before the layer is built); sums of ``|w|`` and
        ``w**2`` do not depend on the layout, so torch's matrices stand for Keras' transposes."""
        cell = self.cell
        if cell is None:
            return []
        weights = (("kernel_regularizer", cell.weight_ih), ("recurrent_regularizer", cell.weight_hh))
        losses = [penalty(weight) for key, weight in weights if (penalty := self._penalties[key]) is not None]
        penalty = self._penalties["bias_regularizer"]
        if self.use_bias and penalty is not None:  # Keras' bias: bias_ih, and bias_hh where Keras has a second
            losses.append(penalty(torch.cat([b for b in (cell.bias_ih, cell.bias_hh) if b is not None])))
        return losses

    def forward(
        self,
        inputs: Tensor | np.ndarray,
        initial_state: StateArg = None,
        mask: Tensor | np.ndarray | None = None,
        training: bool | None = None,
    ) -> Tensor | tuple[Tensor, ...]:
        x = self._check_inputs(inputs)
        training = self.training if training is None else training
        batch, steps, _ = x.shape
        state = self._initial_state(initial_state, batch, x)
        valid = None
        if mask is not None:
            mask = torch.as_tensor(mask) if isinstance(mask, np.ndarray) else mask
            valid = check_mask(mask, (batch, steps), "(batch, timesteps)").to(x.device).T
        x = x.transpose(0, 1)
        if self.go_backwards:  # Keras walks the reversed sequence and keeps its outputs reversed
            x = x.flip(0)
            valid = None if valid is None else valid.flip(0)
        result = self._run(x, state, valid, training)
        if self.stateful:
            self._states = tuple(s.detach() for s in result.state)
        output = result.output.transpose(0, 1) if self.return_sequences else result.output[-1]
        outputs = (output, *result.state) if self.return_state else (output,)
        activity = self._penalties["activity_regularizer"]
        self._activity_losses = [] if activity is None else [activity(t) / t.shape[0] for t in outputs]
        return outputs if self.return_state else output

    def _run(self, x: Tensor, state: State, valid: Tensor | None, training: bool) -> SequenceResult:
        """The time loop over time-major ``x`` with Keras' dropout in training. Both dropouts draw one
        mask per sequence; with ``recurrent_dropout``, an LSTM or GRU draws one per gate (Keras'
        implementation 1, for the inputs too), which runs on the reference engine: exact, not fast."""
        cell = self.cell
        options = {"valid": valid, "carry_output": not self.zero_output_for_mask}
        gates, batch, features = cell.gate_count, x.shape[1], x.shape[2]
        if training and self.recurrent_dropout and gates > 1:
            input_masks = None
            if self.dropout:
                input_masks = dropout_mask(x.new_empty(gates, batch, features), self.dropout)
            recurrent_masks = dropout_mask(x.new_empty(gates, batch, self.units), self.recurrent_dropout)
            return run_reference(_PerGateDropout(cell, input_masks, recurrent_masks), x, state, **options)
        if training and self.dropout:  # one input mask per sequence, shared by all steps
            x = x * dropout_mask(x.new_empty(batch, features), self.dropout)
        recurrent_mask = None
        if training and self.recurrent_dropout:
            recurrent_mask = dropout_mask(x.new_empty(batch, self.units), self.recurrent_dropout)
        return run_sequence(cell, x, state, recurrent_mask=recurrent_mask, **options)

    def _describe(self) -> str:
        return f"{type(self).__name__}(units={self.units})" + (
            f" with input_size={self.input_size}" if self.built else ""
        )

    def _check_inputs(self, inputs: Tensor | np.ndarray) -> Tensor:
        if isinstance(inputs, np.ndarray):  # as Keras: cast to the layer's dtype
            like = self.cell.weight_ih if self.cell is not None else None
            dtype = like.dtype if like is not None else self._factory["dtype"] or torch.get_default_dtype()
            inputs = torch.as_tensor(inputs, dtype=dtype, device=like.device if like is not None else None)
        x = check_tensor("inputs", inputs)
        if x.dim() != 3:
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank 3 (batch, timesteps, features), "
                f"got rank {x.dim()} with shape {tuple(x.shape)}"
            )
        if self.cell is None:
            self.build(x.shape[-1], device=x.device, dtype=x.dtype)
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{self._describe()} expects inputs (batch, timesteps, {self.input_size}), "
                f"got {x.shape[-1]} features (shape {tuple(x.shape)})"
            )
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"empty input: got shape {tuple(x.shape)}")
        return check_tensor("inputs", x, self.cell.weight_ih.dtype)

    def _initial_state(self, initial_state: StateArg, batch: int, like: Tensor) -> tuple[Tensor, ...]:
        names = self.state_names
        if initial_state is None:
            if self.stateful and self._states is not None:
                if self._states[0].shape[0] != batch:
                    raise ValueError(
                        f"stateful {type(self).__name__} carries states for batch size {self._states[0].shape[0]}, "
                        f"got inputs with batch size {batch}: a stateful layer's batch size is fixed, as in Keras"
                    )
                return self._states
            return self.cell.initial_state(batch, like)
        if isinstance(initial_state, Tensor | np.ndarray):
            states: tuple[Any, ...] = (initial_state,)
        elif isinstance(initial_state, Sequence) and not isinstance(initial_state, str):
            states = tuple(initial_state)
        else:
            raise TypeError(
                f"initial_state must be a tensor, a NumPy array or a list of them {names}, "
                f"got {type(initial_state).__name__}"
            )
        return check_states(
            states,
            names,
            [(batch, self.units)] * len(names),
            like.dtype,
            count_error=lambda got: (
                f"{type(self).__name__} expects {len(names)} initial state tensor(s) {names}, got {got} "
                "(a list or tuple holds one entry per state: pass a single state as a tensor or NumPy array)"
            ),
            layout="batch, units",
            convert=lambda s: (
                s if isinstance(s, Tensor) else torch.as_tensor(np.asarray(s), dtype=like.dtype, device=like.device)
            ),
        )

    def extra_repr(self) -> str:
        text = f"units={self.units}" + (f", input_size={self.input_size}" if self.built else ", not built")
        flags = ("return_sequences", "return_state", "go_backwards", "stateful")
        return text + "".join(f", {flag}=True" for flag in flags if getattr(self, flag))


def _keras_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """A subclass ``__init__``'s ``locals()`` minus what the base class takes separately."""
    return {k: v for k, v in arguments.items() if k not in ("self", "__class__", "units", "device", "dtype")}


def _gate_shifts(value: Tensor, masks: Tensor, weight: Tensor, size: int) -> Tensor:
    """``(..., G * size)``: what each gate's block of ``weight`` adds when it reads
    ``value * masks[k]`` rather than ``value * masks[-1]`` (zero for the last gate)."""
    blocks = weight.split(size)
    shifts = [F.linear(value * (mask - masks[-1]), block) for mask, block in zip(masks[:-1], blocks[:-1], strict=True)]
    return torch.cat([*shifts, torch.zeros_like(shifts[0])], dim=-1)


class _PerGateDropout:
    """``cell`` with Keras' per-gate dropout masks (its implementation 1): gate ``k`` reads
    ``inputs * input_masks[k]`` and ``h * recurrent_masks[k]`` (masks ``(G, B, size)``).

    The cell runs unchanged with the last gate's masks, and each other gate's pre-activation is
    shifted by its block times ``value * (masks[k] - masks[-1])``. Exact, as those pre-activations
    are sums of the two projections; the last gate, whose recurrent term a GRU scales by ``r`` or
    computes from ``r * h``, needs no shift. Has the two methods the reference time loop calls
    (``step``'s ``recurrent_mask`` is unused: the masks are this object's)."""

    def __init__(self, cell: Cell, input_masks: Tensor | None, recurrent_masks: Tensor) -> None:
        self.cell, self.input_masks, self.recurrent_masks = cell, input_masks, recurrent_masks

    def project_input(self, x: Tensor) -> Tensor:
        masks = self.input_masks
        if masks is None:
            return self.cell.project_input(x)
        shifts = _gate_shifts(x, masks, self.cell.weight_ih, self.cell.hidden_size)
        return self.cell.project_input(x * masks[-1]) + shifts

    def step(self, xg: Tensor, state: State, recurrent_mask: Tensor | None = None) -> tuple[State, tuple[Tensor, ...]]:
        masks = self.recurrent_masks
        xg = xg + _gate_shifts(state[0], masks, self.cell.weight_hh, self.cell.hidden_size)
        return self.cell.step(xg, state, masks[-1])


class LSTM(_KerasRNN):
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
        super().__init__(units, device=device, dtype=dtype, **_keras_arguments(locals()))

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


class GRU(_KerasRNN):
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
        super().__init__(units, device=device, dtype=dtype, **_keras_arguments(locals()))

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


class SimpleRNN(_KerasRNN):
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
        super().__init__(units, device=device, dtype=dtype, **_keras_arguments(locals()))

    def _make_cell(self, input_size: int, **factory: Any) -> Cell:
        activation = resolve_keras_activation(self.activation)
        return RNNCell(input_size, self.units, bias=self.use_bias, nonlinearity=activation, **factory)


class Bidirectional(nn.Module):
    """Keras ``Bidirectional``: a forward copy of ``layer`` and a backward one (``go_backwards``),
    both freshly initialised as in Keras, or the given ``backward_layer``.

    ``merge_mode``: ``"concat"``, ``"sum"``, ``"mul"``, ``"ave"`` or ``None`` (a tuple of both outputs).
    With ``return_sequences`` the backward outputs are re-reversed and masked steps output zeros.
    ``initial_state``: the forward layer's states, then the backward layer's. With ``return_state``:
    ``(output, fwd_h, fwd_c, bwd_h, bwd_c)`` (LSTM) or ``(output, fwd_h, bwd_h)``; with
    ``merge_mode=None`` the two outputs come first.

        >>> import torch
        >>> from lstmkit.keras import LSTM, Bidirectional
        >>> bi = Bidirectional(LSTM(4, return_sequences=True), merge_mode="sum")
        >>> tuple(bi(torch.randn(2, 5, 3)).shape), len(bi.get_weights())
        ((2, 5, 4), 6)
    """

    def __init__(
        self, layer: _KerasRNN, merge_mode: str | None = "concat", backward_layer: _KerasRNN | None = None
    ) -> None:
        super().__init__()
        for name, value in (("layer", layer), ("backward_layer", backward_layer)):
            if value is not None and not isinstance(value, _KerasRNN):
                raise TypeError(f"{name} must be an lstmkit.keras LSTM, GRU or SimpleRNN, got {type(value).__name__}")
        check_merge_mode(merge_mode, MERGE_MODES)
        self.merge_mode = merge_mode
        self.forward_layer = type(layer)(**layer.get_config(), **layer._factory)
        if backward_layer is None:
            backward_layer = type(layer)(**{**layer.get_config(), "go_backwards": True}, **layer._factory)
        self.backward_layer = backward_layer
        if self.forward_layer.go_backwards == backward_layer.go_backwards:
            raise ValueError(
                "the forward and backward layers need different go_backwards, got "
                f"{self.forward_layer.go_backwards} for both"
            )
        for attribute in ("stateful", "return_sequences", "return_state"):
            forward, backward = getattr(self.forward_layer, attribute), getattr(backward_layer, attribute)
            if forward != backward:
                raise ValueError(f"forward and backward layers differ in {attribute}: {forward} vs {backward}")
        for sub in (self.forward_layer, backward_layer):  # as Keras: zeros at masked steps of sequences
            sub.zero_output_for_mask = sub.return_sequences
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.stateful = layer.stateful

    def forward(
        self,
        inputs: Tensor | np.ndarray,
        initial_state: StateArg = None,
        mask: Tensor | np.ndarray | None = None,
        training: bool | None = None,
    ) -> Tensor | tuple[Tensor, ...]:
        training = self.training if training is None else training
        forward_state = backward_state = None
        if initial_state is not None:
            states = [initial_state] if isinstance(initial_state, Tensor | np.ndarray) else list(initial_state)
            expected = 2 * len(self.forward_layer.state_names)
            if len(states) != expected:
                raise ValueError(
                    f"Bidirectional({type(self.forward_layer).__name__}) expects {expected} initial states "
                    f"(forward then backward), got {len(states)}"
                )
            forward_state, backward_state = states[: expected // 2], states[expected // 2 :]
        y = self.forward_layer(inputs, forward_state, mask, training)
        y_rev = self.backward_layer(inputs, backward_state, mask, training)
        states = ()
        if self.return_state:
            states = (*y[1:], *y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = y_rev.flip(1)
        if self.merge_mode is None:
            return (y, y_rev, *states)
        output = merge_directions(y, y_rev, self.merge_mode)
        return (output, *states) if self.return_state else output

    def reset_state(self) -> None:
        """Zero the carried states of both directions (stateful layers only; Keras 3 ``reset_state``)."""
        if not self.stateful:
            raise AttributeError("reset_state() needs a stateful layer")
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    def reset_states(self) -> None:
        """Keras' older name of :meth:`reset_state`."""
        self.reset_state()

    @property
    def losses(self) -> list[Tensor]:
        """Both directions' penalties in Keras' order: their activity penalties from the last call,
        then their weight penalties (see :attr:`LSTM.losses <_KerasRNN.losses>`)."""
        layers = (self.forward_layer, self.backward_layer)
        return [loss for layer in layers for loss in layer._activity_losses] + [
            loss for layer in layers for loss in layer._weight_losses()
        ]

    def get_weights(self) -> list[np.ndarray]:
        """Forward layer's weights, then the backward layer's, as Keras' ``get_weights()``."""
        return self.forward_layer.get_weights() + self.backward_layer.get_weights()

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Load Keras ``Bidirectional.get_weights()`` (forward weights, then backward)."""
        weights = list(weights)
        layers = (self.forward_layer, self.backward_layer)
        for layer in layers:
            if not layer.built and weights and np.ndim(weights[0]) == 2:
                layer.build(int(np.shape(weights[0])[0]))
        shapes = [layer.keras_weight_shapes(layer.input_size or "input_size") for layer in layers]
        names = [
            f"{side}_{name}"
            for side, s in zip(("forward", "backward"), shapes, strict=True)
            for name in ("kernel", "recurrent_kernel", "bias")[: len(s)]
        ]
        check_weights(f"Bidirectional({layers[0]._describe()})", names, shapes[0] + shapes[1], weights)
        self.forward_layer.set_weights(weights[: len(shapes[0])])
        self.backward_layer.set_weights(weights[len(shapes[0]) :])

    def extra_repr(self) -> str:
        return f"merge_mode={self.merge_mode!r}"
