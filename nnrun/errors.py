"""Error types the CLI maps to exit codes (2 = bad input, 1 = failed run)."""


class NNRunError(Exception):
    """Base class: the message is the one line a user sees."""

    exit_code = 1
    prefix = "error"


class ConfigError(NNRunError):
    """A config or command-line input is invalid; nothing was started."""

    exit_code = 2
    prefix = "config error"

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class UsageError(NNRunError):
    """A command was asked for something that cannot be done (bad run dir, bad option)."""

    exit_code = 2
    prefix = "error"


class RunFailed(NNRunError):
    """Training or evaluation started and failed."""

    exit_code = 1
    prefix = "run failed"


class Pruned(Exception):
    """A search trial its pruner stopped after `epoch` (nnrun/search): recorded as `pruned`, not failed.
    `final_metrics` are the metrics of that last epoch; `nnrun train` sets `run_dir` when re-raising."""

    def __init__(self, epoch: int, final_metrics: dict, detail: str = ""):
        self.epoch, self.final_metrics, self.run_dir = epoch, final_metrics, None
        super().__init__(f"pruned at epoch {epoch}" + (f" ({detail})" if detail else ""))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM: unwinds like Ctrl-C (exit 143). The sweep runner and the search worker and
    supervisor install `raise_terminated` as their SIGTERM handler."""


def raise_terminated(signum, frame):
    raise Terminated()
