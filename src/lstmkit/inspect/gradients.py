"""Gradient flow: how much of the error made at the last step reaches each earlier hidden state.

For a one-layer recurrent model and a loss ``L_T`` made at the last step ``T`` only (the adding
problem's), :func:`state_gradients` unrolls the cell step by step and returns ``dL_T/dh_t`` for
every ``t = 1..T`` (and ``dL_T/dc_t`` for an LSTM) in one backward pass. Through a plain RNN the
signal shrinks by a factor ``|W_hh^T diag(tanh')|`` per step (Bengio et al. 1994; Hochreiter 1991):
it vanishes exponentially with the distance ``T - t``. The LSTM's cell state carries it through
``c_t = f * c_{t-1} + ...`` multiplied by the forget gate only (the "constant error carousel"), the
GRU's hidden state through ``h_t = z * h_{t-1} + ...``. :func:`gradient_flow` measures it for a
:class:`~lstmkit.inspect.longlag.LongLagModel`; :mod:`~lstmkit.inspect.plots` draws it on a log
axis. The computation runs in float64 (on a copy) so that gradients of 1e-40 and less do not
underflow to zero.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..layers import Recurrent
from .longlag import AddingProblem, LongLagModel, LongLagSettings, LongLagTask, held_out, initial_model, train_long_lag

GRADIENT_KINDS = ("rnn", "gru", "lstm")


def state_gradients(rnn: Recurrent, inputs: Tensor, last_loss: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    """``dL_T/d(state_t)`` for every state of the cell (``"h"``, and ``"c"`` for LSTMs) and every
    step: ``{name: (batch, steps, size)}``, as backpropagation through time carries it: for ``h_t``
    through the next step's gates, for ``c_t`` through ``c_{t+1}`` and through ``h_t``. ``rnn`` is
    a one-layer, one-direction stack, ``inputs`` ``(batch, steps, features)`` (batch-first whatever
    the layer's layout), and ``last_loss(h_T)`` the scalar loss made from the last hidden state.

        >>> import lstmkit
        >>> grads = state_gradients(lstmkit.LSTM(2, 3), torch.randn(4, 5, 2), lambda h: h.sum())
        >>> tuple(grads["h"].shape), bool((grads["h"][:, -1] == 1).all())
        ((4, 5, 3), True)
    """
    if rnn.num_layers != 1 or rnn.bidirectional:
        raise ValueError(
            f"gradient flow needs one layer in one direction, got num_layers={rnn.num_layers}, "
            f"bidirectional={rnn.bidirectional}"
        )
    if inputs.dim() != 3 or inputs.shape[2] != rnn.input_size or inputs.shape[1] < 1:
        raise ValueError(f"expected inputs (batch, steps >= 1, {rnn.input_size}), got shape {tuple(inputs.shape)}")
    cell = rnn.cell()
    inputs = inputs.to(cell.weight_ih.dtype)
    projected = cell.project_input(inputs)  # (batch, steps, gates * hidden), once for all steps
    state = cell.initial_state(inputs.shape[0], inputs)
    states: dict[str, list[Tensor]] = {name: [] for name in cell.state_names}
    with torch.enable_grad():
        for step in range(inputs.shape[1]):
            state, _ = cell.step(projected[:, step], state)
            for name, value in zip(cell.state_names, state, strict=True):
                states[name].append(value)
        loss = last_loss(state[0])
        names = list(states)
        flat = [value for name in names for value in states[name]]
        grads = torch.autograd.grad(loss, flat, allow_unused=True, materialize_grads=True)
    steps = inputs.shape[1]
    return {name: torch.stack(grads[i * steps : (i + 1) * steps], dim=1) for i, name in enumerate(names)}


@dataclass
class GradientFlow:
    """The mean over a batch of ``||dL_T/dh_t||`` for ``t = 1..T`` (``hidden``), and of
    ``||dL_T/dc_t||`` for cells with a cell state (``cell``), of one model at one stage of training."""

    kind: str
    stage: str
    hidden: list[float]
    cell: list[float] | None = None

    @property
    def steps(self) -> int:
        return len(self.hidden)

    def ratio(self) -> float:
        """How much of the gradient at the last step reaches the first: ``|dL/dh_1| / |dL/dh_T|``.

        >>> GradientFlow("rnn", "initial", [1e-6, 1e-3, 1.0]).ratio()
        1e-06
        """
        return self.hidden[0] / self.hidden[-1] if self.hidden[-1] > 0 else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "stage": self.stage,
            "hidden": self.hidden,
            "cell": self.cell,
            "ratio_first_to_last": self.ratio(),
        }


def gradient_flow(model: LongLagModel, task: LongLagTask, inputs: Tensor, targets: Tensor, stage: str) -> GradientFlow:
    """The gradient flow of ``model`` for the loss ``task`` makes at the last step of ``inputs``
    (float64, on a copy of the model; the model is not changed).

        >>> from lstmkit.inspect.longlag import AddingProblem, LongLagModel
        >>> task = AddingProblem(20)
        >>> inputs, targets = task.generate(8, torch.Generator().manual_seed(0))
        >>> flow = gradient_flow(LongLagModel("rnn", task, 16), task, inputs, targets, "initial")
        >>> flow.steps, flow.cell is None, flow.ratio() < 1e-3
        (20, True, True)
    """
    double = copy.deepcopy(model).double().eval()
    encoded = double.encode(inputs).double()
    targets = targets if not targets.is_floating_point() else targets.double()

    def last_loss(h_last: Tensor) -> Tensor:
        return task.final_step_loss(double.head(h_last), targets)

    gradients = state_gradients(double.rnn, encoded, last_loss)
    norms = {name: value.norm(dim=2).mean(0).tolist() for name, value in gradients.items()}
    return GradientFlow(model.kind, stage, norms["h"], norms.get("c"))


def compare_gradient_flow(
    settings: LongLagSettings,
    kinds: Sequence[str] = GRADIENT_KINDS,
    trained: Mapping[str, LongLagModel] | None = None,
    sequences: int = 64,
    progress: Callable[[str], None] | None = None,
) -> list[GradientFlow]:
    """The gradient flow of each kind on the adding problem at ``settings.gradient_lag`` (on
    ``sequences`` held-out sequences), at initialisation and after training: the ``trained``
    models when given (e.g. those of :func:`~lstmkit.inspect.longlag.run_long_lag`), else each
    kind trained here for ``settings``' budget. Initial first, then trained, in ``kinds`` order."""
    task = AddingProblem(settings.gradient_lag)
    inputs, targets = held_out(task, settings)
    inputs, targets = inputs[:sequences], targets[:sequences]
    flows = [
        gradient_flow(initial_model(kind, task, settings), task, inputs, targets, "at initialisation") for kind in kinds
    ]
    for kind in kinds:
        if trained is not None and kind in trained:
            model = trained[kind]
        else:
            if progress is not None:
                progress(f"training {kind} on the adding problem, lag {task.lag}, {settings.steps_for('adding')} steps")
            model, _ = train_long_lag(kind, task, settings)
        flows.append(
            gradient_flow(model, task, inputs, targets, f"after {settings.steps_for('adding')} training steps")
        )
    return flows
