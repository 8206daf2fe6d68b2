"""Export lstmkit layers, Keras-semantics layers and task models to ONNX, with dynamic batch and
sequence axes, checked in onnxruntime.

How it works: during the export every lstmkit layer runs on a traceable engine
(:func:`traceable_engine`). With ``dynamic_sequence=True`` (the default) the graph takes any batch
size and any sequence length, each layer written as:

* ONNX's own ``LSTM``/``GRU``/``RNN`` operator, by torch's TorchScript-based exporter
  (``torch.onnx.export(..., dynamo=False)``) from torch's fused kernels, for plain LSTM/GRU/RNN cells
  (default activations, no projection, concatenated directions, no zoneout);
* the same operators written by lstmkit (:mod:`.operators`) for the peephole LSTM (input ``P``)
  and the GRU resetting before the recurrent multiply (``linear_before_reset=0``);
* else one ONNX ``Scan`` per layer and direction whose body is the cell's step (:mod:`.scan`): the
  layer-norm LSTM, projections, other activations, zoneout (its expectation, as in evaluation), any
  merge mode, and user-defined cells whose ``step`` traces.

This covers ``lstmkit.LSTM``, ``GRU``, ``RNN`` and :class:`~lstmkit.Recurrent` over any cell:
stacked, bidirectional, ``batch_first`` or not, with initial states and with ``lengths=`` (lengths
may be 0 at run time, giving zero outputs and the initial state as in lstmkit; the example's lengths
must be at least 1); the Keras-semantics layers (``Bidirectional`` in any merge mode, any
``return_sequences``/``return_state``/``go_backwards``), not stateful, without masks; and any module
built from those and traceable torch layers (Embedding, Linear, ...), such as the task models
(``lstmkit export onnx CHECKPOINT out.onnx``).

With ``dynamic_sequence=False`` every layer runs on the reference engine and its Python time loop
is unrolled over the example's length: the graph only takes sequences of exactly that length (the
batch stays dynamic). That is the way for masks (``mask=``, Keras masks); stateful Keras layers,
gate traces (``return_gates``) and ``PackedSequence`` inputs never export (pass ``lengths=`` instead
of packing). torch 2.13's dynamo exporter was tried too: it bakes the example's length into a
``Reshape`` of bidirectional LSTMs and needs onnxscript, so it is not used.

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
