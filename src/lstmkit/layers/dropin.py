"""Drop-ins for ``torch.nn.LSTM``, ``torch.nn.GRU`` and ``torch.nn.RNN``: :class:`Recurrent` over
lstmkit's :class:`~lstmkit.LSTMCell`, :class:`~lstmkit.GRUCell` and :class:`~lstmkit.RNNCell`, with
torch's positional arguments."""

from __future__ import annotations

from typing import Any

import torch

from ..cells import GRUCell, LSTMCell, RNNCell
from ..engine.precision import cast_floats
from ..validation import ArgumentError
from .recurrent import Recurrent


def _recurrent_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """A drop-in's ``__init__`` ``locals()`` as keyword arguments of :class:`Recurrent`: those it
    names, its own (``proj_size``, ``nonlinearity``: cell arguments) and the ``extras``."""
    own = {k: v for k, v in arguments.items() if k not in ("self", "__class__", "extras")}
    if "proj_size" in arguments["extras"]:
        raise ArgumentError("proj_size argument is only supported for LSTM, not RNN or GRU")
    return own | arguments["extras"]


class LSTM(Recurrent):
    """Drop-in for ``torch.nn.LSTM``: same arguments, ``state_dict`` keys and outputs, plus
    ``lengths=``, ``mask=``, ``merge_mode``, ``recurrent_dropout``, ``zoneout``, ``return_gates``
    and the initialisations ``forget_bias``, ``chrono_init``, ``recurrent_init`` (:mod:`lstmkit.init`).

        >>> import torch, lstmkit
        >>> lstm = lstmkit.LSTM(10, 20, num_layers=2, bidirectional=True)
        >>> ref = torch.nn.LSTM(10, 20, num_layers=2, bidirectional=True)
        >>> _ = ref.load_state_dict(lstm.state_dict())
        >>> x = torch.randn(7, 3, 10)
        >>> torch.allclose(lstm(x)[0], ref(x)[0], atol=1e-6)
        True
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **extras: object,
    ) -> None:
        super().__init__(LSTMCell, **_recurrent_arguments(locals()))
        self.proj_size = proj_size
        self.mode = "LSTM"

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}" + self._options_repr()
        return text + f", proj_size={self.proj_size}" if self.proj_size else text

    def _cast_results(self, result: tuple, dtype: torch.dtype | None, autocast: bool) -> tuple:
        """As torch.nn.LSTM's: with projections under bf16 autocast (torch's kernel without oneDNN)
        the output and h_n come out bfloat16 and c_n float32, padded or packed."""
        if not (autocast and self.proj_size and dtype is not None):
            return super()._cast_results(result, dtype, autocast)
        output, (h_n, c_n), *trace = result
        bf16 = torch.bfloat16
        return (cast_floats(output, bf16), (cast_floats(h_n, bf16), c_n.float()), *trace)


class GRU(Recurrent):
    """Drop-in for ``torch.nn.GRU``; ``reset_after=False`` gives the original Cho et al. candidate;
    ``forget_bias`` and ``chrono_init`` set the update gate ``z``'s bias (:mod:`lstmkit.init`).

    >>> import torch, lstmkit
    >>> out, h_n = lstmkit.GRU(4, 6, batch_first=True)(torch.randn(2, 5, 4))
    >>> tuple(out.shape), tuple(h_n.shape)
    ((2, 5, 6), (1, 2, 6))
    """

    autocast_output_dtype = autocast_packed_output_dtype = torch.float32  # as torch.nn.GRU's

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **extras: object,
    ) -> None:
        super().__init__(GRUCell, **_recurrent_arguments(locals()))
        self.mode = "GRU"

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}" + self._options_repr()
        return text if self._cells[0].reset_after else text + ", reset_after=False"


class RNN(Recurrent):
    """Drop-in for ``torch.nn.RNN`` (``nonlinearity`` is its fourth argument, as in torch).

    >>> import torch, lstmkit
    >>> out, h_n = lstmkit.RNN(4, 6, nonlinearity="relu")(torch.randn(5, 2, 4))
    >>> tuple(out.shape)
    (5, 2, 6)
    """

    autocast_output_dtype = autocast_packed_output_dtype = torch.bfloat16  # as torch.nn.RNN's

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **extras: object,
    ) -> None:
        super().__init__(RNNCell, **_recurrent_arguments(locals()))
        self.nonlinearity = self._cells[0].nonlinearity
        self.mode = f"RNN_{self.nonlinearity.upper()}"  # torch.nn.RNN's modes: RNN_TANH, RNN_RELU

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}" + self._options_repr()
        return text if self.nonlinearity == "tanh" else text + f", nonlinearity={self.nonlinearity!r}"
