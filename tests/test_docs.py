"""The README's Python snippets and the docstring examples run and say what they claim."""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import lstmkit

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_readme_has_python_snippets() -> None:
    assert len(_readme_blocks()) >= 5


@pytest.mark.parametrize("index", range(len(_readme_blocks())))
def test_readme_snippet_runs(index: int, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = _readme_blocks()[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "readme"})


def _modules() -> list[str]:
    names = ["lstmkit"]
    for info in pkgutil.walk_packages(lstmkit.__path__, "lstmkit."):
        if not info.name.endswith("__main__"):  # running it is running the command line
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
