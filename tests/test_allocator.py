"""keep_freed_memory (``lstmkit/allocator.py``): freed blocks stay in the process for the next step.

The oracle is the kernel's count of minor page faults (``getrusage``) over 20 repetitions of a step
that holds four 12 MB tensors at once, in a fresh process each way, both started with glibc's
mmap threshold at its initial 128 KB (``MALLOC_MMAP_THRESHOLD_``; glibc raises it as it goes, by an
amount that depends on what else the heap holds, which made the count without the setting anywhere
from 1 to 20 steps' pages): without the setting every step maps its blocks and faults all their pages
in again; with it, the blocks come from the heap and stay there.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import lstmkit

SCRIPT = """
import resource, sys, torch
import lstmkit
if sys.argv[1] == "keep":
    assert lstmkit.keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():
    live = [torch.empty(3 << 20).fill_(1.0) for _ in range(4)]
    del live
step()
before = faults()
for _ in range(20):
    step()
print(faults() - before)
"""
PAGES_PER_STEP = 4 * (12 << 20) // 4096


def faults_over_20_steps(mode: str) -> int:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 << 10)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_not_faulted_in_again() -> None:
    assert faults_over_20_steps("plain") >= 19 * PAGES_PER_STEP  # what the setting is for
    assert faults_over_20_steps("keep") < PAGES_PER_STEP


def test_off_glibc_it_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert lstmkit.keep_freed_memory() is False


def test_the_command_line_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from lstmkit import cli

    calls: list[bool] = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True) or True)
    result = CliRunner().invoke(cli.app, ["example", "lstm-outputs"])
    assert result.exit_code == 0, result.output
    assert calls == [True]
