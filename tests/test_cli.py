"""The ``lstmkit`` command: --help, --version, the examples, bad arguments and a closed pipe."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import lstmkit
from lstmkit.cli import app
from lstmkit.tasks.charlm.model import CharLM, CharLMConfig

runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "example" in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"lstmkit {lstmkit.__version__}"


def test_example_help_lists_every_example() -> None:
    result = runner.invoke(app, ["example", "--help"])
    assert result.exit_code == 0
    for name in ("lstm-outputs", "hihello", "all"):
        assert name in result.output


def test_lstm_outputs_example_prints_explained_states() -> None:
    result = runner.invoke(app, ["example", "lstm-outputs"])
    assert result.exit_code == 0, result.output
    for words in ("output sequence", "final hidden state", "final cell state", "backward h"):
        assert words in result.output


def test_hihello_example_learns() -> None:
    result = runner.invoke(app, ["example", "hihello", "--epochs", "50"])
    assert result.exit_code == 0, result.output
    assert "'ihello'" in result.output


def test_unknown_example_is_an_error() -> None:
    result = runner.invoke(app, ["example", "nope"])
    assert result.exit_code != 0
    assert "No such command" in result.output


def test_bad_epochs_is_an_error() -> None:
    result = runner.invoke(app, ["example", "hihello", "--epochs", "0"])
    assert result.exit_code != 0
    assert "epochs" in result.output


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["charlm", "train", "--max-steps", "0"], "Invalid value for '--max-steps'"),
        (["charlm", "gen"], "No such command 'gen'"),
        (["charlm", "predict"], "Missing argument 'prompt'"),
        (["pairs", "train", "--bogus"], "No such option: --bogus"),
        (["example", "hihello", "--epochs", "x"], "Invalid value for '--epochs'"),
    ],
)
def test_usage_errors_are_one_line_like_every_other_refusal(arguments: list[str], words: str) -> None:
    result = runner.invoke(app, arguments, prog_name="lstmkit")
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert result.stderr.count("\n") == 1, result.stderr
    command = " ".join(["lstmkit", *arguments[: 2 if arguments[0] != "charlm" or arguments[1] != "gen" else 1]])
    assert result.stderr.startswith(f"error: {words}") and result.stderr.endswith(f"(see '{command} --help')\n")


def test_a_group_without_a_command_prints_its_help() -> None:
    result = runner.invoke(app, ["charlm"], prog_name="lstmkit")
    assert "Usage: lstmkit charlm" in result.stdout and "generate" in result.stdout and result.stderr == ""


@pytest.mark.slow  # a fresh interpreter: about 7 s of imports
def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    """``lstmkit charlm generate ... | head -c 100``: the reader goes away, the writer stops without a word."""
    CharLM(CharLMConfig("ab", hidden_size=4, embedding_size=2)).save_pretrained(tmp_path)
    command = [sys.executable, "-m", "lstmkit", "charlm", "generate", "-c", str(tmp_path), "--length", "100000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert len(process.stdout.read(100)) == 100
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) != 0, "it stopped writing"
    assert "Broken pipe" not in stderr and "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


def _command_paths(command: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    children = getattr(command, "commands", None) or {}
    return [prefix, *(path for name, child in children.items() for path in _command_paths(child, (*prefix, name)))]


def test_flags_are_shown_without_a_value_in_every_help() -> None:
    """typer 0.29 showed '--resume <bool>', '--help <bool>': flags take no value."""
    paths = _command_paths(typer.main.get_command(app))
    assert len(paths) > 25
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "160"})
        assert result.exit_code == 0, (path, result.output)
        assert "--help " in result.output and "<bool>" not in result.output, (path, result.output)
    result = runner.invoke(app, ["charlm", "train", "--help"], env={"COLUMNS": "160"})
    assert re.search(r"--max-steps\s+<int range>", result.output) and re.search(r"--resume\s+Continue", result.output)


def test_the_command_line_starts_without_matplotlib() -> None:
    """Plotting libraries load when a figure is drawn, not with every command (~0.3 s of start-up)."""
    code = "import sys, lstmkit.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
