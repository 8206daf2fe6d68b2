"""A :class:`~lstmkit.Recurrent` call's tensors between the caller's layout and the time-major one
the loops run on: the input (batch-first or not, unbatched, or a PackedSequence), ``lengths=``,
``mask=`` and ``hx`` checked on the way in, the output laid out (or packed) as the input came on
the way out. Errors say what was expected and what came."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..cells import Cell, State
from ..validation import ShapeError, check_lengths, check_mask, check_states, check_tensor

StateArg = Tensor | Sequence[Tensor] | None


def prepare_call(
    input: Tensor | PackedSequence,
    hx: StateArg,
    lengths: Sequence[int] | Tensor | None,
    mask: Tensor | None,
    cell: Cell,
    input_size: int,
    batch_first: bool,
    layers: int,
    dtype: torch.dtype | None = None,
) -> tuple:
    """The checked arguments of a call on a layer of ``layers`` cells (layers times directions) like
    ``cell``: time-major input ``(T, B, I)``, lengths as a tensor, the initial states ``(L*D, B,
    size)`` or ``None``, the valid-step mask ``(T, B)`` or ``None``, whether the input is batched,
    whether it is batch-first, and the PackedSequence if one came. The input must have ``dtype``, by
    default that of ``cell``'s weights."""
    dtype = cell.weight_ih.dtype if dtype is None else dtype
    packed = input if isinstance(input, PackedSequence) else None
    if packed is not None:
        if lengths is not None or mask is not None:
            raise ValueError("a PackedSequence carries its own lengths; do not pass lengths= or mask=")
        check_tensor("input", packed.data, dtype)
        x, lengths = pad_packed_sequence(packed)
        batched, batch_first = True, False
    else:
        x = check_tensor("input", input, dtype)
        if x.dim() not in (2, 3):
            layout = "(batch, seq_len, input_size)" if batch_first else "(seq_len, batch, input_size)"
            raise ValueError(
                f"expected input of rank 3 {layout} or rank 2 (seq_len, input_size) "
                f"for one unbatched sequence, got shape {tuple(x.shape)}"
            )
        batched = x.dim() == 3
        x = (x.transpose(0, 1) if batch_first else x) if batched else x.unsqueeze(1)
    steps, batch_size, features = x.shape
    if features != input_size:
        raise ShapeError(f"expected input feature size {input_size}, got {features} (input shape {tuple(x.shape)})")
    if steps == 0:
        raise ShapeError("empty sequence: input has 0 time steps")
    if lengths is not None and mask is not None:
        raise ValueError("pass either lengths= (zero outputs past each length) or mask= (Keras masking), not both")
    valid = None
    if lengths is not None:
        lengths = check_lengths(lengths, batch_size, steps, x.device)
        valid = torch.arange(steps, device=x.device).unsqueeze(1) < lengths.unsqueeze(0)
    if mask is not None:
        valid = time_major_mask(mask, steps, batch_size, batched, batch_first)
    initial = initial_states(hx, cell, layers, batch_size, batched, x)
    return x, lengths, initial, valid, batched, batch_first, packed


def time_major_mask(mask: Tensor, steps: int, batch_size: int, batched: bool, batch_first: bool) -> Tensor:
    """``mask=`` as the boolean ``(T, B)`` valid-step mask, from the input's layout without features."""
    if not batched:
        return check_mask(mask, (steps,), "(seq_len,) for an unbatched input").unsqueeze(1)
    if batch_first:
        return check_mask(mask, (batch_size, steps), "(batch, seq_len), like the input without features").T
    return check_mask(mask, (steps, batch_size), "(seq_len, batch), like the input without features")


def initial_states(hx: StateArg, cell: Cell, layers: int, batch_size: int, batched: bool, like: Tensor) -> State | None:
    """``hx`` as ``(L*D, B, size)`` tensors, one per state of ``cell`` (``None`` stays ``None``)."""
    if hx is None:
        return None
    names = cell.state_names
    expected = "a tensor h_0" if len(names) == 1 else f"a tuple {names}"
    states = check_states(
        (hx,) if isinstance(hx, Tensor) else tuple(hx),
        names,
        [(layers, batch_size, size) if batched else (layers, size) for size in cell.state_sizes],
        like.dtype,
        count_error=lambda got: f"hx must be {expected} for {type(cell).__name__}, got {got} tensor(s)",
        label="initial state {name}_0",
        layout="num_layers * num_directions, batch, {name} size",
    )
    return states if batched else tuple(state.unsqueeze(1) for state in states)


def to_layout(tensor: Tensor, batched: bool, batch_first: bool) -> Tensor:
    """A time-major ``(T, B, ...)`` result in the input's layout."""
    if not batched:
        return tensor.squeeze(1)
    return tensor.transpose(0, 1) if batch_first else tensor


def repack(output: Tensor, packed: PackedSequence, lengths: Tensor) -> PackedSequence:
    """Pack a padded time-major output exactly as the input was packed (same batch order)."""
    if packed.sorted_indices is not None:
        output = output.index_select(1, packed.sorted_indices)
        lengths = lengths.index_select(0, packed.sorted_indices.to(lengths.device))
    data = pack_padded_sequence(output, lengths.cpu(), enforce_sorted=True).data
    return PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
