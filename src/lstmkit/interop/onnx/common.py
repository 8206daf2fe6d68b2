"""What every part of the ONNX export shares: its error, the axis labels and the opsets."""

from __future__ import annotations

BATCH, SEQUENCE = "batch", "sequence"
INSTALL_HINT = "pip install 'lstmkit[onnx]' (onnx, onnxruntime)"
Axes = dict[int, str]
STATE_PARAMETERS = ("hx", "state", "states", "initial_state")
# The ONNX opsets an export may ask for, as tested with torch 2.13, onnx 1.23 and onnxruntime 1.32:
# below 11 an LSTM with lengths does not export (Sort) and GRU/RNN graphs fail onnx's checker
# (ConstantOfShape); torch's TorchScript exporter writes at most 20 (21-23 only relabel opset 20's
# operators, with a warning that they are unsupported; from 24 on it refuses).
OPSETS = range(11, 21)


class ExportError(ValueError):
    """A module (or a part of it) that cannot be exported as asked; the message says which part,
    why, and what to do instead.

    >>> ExportError("LSTM at 'rnn': proj_size > 0").args[0]
    "LSTM at 'rnn': proj_size > 0"
    """


def check_opset(opset: int | None) -> None:
    """Raise :class:`ExportError` (one line naming :data:`OPSETS`) for an opset the export does not
    support; ``None`` (torch's default, 20) is fine.

    >>> check_opset(20)
    >>> try:
    ...     check_opset(7)
    ... except ExportError as error:
    ...     print(error)
    ONNX opset 7 is not supported: use 11 to 20
    """
    if opset is not None and opset not in OPSETS:
        raise ExportError(f"ONNX opset {opset} is not supported: use {OPSETS[0]} to {OPSETS[-1]}")
