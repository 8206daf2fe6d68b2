"""How the commands speak to the user: ``console`` (stdout) for what a command prints, one line on
stderr for a note, a warning or an error, and :func:`user_errors`, which turns the library's input
errors into one red line that says what was expected and what came, exit code 2."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from ..training.trainer import TrainingDiverged

console = Console()
error_console = Console(stderr=True)


def print_note(note: str) -> None:
    """A note on stdout, ``note: <note>`` (brackets from a file shown, not read as markup)."""
    console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


def print_error(message: str, label: str = "error") -> None:
    """One line on stderr, ``<label>: <message>``, the label red (yellow for a ``"warning"``); brackets
    in the message (from a file: a column named ``[/]``) are shown, not read as markup."""
    style = "bold yellow" if label == "warning" else "bold red"
    error_console.print(f"[{style}]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's input errors, and a file or folder that cannot be read or written (a file
    where the output folder goes), into one clear line on stderr and exit code 2; a training run that
    diverged (its message names the step and the checkpoint kept) into one line and exit code 1. The
    line is plain text: brackets that came from a file (a column named ``[/]``) are shown, not read
    as markup. A closed pipe (``lstmkit ... | head``) is no input error: it goes on to the command line,
    which ends quietly."""
    try:
        yield
    except TrainingDiverged as error:
        print_error(str(error), "training stopped")
        raise typer.Exit(1) from None
    except BrokenPipeError:
        raise
    except (ValueError, KeyError, TypeError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        if isinstance(error, OSError) and error.filename is not None:
            message = f"{error.filename}: {error.strerror}"
        print_error(str(message))
        raise typer.Exit(2) from None
