"""Layers that drive cells over time: :class:`Recurrent` for any cell, and drop-ins for
``torch.nn.LSTM``, ``torch.nn.GRU`` and ``torch.nn.RNN``.

Parameters are registered under PyTorch's names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...),
so ``state_dict`` and ``load_state_dict`` interchange with ``torch.nn`` modules. Each layer and
direction has its own cell; the cells see the layer's parameters, they do not own copies.

:mod:`~lstmkit.layers.recurrent` holds :class:`Recurrent`, :mod:`~lstmkit.layers.dropin` the drop-ins
and :mod:`~lstmkit.layers.arguments` the checks of a call's arguments; :func:`merge_directions` and
``MERGE_MODES``, which the Keras layers share, are :mod:`lstmkit.functional`'s.
"""

from ..functional import MERGE_MODES, merge_directions
from .arguments import StateArg
from .dropin import GRU, LSTM, RNN
from .recurrent import Recurrent

__all__ = ["GRU", "LSTM", "MERGE_MODES", "RNN", "Recurrent", "StateArg", "merge_directions"]
