"""The ``"torch"`` engine: PyTorch's own fused kernels (``torch._VF.lstm/gru/rnn_*``; oneDNN for
LSTM on the CPU) for whole stacks of plain cells that need none of lstmkit's extras.

oneDNN's LSTM forward runs close to the per-step GEMM floor, so ``engine="auto"`` sends plain
inference here; training goes to the native engine, whose backward is faster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .kernels import torch_kernel_of
from .precision import bf16_gemms_active

if TYPE_CHECKING:
    from ..layers import Recurrent


def kernel_name(layer: Recurrent) -> str | None:
    """The ``torch._VF`` kernel that computes ``layer``'s cells exactly, or ``None``."""
    return torch_kernel_of(layer._cells[0])


def why_not(layer: Recurrent, *, masked: bool, traced: bool, lengths: Tensor | None) -> str | None:
    """Why the fused torch kernel cannot run this call (``None`` when it can)."""
    if kernel_name(layer) is None:
        return f"torch has no fused kernel for {layer._cells[0]!r}"
    reasons = {
        "masks": masked,
        "gate tracing": traced,
        "zoneout": layer.zoneout > 0,
        "recurrent dropout": layer.recurrent_dropout > 0 and layer.training,
        f"merge_mode={layer.merge_mode!r}": layer.bidirectional and layer.merge_mode != "concat",
        "zero lengths": lengths is not None and bool((lengths == 0).any()),
        "bfloat16 products on this CPU": bf16_gemms_active() and kernel_name(layer) == "lstm" and not onednn_bf16(),
    }
    found = [name for name, present in reasons.items() if present]
    return f"torch's fused kernels do not support {', '.join(found)}" if found else None


# Whether oneDNN has bfloat16 kernels on this CPU (AVX-512 or newer). Without them torch's LSTM under
# bfloat16 autocast fails ("could not create a primitive descriptor"), as torch.nn.LSTM does. Read
# once, at import: under torch.compile the query would break the graph.
_ONEDNN_BF16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def onednn_bf16() -> bool:
    """Whether torch's LSTM can run under bfloat16 autocast here (oneDNN's bf16 kernels need AVX-512;
    lstmkit's layers ask for bf16 products only on a CPU with bf16 hardware, which has them)."""
    return _ONEDNN_BF16


def run_layers(
    layer: Recurrent,
    x: Tensor,
    initial: tuple[Tensor, ...] | None,
    lengths: Tensor | None,
    weights: list[Tensor],
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """All layers and directions of ``layer`` over time-major ``x`` in one fused call with ``weights``
    (in torch's order: w_ih, w_hh, b_ih, b_hh(, w_hr) per layer and direction, as
    :meth:`~lstmkit.Recurrent._bound` returns them); returns the output ``(T, B, D*H)`` (zero past
    each length) and the final states ``(L*D, B, size)``."""
    kernel = getattr(torch._VF, kernel_name(layer))
    cells = layer._cells
    batch = x.shape[1]
    if initial is None:
        initial = tuple(x.new_zeros(len(cells), batch, size) for size in cells[0].state_sizes)
    options = (layer.bias, layer.num_layers, layer.dropout, layer.training, layer.bidirectional)
    if lengths is None:
        result = kernel(x, _hx(initial), weights, *options, False)
        return result[0], tuple(result[1:])
    packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
    initial = tuple(s.index_select(1, packed.sorted_indices) for s in initial)
    result = kernel(packed.data, packed.batch_sizes, _hx(initial), weights, *options)
    output = PackedSequence(result[0], packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    output, _ = pad_packed_sequence(output, total_length=x.shape[0])
    return output, tuple(s.index_select(1, packed.unsorted_indices) for s in result[1:])


def _hx(states: tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
    return states if len(states) > 1 else states[0]
