"""Round-robin timing: every implementation is timed in every repetition, so load on a shared
machine hits all of them alike, and ratios are taken within a repetition before the median.

One repetition times each implementation once, ``calls`` back-to-back calls each (calibrated so a
timing lasts about ``target_seconds``); the order of the implementations rotates from one
repetition to the next so none is always first after a slow neighbour. Before the repetitions each
implementation is warmed up (``warmup`` calls, or more for an implementation that asks for a
number of warm-up calls of its own, e.g. to reach lstmkit's compiled steps).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass
class Timing:
    """Per-call seconds of one implementation in every repetition (``None`` once it failed)."""

    calls: int = 1
    seconds: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


def paired_ratios(times: list[float], baseline: list[float]) -> list[float]:
    """``time / baseline time`` of every repetition both have (their median is the ratio reported)."""
    return [t / b for t, b in zip(times, baseline, strict=False) if b > 0]


def calibrate(run: Callable[[], object], target_seconds: float, clock: Clock = time.perf_counter) -> int:
    """Calls per timing so that one timing of ``run`` lasts about ``target_seconds`` (at least 1).

    The fastest of up to three calls (fewer once they took four times ``target_seconds``
    together) stands for one call, so one call slowed by other load does not leave a fast
    implementation at 1 call."""
    fastest, spent = math.inf, 0.0
    for _ in range(3):
        start = clock()
        run()
        once = clock() - start
        fastest, spent = min(fastest, once), spent + once
        if spent >= 4 * target_seconds:
            break
    return max(1, round(target_seconds / max(fastest, 1e-9)))


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def round_robin(
    implementations: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 2,
    warmup_calls: Mapping[str, int] | None = None,
    target_seconds: float = 0.05,
    calls: Mapping[str, int] | int | None = None,
    clock: Clock = time.perf_counter,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Timing]:
    """Time every implementation ``repeats`` times, interleaved; returns per-call seconds.

    ``calls`` fixes the calls per timing (one number for all, or per name); otherwise each is
    calibrated after its warm-up. An implementation that raises is dropped from later
    repetitions and its error kept in :attr:`Timing.error`; the others go on.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    results = {name: Timing() for name in implementations}
    live = list(implementations)
    for name in list(live):
        run = implementations[name]
        began = clock()
        try:
            for _ in range(max(warmup, (warmup_calls or {}).get(name, 0))):
                run()
            if calls is None:
                results[name].calls = calibrate(run, target_seconds, clock)
            else:
                results[name].calls = calls if isinstance(calls, int) else calls.get(name, 1)
        except Exception as error:  # a broken peer must not stop the suite
            results[name].error = _describe(error)
            live.remove(name)
        if progress:
            status = (
                f"failed: {results[name].error}" if results[name].error else f"{results[name].calls} calls a timing"
            )
            progress(f"warmed up {name} ({clock() - began:.1f} s, {status})")
    for repetition in range(repeats):
        shift = repetition % len(live) if live else 0
        for name in live[shift:] + live[:shift]:
            timing = results[name]
            if timing.error is not None:
                continue
            run = implementations[name]
            try:
                start = clock()
                for _ in range(timing.calls):
                    run()
                timing.seconds.append((clock() - start) / timing.calls)
            except Exception as error:
                timing.error = _describe(error)
        if progress:
            progress(f"repetition {repetition + 1}/{repeats}")
    return results


def summarize(results: Mapping[str, Timing], baselines: Mapping[str, str | None]) -> dict[str, dict]:
    """Medians and paired ratios: ``baselines[name]`` is the implementation ``name`` is compared
    with (``None``: no ratio)."""
    summary: dict[str, dict] = {}
    for name, timing in results.items():
        base_name = baselines.get(name)
        base = results.get(base_name) if base_name else None
        ratios = paired_ratios(timing.seconds, base.seconds) if base is not None and base.seconds else []
        summary[name] = {
            "median_ms": None if timing.median is None else 1000 * timing.median,
            "times_ms": [1000 * s for s in timing.seconds],
            "calls": timing.calls,
            "baseline": base_name,
            "ratio": statistics.median(ratios) if ratios else None,
            "ratios": ratios,
            "error": timing.error,
        }
    return summary


def gemm_call(size: int = 1024, dtype: str = "float32") -> tuple[Callable[[], None], float]:
    """One ``torch.mm`` of two ``size x size`` matrices of ``dtype`` (``"float32"``, ``"bfloat16"``),
    and its flop count."""
    import torch

    kind = getattr(torch, dtype)
    a, b = torch.randn(size, size).to(kind), torch.randn(size, size).to(kind)
    out = torch.empty(size, size, dtype=kind)

    def run() -> None:
        torch.mm(a, b, out=out)

    return run, 2.0 * size**3


def gemm_peak(
    size: int = 1024,
    repeats: int = 5,
    target_seconds: float = 0.1,
    clock: Clock = time.perf_counter,
    dtype: str = "float32",
) -> dict[str, float | list[float]]:
    """The machine's matrix-multiply rate in ``dtype``: ``torch.mm`` of two ``size x size`` matrices,
    ``repeats`` timings; ``peak_gflops`` is the best timing, ``median_gflops`` the median."""
    run, flops = gemm_call(size, dtype)
    for _ in range(3):
        run()
    calls = calibrate(run, target_seconds, clock)
    rates = []
    for _ in range(repeats):
        start = clock()
        for _ in range(calls):
            run()
        rates.append(flops * calls / (clock() - start) / 1e9)
    return {"size": size, "peak_gflops": max(rates), "median_gflops": statistics.median(rates), "gflops": rates}
