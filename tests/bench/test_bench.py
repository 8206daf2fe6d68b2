"""The benchmark suite's machinery (never its timings): round-robin timer, flop count, memory probe,
report writers, and one tiny run from the command line."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

import lstmkit
from lstmkit.bench import memory, peers, report, suite, timing
from lstmkit.cli import app
from lstmkit.engine.precision import bf16_hardware


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake(clock: FakeClock, seconds, log: list[str], name: str):
    """A callable taking ``seconds`` (a number, or a list consumed one value per call) of fake time."""
    durations = list(seconds) if isinstance(seconds, list) else None

    def run() -> None:
        log.append(name)
        clock.now += durations.pop(0) if durations is not None else seconds

    return run


def test_round_robin_interleaves_rotates_and_takes_medians() -> None:
    clock, log = FakeClock(), []
    implementations = {
        "base": fake(clock, 0.010, log, "base"),
        "fast": fake(clock, 0.005, log, "fast"),
        "slow": fake(clock, 0.040, log, "slow"),
    }
    results = timing.round_robin(implementations, repeats=3, warmup=1, target_seconds=0.020, clock=clock)
    # warm-up once each, calibration (fastest of up to 3 calls, fewer once they took 4x the target
    # together), then 3 repetitions in rotating order
    assert log[:11] == ["base"] * 4 + ["fast"] * 4 + ["slow"] * 3
    calls = {name: results[name].calls for name in implementations}
    assert calls == {"base": 2, "fast": 4, "slow": 1}
    timed = log[11:]
    blocks = []
    for repetition in range(3):
        order = list(implementations)[repetition:] + list(implementations)[:repetition]
        block = []
        for name in order:
            block += [name] * calls[name]
        blocks.append(block)
    assert timed == [name for block in blocks for name in block]
    assert results["base"].seconds == pytest.approx([0.010] * 3)
    assert results["slow"].median == pytest.approx(0.040)
    summary = timing.summarize(results, {name: "base" for name in implementations})
    assert summary["fast"]["ratio"] == pytest.approx(0.5)
    assert summary["slow"]["median_ms"] == pytest.approx(40.0)
    assert summary["base"]["ratios"] == pytest.approx([1.0, 1.0, 1.0])


def test_calibration_takes_the_fastest_call() -> None:
    clock, log = FakeClock(), []
    # one call slowed by load among fast ones: calibrated on the fast one
    assert timing.calibrate(fake(clock, [0.03, 0.001, 0.002], log, "x"), 0.010, clock) == 10
    assert timing.calibrate(fake(clock, [0.05, 0.001], log, "x"), 0.010, clock) == 1  # spent 4x the target
    assert timing.calibrate(fake(clock, [0.001, 0.001, 0.001], log, "x"), 0.0, clock) == 1


def test_ratios_are_paired_per_repetition_before_the_median() -> None:
    clock, log = FakeClock(), []
    # the load doubles in the second repetition and triples in the third: paired ratios stay 2
    implementations = {
        "base": fake(clock, [1.0, 2.0, 3.0], log, "base"),
        "other": fake(clock, [2.0, 4.0, 6.0], log, "other"),
    }
    results = timing.round_robin(implementations, repeats=3, warmup=0, calls=1, clock=clock)
    summary = timing.summarize(results, {"base": "base", "other": "base"})
    assert summary["other"]["ratios"] == pytest.approx([2.0, 2.0, 2.0])
    assert summary["other"]["median_ms"] == pytest.approx(4000.0)
    assert summary["base"]["median_ms"] == pytest.approx(2000.0)


def test_a_failing_implementation_is_dropped_and_reported() -> None:
    clock, log = FakeClock(), []
    state = {"n": 0}

    def flaky() -> None:
        state["n"] += 1
        if state["n"] == 3:
            raise RuntimeError("broke\nsecond line")
        clock.now += 1.0

    def broken() -> None:
        raise ValueError("never runs")

    implementations = {"ok": fake(clock, 1.0, log, "ok"), "flaky": flaky, "broken": broken}
    results = timing.round_robin(implementations, repeats=4, warmup=0, calls=1, clock=clock)
    assert len(results["ok"].seconds) == 4
    assert results["flaky"].seconds == [1.0, 1.0] and results["flaky"].error == "RuntimeError: broke"
    assert results["broken"].seconds == [] and "never runs" in results["broken"].error
    with pytest.raises(ValueError, match="repeats"):
        timing.round_robin(implementations, repeats=0)


def test_gemm_flops_against_a_hand_count() -> None:
    # LSTM at T=50, B=32, I=64, H=128: per step and sequence x W_ih^T (64 -> 512) and h W_hh^T
    # (128 -> 512), 2 flops per multiply-add
    per_step = 32 * (64 * 512 + 128 * 512) * 2
    assert suite.gemm_flops((50, 32, 64, 128), 4, training=False) == 50 * per_step == 314_572_800
    assert suite.gemm_flops((50, 32, 64, 128), 4, training=True) == 3 * 314_572_800
    assert suite.gemm_flops((1, 1, 1, 1), 3, training=False) == 2 * 2 * 3


def test_gemm_peak_reports_rates() -> None:
    peak = timing.gemm_peak(size=64, repeats=2, target_seconds=0.001)
    assert peak["peak_gflops"] >= peak["median_gflops"] > 0 and len(peak["gflops"]) == 2


def test_parse_shapes() -> None:
    assert suite.parse_shapes("50x32x64x128, 200X1x64x128") == [(50, 32, 64, 128), (200, 1, 64, 128)]
    for bad in ("50x32x64", "0x1x2x3", "ax1x2x3", ""):
        with pytest.raises(ValueError):
            suite.parse_shapes(bad)


def test_select_adds_baselines_and_drops_keras() -> None:
    keys = [peer.key for peer in peers.select(["user_lstm", "lstmkit_gru"], keras=False)]
    assert keys == ["nn_lstm", "user_lstm", "nn_gru", "lstmkit_gru"]
    assert not any(peer.keras for peer in peers.select(None, keras=False))
    with pytest.raises(ValueError, match="unknown implementation"):
        peers.select(["nope"])


def test_peers_build_working_calls_and_graph_names_the_engine() -> None:
    shape = (3, 2, 4, 5)
    for peer in peers.select(None, keras=False):
        if peer.unavailable():
            with pytest.raises(RuntimeError):  # the reason it gives holds
                peer.build(shape, False)()
            continue
        for mode in peer.modes:
            peer.build(shape, mode == "training")()
    run = peers.get("user_lstm").build(shape, True)
    assert suite.graph_of(run.forward()) != ""
    assert suite.graph_of(torch.nn.LSTM(4, 5)(torch.randn(3, 2, 4))[0]).startswith("autograd:")


def test_memory_probe_in_a_subprocess() -> None:
    if memory.unavailable_reason() is not None:
        pytest.skip(memory.unavailable_reason())
    figures = memory.measure("nn_lstm", (20, 8, 16, 32), threads=1, timeout=120)
    assert "error" not in figures, figures
    assert figures["peak_mb"] > 0 and figures["hwm_mb"] >= figures["peak_mb"]


def tiny_result() -> dict:
    """A hand-made result of two shapes, one implementation failed, memory for one shape."""
    implementations = {
        key: {
            "label": peers.get(key).label,
            "family": peers.get(key).family,
            "gates": 4,
            "baseline": peers.get(key).baseline,
        }
        for key in ("nn_lstm", "lstmkit_lstm", "user_lstm", "naive_lstm")
    }

    def row(ms: float | None, ratio: float | None, error: str | None = None) -> dict:
        return {
            "median_ms": ms,
            "times_ms": [] if ms is None else [ms, ms * 1.1],
            "ratio": ratio,
            "gflops": None if ms is None else 1.5,
            "peak_fraction": None if ms is None else 0.05,
            "error": error,
        }

    shapes = []
    for shape, memory_figures in (((100, 64, 256, 256), {"nn_lstm": {"peak_mb": 100.0}}), ((5, 1, 2, 3), {})):
        modes = {
            mode: {
                "nn_lstm": row(10.0, 1.0),
                "lstmkit_lstm": row(8.0, 0.8),
                "user_lstm": row(14.0, 1.4),
                "naive_lstm": row(None, None, "RuntimeError: boom"),
            }
            for mode in suite.MODES
        }
        memory_figures = {**memory_figures, "lstmkit_lstm": {"peak_mb": 70.0, "ratio": 0.7}} if memory_figures else {}
        shapes.append({"shape": list(shape), "modes": modes, "memory": memory_figures, "graph": {"nn_lstm": "x"}})
    result = {
        "machine": {"date": "2026-01-01", "cpu": "fake", "cpu_count": 2, "torch": "0", "lstmkit": "0"},
        "config": {"repeats": 2, "threads": 2, "steady_state": True},
        "gemm": {"peak_gflops": 30.0, "median_gflops": 29.0},
        "implementations": implementations,
        "skipped": {"keras_lstm": "--no-keras"},
        "memory_skipped": None,
        "shapes": shapes,
        "duration_s": 1.0,
    }
    result["targets"] = report.targets(result)
    return result


def test_targets_mark_pass_miss_and_missing() -> None:
    result = tiny_result()
    by_name = {row["target"]: row["cells"] for row in result["targets"]}
    training = by_name["lstmkit.LSTM training / nn.LSTM"]
    assert [cell["limit"] for cell in training] == [0.9, 1.0]
    assert [cell["status"] for cell in training] == ["pass", "pass"]
    user = by_name["user-defined cell training / nn.LSTM (large shapes)"]
    assert [cell["status"] for cell in user] == ["pass", "n/a"]  # only the large shapes have a limit
    assert by_name["lstmkit.GRU training / nn.GRU"][1]["status"] == "n/a"  # no GRU rows
    assert [cell["status"] for cell in by_name["naive loop / user-defined cell, training (speed-up)"]] == ["n/a"] * 2
    memory_cells = by_name["lstmkit.LSTM peak training memory / nn.LSTM"]
    assert [cell["status"] for cell in memory_cells] == ["pass", "n/a"]
    result["shapes"][0]["modes"]["training"]["lstmkit_lstm"]["ratio"] = 0.95
    assert report.targets(result)[0]["cells"][0]["status"] == "miss"


def check_tables(text: str) -> None:
    """Every markdown table has a separator row and the same number of cells in every row."""
    tables = re.findall(r"(?:^\|.*\|\n)+", text + "\n", re.MULTILINE)
    assert tables
    for table in tables:
        rows = table.strip().splitlines()
        assert re.fullmatch(r"\|(---\|)+", rows[1])
        assert len({row.count("|") for row in rows}) == 1, table


def test_report_writers(tmp_path) -> None:
    result = tiny_result()
    written = report.write_json(result, tmp_path / "out" / "results.json")
    assert json.loads(written.read_text()) == json.loads(json.dumps(result))
    text = report.write_markdown(result, tmp_path / "out" / "results.md").read_text()
    check_tables(text)
    assert "## Targets" in text and "## T=100, B=64, I=256, H=256" in text and "## T=5, B=1, I=2, H=3" in text
    assert "0.80 pass" in text and "RuntimeError: boom" in text and "--no-keras" in text


def test_cli_tiny_end_to_end(tmp_path) -> None:
    arguments = ["bench", "--shapes", "4x2x3x5", "--repeats", "2", "--warmup", "0", "--target-ms", "0"]
    arguments += ["--no-keras", "--no-memory", "--short-warmup", "--threads", "1", "--out-dir", str(tmp_path)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    raw = json.loads((tmp_path / "results.json").read_text())
    assert raw["machine"]["torch"] == torch.__version__ and raw["machine"]["lstmkit"] == lstmkit.__version__
    assert raw["gemm"]["peak_gflops"] > 0
    (entry,) = raw["shapes"]
    bf16_rows = any(peers.get(key).precision == "bf16" for summary in entry["modes"].values() for key in summary)
    assert ("bf16_peak_gflops" in raw["gemm"]) == (bf16_rows and bf16_hardware())  # emulated elsewhere: not timed
    assert entry["shape"] == [4, 2, 3, 5]
    for mode in suite.MODES:
        runnable = {peer.key for peer in peers.PEERS if not peer.keras and not peer.unavailable()}
        assert set(entry["modes"][mode]) == {key for key in runnable if mode in peers.get(key).modes}
        for key, row in entry["modes"][mode].items():
            assert row["error"] is None, (key, row)
            assert len(row["times_ms"]) == 2 and row["median_ms"] > 0 and row["gflops"] > 0
    assert entry["modes"]["training"]["nn_lstm"]["ratio"] == 1.0
    unavailable = {peer.key for peer in peers.PEERS if peer.unavailable()}
    assert set(raw["skipped"]) == {"keras_lstm", "keras_gru"} | unavailable
    text = (tmp_path / "results.md").read_text()
    check_tables(text)
    assert "lstmkit.LSTM training / nn.LSTM" in text


def test_cli_rejects_bad_options(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--shapes", "1x2x3", "--out-dir", str(tmp_path)])
    assert result.exit_code == 2 and "'--shapes'" in result.output and "T x B x I x H" in result.output
    result = runner.invoke(app, ["bench", "--only", "nope", "--out-dir", str(tmp_path)])
    assert result.exit_code == 2 and "'--only'" in result.output and "unknown implementation" in result.output
    assert not (tmp_path / "results.json").exists()
