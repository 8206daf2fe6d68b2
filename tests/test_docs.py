"""The README and the pages in docs/ say what is true: their Python blocks run and pass their asserts,
their shell blocks name real commands and options, their relative links lead somewhere, and the
docstring examples run and say what they claim."""

import doctest
import importlib
import pkgutil
import re
import shlex
from pathlib import Path

import pytest
import typer.main

import lstmkit
from lstmkit.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.DOTALL)


def _python_blocks() -> list[tuple[str, int]]:
    return [(_name(page), index) for page in PAGES for index in range(len(_blocks(page, "python")))]


def test_readme_has_python_snippets() -> None:
    assert len(_blocks(README, "python")) >= 5


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = README.read_text(encoding="utf-8")
    assert [page.name for page in PAGES[1:] if f"docs/{page.name}" not in readme] == []


@pytest.mark.parametrize(("page", "index"), _python_blocks(), ids=lambda value: str(value))
def test_python_block_runs(page: str, index: int, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = _blocks(ROOT / page, "python")[index]
    exec(compile(code, f"{page} python block {index}", "exec"), {"__name__": "docs"})


def _command_lines() -> list[tuple[str, str]]:
    """Every line of every ``sh`` block (continuation lines joined), with its page."""
    return [
        (_name(page), line.strip())
        for page in PAGES
        for block in _blocks(page, "sh")
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip()
    ]


@pytest.mark.parametrize(("page", "line"), _command_lines(), ids=lambda value: str(value)[:60])
def test_shell_line_names_real_commands(page: str, line: str) -> None:
    """``lstmkit`` lines parse as the command line would parse them (commands, options, their values'
    types, the number of arguments), without running; ``make`` targets exist; scripts exist."""
    words = shlex.split(line, comments=True)
    if words[0] == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.MULTILINE)
        assert set(words[1:]) <= set(targets), f"{page}: {line}"
        return
    if words[0] == "python":
        assert (ROOT / words[1]).is_file(), f"{page}: {line}"
        return
    assert words[0].endswith("lstmkit"), f"{page}: a shell line this test does not know how to check: {line}"
    command, arguments, path = typer.main.get_command(app), words[1:], ["lstmkit"]
    while hasattr(command, "commands") and arguments and arguments[0] in command.commands:
        path.append(arguments[0])
        command = command.commands[arguments.pop(0)]
    if arguments == ["--help"]:
        return
    assert not hasattr(command, "commands"), f"{page}: no such command in {line!r}"
    command.make_context(" ".join(path), arguments)  # raises click's UsageError or BadParameter


def _github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    anchors: set[str] = set()
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE):
        anchor, n = _github_anchor(heading), 1
        while anchor in anchors:  # GitHub numbers repeated headings
            anchor, n = f"{_github_anchor(heading)}-{n}", n + 1
        anchors.add(anchor)
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_lead_somewhere(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        destination = (page.parent / file).resolve() if file else page
        exists = destination.exists()
        if not exists or (anchor and destination.suffix == ".md" and anchor not in _anchors(destination)):
            broken.append(target)
    assert broken == []


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
