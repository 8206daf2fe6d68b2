"""Input checks with errors that say what was expected and what came."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .cells import Cell, State


class ShapeError(ValueError, RuntimeError):
    """A tensor of the wrong shape: ``RuntimeError`` as torch.nn raises it, ``ValueError`` as lstmkit did."""


class ArgumentError(TypeError, ValueError):
    """A bad argument whose class torch.nn and Python disagree on (a dtype mismatch, a float size, an
    option a layer does not take): both ``TypeError`` and ``ValueError``."""


class DtypeError(TypeError, ValueError, RuntimeError):
    """Input and parameters of different dtypes: torch.nn's layers raise ``ValueError``, its cells
    ``RuntimeError``, and lstmkit raised ``TypeError``."""


# Far beyond any model lstmkit's tasks and Keras files hold; sizes are checked against it before
# anything is allocated (a billion units otherwise failed deep inside torch's allocator).
MAX_WEIGHTS = 2**31


def check_weight_count(what: str, count: int) -> None:
    """Refuse building ``what`` with more than :data:`MAX_WEIGHTS` weights.

    >>> check_weight_count("Dense(1000000000)", 64 * 10**9)
    Traceback (most recent call last):
    ...
    ValueError: Dense(1000000000) would have about 6.4e+10 weights (2.6e+02 GB in float32); at most 2**31 are built
    """
    if count > MAX_WEIGHTS:
        gigabytes = count * 4 / 10**9
        raise ValueError(
            f"{what} would have about {count:.1e} weights ({gigabytes:.1e} GB in float32); at most 2**31 are built"
        )


def check_tensor(name: str, value: object, dtype: torch.dtype | None = None) -> Tensor:
    """A floating tensor with no NaN-free guarantee needed; the dtype must match ``dtype``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if dtype is not None and value.dtype != dtype:
        raise DtypeError(
            f"{name} has dtype {value.dtype} but the parameters are {dtype}; "
            f"convert one of them (e.g. input.to({dtype}) or module.to({value.dtype}))"
        )
    return value


def check_cell_input(cell: Cell, input: Tensor, hx: Tensor | State | None) -> tuple[bool, Tensor, State]:
    """Validate a one-step cell call; returns (batched, input as (B, I), state as (B, size) tensors)."""
    input = check_tensor("input", input, cell.weight_ih.dtype)
    if input.dim() not in (1, 2):
        raise ValueError(
            f"cell input must be 1-D (input_size,) or 2-D (batch, input_size), got shape {tuple(input.shape)}"
        )
    batched = input.dim() == 2
    if not batched:
        input = input.unsqueeze(0)
    if input.shape[-1] != cell.input_size:
        raise ShapeError(
            f"expected input feature size {cell.input_size}, got {input.shape[-1]} (shape {tuple(input.shape)})"
        )
    if hx is None:
        return batched, input, cell.initial_state(input.shape[0], input)
    names = cell.state_names
    states = check_states(
        (hx,) if isinstance(hx, Tensor) else tuple(hx),
        names,
        [(input.shape[0], size) if batched else (size,) for size in cell.state_sizes],
        cell.weight_ih.dtype,
        count_error=lambda got: f"{type(cell).__name__} expects {len(names)} state tensor(s) {names}, got {got}",
        label="state {name}",
    )
    return batched, input, states if batched else tuple(state.unsqueeze(0) for state in states)


def check_states(
    states: Sequence[object],
    names: Sequence[str],
    shapes: Sequence[tuple[int, ...]],
    dtype: torch.dtype,
    *,
    count_error: Callable[[int], str],
    label: str = "initial state {name}",
    layout: str = "",
    convert: Callable[[object], object] | None = None,
) -> tuple[Tensor, ...]:
    """The states given to a cell, a layer or a Keras layer, checked: one per name in ``names``
    (else ``ValueError(count_error(len(states)))``), each (after ``convert``, if given) a floating
    tensor of ``dtype`` and of its shape in ``shapes``. Errors name a state by ``label`` and the
    expected layout by ``layout``, both formatted with the state's name.

    >>> import torch
    >>> check_states([torch.zeros(2, 4)], ["h"], [(3, 4)], torch.float32, count_error=str, layout="batch, units")
    Traceback (most recent call last):
    ...
    lstmkit.validation.ShapeError: expected initial state h of shape (3, 4) (batch, units), got (2, 4)
    """
    if len(states) != len(names):
        raise ValueError(count_error(len(states)))
    checked = []
    for name, shape, state in zip(names, shapes, states, strict=True):
        what = label.format(name=name)
        state = check_tensor(what, state if convert is None else convert(state), dtype)
        if tuple(state.shape) != tuple(shape):
            where = f" ({layout.format(name=name)})" if layout else ""
            raise ShapeError(f"expected {what} of shape {tuple(shape)}{where}, got {tuple(state.shape)}")
        checked.append(state)
    return tuple(checked)


def check_probability(name: str, value: object, *, upper_inclusive: bool = False) -> float:
    """``value`` as a float in ``[0, 1)``, or ``[0, 1]`` with ``upper_inclusive``: a dropout rate or
    a zoneout probability. Booleans, strings and NaN are refused.

    >>> check_probability("recurrent_dropout", 1.0)
    Traceback (most recent call last):
    ...
    ValueError: recurrent_dropout must be a number in [0, 1), got 1.0
    """
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (0 <= value < 1 or (upper_inclusive and value == 1)):
        bound = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"{name} must be a number in {bound}, got {value!r}")
    return float(value)


def check_lengths(lengths: Sequence[int] | Tensor, batch_size: int, seq_len: int, device: torch.device) -> Tensor:
    """Lengths as an int64 tensor on ``device``; each in [0, seq_len], any order."""
    if isinstance(lengths, Tensor):
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
        lengths = lengths.to(device=device, dtype=torch.int64)
    else:
        try:
            # operator.index: ints (Python, NumPy, 0-d integer tensors) only; as_tensor alone truncates 2.5 to 2
            lengths = torch.as_tensor([operator.index(n) for n in lengths], dtype=torch.int64, device=device)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"lengths must be a sequence of ints or an integer tensor, got {lengths!r}") from error
    if lengths.dim() != 1 or lengths.shape[0] != batch_size:
        raise ValueError(f"expected lengths of shape ({batch_size},) (one per sequence), got {tuple(lengths.shape)}")
    if torch.compiler.is_compiling():  # the values are not known while tracing
        return lengths
    if batch_size and (int(lengths.min()) < 0 or int(lengths.max()) > seq_len):
        raise ValueError(
            f"lengths must lie in [0, {seq_len}] (the padded sequence length), "
            f"got min {int(lengths.min())} and max {int(lengths.max())}"
        )
    return lengths


def check_mask(mask: Tensor, expected_shape: tuple[int, int], layout: str) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != expected_shape:
        raise ValueError(f"expected mask of shape {expected_shape} {layout}, got {tuple(mask.shape)}")
    return mask.to(torch.bool)
