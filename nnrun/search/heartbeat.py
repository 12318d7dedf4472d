"""A running trial's heartbeat: what tells the other workers that its worker is still alive
(a trial without one for the grace period is re-queued; see study.py)."""

from __future__ import annotations

import threading


class Heartbeat:
    """Records a running trial's heartbeat every `interval` seconds from a daemon thread (the
    worker's main thread is busy training)."""

    def __init__(self, rdb, trial_id: int, interval: int):
        self.rdb, self.trial_id, self.interval = rdb, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self.rdb.record_heartbeat(self.trial_id)
            except Exception:  # noqa: BLE001 - a database hiccup: try again next interval
                pass
            if self._stop.wait(self.interval):
                break
        try:
            self.rdb.remove_session()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)
