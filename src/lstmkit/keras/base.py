"""The machinery every Keras-semantics recurrent layer shares (:class:`KerasRNN`): Keras' arguments
checked and kept, parameters built on the first call or for ``input_size``, weights in Keras' layout,
regularizers' penalties, and the forward pass with masks, dropout, initial and carried states. The
layers themselves and their arguments: :mod:`lstmkit.keras.layers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ..cells import Cell, State
from ..engine import SequenceResult, run_sequence
from ..engine.reference import run_sequence as run_reference
from ..functional import dropout_mask
from ..validation import check_mask, check_probability, check_states, check_tensor
from .dropout import PerGateDropout
from .initializers import check_initializer, initialize, resolve_keras_activation
from .layout import cell_to_keras, check_weights, load_keras
from .regularizers import resolve_regularizer

StateArg = Tensor | np.ndarray | Sequence[Any] | None
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


class KerasRNN(nn.Module):
    """Shared machinery of the Keras-style layers; subclasses say which cell and gates (see
    :mod:`lstmkit.keras.layers` for the arguments)."""

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
            return run_reference(PerGateDropout(cell, input_masks, recurrent_masks), x, state, **options)
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


def keras_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """A subclass ``__init__``'s ``locals()`` minus what the base class takes separately."""
    return {k: v for k, v in arguments.items() if k not in ("self", "__class__", "units", "device", "dtype")}
