"""Gate traces: every step's gates and states of a recurrent model for one input, and the units
worth looking at.

:func:`trace_model` runs a model (any lstmkit task model, or a :class:`~lstmkit.Recurrent` built in
code) on one input -- a text for a character model, a series of numbers for a model that reads
numbers -- and returns, per layer and direction, a :class:`GateTrace`: for an LSTM the input, forget
and output gates ``i, f, o``, the candidate ``g``, the cell state ``c`` and the hidden state ``h``
(GRU: ``r, z, n, h``; RNN: ``h``), each ``(steps, units)``, with a label per step (the input
character). :func:`interesting_units` picks units to plot: the ones whose memory varies most, and
the ones most correlated with a feature of the text, such as the position inside a line or inside
quotes or brackets (:func:`text_features`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..layers import Recurrent

HEATMAP_UNITS = 10
"""How many units a heatmap shows by default: few enough that each row stays tall enough to carry
its label at the report's width."""

SHORT_REASONS = {
    "inside quotes": "quotes",
    "inside brackets": "brackets",
    "position in line": "line pos.",
    "position in word": "word pos.",
    "variance": "variance",
}
"""The reasons of :class:`UnitChoice` as a heatmap's row labels say them."""

SeriesLike = Tensor | np.ndarray | Sequence[float] | Sequence[Sequence[float]]


@dataclass
class GateTrace:
    """One layer and direction's gates and states over one input sequence: ``values[name]`` is
    ``(steps, units)`` for each name of ``names`` (gates first, then states, the hidden state
    last), ``labels`` one string per step.

        >>> import lstmkit
        >>> trace = trace_model(lstmkit.LSTM(3, 4), torch.randn(5, 3))["l0"]
        >>> trace.names, trace.steps, trace.units, trace.memory
        (('i', 'f', 'g', 'o', 'c', 'h'), 5, 4, 'c')
    """

    layer: str
    cell: str
    labels: list[str]
    values: dict[str, Tensor]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.values)

    @property
    def steps(self) -> int:
        return len(self.labels)

    @property
    def units(self) -> int:
        return next(iter(self.values.values())).shape[1]

    @property
    def memory(self) -> str:
        """The state that carries memory: the cell state ``c`` when there is one, else ``h``."""
        return "c" if "c" in self.values else "h"

    def unit(self, index: int, name: str | None = None) -> Tensor:
        """The trace of one unit over time (the memory state unless ``name`` says otherwise)."""
        name = name or self.memory
        if name not in self.values:
            raise ValueError(f"unknown gate or state {name!r}: this {self.cell} trace has {list(self.values)}")
        check_units([index], self.units)
        return self.values[name][:, index]


def check_units(units: Sequence[int], size: int) -> list[int]:
    """``units`` as a list, or a ``ValueError`` naming the first index outside ``[0, size)``.

    >>> check_units([0, 3], 4)
    [0, 3]
    """
    chosen = []
    for unit in units:
        if isinstance(unit, bool) or not isinstance(unit, int | np.integer) or not 0 <= unit < size:
            raise ValueError(f"unit index {unit!r} out of range: the layer has {size} units, expected 0..{size - 1}")
        chosen.append(int(unit))
    if not chosen:
        raise ValueError("no units chosen: expected at least one unit index")
    return chosen


def recurrent_of(model: nn.Module) -> Recurrent:
    """The recurrent stack of ``model``: the model itself, or its ``rnn`` attribute (every lstmkit
    task model has one)."""
    rnn = model if isinstance(model, Recurrent) else getattr(model, "rnn", None)
    if not isinstance(rnn, Recurrent):
        raise ValueError(
            f"expected an lstmkit Recurrent layer or a model whose .rnn is one, got {type(model).__name__}"
            + ("" if rnn is None else f" with .rnn of type {type(rnn).__name__}")
        )
    return rnn


def _model_name(model: nn.Module) -> str:
    task = getattr(model, "task", None)
    return f"a {task} model ({type(model).__name__})" if task else f"a {type(model).__name__}"


def is_character_model(model: nn.Module) -> bool:
    """Whether ``model`` reads characters (it has a ``vocabulary`` and an ``embedding``)."""
    return hasattr(model, "vocabulary") and isinstance(getattr(model, "embedding", None), nn.Embedding)


def display_character(character: str) -> str:
    """How a character is shown on a plot's axis: newline ``↵``, space ``·``, tab ``→``.

    >>> [display_character(c) for c in "a \\n"]
    ['a', '·', '↵']
    """
    return {"\n": "↵", " ": "·", "\t": "→", "\r": "↵"}.get(character, character)


