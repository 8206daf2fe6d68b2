"""What the two ways of compiling a user cell's step share.

A cell whose maths is all in :meth:`Cell.pointwise` runs on the fused engine (:mod:`.fused`). With
compilation on, its step is compiled one of two ways: translated to C++ and run in the native loop
(:mod:`.native.generated`), or, when it does not translate, traced and compiled step by step by
TorchInductor (:mod:`.fused_inductor`). Both read here:

* the setting: ``$LSTMKIT_COMPILE`` or :func:`set_compile` -- ``0`` never, ``1`` at first use,
  ``auto`` (default) once :data:`COMPILE_AFTER_STEPS` time steps have run with the same key (a
  compile costs as much as 10-20 thousand uncompiled small steps, so one-off calls and short test
  runs never pay it and a training loop does early on);
* :class:`HotCounters`: the time steps run per key, what was compiled for it or why it could not be;
* :class:`WarnOnce`: one warning per kind of cell when a compile fails;
* :class:`PointwiseModule`: the step as a module, for :func:`torch.func.functional_call` and
  ``make_fx``; :func:`fingerprint`, what makes two cells' steps the same code; :func:`parametrize_in`,
  cells whose tensors a trace would freeze.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..cells import Cell

COMPILE_VARIABLE = "LSTMKIT_COMPILE"
COMPILE_AFTER_STEPS = 2000  # under "auto": compile once this many steps ran with the same key

# ----------------------------------------------------------------------------------------------
# the setting


_compile_setting: str | None = None


def set_compile(mode: bool | str | None) -> None:
    """Compile the per-step maths: ``True``/``"1"`` at first use, ``False``/``"0"`` never,
    ``"auto"`` after :data:`COMPILE_AFTER_STEPS` steps; ``None`` follows ``$LSTMKIT_COMPILE``
    (unset: ``"auto"``)."""
    global _compile_setting
    _compile_setting = None if mode is None else parse_mode(mode, "set_compile")


def compile_mode() -> str:
    """``"0"``, ``"1"`` or ``"auto"``: the current compile setting (see :func:`set_compile`)."""
    if _compile_setting is not None:
        return _compile_setting
    return parse_mode(os.environ.get(COMPILE_VARIABLE) or "auto", COMPILE_VARIABLE)


def parse_mode(mode: bool | str, source: str) -> str:
    """``mode`` as ``"0"``, ``"1"`` or ``"auto"``; a ``ValueError`` naming ``source`` otherwise."""
    if isinstance(mode, bool):
        return "1" if mode else "0"
    text = str(mode).strip().lower()
    for value, spellings in (
        ("1", ("1", "true", "on", "yes")),
        ("0", ("0", "false", "off", "no")),
        ("auto", ("auto",)),
    ):
        if text in spellings:
            return value
    raise ValueError(f"{source} must be 0, 1 or auto, got {mode!r}")


# ----------------------------------------------------------------------------------------------
# when to compile


@dataclass
class Counter:
    """One key's time steps, what was compiled for it, and why it could not be (then never again)."""

    steps: int = 0
    compiled: Any = None
    failed: str | None = None

    def due(self, mode: str) -> bool:
        """Whether to compile now under ``mode``: not compiled nor failed yet, and ``"1"``, or
        ``"auto"`` with :data:`COMPILE_AFTER_STEPS` steps run."""
        if self.compiled is not None or self.failed is not None or mode == "0":
            return False
        return mode == "1" or self.steps >= COMPILE_AFTER_STEPS


class HotCounters:
    """A :class:`Counter` per key, the least recently counted dropped beyond ``size`` (``None``: no bound)."""

    def __init__(self, size: int | None = None) -> None:
        self.size = size
        self._counters: OrderedDict[Hashable, Counter] = OrderedDict()
        self._lock = threading.Lock()

    def count(self, key: Hashable, steps: int) -> Counter:
        """The counter of ``key`` (made if new) after adding ``steps`` to it."""
        with self._lock:
            counter = self._counters.pop(key, None) or Counter()
            self._counters[key] = counter
            while self.size is not None and len(self._counters) > self.size:
                self._counters.popitem(last=False)
            counter.steps += steps
            return counter

    def get(self, key: Hashable) -> Counter | None:
        return self._counters.get(key)

    def values(self) -> list[Counter]:
        return list(self._counters.values())

    def clear(self) -> None:
        self._counters.clear()

    def __len__(self) -> int:
        return len(self._counters)


class WarnOnce:
    """A ``RuntimeWarning`` the first time for each kind of cell (by class name)."""

    def __init__(self) -> None:
        self.warned: set[str] = set()

    def __call__(self, cell: Cell, message: str, stacklevel: int = 1) -> None:
        """``stacklevel`` as :func:`warnings.warn`'s, counted from the caller of this."""
        name = type(cell).__name__
        if name not in self.warned:
            self.warned.add(name)
            warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)


# ----------------------------------------------------------------------------------------------
# the step as a module


class PointwiseModule(nn.Module):
    """``cell.pointwise`` as a module's forward, for :func:`torch.func.functional_call`."""

    def __init__(self, cell: Cell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, xg: Tensor, hg: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return tuple(self.cell.pointwise(xg, hg, state)[0])

    def functional(
        self, names: Sequence[str], tensors: Sequence[Tensor], xg: Tensor, hg: Tensor, state: Sequence[Tensor]
    ) -> tuple[Tensor, ...]:
        """The new state, with the cell's parameters and buffers ``names`` replaced by ``tensors``
        (the traced functions' arguments); the others are the cell's own."""
        prefixed = {f"cell.{n}": t for n, t in zip(names, tensors, strict=True)}
        return torch.func.functional_call(self, prefixed, (xg, hg, tuple(state)), strict=False)


def fingerprint(cell: Cell) -> tuple:
    """The plain attributes (activations, eps, flags, ...) of the cell and its submodules, which a
    traced step bakes in: with the class, what makes two cells' steps the same code (parameters
    and buffers are arguments of that code; another tensor the cell holds counts by identity)."""
    items: list = [type(cell)]
    for prefix, module in cell.named_modules():
        items.append((prefix, type(module)))
        for name, value in sorted(vars(module).items()):
            if name.startswith("_"):
                continue
            try:
                hash(value)
                items.append((name, id(value) if isinstance(value, Tensor) else value))
            except TypeError:
                items.append((name, id(value)))
    return tuple(items)


def parametrize_in(cell: Cell) -> bool:
    """Whether a tensor of ``cell`` is parametrised (``torch.nn.utils.parametrize``): computed on
    access, so a trace would bake in its value."""
    return any(parametrize.is_parametrized(module) for module in cell.modules())
