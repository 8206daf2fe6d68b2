"""The native engine's build cache (engine/native/build.py): a build is named by the hash of what
goes into it, so checkouts and virtual environments sharing the cache keep their builds side by side,
and a finished build is imported without the compiler, ninja or a message."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from lstmkit.engine.native import build
from lstmkit.engine.native.build import BUILD_MESSAGE, CSRC, build_directory, build_key, builds, instruction_set


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the native sources, as another checkout holds them."""
    return Path(shutil.copytree(CSRC, tmp_path / "checkout" / "csrc"))


def test_the_key_follows_every_byte_and_flag_and_nothing_else(checkout: Path, tmp_path: Path) -> None:
    files = [checkout / "lstm.cpp", checkout / "loop.h"]
    key = build_key(files, ["-O3", "-fopenmp"])
    assert len(key) == 16 and int(key, 16) >= 0
    assert build_key(files, ["-O3", "-fopenmp"]) == key  # stable
    assert build_key([CSRC / "lstm.cpp", CSRC / "loop.h"], ["-O3", "-fopenmp"]) == key  # the same bytes elsewhere
    assert build_key(files, ["-O3"]) != key and build_key(files, ["-O2", "-fopenmp"]) != key
    assert build_key(files, ["-O3 -fopenmp"]) != key  # flags are not just concatenated
    assert build_key(files[:1], ["-O3", "-fopenmp"]) != key
    source = bytearray(files[1].read_bytes())
    source[len(source) // 2] ^= 1  # one bit of one header
    files[1].write_bytes(bytes(source))
    changed = build_key(files, ["-O3", "-fopenmp"])
    assert changed != key
    source[len(source) // 2] ^= 1
    files[1].write_bytes(bytes(source))
    assert build_key(files, ["-O3", "-fopenmp"]) == key
    renamed = tmp_path / "other.h"
    shutil.copy(files[1], renamed)
    assert build_key([files[0], renamed], ["-O3", "-fopenmp"]) != key  # the name is part of what is built


def test_the_key_follows_torch_and_python(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [checkout / "rnn.cpp"]
    key = build_key(files, ["-O3"])
    monkeypatch.setattr(torch, "__version__", "2.99.0+cpu")
    assert build_key(files, ["-O3"]) != key
    monkeypatch.undo()
    monkeypatch.setattr(sys.implementation, "cache_tag", "cpython-399")
    assert build_key(files, ["-O3"]) != key
    monkeypatch.undo()
    assert build_key(files, ["-O3"]) == key


def test_builds_of_other_sources_go_to_folders_of_their_own(checkout: Path, tmp_path: Path) -> None:
    sources = [checkout / name for name in build.SOURCES]
    here = builds("lstmkit_native_x", [CSRC / name for name in build.SOURCES], tmp_path, [CSRC])
    other = builds("lstmkit_native_x", sources, tmp_path, [checkout])
    assert [b.folder for b in here] == [b.folder for b in other]  # two checkouts of the same code share
    assert [b.name for b in here] == ["lstmkit_native_x", "lstmkit_native_x_noomp"]
    assert here[0].folder != here[1].folder and "-fopenmp" in here[0].cflags and "-fopenmp" not in here[1].cflags
    assert all(b.folder.parent == tmp_path and b.folder.name.startswith(f"{b.name}-") for b in here)
    with (checkout / "common.h").open("a") as header:
        header.write("\n// another checkout's change\n")
    changed = builds("lstmkit_native_x", sources, tmp_path, [checkout])
    assert not {b.folder for b in changed} & {b.folder for b in here}  # a header change: a new build beside


def test_a_finished_build_loads_without_building_and_an_unfinished_one_says_it_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from torch.utils import cpp_extension

    from lstmkit.engine import native

    if not native.is_available():
        pytest.skip("the native engine cannot be built here")
    finished = next(b for b in build.native_builds() if b.marker.is_file())
    monkeypatch.setenv("LSTMKIT_EXTENSIONS_DIR", str(tmp_path))
    copy = build_directory(instruction_set()) / finished.folder.name
    shutil.copytree(finished.folder, copy)
    calls: list[str] = []
    monkeypatch.setattr(cpp_extension, "load", lambda name, **options: calls.append(name) or finished.load())
    capfd.readouterr()
    module = build.compile_module(*build._native())
    assert calls == [] and capfd.readouterr().err == ""  # imported as it is: no compiler, no ninja, no message
    assert module.__name__ == finished.name and "lstm" in module.kernels and callable(module.forward)
    (copy / finished.marker.name).unlink()  # a build that never finished
    build.compile_module(*build._native())
    assert calls == [finished.name] and capfd.readouterr().err == BUILD_MESSAGE + "\n"
    assert (copy / finished.marker.name).is_file()
    build.compile_module(*build._native())
    assert calls == [finished.name] and capfd.readouterr().err == ""
