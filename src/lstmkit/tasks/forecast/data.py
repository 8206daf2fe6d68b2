"""Time series for forecasting: weekly Mauna Loa CO2 and yearly sunspots from the PyPI package
``statsmodels`` (offline, shipped with it), or any numeric column(s) of a user's CSV, checked line by
line.

The CSV format: a header naming the columns, then one row per time step, oldest first::

    date,load,temperature
    2024-01-01,512.5,3.5
    2024-01-02,498.0,2.25

The first chosen column is the target; further chosen columns are extra inputs (multivariate
forecasting). An optional time column (numbers or ISO dates) labels the axis of the plot and the
forecast steps; without one, the steps are numbered from 0. Completely blank lines are ignored;
every other problem (a missing column, an empty or non-numeric value, NaN or infinity, a row with
the wrong number of fields, times that do not increase) is an error naming the file and the line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import parse_number, read_csv

CO2, SUNSPOTS = "co2", "sunspots"


class SeriesDataError(ValueError):
    """A series that cannot be used; the message names the file, the line and the problem."""


@dataclass
class Series:
    """A regularly sampled series: ``values`` of shape ``(steps, columns)`` (float64, target first),
    the column names, the ``time`` of each step (numbers or ``datetime64[D]``), what the time axis
    is (``time_name``) and the target's ``unit``, the ``season`` in steps (for the seasonal-naive
    baseline; 1 when there is none), where it came from and what was done to it (``notes``).

        >>> s = Series(np.array([[1.0], [2.0], [4.0]]), ["y"], np.array([2000.0, 2001.0, 2002.0]), "year")
        >>> len(s), s.target.tolist(), s.next_times(2).tolist()
        (3, [1.0, 2.0, 4.0], [2003.0, 2004.0])
    """

    values: np.ndarray
    columns: list[str]
    time: np.ndarray
    time_name: str = "step"
    unit: str = ""
    season: int = 1
    source: str = "series"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.values = np.array(self.values, dtype=np.float64)  # a writable copy
        if self.values.ndim != 2 or self.values.shape[1] != len(self.columns) or not self.columns:
            raise SeriesDataError(f"{self.source}: values of shape {self.values.shape} for columns {self.columns}")
        if len(self.time) != len(self.values):
            raise SeriesDataError(f"{self.source}: {len(self.time)} times for {len(self.values)} steps")
        if not np.isfinite(self.values).all():
            raise SeriesDataError(f"{self.source}: the values hold NaN or infinity")
        if self.season < 1:
            raise SeriesDataError(f"{self.source}: the season must be at least 1 step, got {self.season}")

    def __len__(self) -> int:
        return len(self.values)

    @property
    def target(self) -> np.ndarray:
        """The forecast column (the first), shape ``(steps,)``."""
        return self.values[:, 0]

    def next_times(self, count: int) -> np.ndarray | None:
        """The times of the ``count`` steps after the end, when the series is evenly spaced (else ``None``)."""
        if len(self.time) < 2:
            return None
        gaps = np.diff(self.time)
        regular = (gaps == gaps[0]).all() if self.time.dtype.kind == "M" else np.allclose(gaps, gaps[0])
        if not regular:
            return None
        return self.time[-1] + gaps[0] * np.arange(1, count + 1)


def co2_series() -> Series:
    """Weekly atmospheric CO2 at Mauna Loa, March 1958 to December 2001 (ppm); the weeks without a
    measurement are filled by linear interpolation (and a note says how many)."""
    try:
        from statsmodels.datasets import co2
    except ModuleNotFoundError:
        raise SeriesDataError(
            "the CO2 series needs the PyPI package 'statsmodels': pip install 'lstmkit[data]'"
        ) from None
    frame = co2.load_pandas().data
    missing = int(frame["co2"].isna().sum())
    filled = frame["co2"].interpolate(method="linear", limit_direction="both")
    notes = [f"{missing} of {len(frame)} weeks have no measurement; filled by linear interpolation"] * bool(missing)
    return Series(filled.to_numpy(np.float64)[:, None], ["co2"], frame.index.to_numpy().astype("datetime64[D]"),
                  "date", "ppm", 52, "Mauna Loa CO2, weekly 1958-2001 (statsmodels)", notes)  # fmt: skip


def sunspots_series() -> Series:
    """The yearly mean sunspot number, 1700 to 2008 (solar cycles of about 11 years)."""
    try:
        from statsmodels.datasets import sunspots
    except ModuleNotFoundError:
        raise SeriesDataError("the sunspots series needs the PyPI package 'statsmodels': pip install "
                              "'lstmkit[data]'") from None  # fmt: skip
    frame = sunspots.load_pandas().data
    return Series(frame[["SUNACTIVITY"]].to_numpy(np.float64), ["sunspots"], frame["YEAR"].to_numpy(np.float64),
                  "year", "sunspot number", 11, "sunspots, yearly 1700-2008 (statsmodels)")  # fmt: skip


def _number(text: str, where: str, column: str) -> float:
    if not text:
        raise SeriesDataError(f"{where}, column {column!r}: empty value; expected a number (fill gaps, e.g. by "
                              "interpolation, before forecasting)")  # fmt: skip
    return parse_number(text, where, column, SeriesDataError)


def _time(text: str) -> float | np.datetime64:
    try:
        return float(text)
    except ValueError:
        return np.datetime64(text)


def _times(texts: list[str], lines: list[int], path: Path, column: str) -> np.ndarray:
    """The time column as numbers or as dates (all of one kind), checked to increase."""
    parsed = []
    for text, line in zip(texts, lines, strict=True):
        try:
            parsed.append(_time(text))
        except ValueError:
            raise SeriesDataError(f"{path}, line {line}, column {column!r}: expected a number or an ISO date "
                                  f"(YYYY-MM-DD), got {text!r}") from None  # fmt: skip
        if type(parsed[-1]) is not type(parsed[0]) or (isinstance(parsed[-1], float) and not math.isfinite(parsed[-1])):
            kind = "a number" if isinstance(parsed[0], float) else "an ISO date"
            raise SeriesDataError(f"{path}, line {line}, column {column!r}: expected {kind} like line {lines[0]}'s "
                                  f"{texts[0]!r}, got {text!r}")  # fmt: skip
    times = np.array(parsed)
    for index in range(1, len(times)):
        if not times[index] > times[index - 1]:
            raise SeriesDataError(f"{path}, line {lines[index]}, column {column!r}: the time {texts[index]!r} does not "
                                  f"come after {texts[index - 1]!r} (line {lines[index - 1]}); rows must be oldest "
                                  "first, one per time")  # fmt: skip
    return times


def _header(path: Path, names: list[str], columns: Sequence[str], time_column: str | None) -> list[str]:
    """Check the header's column ``names``; returns the chosen value columns."""
    available = ", ".join(names)
    for name in [*columns, *([time_column] if time_column else [])]:
        if name not in names:
            raise SeriesDataError(f"{path}, line 1: no column {name!r}; the file's columns are: {available}")
    if time_column in columns:
        raise SeriesDataError(f"{path}: the column {time_column!r} cannot be both the time and a value column")
    if not columns:
        candidates = [name for name in names if name != time_column]
        if len(candidates) != 1:
            raise SeriesDataError(f"{path}: name the column(s) to forecast (--column NAME; the first is the target); "
                                  f"the file's columns are: {available}")  # fmt: skip
        return candidates
    return list(columns)


