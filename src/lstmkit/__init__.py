"""lstmkit: LSTM-family recurrent networks for PyTorch, written gate by gate."""

from importlib.metadata import PackageNotFoundError, version

from .allocator import keep_freed_memory
from .cells import Cell, GRUCell, LayerNormLSTMCell, LSTMCell, PeepholeLSTMCell, RNNCell
from .int8 import quantize_int8
from .layers import GRU, LSTM, RNN, Recurrent, merge_directions
from .quantization import quantize_dynamic

try:
    __version__ = version("lstmkit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Cell",
    "GRUCell",
    "LSTMCell",
    "LayerNormLSTMCell",
    "PeepholeLSTMCell",
    "RNNCell",
    "Recurrent",
    "__version__",
    "keep_freed_memory",
    "merge_directions",
    "quantize_dynamic",
    "quantize_int8",
]
