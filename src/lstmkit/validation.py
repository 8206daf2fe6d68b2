"""Input checks with errors that say what was expected and what came."""

from __future__ import annotations

import operator
from collections.abc import Sequence
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
    states = (hx,) if isinstance(hx, Tensor) else tuple(hx)
    if len(states) != len(cell.state_names):
        raise ValueError(
            f"{type(cell).__name__} expects {len(cell.state_names)} state tensor(s) {cell.state_names}, "
            f"got {len(states)}"
        )
    checked = []
    for name, size, state in zip(cell.state_names, cell.state_sizes, states, strict=True):
        state = check_tensor(f"state {name}", state, cell.weight_ih.dtype)
        expected = (input.shape[0], size) if batched else (size,)
        if tuple(state.shape) != expected:
            raise ShapeError(f"expected state {name} of shape {expected}, got {tuple(state.shape)}")
        checked.append(state if batched else state.unsqueeze(0))
    return batched, input, tuple(checked)


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
