"""Compile the native engine on first use with ``torch.utils.cpp_extension.load``, cached per user.

The builds live under ``$LSTMKIT_EXTENSIONS_DIR`` or ``$TORCH_EXTENSIONS_DIR`` or
``~/.cache/lstmkit/torch_extensions``, in a folder per torch version, Python version and instruction
set (:func:`build_directory`), and there in a folder per build named by its key (:func:`build_key`):
a hash of the sources' and headers' contents, the compiler and linker flags, torch's version and
revision and Python's version and ABI. Two checkouts or two virtual environments sharing the cache
therefore keep their builds side by side instead of rebuilding each other's, and a build whose key
is marked done (``<name>.built``) is imported without running the compiler or ``ninja``. One line,
:data:`BUILD_MESSAGE`, goes to stderr whenever a build really runs.

``cpp_extension.load`` serialises concurrent builds with a lock file, which a process killed while
loading leaves behind; so lstmkit holds an ``flock`` (released by the kernel when its holder dies)
around the whole load, and removes any ``lock`` it finds once it holds it.

Instruction set: the best the CPU's ``/proc/cpuinfo`` flags allow, AVX-512 (16 float lanes; a few
per cent faster training steps than AVX2, docs/engine.md), AVX2 with FMA (``-mavx2 -mfma
-DCPU_CAPABILITY_AVX2 -DCPU_CAPABILITY=AVX2``), or a generic ``-O3`` build; ``LSTMKIT_ISA=avx2`` (or
``generic``) asks for a lesser one. Without the ``CPU_CAPABILITY`` defines ``at::vec::Vectorized``
silently falls back to scalar loops. Every build
has ``-fopenmp`` so that ``at::parallel_for`` really uses torch's threads (retried without it if
that build fails). If compilation fails (no compiler, no ninja, ...),
:func:`load_extension` warns once and returns ``None``; set ``LSTMKIT_NATIVE=0`` to skip the
native engine altogether.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import sys
import sysconfig
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from ...precision import CPUINFO, parse_cpu_flags

CSRC = Path(__file__).parent / "csrc"
SOURCES = ("bindings.cpp", "rnn.cpp", "lstm.cpp", "layernorm_lstm.cpp", "gru.cpp")  # + the headers in CSRC
BUILD_MESSAGE = "lstmkit: building the native engine (first use, ~30-120 s)..."

_lock = threading.Lock()
_module: ModuleType | None = None
_tried = False
_error: str | None = None


def cpu_flags() -> set[str]:
    """The ``flags`` of the first CPU in ``/proc/cpuinfo`` (empty off Linux)."""
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as info:
            return parse_cpu_flags(info.read())
    except OSError:
        return set()


# Instruction sets, best first: the CPU flags each needs and the compiler flags that select
# at::vec::Vectorized's implementation for it (16 float lanes with AVX-512, 8 with AVX2).
INSTRUCTION_SETS: dict[str, tuple[set[str], list[str]]] = {
    "avx512": (
        {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"},
        [
            "-mavx512f",
            "-mavx512bw",
            "-mavx512vl",
            "-mavx512dq",
            "-mfma",
            "-DCPU_CAPABILITY_AVX512",
            "-DCPU_CAPABILITY=AVX512",
        ],
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


def build_key(files: Sequence[Path], flags: Sequence[str]) -> str:
    """16 hex digits naming a build: the ``files``' names and contents, the compiler and linker
    ``flags``, torch's version and git revision, and Python's version and extension ABI. Builds with
    the same key are interchangeable; any other difference gets a key, and so a folder, of its own.

    >>> source = CSRC / "rnn.cpp"
    >>> build_key([source], ["-O3"]) == build_key([source], ["-O3"]) != build_key([source], ["-O2"])
    True
    """
    digest = hashlib.sha256()
    environment = [torch.__version__, str(torch.version.git_version), sys.implementation.cache_tag,
                   str(sysconfig.get_config_var("EXT_SUFFIX"))]  # fmt: skip
    for part in [*environment, *flags]:
        digest.update(part.encode() + b"\0")
    for file in files:
        content = file.read_bytes()
        digest.update(f"{file.name}\0{len(content)}\0".encode() + content)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Build:
    """One way to build an extension: its module name, compiler and linker flags, and the folder it
    is built in, named by its :func:`build_key`; ``<name>.built`` there marks a finished build."""

    name: str
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    folder: Path

    @property
    def marker(self) -> Path:
        return self.folder / f"{self.name}.built"

    def load(self) -> ModuleType | None:
        """The finished build's module, imported without the compiler or ninja; ``None`` if it is not built."""
        library = self.folder / f"{self.name}.so"
        if not (self.marker.is_file() and library.is_file()):
            return None
        spec = importlib.util.spec_from_file_location(self.name, library)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


