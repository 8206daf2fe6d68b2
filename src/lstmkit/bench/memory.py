"""Peak memory of one training step, each measured in a fresh Python process.

The child builds the implementation, runs one training step as a warm-up (libraries, kernels and
caches load then), resets the kernel's high-water mark of its resident set by writing ``5`` to
``/proc/self/clear_refs``, runs a second step and reads ``VmHWM`` from ``/proc/self/status``. The
figure is ``VmHWM - VmRSS`` at the reset: the memory the step needs on top of the model and its
input (activations kept for backward, gradients, workspaces).

Why a fresh process and not ``ru_maxrss`` or the current one: ``ru_maxrss`` never goes down and a
forked child inherits its parent's, and a process that ran other implementations keeps freed
memory resident. Within the child, memory the warm-up step freed must not stay resident either, or
the measured step reuses it and its peak reads low: the child runs with ``MALLOC_MMAP_THRESHOLD_``
fixed (glibc otherwise raises its mmap threshold after the first large free, so large tensors move
into the heap) and calls ``malloc_trim(0)`` before the reset, which hands the heap's free pages back.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "KERAS_BACKEND": "torch"}
_CHILD = "import sys; from lstmkit.bench.memory import child_main; child_main(sys.argv[1])"


def read_status_mb(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...) in MiB."""
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {field} in {STATUS}")
    return int(match.group(1)) / 1024


def reset_peak() -> None:
    """Set this process's ``VmHWM`` to its current resident set (Linux >= 4.0)."""
    CLEAR_REFS.write_text("5")


def unavailable_reason() -> str | None:
    """Why peak memory cannot be measured here (``None`` when it can)."""
    try:
        read_status_mb("VmHWM")
        reset_peak()
    except (OSError, RuntimeError) as error:
        return f"cannot read or reset VmHWM ({type(error).__name__}: {error})"
    return None


def release_free_memory() -> None:
    """Return the C heap's free pages to the kernel (glibc ``malloc_trim``; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def peak_of(run, warmup: int = 1) -> dict[str, float]:
    """Peak extra resident memory (MiB) of one call of ``run`` in this process, after ``warmup``
    calls. Only meaningful in a fresh process (see the module docstring)."""
    for _ in range(warmup):
        run()
    gc.collect()
    release_free_memory()
    reset_peak()
    before = read_status_mb("VmRSS")
    run()
    peak = read_status_mb("VmHWM")
    return {"peak_mb": peak - before, "rss_before_mb": before, "hwm_mb": peak}


def child_main(argument: str) -> None:
    """Entry point of the child: build one implementation's training step, print its peak as JSON."""
    request = json.loads(argument)
    import torch

    torch.set_num_threads(int(request["threads"]))
    from . import peers

    run = peers.get(request["key"]).build(tuple(request["shape"]), True)
    print(json.dumps(peak_of(run, warmup=int(request.get("warmup", 1)))))


def measure(key: str, shape: tuple[int, int, int, int], threads: int = 2, timeout: float = 600.0) -> dict:
    """Peak memory of one training step of peer ``key`` at ``shape``, in a fresh process.

    Returns the child's figures, or ``{"error": ...}`` when the child failed."""
    request = json.dumps({"key": key, "shape": list(shape), "threads": threads})
    env = {**os.environ, **CHILD_ENV}
    if env.get("LSTMKIT_COMPILE", "auto").strip().lower() == "auto":
        env["LSTMKIT_COMPILE"] = "1"  # the timed rows ran past the compile threshold: the same engine here
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, request],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"error": (lines[-1] if lines else f"exit code {done.returncode}")[:300]}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"unreadable child output: {done.stdout[-200:]!r}"}


def measure_many(
    keys: list[str], shape: tuple[int, int, int, int], threads: int = 2, jobs: int = 1, timeout: float = 600.0
) -> dict[str, dict]:
    """:func:`measure` for every key, ``jobs`` children at a time (each its own process, so running
    them side by side changes their speed, not their memory)."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {key: pool.submit(measure, key, shape, threads, timeout) for key in keys}
        return {key: future.result() for key, future in futures.items()}
