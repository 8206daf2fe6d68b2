"""The benchmark suite: shapes, rows and the run (:mod:`.report` turns its result into the targets,
``results.md`` and ``results.json``).

For every shape and mode (inference, training step) all implementations are timed round-robin
(:mod:`.timing`); each row gets its median time, its median paired ratio to ``torch.nn.LSTM`` (or
``torch.nn.GRU``) of the same repetitions, its achieved GEMM rate and that rate as a fraction of the
machine's ``torch.mm`` rate in the row's precision (float32, or bfloat16 for the bf16 rows)
measured in the same run. Then the peak memory of one training step of every row, each in a fresh
process (:mod:`.memory`).
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import lstmkit
from lstmkit.engine.native.ops import is_native_node
from lstmkit.engine.precision import bf16_hardware

from . import memory, peers, timing
from .peers import Peer, Shape

SHAPES: tuple[Shape, ...] = (
    (50, 32, 64, 128),
    (100, 64, 256, 256),
    (100, 16, 512, 512),
    (200, 1, 64, 128),
    (20, 128, 128, 128),
)
QUICK_SHAPES: tuple[Shape, ...] = ((50, 32, 64, 128),)
LARGE_SHAPES: tuple[Shape, ...] = ((100, 64, 256, 256), (100, 16, 512, 512))
MODES = ("inference", "training")
GEMM_KEY = "torch.mm"
EXTRAS = ("peephole", "layernorm", "masked", "recurrent_dropout", "zoneout")

Progress = Callable[[str], None]
WARMUP_TEXT = {
    True: "lstmkit rows warmed up past the step count after which lstmkit compiles their steps",
    False: "short warm-up: lstmkit rows that compile their steps may time uncompiled steps",
}


@dataclass
class Config:
    shapes: list[Shape] = field(default_factory=lambda: list(SHAPES))
    repeats: int = 7
    warmup: int = 2
    target_ms: float = 50.0
    threads: int = 2
    memory: bool = True
    memory_jobs: int = 2  # memory children run side by side (memory does not depend on speed)
    keras: bool = True
    only: list[str] | None = None
    steady_state: bool = True  # warm lstmkit's auto-engine rows up past the compile threshold
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides) -> Config:
        settings = {
            "shapes": list(QUICK_SHAPES),
            "repeats": 3,
            "warmup": 1,
            "target_ms": 20.0,
            "steady_state": False,  # a compile (tens of seconds) does not fit in a minute
            "quick": True,
        }
        return cls(**{**settings, **overrides})


def parse_shapes(text: str) -> list[Shape]:
    """``"50x32x64x128,200x1x64x128"`` (T x B x I x H, comma-separated) into shapes."""
    shapes = []
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        parts = item.lower().replace("*", "x").split("x")
        if len(parts) != 4 or not all(part.isdigit() and int(part) > 0 for part in parts):
            raise ValueError(f"a shape is T x B x I x H of positive ints, e.g. 50x32x64x128; got {item!r}")
        shapes.append(tuple(int(part) for part in parts))
    if not shapes:
        raise ValueError("no shapes given")
    return shapes


def gemm_flops(shape: Shape, gates: int, training: bool) -> float:
    """Matrix-multiply flops of one call of a single-layer, single-direction recurrent layer.

    Forward: ``2 T B (I + H) G H`` (input and recurrent projections of G gate blocks). A training
    step adds the backward's two products of the same size per weight (input and weight
    gradients), so three times that."""
    T, B, I, H = shape
    forward = 2.0 * T * B * (I + H) * gates * H
    return 3 * forward if training else forward


def shape_name(shape: Shape) -> str:
    return ", ".join(map(str, shape))


def graph_of(output: torch.Tensor) -> str:
    """What computed ``output``: lstmkit's engines if one is in its graph (the native operator
    ``lstmkit::sequence_forward`` or the fused engine's autograd Function), else ``autograd: <top node>``."""
    seen: set = set()
    todo = [output.grad_fn]
    while todo and len(seen) < 500:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            return "lstmkit::sequence_forward" if is_native_node(node) else type(node).__name__.removesuffix("Backward")
        todo.extend(parent for parent, _ in node.next_functions)
    top = type(output.grad_fn).__name__ if output.grad_fn is not None else "none"
    return f"autograd: {top.removesuffix('Backward0')}"


