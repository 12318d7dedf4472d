"""The Keras callback that reports a trial's per-epoch metric to its study and stops it when
the pruner says so (imported only once TensorFlow is, by the search worker)."""

from __future__ import annotations

import keras

from nnrun.engine.train import final_of
from nnrun.errors import Pruned, RunFailed


class PruningReporter(keras.callbacks.Callback):
    """After each epoch's validation: report `metric` at step = epoch (counted from 1) and ask
    the pruner. A pruned trial stops at that epoch end, after nnrun's own callbacks have logged,
    checkpointed and backed it up (this callback runs last); fit then ends normally and
    on_train_end raises errors.Pruned, which `nnrun train` records as status `pruned`. The last
    epoch is never pruned: the trial has finished by then."""

    def __init__(self, trial, metric: str, epochs: int, monitor: str, higher_is_better: bool, lost_after_s: int):
        super().__init__()
        self.trial, self.metric, self.epochs, self.monitor = trial, metric, epochs, monitor
        self.higher = higher_is_better
        self.lost_after_s = lost_after_s
        self.rows: list[dict] = []
        self.pruned_at: int | None = None

    @property
    def last_value(self) -> float | None:
        return self.rows[-1].get(self.metric) if self.rows else None

    def on_epoch_end(self, epoch, logs=None):
        import optuna

        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.rows.append(row)
        if self.metric not in row:
            raise RunFailed(f"the search metric {self.metric!r} is not logged (logged: {', '.join(sorted(logs or {}))})")
        try:
            self.trial.report(row[self.metric], step=epoch + 1)
            prune = epoch + 1 < self.epochs and self.trial.should_prune()
        except optuna.exceptions.UpdateFinishedTrialError:
            raise RunFailed(f"the study gave this trial up while it ran (no heartbeat for {self.lost_after_s} s: "
                            "the database was unreachable?); it was re-queued") from None
        if prune:
            self.pruned_at = epoch + 1
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.pruned_at is not None:
            value = self.rows[-1][self.metric]
            raise Pruned(self.pruned_at, final_of(self.rows, self.monitor, self.higher), f"{self.metric} {value:.4f}")
