"""The ``lstmkit`` command: --help, --version, the examples, and bad arguments."""

from typer.testing import CliRunner

import lstmkit
from lstmkit.cli import app

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
