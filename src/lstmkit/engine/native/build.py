"""Compile the native engine on first use with ``torch.utils.cpp_extension.load``, cached per user.

The build directory is ``$LSTMKIT_EXTENSIONS_DIR`` or ``$TORCH_EXTENSIONS_DIR`` or
``~/.cache/lstmkit/torch_extensions``, with a sub-directory per torch version, Python version and
instruction set, so a cached build is never loaded into the wrong torch. ``cpp_extension.load``
rebuilds when a source file or a flag changes and serialises concurrent builds with a lock file,
which a process killed while loading leaves behind; so lstmkit holds an ``flock`` (released by the
kernel when its holder dies) around the whole load, and removes any ``lock`` it finds once it holds it.

Instruction set: the best the CPU's ``/proc/cpuinfo`` flags allow, AVX-512 (16 float lanes; measured
4-6% faster training steps than AVX2 at (50, 32, 64, 128) and (20, 128, 128, 128) on this project's
machine), AVX2 with FMA (``-mavx2 -mfma -DCPU_CAPABILITY_AVX2 -DCPU_CAPABILITY=AVX2``), or a generic
``-O3`` build; ``LSTMKIT_ISA=avx2`` (or ``generic``) asks for a lesser one. Without the
``CPU_CAPABILITY`` defines ``at::vec::Vectorized`` silently falls back to scalar loops. Every build
has ``-fopenmp`` so that ``at::parallel_for`` really uses torch's threads (retried without it if
that build fails). If compilation fails (no compiler, no ninja, ...),
:func:`load_extension` warns once and returns ``None``; set ``LSTMKIT_NATIVE=0`` to skip the
native engine altogether.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

CSRC = Path(__file__).parent / "csrc"
SOURCES = ("bindings.cpp", "rnn.cpp", "lstm.cpp", "layernorm_lstm.cpp", "gru.cpp")  # + common.h, loop.h

_lock = threading.Lock()
_module: ModuleType | None = None
_tried = False
_error: str | None = None


def cpu_flags() -> set[str]:
    """The ``flags`` of the first CPU in ``/proc/cpuinfo`` (empty off Linux)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# Instruction sets, best first: the CPU flags each needs and the compiler flags that select
# at::vec::Vectorized's implementation for it (16 float lanes with AVX-512, 8 with AVX2).
INSTRUCTION_SETS: dict[str, tuple[set[str], list[str]]] = {
    "avx512": (
        {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"},
        ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-DCPU_CAPABILITY_AVX512",
         "-DCPU_CAPABILITY=AVX512"],
    ),
    "avx2": ({"avx2", "fma"}, ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]),
    "generic": (set(), []),
}


def instruction_set() -> str:
    """The best of :data:`INSTRUCTION_SETS` this CPU has, or ``$LSTMKIT_ISA`` if it names one the CPU
    has (``avx2`` keeps 8-lane code on a CPU whose AVX-512 clocks down)."""
    flags = cpu_flags()
    available = [isa for isa, (needs, _) in INSTRUCTION_SETS.items() if needs <= flags]
    requested = os.environ.get("LSTMKIT_ISA", "")
    return requested if requested in available else available[0]


def compile_flags(isa: str, openmp: bool = True) -> list[str]:
    flags = ["-O3", *INSTRUCTION_SETS[isa][1]]
    if openmp:  # at::parallel_for is inline OpenMP code: without -fopenmp it runs on one thread
        flags.append("-fopenmp")
    return flags


def build_directory(isa: str) -> Path:
    root = os.environ.get("LSTMKIT_EXTENSIONS_DIR") or os.environ.get("TORCH_EXTENSIONS_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "lstmkit" / "torch_extensions"
    torch_version = torch.__version__.replace("+", "_")
    return base / f"torch{torch_version}_py{sys.version_info.major}{sys.version_info.minor}_{isa}"


def _ensure_ninja_on_path() -> None:
    """cpp_extension runs ``ninja`` from PATH; pip's ``ninja`` lives next to the interpreter."""
    if shutil.which("ninja"):
        return
    candidates = [Path(sys.executable).parent]
    try:
        import ninja  # type: ignore[import-not-found]

        candidates.insert(0, Path(ninja.BIN_DIR))
    except (ImportError, AttributeError):
        pass
    for directory in candidates:
        if (directory / "ninja").exists():
            os.environ["PATH"] = f"{directory}{os.pathsep}{os.environ.get('PATH', '')}"
            return


def compile_module(
    name: str, sources: list[Path], directory: Path, include_paths: list[Path] = (), verbose: bool = False
) -> ModuleType:
    """Build (or load from ``directory``) the extension ``name`` from ``sources``, with OpenMP,
    else without it; the build is serialised across processes by an ``flock`` (see the module docstring)."""
    from torch.utils import cpp_extension

    _ensure_ninja_on_path()
    isa = instruction_set()
    directory.mkdir(parents=True, exist_ok=True)
    common = {
        "sources": [str(source) for source in sources],
        "extra_include_paths": [str(path) for path in include_paths],
        "build_directory": str(directory),
        "verbose": verbose,
    }
    with open(directory / "lstmkit.flock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        (directory / "lock").unlink(missing_ok=True)  # we hold the flock: any cpp_extension lock is a dead process's
        try:
            # libgomp is the one torch already loaded (same soname), so there is one OpenMP runtime.
            return cpp_extension.load(
                name=name, extra_cflags=compile_flags(isa, openmp=True), extra_ldflags=["-fopenmp"], **common
            )
        except (RuntimeError, OSError, ImportError):
            # e.g. a compiler without OpenMP: build single-threaded pointwise passes instead
            return cpp_extension.load(name=f"{name}_noomp", extra_cflags=compile_flags(isa, openmp=False), **common)


def _build(verbose: bool) -> ModuleType:
    isa = instruction_set()
    sources = [CSRC / source for source in SOURCES]
    return compile_module(f"lstmkit_native_{isa}", sources, build_directory(isa), verbose=verbose)


def load_extension(verbose: bool = False) -> ModuleType | None:
    """The compiled extension module, building it on first call; ``None`` if it cannot be built.

    The first failure emits one warning (with the compiler's message) and is remembered, so
    callers can fall back to the reference engine without repeating the attempt.
    """
    global _module, _tried, _error
    if _tried:
        return _module
    with _lock:
        if _tried:
            return _module
        if os.environ.get("LSTMKIT_NATIVE", "1") == "0":
            _error = "disabled by LSTMKIT_NATIVE=0"
        else:
            try:
                _module = _build(verbose)
            except Exception as error:  # compiler missing, ninja missing, build error, ...
                _error = f"{type(error).__name__}: {error}"
                warnings.warn(
                    f"lstmkit: the native engine could not be built, falling back to the reference loop ({_error})",
                    RuntimeWarning,
                    stacklevel=2,
                )
        _tried = True
    return _module


def unavailable_reason() -> str | None:
    """Why :func:`load_extension` returned ``None`` (after it was called), else ``None``."""
    return _error
