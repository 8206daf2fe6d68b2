"""The ``lstmkit`` command."""

from __future__ import annotations

import typer

from . import __version__
from .bench.cli import bench_command
from .inspect.cli import app as inspect_app
from .interop.cli import app as export_app
from .tasks.charlm.cli import app as charlm_app
from .tasks.classify.cli import app as classify_app
from .tasks.forecast.cli import app as forecast_app
from .tasks.pairs.cli import app as pairs_app

app = typer.Typer(help="lstmkit: LSTM-family recurrent networks, written gate by gate.", no_args_is_help=True)
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
