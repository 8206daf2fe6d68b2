"""Inspection and teaching: see inside an LSTM, and show why it beats a plain RNN.

* :mod:`~lstmkit.inspect.traces`: every step's gates and states of a trained model on one input
  (:func:`trace_model`), and the units worth plotting (:func:`interesting_units`);
* :mod:`~lstmkit.inspect.gradients`: how much of the last step's error reaches each earlier hidden
  state, for RNN, GRU and LSTM, before and after training;
* :mod:`~lstmkit.inspect.longlag`: the adding problem and the copy task at several lags, trained for
  a fixed budget with every cell kind;
* :mod:`~lstmkit.inspect.cost`: parameters, forward and training-step time per cell kind;
* :mod:`~lstmkit.inspect.plots` draws them, :mod:`~lstmkit.inspect.report` puts everything in one
  HTML page, :mod:`~lstmkit.inspect.cli` is ``lstmkit inspect``.

    >>> import torch, lstmkit
    >>> from lstmkit.inspect import trace_model
    >>> trace = trace_model(lstmkit.LSTM(3, 4), torch.randn(6, 3))["l0"]
    >>> tuple(trace.values["f"].shape)  # the forget gate of 4 units at 6 steps
    (6, 4)
"""

from .gradients import GradientFlow, compare_gradient_flow, gradient_flow, state_gradients
from .longlag import AddingProblem, CopyMemory, LongLagSettings, run_long_lag
from .traces import GateTrace, UnitChoice, interesting_units, text_features, trace_model

__all__ = [
    "AddingProblem",
    "CopyMemory",
    "GateTrace",
    "GradientFlow",
    "LongLagSettings",
    "UnitChoice",
    "compare_gradient_flow",
    "gradient_flow",
    "interesting_units",
    "run_long_lag",
    "state_gradients",
    "text_features",
    "trace_model",
]
