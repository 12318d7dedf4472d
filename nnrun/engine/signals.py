"""Ctrl-C and SIGTERM during training: inside `fit` they only set a flag, so the Backup callback
can save at the next batch boundary and stop; outside it they interrupt at once."""

from __future__ import annotations

import signal

from nnrun.errors import Terminated


class SignalGuard:
    """SIGINT/SIGTERM during fit only set a flag; the Backup callback saves at the next batch
    boundary and stops. Outside fit they interrupt at once."""

    def __init__(self):
        self.requested: int | None = None
        self.in_fit = False
        self._previous = {}

    def _handle(self, signum, frame):
        if self.in_fit and self.requested is None:
            self.requested = signum
            return
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (library use): leave signals alone
                pass
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
