"""What the two compile paths of user cells share (``lstmkit.engine.compiling``): the setting, the
step counters that decide when to compile, and warning once per kind of cell."""

from __future__ import annotations

import warnings

import pytest
from core_helpers import CIFGCell

from lstmkit.engine import compiling


def test_the_setting(monkeypatch) -> None:
    monkeypatch.setenv(compiling.COMPILE_VARIABLE, " On ")
    assert compiling.compile_mode() == "1"
    compiling.set_compile(False)
    try:
        assert compiling.compile_mode() == "0"
    finally:
        compiling.set_compile(None)
    monkeypatch.delenv(compiling.COMPILE_VARIABLE)
    assert compiling.compile_mode() == "auto"
    with pytest.raises(ValueError, match=r"LSTMKIT_COMPILE must be 0, 1 or auto, got 'sometimes'"):
        compiling.parse_mode("sometimes", "LSTMKIT_COMPILE")


def test_counters_decide_when_to_compile(monkeypatch) -> None:
    monkeypatch.setattr(compiling, "COMPILE_AFTER_STEPS", 10)
    counters = compiling.HotCounters(size=2)
    counter = counters.count("a", 6)
    assert not counter.due("auto") and counter.due("1") and not counter.due("0")
    assert counters.count("a", 4) is counter and counter.due("auto")
    counter.failed = "it cannot"
    assert not counter.due("1")  # a failure is remembered
    counters.count("b", 1)
    counters.count("c", 1)  # beyond the size: the least recently counted goes
    assert counters.get("a") is None and len(counters) == 2


def test_warn_once_per_kind_of_cell() -> None:
    warn = compiling.WarnOnce()
    with pytest.warns(RuntimeWarning, match="first"):
        warn(CIFGCell(3, 4), "first")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn(CIFGCell(3, 5), "second")  # the same kind of cell: no second warning
