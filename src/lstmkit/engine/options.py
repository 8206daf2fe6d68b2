"""What every engine's time loop takes besides the cell, the inputs and the state, and what it returns.

Each engine's entry point -- :func:`lstmkit.engine.run_sequence`, which picks one, and
:func:`lstmkit.engine.reference.run_sequence`, :func:`lstmkit.engine.native.run_cell`,
:func:`lstmkit.engine.fused.run_cell` -- takes the fields of :class:`SequenceOptions` as
keyword arguments and returns a :class:`SequenceResult`. Zoneout masks are drawn here, in one place,
so that under the same seed every engine computes the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..cells import Cell, State
from ..validation import check_probability


def gradient_possible(x: Tensor, initial: Sequence[Tensor] | None, module: torch.nn.Module) -> bool:
    """Whether a call on ``x`` from ``initial`` with ``module``'s parameters may be differentiated:
    grad mode is on and one of them requires a gradient (the parameters are read only when the
    rest do not decide)."""
    if not torch.is_grad_enabled():
        return False
    if x.requires_grad or any(s.requires_grad for s in initial or ()):
        return True
    return any(p.requires_grad for p in module.parameters())


@dataclass
class SequenceResult:
    """What one direction of one layer produces; all tensors are time-major ``(T, B, ...)``."""

    output: Tensor
    state: State
    trace: dict[str, Tensor] | None = None


@dataclass(frozen=True)
class SequenceOptions:
    """How one direction of one layer runs over ``inputs`` ``(T, B, I)``.

    ``valid`` ``(T, B)`` marks real steps: at an invalid step the state is carried unchanged and
    the output is zero, or (``carry_output``, Keras masks) repeats the previous output.
    ``reverse`` walks ``t = T-1 .. 0``; outputs stay aligned with the input's time axis.
    ``recurrent_mask`` ``(B, recurrent_size)`` multiplies ``h`` before the recurrent multiply.
    ``zoneout`` keeps each state unit's previous value with that probability (Krueger et al.
    2016): sampled per step when ``training``, its expectation otherwise.
    """

    valid: Tensor | None = None
    carry_output: bool = False
    reverse: bool = False
    recurrent_mask: Tensor | None = None
    zoneout: float = 0.0
    training: bool = False

    def __post_init__(self) -> None:
        check_probability("zoneout", self.zoneout)

    def zoneout_masks(self, state: State, steps: int) -> list[Tensor | None]:
        """One Bernoulli(``zoneout``) 'keep the old value' mask ``(steps, B, size)`` per state
        tensor, drawn up front in training; ``None`` for each otherwise.

        Each mask value is a uniform 16-bit integer compared with ``zoneout * 65536`` (rounded), four
        from every 64-bit number of torch's generator: a third of the time of ``torch.rand``, whose
        masks cost as much as the rest of a small training step."""
        if not (self.zoneout and self.training):
            return [None] * len(state)
        return [_bernoulli_16bit(float(self.zoneout), (steps, *s.shape), s.device) for s in state]

    def check(self, cell: Cell, inputs: Tensor, state: Sequence[Tensor] | Tensor) -> State:
        """The state as a tuple, once ``inputs``, ``state`` and the masks fit ``cell``; else a
        ``TypeError``/``ValueError`` naming what was expected and what came."""
        if not isinstance(inputs, Tensor):
            raise TypeError(f"inputs must be a tensor (T, B, input_size), got {type(inputs).__name__}")
        if inputs.dim() != 3 or inputs.shape[2] != cell.input_size:
            expected = f"(T, B, {cell.input_size})"
            raise ValueError(f"expected inputs of shape {expected} for {cell!r}, got {tuple(inputs.shape)}")
        steps, batch, _ = inputs.shape
        state = tuple(state) if isinstance(state, (tuple, list)) else (state,)
        names = type(cell).state_names
        if len(state) != len(names):
            raise ValueError(f"{type(cell).__name__} has states {names}, got {len(state)} state tensor(s)")
        for name, size, s in zip(names, cell.state_sizes, state, strict=True):
            if not isinstance(s, Tensor):
                raise TypeError(f"state {name} must be a tensor, got {type(s).__name__}")
            if tuple(s.shape) != (batch, size) or s.dtype != inputs.dtype or s.device != inputs.device:
                raise ValueError(
                    f"expected state {name} of shape {(batch, size)}, {inputs.dtype} on {inputs.device}; "
                    f"got {tuple(s.shape)}, {s.dtype} on {s.device}"
                )
        valid, mask = self.valid, self.recurrent_mask
        if valid is not None and (not isinstance(valid, Tensor) or tuple(valid.shape) != (steps, batch)):
            got = tuple(valid.shape) if isinstance(valid, Tensor) else type(valid).__name__
            raise ValueError(f"valid must be a (T, B) = {(steps, batch)} tensor, got {got}")
        if mask is not None:
            if not isinstance(mask, Tensor) or tuple(mask.shape) != (batch, cell.recurrent_size):
                got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                raise ValueError(f"recurrent_mask must be a {(batch, cell.recurrent_size)} tensor, got {got}")
            if mask.requires_grad:
                raise ValueError(
                    "recurrent_mask must be a constant (requires_grad=False): only the reference engine "
                    "differentiates through it"
                )
        return state


def zone_out_and_mask(
    state: Sequence[Tensor],
    new_state: Sequence[Tensor],
    keep_old: Sequence[Tensor] | None,
    valid: Tensor | None,
    previous_output: Tensor | None,
    *,
    zoneout: float,
    carry_output: bool,
) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """One step's zoneout and masking, after the cell computed ``new_state`` from ``state``: the
    state carried on and, with ``valid`` (``(B,)``, this step's), the output (without, the output is
    the new ``state[0]`` and ``None`` is returned for it).

    Zoneout (rate ``zoneout``) keeps the old value where ``keep_old`` (this step's mask per state) is
    set, or takes the expectation ``zoneout * old + (1 - zoneout) * new`` without masks (evaluation).
    At an invalid step the state is carried unchanged and the output is zero, or ``previous_output``
    with ``carry_output``. Every engine written in Python applies the options through this."""
    if zoneout:
        if keep_old is None:  # evaluation: the expectation of the random update
            new_state = [zoneout * old + (1 - zoneout) * new for old, new in zip(state, new_state, strict=True)]
        else:
            new_state = [torch.where(k, old, new) for k, old, new in zip(keep_old, state, new_state, strict=True)]
    if valid is None:
        return tuple(new_state), None
    keep = valid.unsqueeze(-1)
    h = new_state[0]
    output = torch.where(keep, h, previous_output if carry_output else torch.zeros_like(h))
    return tuple(torch.where(keep, new, old) for new, old in zip(new_state, state, strict=True)), output


def time_steps(steps: int, reverse: bool) -> range:
    """The time steps ``0 .. steps-1`` in the order a loop walks them."""
    return range(steps - 1, -1, -1) if reverse else range(steps)


def _bernoulli_16bit(p: float, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Bernoulli(``p``) booleans of ``shape``, ``p`` rounded to a multiple of 1/65536: uniform int16
    values, four from each full-range 64-bit draw of torch's generator, below a threshold."""
    count = round(p * 65536)  # how many of the 65536 int16 values mean True
    if count in (0, 65536):  # the threshold would not fit in an int16
        return torch.full(shape, count > 0, dtype=torch.bool, device=device)
    words = torch.empty((math.prod(shape) + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    return words.view(torch.int16)[: math.prod(shape)].view(shape) < count - 32768