def _steady_calls(peer: Peer, shape: Shape, config: Config, graph: str) -> int:
    """Warm-up calls so that lstmkit's compiled steps (``LSTMKIT_COMPILE=auto``) have kicked in,
    for rows whose training graph shows the engine that compiles (lstmkit's fused engine)."""
    from ..engine import compiling, fused

    if not (config.steady_state and peer.steady_state and graph == fused.FusedSequenceFunction.__name__):
        return 0
    mode = compiling.compile_mode()
    threshold = compiling.COMPILE_AFTER_STEPS
    if mode != "auto" or not threshold:
        return 0
    return math.ceil(threshold / shape[0]) + 2


def machine_info(threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from ..engine import native
    from ..engine.native.build import instruction_set
    from ..precision import detect_cpu

    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "lstmkit": lstmkit.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "native_engine": native.is_available(),
        "native_isa": instruction_set(),
        "reduced_precision": detect_cpu().description,
        "load_average_start": list(os.getloadavg()),
    }
    try:
        from ..engine import compiling

        info["lstmkit_compile"] = compiling.compile_mode()
    except (ImportError, AttributeError, ValueError):
        pass
    return info


def run(config: Config, progress: Progress | None = None) -> dict:
    """Run the suite; returns the result that :func:`write_json` and :func:`write_markdown` write."""
    say = progress or (lambda text: None)
    started = time.perf_counter()
    torch.set_num_threads(config.threads)
    skipped: dict[str, str] = {}
    keras_version = None
    if config.keras:
        keras, reason = peers.keras_status()
        if keras is None:
            skipped.update({peer.key: reason for peer in peers.PEERS if peer.keras})
        else:
            keras_version = keras.__version__
        torch.set_num_threads(config.threads)
    else:
        skipped.update({peer.key: "--no-keras" for peer in peers.PEERS if peer.keras})
    skipped.update({peer.key: reason for peer in peers.PEERS if (reason := peer.unavailable())})
    chosen = [peer for peer in peers.select(config.only, keras=config.keras) if peer.key not in skipped]
    machine = machine_info(config.threads)
    machine["keras"] = keras_version
    say(f"{machine['cpu']}, torch {machine['torch']}, {config.threads} threads; measuring the GEMM peak")
    gemm = timing.gemm_peak(repeats=max(3, config.repeats))
    say(f"torch.mm 1024^3 float32: {gemm['peak_gflops']:.1f} GFLOP/s peak, {gemm['median_gflops']:.1f} median")
    if any(peer.precision == "bf16" for peer in chosen):
        if bf16_hardware():
            gemm["bf16_peak_gflops"] = timing.gemm_peak(repeats=max(3, config.repeats), dtype="bfloat16")["peak_gflops"]
            say(f"torch.mm 1024^3 bfloat16: {gemm['bf16_peak_gflops']:.1f} GFLOP/s peak")
        else:  # emulated at ~1 GFLOP/s (a 1024^3 product takes seconds): no peak to compare the rows with
            say("torch.mm bfloat16 not timed: no bf16 hardware, so its products are emulated")
    gemm["start_gflops"] = list(gemm.pop("gflops"))
    gemm["interleaved_gflops"] = []
    gemm_run, gemm_flop_count = timing.gemm_call(int(gemm["size"]))
    memory_reason = memory.unavailable_reason() if config.memory else "--no-memory"
    shapes = []
    for shape in config.shapes:
        entry: dict = {"shape": list(shape), "modes": {}, "memory": {}}
        entry["graph"] = {peer.key: _graph(peer, shape) for peer in chosen}
        for mode in MODES:
            training = mode == "training"
            runs, errors = {}, {}
            for peer in chosen:
                if mode not in peer.modes:
                    continue
                try:
                    runs[peer.key] = peer.build(shape, training)
                except Exception as error:  # one peer failing to build must not stop the suite
                    errors[peer.key] = f"{type(error).__name__}: {error}"[:300]
            say(f"[{shape_name(shape)}] {mode}: {len(runs)} implementations, {config.repeats} repetitions")
            timings = timing.round_robin(
                {**runs, GEMM_KEY: gemm_run},  # the GEMM rate sampled among the rows, under the same load
                repeats=config.repeats,
                warmup=config.warmup,
                warmup_calls={
                    peer.key: _steady_calls(peer, shape, config, entry["graph"][peer.key]) for peer in chosen
                },
                target_seconds=config.target_ms / 1000,
                progress=lambda text: say("    " + text),
            )
            gemm["interleaved_gflops"] += [gemm_flop_count / t / 1e9 for t in timings.pop(GEMM_KEY).seconds]
            summary = timing.summarize(timings, {peer.key: peer.baseline for peer in chosen})
            for peer in chosen:
                if mode not in peer.modes:
                    continue
                row = summary.get(peer.key) or {"median_ms": None, "error": errors.get(peer.key)}
                flops = gemm_flops(shape, peer.gates, training)
                row["gflop"] = flops / 1e9
                median = row.get("median_ms")
                row["gflops"] = flops / (median / 1000) / 1e9 if median else None
                summary[peer.key] = row
                say("  " + _progress_line(peer, row))
            entry["modes"][mode] = summary
        # what ran once warmed up: lstmkit's fused engine hands a compiled user cell to the native loop
        entry["graph"] = {peer.key: _graph(peer, shape) for peer in chosen}
        if memory_reason is None:
            say(f"[{shape_name(shape)}] peak memory of one training step, one process per implementation")
            keys = [peer.key for peer in chosen if "training" in peer.modes]
            entry["memory"] = memory.measure_many(keys, shape, config.threads, jobs=config.memory_jobs)
            _memory_ratios(entry["memory"], chosen)
        shapes.append(entry)
    machine["load_average_end"] = list(os.getloadavg())
    _peak_fractions(gemm, shapes, {peer.key: peer.precision for peer in chosen})
    result = {
        "machine": machine,
        "config": {**asdict(config), "shapes": [list(shape) for shape in config.shapes]},
        "gemm": gemm,
        "implementations": {
            peer.key: {
                "label": peer.label,
                "family": peer.family,
                "gates": peer.gates,
                "baseline": peer.baseline,
                "precision": peer.precision,
            }
            | ({"note": peer.note} if peer.note else {})
            for peer in chosen
        },
        "skipped": skipped,
        "memory_skipped": memory_reason,
        "shapes": shapes,
        "duration_s": time.perf_counter() - started,
    }
    return result


