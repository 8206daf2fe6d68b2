"""Export lstmkit layers, Keras-semantics layers and task models to ONNX, with dynamic batch and
sequence axes, checked in onnxruntime.

How it works: during the export every lstmkit layer runs on a traceable engine
(:func:`traceable_engine`). With ``dynamic_sequence=True`` (the default) plain LSTM/GRU/RNN stacks
run on torch's fused kernels, which torch's TorchScript-based exporter (``torch.onnx.export(...,
dynamo=False)``) writes as ONNX's own ``LSTM``/``GRU``/``RNN`` operators, and peephole LSTMs and
GRUs resetting before the recurrent multiply are written as the same operators by lstmkit
(:mod:`.operators`): the graph takes any batch size and any sequence length. With
``dynamic_sequence=False`` every layer runs on the reference engine and its Python time loop is
unrolled over the example's length: any cell exports, but the graph only takes sequences of exactly
that length (the batch stays dynamic). (torch 2.13's dynamo exporter was tried too: it bakes the
example's length into a ``Reshape`` of bidirectional LSTMs, so it is not used.)

What exports with a dynamic sequence length (``dynamic_sequence=True``):

* ``lstmkit.LSTM``, ``GRU`` (either ``reset_after``), ``RNN`` (``tanh``/``relu``) and
  :class:`~lstmkit.Recurrent` over those cells with default activations or over
  ``PeepholeLSTMCell``: stacked, bidirectional (``merge_mode="concat"``; any merge mode for the
  peephole LSTM and the reset-before GRU), ``batch_first`` or not, with initial states and with
  ``lengths=`` (lengths may be 0 at run time, giving zero outputs and the initial state as in
  lstmkit; the example's lengths must be at least 1);
* Keras-semantics ``lstmkit.keras.LSTM``, ``GRU`` (either ``reset_after``), ``SimpleRNN``
  (``tanh``/``relu``), ``Bidirectional`` (any merge mode), any ``return_sequences``/``return_state``/
  ``go_backwards``, not stateful, without masks;
* any module built from those and traceable torch layers (Embedding, Linear, ...), such as the task
  models (``lstmkit export onnx CHECKPOINT out.onnx``).

What does not, and the error says so: ``proj_size > 0`` (ONNX's LSTM has no projection),
layer-norm cells, custom cells or activations, zoneout, ``merge_mode`` other than concat on
``lstmkit`` layers of plain cells, masks, stateful Keras layers. All of these except masks
and stateful layers export with ``dynamic_sequence=False``. Gate traces (``return_gates``) and
``PackedSequence`` inputs never export; pass ``lengths=`` instead of packing.

Every export is verified (``verify=True``): the ONNX graph runs in onnxruntime on the example and on
other batch sizes and sequence lengths, and must agree with the module; a model that depends on the
sequence length in Python (and so would be silently wrong) fails with :class:`ExportError`.

    >>> import tempfile, torch, lstmkit
    >>> from lstmkit.interop.onnx import export_onnx
    >>> lstm = lstmkit.LSTM(4, 8, num_layers=2, bidirectional=True, batch_first=True)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     exported = export_onnx(lstm, torch.randn(2, 5, 4), f"{folder}/lstm.onnx", verify=False)
    >>> exported.input_names, exported.output_names
    (['input'], ['output', 'h_n', 'c_n'])
    >>> exported.dynamic_axes["input"], exported.dynamic_axes["h_n"]
    ({0: 'batch', 1: 'sequence'}, {1: 'batch'})
"""


from .common import OPSETS, ExportError, check_opset
from .engines import dynamic_sequence_problems, traceable_engine
from .export import OnnxExport, export_onnx, onnxruntime_session
from .pretrained import example_inputs, export_pretrained

__all__ = [
    "OPSETS",
    "ExportError",
    "OnnxExport",
    "check_opset",
    "dynamic_sequence_problems",
    "example_inputs",
    "export_onnx",
    "export_pretrained",
    "onnxruntime_session",
    "traceable_engine",
]