def _series_tensor(series: SeriesLike, features: int, model: nn.Module) -> Tensor:
    values = torch.as_tensor(np.asarray(series, dtype=np.float32))
    if values.dim() == 1:
        values = values.unsqueeze(1)
    if values.dim() != 2:
        raise ValueError(f"expected a series of shape (steps,) or (steps, features), got shape {tuple(values.shape)}")
    if values.shape[0] == 0:
        raise ValueError("the series is empty: expected at least one step")
    if values.shape[1] != features:
        raise ValueError(
            f"{_model_name(model)} reads {features} feature(s) per step, got a series with "
            f"{values.shape[1]} (shape {tuple(values.shape)})"
        )
    if not torch.isfinite(values).all():
        raise ValueError("the series contains NaN or infinite values")
    mean, std = getattr(model, "feature_mean", None), getattr(model, "feature_std", None)
    if callable(getattr(model, "standardise", None)):  # a forecaster: raw values to standard units
        values = model.standardise(values)  # type: ignore[operator]
    elif isinstance(mean, Tensor) and isinstance(std, Tensor):  # a classifier standardises inside forward
        values = (values - mean) / std
    if getattr(getattr(model, "config", None), "relative", False):  # read relative to the window's last step
        values = values - values[-1:]
    return values


def recurrent_input(model: nn.Module, data: str | SeriesLike) -> tuple[Tensor, list[str]]:
    """What ``model``'s recurrent stack reads for ``data``, as a batch of one ``(1, steps,
    features)`` (batch-first), and one label per step: a text is embedded by a character model;
    a series (``(steps,)`` or ``(steps, features)``, in the data's units) goes in as numbers,
    prepared as the model does: standardised by a forecaster's ``standardise`` or a classifier's
    ``feature_mean``/``feature_std``, and taken relative to its last step by a forecaster with
    ``relative=True``."""
    rnn = recurrent_of(model)
    if is_character_model(model):
        if not isinstance(data, str):
            raise ValueError(f"{_model_name(model)} reads text, got {type(data).__name__}: pass a string")
        if not data:
            raise ValueError("the text is empty: expected at least one character")
        ids = model.vocabulary.encode(data)  # type: ignore[union-attr, operator]
        with torch.no_grad():
            inputs = model.embedding(ids)  # type: ignore[operator]
        return inputs.unsqueeze(0), list(data)
    if isinstance(data, str):
        raise ValueError(
            f"a text needs a character model (charlm); got {_model_name(model)}, which reads "
            f"{rnn.input_size} number(s) per step: pass a series instead"
        )
    values = _series_tensor(data, rnn.input_size, model)
    labels = [str(step) for step in range(values.shape[0])]
    return values.unsqueeze(0), labels


def _ordered(cell_gate_names: Sequence[str], cell_state_names: Sequence[str], found: Mapping) -> list[str]:
    names = [name for name in cell_gate_names if name not in cell_state_names]
    names += [name for name in reversed(cell_state_names)]
    return [name for name in names if name in found] + [name for name in found if name not in names]


@torch.no_grad()
def trace_model(model: nn.Module, data: str | SeriesLike) -> dict[str, GateTrace]:
    """Run ``model`` on one input and return every layer and direction's :class:`GateTrace`, keyed
    ``"l0"``, ``"l0_reverse"``, ``"l1"``, ... (see :func:`recurrent_input` for what ``data`` may be).
    The model runs in eval mode (no dropout, zoneout at its expected value)."""
    rnn = recurrent_of(model)
    inputs, labels = recurrent_input(model, data)
    was_training = rnn.training
    rnn.eval()
    try:
        inputs = inputs if rnn.batch_first else inputs.transpose(0, 1)
        _, _, trace = rnn(inputs.to(rnn.cell().weight_ih.dtype), return_gates=True)
    finally:
        rnn.train(was_training)
    cells = rnn.cells
    traces = {}
    for index, (name, layer_trace) in enumerate(trace.items()):
        cell = cells[index]
        order = _ordered(cell.gate_names, cell.state_names, layer_trace)
        values = {key: (layer_trace[key][0] if rnn.batch_first else layer_trace[key][:, 0]) for key in order}
        traces[name] = GateTrace(name, type(cell).__name__, labels, values)
    return traces


def text_features(text: str) -> dict[str, np.ndarray]:
    """Features of each character of ``text`` that a unit may track: the position inside the line,
    the position inside the word, whether the character is inside double quotes, and inside
    brackets (the quotes and brackets first: they are the rarer, telling features). Each is
    ``(len(text),)`` float.

    >>> features = text_features('a "b" (c)')
    >>> features["inside quotes"].tolist()
    [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    >>> features["inside brackets"].tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    """
    line_position, word_position, quotes, brackets = [], [], [], []
    column = word = depth = 0
    quoted = False
    for character in text:
        if character in '"“”':
            quoted = (not quoted) if character == '"' else character == "“"
            quotes.append(1.0)  # both quote marks count as inside, so the span is symmetric
        else:
            quotes.append(1.0 if quoted else 0.0)
        if character in "([{":
            depth += 1
        brackets.append(1.0 if depth > 0 else 0.0)
        if character in ")]}":
            depth = max(0, depth - 1)
        line_position.append(float(column))
        word_position.append(float(word))
        column = 0 if character == "\n" else column + 1
        word = 0 if not character.isalnum() else word + 1
    return {
        "inside quotes": np.array(quotes),
        "inside brackets": np.array(brackets),
        "position in line": np.array(line_position),
        "position in word": np.array(word_position),
    }


