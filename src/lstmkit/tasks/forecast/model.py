"""The forecaster: a window of standardised values -> recurrent stack -> a linear head on the last
hidden state that predicts the next ``horizon`` values of the target at once; the two baselines it
must beat (naive and seasonal naive) and the figures it is judged by (MAE, RMSE, MASE).

Every forecast starts at an *origin* ``o``: the model sees the steps ``o - window + 1 .. o`` and
predicts ``o + 1 .. o + horizon``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ...cell_kinds import check_cell, recurrent_layer
from ...validation import check_probability
from ..common import TaskModel, check_statistics


@dataclass
class ForecastConfig:
    """The forecaster: its input columns (target first), the training part's per-column ``mean``
    and ``std`` (a saved model standardises and un-standardises with them, so it needs nothing else),
    the ``window`` it reads, the ``horizon`` it predicts, and the network's shape.

    ``relative``: every input column is read relative to its last value in the window and the head
    predicts the target's change from its last value, so the level of the series does not matter (a
    trending series leaves the training range without leaving the inputs' range).

        >>> ForecastConfig(["co2"], [340.0], [12.0], window=104, horizon=52).relative
        True
    """

    columns: list[str]
    mean: list[float]
    std: list[float]
    window: int = 104
    horizon: int = 52
    cell: str = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.0
    relative: bool = True

    def __post_init__(self) -> None:
        check_cell(self.cell)
        if min(self.window, self.horizon, self.hidden_size, self.num_layers) < 1:
            raise ValueError(f"need window, horizon, hidden_size, num_layers >= 1; got {self.window}, {self.horizon}, "
                             f"{self.hidden_size}, {self.num_layers}")  # fmt: skip
        check_probability("dropout", self.dropout)
        check_statistics("columns", self.columns, self.mean, self.std)


class Forecaster(TaskModel):
    """``model(z)`` maps standardised windows ``(batch, window, columns)`` to the standardised next
    ``horizon`` target values ``(batch, horizon)``; :func:`forecast` works in the data's units.

        >>> model = Forecaster(ForecastConfig(["y", "x"], [0.0, 0.0], [1.0, 1.0], window=6, horizon=3,
        ...                                   hidden_size=8))
        >>> tuple(model(torch.randn(4, 6, 2)).shape)
        (4, 3)
    """

    task = "forecast"
    config_class = ForecastConfig

    def __init__(self, config: ForecastConfig) -> None:
        super().__init__(config)
        self.register_statistics("column", config.mean, config.std, torch.float64)
        self.rnn = recurrent_layer(config.cell, len(config.columns), config.hidden_size, config.num_layers,
                                   dropout=config.dropout)  # fmt: skip
        self.head = nn.Linear(config.hidden_size, config.horizon)

    def forward(self, z: Tensor) -> Tensor:
        last = z[:, -1:, :]
        output, _ = self.rnn(z - last if self.config.relative else z)
        change = self.head(output[:, -1])
        return last[:, 0, :1] + change if self.config.relative else change

    def standardise(self, values: Tensor) -> Tensor:
        """Raw values ``(..., columns)`` in standard units (float32)."""
        return ((values.double() - self.column_mean) / self.column_std).float()

    def unstandardise_target(self, z: Tensor) -> Tensor:
        """Standardised target values back in the data's units (float64)."""
        return z.double() * self.column_std[0] + self.column_mean[0]

    def onnx_module(self) -> ForecasterInDataUnits:
        """What ``lstmkit export onnx`` writes: this model in the data's units (see
        :class:`ForecasterInDataUnits`)."""
        return ForecasterInDataUnits(self)


class ForecasterInDataUnits(nn.Module):
    """A forecaster as :func:`forecast` (and ``forecast predict``) runs it: raw windows ``values``
    ``(batch, steps, columns)`` in the data's units (float64) -> the next ``horizon`` target values
    ``(batch, horizon)`` in the data's units (float64), standardising and un-standardising with the
    training part's statistics.

        >>> model = Forecaster(ForecastConfig(["y"], [300.0], [10.0], window=6, horizon=3, hidden_size=8))
        >>> raw = model.onnx_module()(torch.full((1, 6, 1), 320.0, dtype=torch.float64))  # 2 std above
        >>> bool(torch.allclose(raw, model.unstandardise_target(model(torch.full((1, 6, 1), 2.0)))))
        True
    """

    onnx_output_names = ("forecast",)

    def __init__(self, model: Forecaster) -> None:
        super().__init__()
        self.model = model

    def forward(self, values: Tensor) -> Tensor:
        return self.model.unstandardise_target(self.model(self.model.standardise(values)))

    def example_inputs(self, batch: int, steps: int) -> dict[str, Tensor]:
        """Raw windows around the training part's means, the example of the ONNX export."""
        generator = torch.Generator().manual_seed(0)
        noise = torch.randn(batch, steps, len(self.model.config.columns), generator=generator, dtype=torch.float64)
        return {"values": self.model.column_mean + self.model.column_std * noise}