def read_csv_series(path: str | Path, columns: Sequence[str] = (), time_column: str | None = None) -> Series:
    """Read the ``columns`` (target first; all of the file's one column when none are named and it
    has only one besides ``time_column``) of a CSV (see the module docstring). Every problem is a
    :class:`SeriesDataError` naming the file and the line."""
    path = Path(path)
    names, records = read_csv(path, SeriesDataError, "a header naming the columns, then one row per time step")
    chosen = _header(path, names, columns, time_column)
    where_value = [names.index(name) for name in chosen]
    rows = [[_number(fields[i].strip(), f"{path}, line {line}", names[i]) for i in where_value]
            for line, fields in records]  # fmt: skip
    lines = [line for line, _ in records]
    time_texts = [fields[names.index(time_column)].strip() for _, fields in records] if time_column else []
    times = _times(time_texts, lines, path, time_column) if time_column else np.arange(len(rows), dtype=np.float64)
    return Series(np.array(rows, dtype=np.float64), chosen, times, time_column or "step", "", 1, str(path))


def load_series(series: str, columns: Sequence[str] = (), time_column: str | None = None) -> Series:
    """``"co2"``, ``"sunspots"`` or the path of a CSV (read with :func:`read_csv_series`)."""
    if series in (CO2, SUNSPOTS):
        loaded = co2_series() if series == CO2 else sunspots_series()
        if (columns and list(columns) != loaded.columns) or time_column is not None:
            raise SeriesDataError(f"the {series} series has the one column {loaded.columns} and its own time; "
                                  "--column and --time-column are for a CSV")  # fmt: skip
        return loaded
    return read_csv_series(series, columns, time_column)
