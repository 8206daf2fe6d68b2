"""Reduced precision on the CPU: what the processor offers (bf16 and int8 hardware), the precision a
run uses (``auto``, ``bf16`` or ``fp32``) and the autocast context that runs a model at it.

``bf16`` runs the forward pass under ``torch.autocast("cpu", dtype=torch.bfloat16)``: the weights
stay float32 (the optimizer updates float32 master weights, and checkpoints are float32); matrix
products run in bfloat16 where autocast chooses to. ``auto`` picks ``bf16`` when the CPU has bf16
hardware (AVX512-BF16 or AMX-BF16), where it is fast, and ``fp32`` elsewhere, where bf16 would be
emulated.

    >>> resolve_precision("fp32")
    'fp32'
    >>> with autocast_for("bf16"):
    ...     torch.is_autocast_enabled("cpu")
    True
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "bf16", "fp32")
CPUINFO = "/proc/cpuinfo"


@dataclass(frozen=True)
class CpuPrecision:
    """What the CPU offers for reduced precision: bf16 hardware (``avx512_bf16``, ``amx_bf16``), int8
    hardware (``amx_int8``, and ``vnni``: ``"avx512_vnni"``, ``"avx_vnni"`` or ``None``), its vector
    instruction set as torch reports it (``vector``: ``"AVX512"``, ``"AVX2"``, ``"DEFAULT"`` ...) and
    where the flags came from (``source``).

    >>> cpu = CpuPrecision(avx512_bf16=True, amx_bf16=False, amx_int8=False, vnni="avx512_vnni", vector="AVX512")
    >>> cpu.bf16, cpu.description
    (True, 'AVX512-BF16 (no AMX), int8: AVX512-VNNI')
    """

    avx512_bf16: bool
    amx_bf16: bool
    amx_int8: bool
    vnni: str | None
    vector: str
    source: str = CPUINFO

    @property
    def bf16(self) -> bool:
        """Whether bfloat16 arithmetic runs in hardware (AVX512-BF16 or AMX-BF16)."""
        return self.avx512_bf16 or self.amx_bf16

    @property
    def description(self) -> str:
        """One line for benchmark headers and the command line, e.g. ``"AVX512-BF16 (no AMX), int8:
        AVX512-VNNI"`` or ``"no bf16 hardware (AVX2)"``."""
        bf16 = [name for name, present in (("AMX-BF16", self.amx_bf16), ("AVX512-BF16", self.avx512_bf16)) if present]
        first = f"no bf16 hardware ({self.vector})"
        if bf16:
            first = " + ".join(bf16) + ("" if self.amx_bf16 else " (no AMX)")
        int8 = (["AMX-INT8"] if self.amx_int8 else []) + ([self.vnni.upper().replace("_", "-")] if self.vnni else [])
        return first + (f", int8: {' + '.join(int8)}" if int8 else "")


def parse_cpu_flags(cpuinfo: str) -> set[str]:
    """The flags of the first processor in the text of ``/proc/cpuinfo`` (an empty set when it has
    no ``flags`` line, as on ARM, whose line is ``Features``).

    >>> sorted(parse_cpu_flags("processor\\t: 0\\nflags\\t\\t: fpu avx512_bf16 sse\\n\\nflags : other\\n"))
    ['avx512_bf16', 'fpu', 'sse']
    """
    for line in cpuinfo.splitlines():
        name, separator, value = line.partition(":")
        if separator and name.strip() == "flags":
            return set(value.split())
    return set()


def precision_from_flags(flags: set[str] | Mapping[str, object], vector: str, source: str = CPUINFO) -> CpuPrecision:
    """The :class:`CpuPrecision` of a CPU with ``flags`` (names as in ``/proc/cpuinfo``; a mapping of
    name to truth, as ``torch.cpu.get_capabilities()`` returns, works too).

    >>> precision_from_flags({"avx2", "avx_vnni"}, "AVX2").description
    'no bf16 hardware (AVX2), int8: AVX-VNNI'
    """
    present = {name for name in flags if not isinstance(flags, Mapping) or flags[name] is True}
    vnni = next((name for name in ("avx512_vnni", "avx_vnni") if name in present), None)
    return CpuPrecision("avx512_bf16" in present, "amx_bf16" in present, "amx_int8" in present, vnni, vector, source)


@functools.cache
def detect_cpu() -> CpuPrecision:
    """What this CPU offers, from ``/proc/cpuinfo``; where that cannot be read (not Linux), from
    torch's own detection (``torch.cpu.get_capabilities()`` where this torch has it, else no reduced
    precision hardware). The vector instruction set is ``torch.backends.cpu.get_cpu_capability()``."""
    vector = torch.backends.cpu.get_cpu_capability()
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as file:
            return precision_from_flags(parse_cpu_flags(file.read()), vector)
    except OSError:
        capabilities = getattr(torch.cpu, "get_capabilities", None)
        return precision_from_flags(capabilities() if capabilities else set(), vector, "torch")


def resolve_precision(choice: str, cpu: CpuPrecision | None = None) -> str:
    """The precision a run uses for the ``choice`` ``auto``, ``bf16`` or ``fp32``: ``auto`` is
    ``"bf16"`` when the CPU (``cpu``, default: this one) has bf16 hardware, else ``"fp32"``.

    >>> resolve_precision("auto", CpuPrecision(False, False, False, None, "AVX2"))
    'fp32'
    >>> resolve_precision("fp16")
    Traceback (most recent call last):
    ...
    ValueError: unknown precision 'fp16': expected auto, bf16 or fp32
    """
    if choice not in PRECISIONS:
        raise ValueError(f"unknown precision {choice!r}: expected auto, bf16 or fp32")
    if choice != "auto":
        return choice
    return "bf16" if (cpu or detect_cpu()).bf16 else "fp32"


def autocast_for(precision: str) -> contextlib.AbstractContextManager:
    """The context that runs a model at ``precision`` (``"bf16"`` or ``"fp32"``, as
    :func:`resolve_precision` returns): CPU autocast to bfloat16, or nothing."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"unknown precision {precision!r}: expected bf16 or fp32 (resolve 'auto' first)")