@dataclass(frozen=True)
class UnitChoice:
    """A unit picked for plotting, and why: ``reason`` is ``"variance"`` or the name of a feature,
    ``score`` the variance or the correlation with that feature."""

    unit: int
    reason: str
    score: float

    def describe(self) -> str:
        """A legend entry.

        >>> UnitChoice(3, "inside quotes", -0.8).describe()
        'unit 3 (r = -0.80 with inside quotes)'
        """
        if self.reason == "variance":
            return f"unit {self.unit} (variance {self.score:.2f})"
        if self.reason == "chosen":
            return f"unit {self.unit}"
        return f"unit {self.unit} (r = {self.score:.2f} with {self.reason})"

    def tag(self) -> str:
        """A short row label: the unit's index and why it was picked.

        >>> UnitChoice(17, "inside quotes", 0.6).tag(), UnitChoice(3, "chosen", 0.0).tag()
        ('u17 (quotes)', 'u3')
        """
        if self.reason == "chosen":
            return f"u{self.unit}"
        return f"u{self.unit} ({SHORT_REASONS.get(self.reason, self.reason)})"


def unit_correlations(values: Tensor | np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of every unit's trace ``values[:, unit]`` with ``feature`` over the steps
    (0 for a unit that does not vary).

    >>> values = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    >>> unit_correlations(values, np.array([1.0, 2.0, 3.0])).round(6).tolist()
    [1.0, 0.0]
    """
    values = np.asarray(values, dtype=np.float64)
    feature = np.asarray(feature, dtype=np.float64)
    if feature.shape != values.shape[:1]:
        raise ValueError(f"feature has {feature.shape[0]} steps, the trace {values.shape[0]}")
    centred, centred_feature = values - values.mean(0), feature - feature.mean()
    norms = np.linalg.norm(centred, axis=0) * np.linalg.norm(centred_feature)
    products = centred_feature @ centred
    return np.divide(products, norms, out=np.zeros_like(products), where=norms > 1e-12)


def highest_variance_units(trace: GateTrace, count: int, name: str | None = None) -> list[UnitChoice]:
    """The ``count`` units whose ``name`` state (the memory by default) varies most over the input."""
    values = trace.values[name or trace.memory].double()
    variance = values.var(0, unbiased=False) if values.shape[0] > 1 else torch.zeros(values.shape[1])
    order = torch.argsort(variance, descending=True, stable=True)[:count]
    return [UnitChoice(int(u), "variance", float(variance[u])) for u in order]


def interesting_units(
    trace: GateTrace, count: int = 6, features: Mapping[str, np.ndarray] | None = None
) -> list[UnitChoice]:
    """Up to ``count`` distinct units to plot: for up to half of them, the unit of the memory state
    most correlated (in absolute value) with a feature that varies over the input, the features
    with the strongest correlation first; then the units of highest variance. ``features``
    defaults to :func:`text_features` of the labels when they are characters."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if features is None and all(len(label) == 1 for label in trace.labels):
        features = text_features("".join(trace.labels))
    chosen: list[UnitChoice] = []
    values = trace.values[trace.memory].numpy()
    varying = {name: f for name, f in (features or {}).items() if np.ptp(f) > 0} if trace.steps >= 3 else {}
    correlations = {name: unit_correlations(values, feature) for name, feature in varying.items()}
    # the strongest association first, so that a feature never takes the unit another explains better
    for name in sorted(correlations, key=lambda name: -np.abs(correlations[name]).max()):
        if len(chosen) >= max(1, count // 2):
            break
        taken = {choice.unit for choice in chosen}
        for unit in np.argsort(-np.abs(correlations[name]), kind="stable"):
            if int(unit) not in taken:
                chosen.append(UnitChoice(int(unit), name, float(correlations[name][unit])))
                break
    for choice in highest_variance_units(trace, trace.units):
        if len(chosen) >= min(count, trace.units):
            break
        if choice.unit not in {c.unit for c in chosen}:
            chosen.append(choice)
    return chosen


def heatmap_units(trace: GateTrace, chosen: Sequence[UnitChoice] = (), count: int = HEATMAP_UNITS) -> list[int]:
    """The units a heatmap shows: the ``chosen`` ones first, then those whose memory varies most,
    ``count`` at most (every unit when there are no more).

    >>> import lstmkit
    >>> trace = trace_model(lstmkit.GRU(2, 5), torch.randn(4, 2))["l0"]
    >>> sorted(heatmap_units(trace, [UnitChoice(3, "chosen", 0.0)]))
    [0, 1, 2, 3, 4]
    >>> heatmap_units(trace, [UnitChoice(3, "chosen", 0.0)], count=2)[0]
    3
    """
    units = list(dict.fromkeys(choice.unit for choice in chosen))
    for choice in highest_variance_units(trace, trace.units):
        if len(units) >= min(count, trace.units):
            break
        if choice.unit not in units:
            units.append(choice.unit)
    return units