def _peak_fractions(gemm: dict, shapes: list[dict], precisions: dict[str, str]) -> None:
    """The GEMM peak is the best torch.mm rate of the run (at the start and among the rows);
    every row's GEMM rate as a fraction of it, bf16 rows of the bfloat16 peak (int8 rows: none)."""
    gemm["peak_gflops"] = max(gemm["start_gflops"] + gemm["interleaved_gflops"])
    gemm["median_gflops"] = statistics.median(gemm["start_gflops"] + gemm["interleaved_gflops"])
    peaks = {"fp32": gemm["peak_gflops"], "bf16": gemm.get("bf16_peak_gflops")}
    for entry in shapes:
        for summary in entry["modes"].values():
            for key, row in summary.items():
                rate, peak = row.get("gflops"), peaks.get(precisions.get(key, "fp32"))
                row["peak_fraction"] = rate / peak if rate and peak else None


def _graph(peer: Peer, shape: Shape) -> str:
    try:
        torch.manual_seed(0)
        run = peer.build(shape, True)
        output = run.forward()
        return graph_of(output)
    except Exception as error:
        return f"? ({type(error).__name__})"


def _memory_ratios(figures: dict[str, dict], chosen: list[Peer]) -> None:
    for peer in chosen:
        row = figures.get(peer.key, {})
        base = figures.get(peer.baseline, {})
        if row.get("peak_mb") is not None and base.get("peak_mb"):
            row["ratio"] = row["peak_mb"] / base["peak_mb"]


def _progress_line(peer: Peer, row: dict) -> str:
    if row.get("median_ms") is None:
        return f"{peer.label:32s} failed: {row.get('error')}"
    ratio = row.get("ratio")
    versus = f"{ratio:5.2f} x {'nn.LSTM' if peer.family == 'lstm' else 'nn.GRU'}" if ratio is not None else ""
    return f"{peer.label:32s} {row['median_ms']:9.2f} ms  {versus}  {row['gflops']:6.1f} GFLOP/s"


# ----------------------------------------------------------------------------------------------
# targets (figures to report, not assertions)
