"""The `wan` command line: a thin layer over the Python API (CONTRACT section 5)."""

from __future__ import annotations

import signal
import sys

import typer

from wanstudio.cli import observe, trust  # noqa: F401  (they add their commands to `wan models`)
from wanstudio.cli.doctor import doctor
from wanstudio.cli.generate import generate
from wanstudio.cli.models import models_app
from wanstudio.cli.serve import serve
from wanstudio.config import Settings
from wanstudio.errors import WanError

app = typer.Typer(
    name="wan",
    help="Run WAN 2.2 video models yourself: models on disk, generation and an HTTP API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(models_app, name="models")
app.command("generate")(generate)
app.command("doctor")(doctor)
app.command("serve")(serve)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Log at DEBUG level to stderr."),
) -> None:
    from wanstudio.cli._logging import configure_logging

    try:
        settings = Settings.from_env()
    except WanError:  # the command itself reports bad settings, with their exit code
        settings = Settings()
    configure_logging("DEBUG" if verbose else settings.log_level or "WARNING", settings.log_format or "text")


def _raise_keyboard_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Entry point of the `wan` program: SIGTERM stops work like Ctrl-C (exit 130, partial data kept)."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    sys.exit(app())
