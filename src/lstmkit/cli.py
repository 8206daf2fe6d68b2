"""The ``lstmkit`` command."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup, TyperOption

from . import __version__
from .allocator import keep_freed_memory
from .bench.cli import bench_command
from .commandline.messages import print_error
from .inspect.cli import app as inspect_app
from .interop.cli import app as export_app
from .tasks.charlm.cli import app as charlm_app
from .tasks.classify.cli import app as classify_app
from .tasks.forecast.cli import app as forecast_app
from .tasks.pairs.cli import app as pairs_app


class OneLineErrors(TyperGroup):
    """The ``lstmkit`` group. Click's usage errors (a bad option value, a missing argument, an unknown
    command or option), which typer draws as a panel under the usage, are one line on stderr like
    every other refusal, ``error: <what is wrong> (see '<command> --help')``, exit code 2. A closed
    pipe (``lstmkit ... | head``) ends the command quietly (typer's own handling, once the commands
    let it through)."""

    def main(self, *args: Any, standalone_mode: bool = True, **options: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **options)
        try:
            code = super().main(*args, standalone_mode=False, **options)
        except typer.TyperException as error:  # click's exceptions
            # a group given no command has printed its help (typer tells this error by its name too)
            if type(error).__name__ != "NoArgsIsHelpError":
                context = getattr(error, "ctx", None)
                hint = f" (see '{context.command_path} --help')" if context is not None else ""
                print_error(error.format_message().rstrip(".") + hint)
            sys.exit(error.exit_code)
        except typer.Abort:
            print_error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


_display_type_rich = TyperOption.display_type_rich


def _flags_take_no_value(self: TyperOption, ctx: Any) -> str | None:
    """An option's value type for the help (``<int>``), none for a flag: typer shows ``<bool>`` after
    ``--resume`` or ``--help``, which take no value."""
    return None if self.is_flag else _display_type_rich(self, ctx)


TyperOption.display_type_rich = _flags_take_no_value  # type: ignore[method-assign]

app = typer.Typer(help="lstmkit: LSTM-family recurrent networks, written gate by gate.", no_args_is_help=True,
                  cls=OneLineErrors)  # fmt: skip
example_app = typer.Typer(help="Run the seed examples.", no_args_is_help=True)
app.command("bench")(bench_command)
app.add_typer(example_app, name="example")
app.add_typer(charlm_app, name="charlm")
app.add_typer(pairs_app, name="pairs")
app.add_typer(classify_app, name="classify")
app.add_typer(forecast_app, name="forecast")
app.add_typer(export_app, name="export")
app.add_typer(inspect_app, name="inspect")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"lstmkit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version."),
) -> None:
    """lstmkit: LSTM-family recurrent networks, written gate by gate."""
    keep_freed_memory()  # every step's large buffers reused rather than faulted in again (allocator.py)


@example_app.command("lstm-outputs")
def example_lstm_outputs() -> None:
    """What LSTM(3) and Bidirectional(LSTM(3)) return: sequence output, h and c, explained."""
    from .seeds import print_lstm_outputs

    print_lstm_outputs()


@example_app.command("hihello")
def example_hihello(
    epochs: int = typer.Option(50, min=1, max=10_000, help="Training epochs per output layer."),
) -> None:
    """A character LSTM learns "hihell" -> "ihello"; softmax vs sigmoid vs relu output layers."""
    from .seeds import print_hihello

    print_hihello(epochs=epochs)


@example_app.command("all")
def example_all() -> None:
    """Every seed example, one after the other."""
    example_lstm_outputs()
    example_hihello(epochs=50)
