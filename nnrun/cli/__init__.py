"""The `nnrun` command line (the console entry point is `nnrun.cli:main`).

app       the typer app, consoles, usage lines, errors and signals -> one line and an exit code
commands  one function per command: parse, call the package below, print
tables    the rich tables the commands print
"""

from nnrun.cli import commands  # noqa: F401 - importing it registers the commands on the app
from nnrun.cli.app import app, main

__all__ = ["app", "main"]
