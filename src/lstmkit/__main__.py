"""``python -m lstmkit`` runs the command line."""

from .cli import app

app(prog_name="lstmkit")
