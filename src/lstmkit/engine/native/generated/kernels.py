"""Generated kernels: a translated cell's C++ module built, registered with the native operators,
and cached per kind of cell.

:func:`kernel_for` is what the fused engine asks: it counts a kind of cell's time steps
(:class:`~lstmkit.engine.compiling.HotCounters`, keyed by :func:`~lstmkit.engine.compiling.fingerprint`),
translates and builds once the compile setting says so, and remembers a failure: a cell that does
not translate, or whose module does not build (one warning), runs on the Python loop from then on.
:func:`why_not` says why.
"""

from __future__ import annotations

import hashlib
import threading
from types import ModuleType

from ....cells import Cell
from ...compiling import HotCounters, WarnOnce, fingerprint
from ..build import CSRC, build_directory, compile_module, instruction_set
from ..ops import register_generated
from .tracing import Untranslatable
from .translation import Translation, translate


def build(translation: Translation) -> ModuleType:
    """The compiled module of a translation (cached on disk under the hash of everything it is made of)."""
    digest = hashlib.sha256(translation.source.encode())
    for header in sorted(CSRC.glob("*.h")):  # every header the cell's source may include
        digest.update(header.read_bytes())
    name = f"lstmkit_cell_{digest.hexdigest()[:16]}"
    directory = build_directory(instruction_set()) / "cells" / name
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / f"{name}.cpp"
    if not source.exists() or source.read_text() != translation.source:
        source.write_text(translation.source)
    return compile_module(name, [source], directory, include_paths=[CSRC])


_kernels = HotCounters()  # per kind of cell: (the operators' kernel name, its Translation)
_lock = threading.Lock()  # one translation and build at a time
_warn = WarnOnce()


def kernel_for(cell: Cell, steps: int, mode: str) -> tuple[str, Translation] | None:
    """The compiled kernel of ``cell`` -- the operators' kernel name
    (:func:`~lstmkit.engine.native.ops.register_generated`) and its translation -- when the compile
    ``mode`` (``"0"``, ``"1"``, ``"auto"``: see :mod:`lstmkit.engine.compiling`) asks for it and it
    could be made; counts ``steps`` towards the threshold of ``"auto"``."""
    if mode == "0":
        return None
    with _lock:
        counter = _kernels.count(fingerprint(cell), steps)
        if not counter.due(mode):
            return counter.compiled
        try:
            translation = translate(cell)
        except Untranslatable as error:
            counter.failed = str(error)
            return None
        try:
            module = build(translation)
            counter.compiled = (register_generated(module, translation.tensors, translation.summed, cell), translation)
        except Exception as error:  # compiler missing or failing on the generated code
            counter.failed = f"the generated C++ did not build ({type(error).__name__}: {error})"
            name = type(cell).__name__
            _warn(cell, f"lstmkit: {counter.failed}; {name} runs on the Python loop", stacklevel=3)
        return counter.compiled


def why_not(cell: Cell) -> str | None:
    """Why ``cell``'s kind runs on the Python loop rather than a generated kernel, once
    :func:`kernel_for` tried (``None``: it has a kernel, or was not tried yet)."""
    counter = _kernels.get(fingerprint(cell))
    return None if counter is None else counter.failed