def builds(name: str, sources: Sequence[Path], directory: Path, include_paths: Sequence[Path] = ()) -> list[Build]:
    """The builds :func:`compile_module` tries, in order: with OpenMP (libgomp is the one torch
    already loaded, same soname), then without (a compiler lacking it; single-threaded pointwise
    passes), each in a folder of ``directory`` named by the build's key over ``sources``, the headers
    in ``include_paths`` and the flags."""
    isa = instruction_set()
    files = [*sources, *sorted(header for path in include_paths for header in Path(path).glob("*.h"))]
    found = []
    for suffix, openmp in (("", True), ("_noomp", False)):
        cflags, ldflags = tuple(compile_flags(isa, openmp)), ("-fopenmp",) if openmp else ()
        key = build_key(files, [*cflags, "--", *ldflags])
        found.append(Build(name + suffix, cflags, ldflags, directory / f"{name}{suffix}-{key}"))
    return found


def compile_module(
    name: str, sources: list[Path], directory: Path, include_paths: Sequence[Path] = (), verbose: bool = False
) -> ModuleType:
    """The extension ``name`` from ``sources``: the first of :func:`builds` that is finished already,
    else built now (printing :data:`BUILD_MESSAGE` to stderr), with OpenMP if that compiles."""
    candidates = builds(name, sources, directory, include_paths)
    for build in candidates:
        module = build.load()
        if module is not None:
            return module
    try:
        return _compile(candidates[0], sources, include_paths, verbose, announce=True)
    except (RuntimeError, OSError, ImportError):
        return _compile(candidates[1], sources, include_paths, verbose, announce=False)


def _compile(
    build: Build, sources: Sequence[Path], include_paths: Sequence[Path], verbose: bool, announce: bool
) -> ModuleType:
    """``cpp_extension.load`` of one build under its folder's ``flock`` (unless another process
    finished it meanwhile), saying so on stderr if ``announce``; marks the build finished."""
    from torch.utils import cpp_extension

    build.folder.mkdir(parents=True, exist_ok=True)
    with open(build.folder / "lstmkit.flock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        module = build.load()
        if module is not None:
            return module
        (build.folder / "lock").unlink(missing_ok=True)  # we hold the flock: a cpp_extension lock is a dead process's
        _ensure_ninja_on_path()
        if announce:
            print(BUILD_MESSAGE, file=sys.stderr, flush=True)
        module = cpp_extension.load(
            name=build.name,
            sources=[str(source) for source in sources],
            extra_cflags=list(build.cflags),
            extra_ldflags=list(build.ldflags),
            extra_include_paths=[str(path) for path in include_paths],
            build_directory=str(build.folder),
            verbose=verbose,
        )
        build.marker.touch()
    return module


def _native() -> tuple[str, list[Path], Path, list[Path]]:
    """The native engine's ``name, sources, directory, include_paths`` for :func:`compile_module`."""
    isa = instruction_set()
    return f"lstmkit_native_{isa}", [CSRC / source for source in SOURCES], build_directory(isa), [CSRC]


def native_builds() -> list[Build]:
    """The native engine's :func:`builds` for this CPU's instruction set, from the sources as they are now."""
    return builds(*_native())


def _build(verbose: bool) -> ModuleType:
    return compile_module(*_native(), verbose=verbose)


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
