"""Keras' ``Bidirectional`` wrapper around an lstmkit.keras recurrent layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from ..functional import MERGE_MODES as TORCH_MERGE_MODES
from ..functional import check_merge_mode, merge_directions
from .base import KerasRNN, StateArg
from .layout import check_weights

MERGE_MODES = (*TORCH_MERGE_MODES, None)  # None: Bidirectional returns both directions' outputs


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
        self, layer: KerasRNN, merge_mode: str | None = "concat", backward_layer: KerasRNN | None = None
    ) -> None:
        super().__init__()
        for name, value in (("layer", layer), ("backward_layer", backward_layer)):
            if value is not None and not isinstance(value, KerasRNN):
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
        then their weight penalties (see :attr:`LSTM.losses <KerasRNN.losses>`)."""
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