def input_windows(values: np.ndarray, origins: Sequence[int] | np.ndarray, window: int) -> np.ndarray:
    """The ``window`` steps up to and including each origin: ``(len(origins), window, columns)``.

    >>> input_windows(np.arange(6.0)[:, None], [2, 5], 3)[..., 0].tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    origins = np.asarray(origins, dtype=np.int64)
    if origins.size and (origins.min() < window - 1 or origins.max() >= len(values)):
        raise ValueError(f"origins must lie in [{window - 1}, {len(values) - 1}] for a window of {window}")
    return values[origins[:, None] + np.arange(1 - window, 1)]


def target_windows(target: np.ndarray, origins: Sequence[int] | np.ndarray, horizon: int) -> np.ndarray:
    """The ``horizon`` target values after each origin: ``(len(origins), horizon)``."""
    origins = np.asarray(origins, dtype=np.int64)
    if origins.size and (origins.min() < 0 or origins.max() + horizon >= len(target)):
        raise ValueError(f"origins must lie in [0, {len(target) - horizon - 1}] for a horizon of {horizon}")
    return target[origins[:, None] + np.arange(1, horizon + 1)]


def mse_sum(model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, int]:
    """Summed (over windows) mean squared error over the horizon, in standard units, of a batch of
    standardised ``(windows, targets)``, and the number of windows: the training loss of the task (in
    float32, under bf16 autocast too)."""
    windows, targets = batch
    return ((model(windows).float() - targets) ** 2).mean(1).sum(), len(targets)


@torch.no_grad()
def forecast(model: Forecaster, values: np.ndarray, origins: Sequence[int] | np.ndarray, batch_size: int = 512
             ) -> np.ndarray:  # fmt: skip
    """The model's forecasts ``(len(origins), horizon)`` in the data's units, from the raw
    ``values`` ``(steps, columns)``."""
    model.eval()
    windows = torch.from_numpy(input_windows(values, origins, model.config.window))
    parts = [model.unstandardise_target(model(model.standardise(chunk))) for chunk in windows.split(batch_size)]
    return torch.cat(parts).numpy() if parts else np.empty((0, model.config.horizon))


def naive_forecast(target: np.ndarray, origins: Sequence[int] | np.ndarray, horizon: int) -> np.ndarray:
    """The last value at each origin, repeated ``horizon`` times.

    >>> naive_forecast(np.array([1.0, 2.0, 3.0]), [1], 2).tolist()
    [[2.0, 2.0]]
    """
    return np.repeat(target[np.asarray(origins, dtype=np.int64)][:, None], horizon, axis=1)


def seasonal_naive_forecast(
    target: np.ndarray, origins: Sequence[int] | np.ndarray, horizon: int, season: int
) -> np.ndarray:
    """For step ``o + h``, the value one season before it that was known at the origin ``o``:
    ``target[o + h - season * ceil(h / season)]``.

    >>> seasonal_naive_forecast(np.array([1.0, 2.0, 3.0, 4.0]), [3], 3, 2).tolist()
    [[3.0, 4.0, 3.0]]
    """
    steps = np.arange(1, horizon + 1)
    index = np.asarray(origins, dtype=np.int64)[:, None] + steps - season * np.ceil(steps / season).astype(np.int64)
    if index.size and index.min() < 0:
        raise ValueError(f"the seasonal-naive forecast needs a season ({season} steps) of history before every origin")
    return target[index]


def naive_scale(history: np.ndarray, lag: int = 1) -> float:
    """The mean absolute error of the in-sample naive forecast ``history[t - lag]`` of ``history[t]``:
    the scale of MASE (``lag = 1``: naive; ``lag = season``: seasonal naive).

    >>> naive_scale(np.array([1.0, 3.0, 2.0, 2.0]))
    1.0
    """
    if len(history) <= lag:
        raise ValueError(f"the MASE scale with lag {lag} needs more than {lag} training values, got {len(history)}")
    scale = float(np.abs(history[lag:] - history[:-lag]).mean())
    if scale == 0:
        raise ValueError(f"the training part is constant at lag {lag}: MASE is undefined (its scale is 0)")
    return scale


def forecast_metrics(truth: np.ndarray, predicted: np.ndarray, scale: float, seasonal_scale: float
                     ) -> dict[str, float]:  # fmt: skip
    """MAE, RMSE and MASE (MAE over the in-sample naive ``scale``, and over the seasonal-naive
    ``seasonal_scale``) of forecasts against the truth, over every origin and step.

    >>> forecast_metrics(np.array([[1.0, 2.0]]), np.array([[2.0, 4.0]]), 2.0, 3.0)
    {'mae': 1.5, 'rmse': 1.5811388300841898, 'mase': 0.75, 'mase_seasonal': 0.5}
    """
    if truth.shape != predicted.shape or truth.size == 0:
        raise ValueError(
            f"need forecasts and truth of the same non-empty shape, got {predicted.shape} and {truth.shape}"
        )
    errors = predicted - truth
    mae = float(np.abs(errors).mean())
    return {"mae": mae, "rmse": float(np.sqrt((errors**2).mean())), "mase": mae / scale,
            "mase_seasonal": mae / seasonal_scale}  # fmt: skip
