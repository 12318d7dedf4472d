"""The typer app and what every command shares: the consoles, man-page usage lines, and the
one place where errors, Ctrl-C and SIGTERM become one stderr line and the documented exit code."""

from __future__ import annotations

import functools
import os
import shlex
import sys
import typing

import typer
from rich.console import Console
from typer.core import TyperCommand

from nnrun.errors import NNRunError, first_line
from nnrun.safe_text import mask_credentials, one_line

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Train, evaluate and inspect Keras experiments described by one YAML config.",
)
# Not a terminal (pipes, CI logs): wide enough that tables never fold run names or numbers.
stdout = Console(width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True)
_state = {"debug": False, "console_entry": False}


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    _state["debug"] = debug


class Command(TyperCommand):
    """Usage lines as man pages write them (`RUN_DIR`, `[CONFIG]`), not typer's `{run_dir}`."""

    def collect_usage_pieces(self, ctx):
        return [piece[1:].replace("}", "", 1) if piece.startswith("{") else piece
                for piece in super().collect_usage_pieces(ctx)]


def handled(command):
    """Turn nnrun errors, Ctrl-C and SIGTERM into one stderr line and the documented exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except NNRunError as exc:
            _fail(exc.prefix, str(exc), exc.exit_code)
        except KeyboardInterrupt as exc:
            code, what = (143, "terminated (SIGTERM)") if type(exc).__name__ == "Terminated" \
                else (130, "interrupted (Ctrl-C)")
            run_dir = getattr(exc, "run_dir", None)  # set by `nnrun train` once its run directory exists
            if run_dir is not None:  # the run directory stays the last stdout line, as when completed
                then = (f"continue with: nnrun train --resume {shlex.quote(str(run_dir))}"
                        if getattr(exc, "resumable", False) else "before its first backup: nothing to resume")
                _fail("interrupted", f"{what}; {then}", code, last_line=str(run_dir))
            _fail("interrupted", what, code)
        except BrokenPipeError as exc:
            if not _stdout_closed():
                _fail("internal error", internal_error_line(exc), 1)
            # The reader of stdout went away (`nnrun schema | head`): stop quietly with the
            # SIGPIPE status, as shell tools do; stdout goes to /dev/null so the interpreter's
            # last flush cannot print a traceback (the recipe of Python's signal docs).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback with --debug
            _fail("internal error", internal_error_line(exc), 1)

    return wrapper


def _stdout_closed() -> bool:
    """Whether stdout's reader is gone: on a pipe without a reader, poll() reports an error on
    its write end (flushing is no test: the failed write already dropped its buffer)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


MAX_INTERNAL_ERROR = 300  # characters: TensorFlow's messages can hold whole tensors


def internal_error_line(exc: BaseException) -> str:
    """An unexpected exception as one short line: its type and first line, cut at
    MAX_INTERNAL_ERROR characters (--debug prints the whole traceback)."""
    text = f"{type(exc).__name__}: {first_line(exc)}"
    if len(text) > MAX_INTERNAL_ERROR:
        text = text[:MAX_INTERNAL_ERROR].rstrip() + "... (cut; --debug shows it whole)"
    return text


def _fail(prefix: str, message: str, code: int, last_line: str | None = None) -> typing.NoReturn:
    """The one place an error becomes output: one line (control characters made visible), any
    password in it masked, and the exit code."""
    if _state["debug"]:
        import traceback

        traceback.print_exc()
    print(f"{prefix}: {mask_credentials(one_line(message))}", file=sys.stderr, flush=True)
    if last_line is not None:
        print(last_line, flush=True)
    sys.exit(code)


def main() -> None:
    """Console entry point."""
    _state["console_entry"] = True  # a process of its own (not typer's CliRunner in a test)
    app()
