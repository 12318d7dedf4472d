"""Callbacks nnrun adds to Keras' own: metrics.jsonl rows, rich progress, plain epoch lines, the
backup for --resume, and checkpoints written atomically."""

from __future__ import annotations

import math
import sys
import time

import keras


def current_lr(optimizer) -> float:
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


class MetricsLog(keras.callbacks.Callback):
    """Append one JSON row per epoch to metrics.jsonl: epoch, step, split, every metric, lr, time."""

    def __init__(self, run, steps_per_epoch: int, history: list[dict] | None = None, techniques=()):
        super().__init__()
        self.run = run
        self.steps_per_epoch = steps_per_epoch
        self.history: list[dict] = list(history or [])
        self.techniques = techniques

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._train_s = None

    def on_test_begin(self, logs=None):
        if self._train_s is None:  # validation inside fit starts: the epoch's training part is over
            self._train_s = time.perf_counter() - self._t0

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["learning_rate"] = current_lr(self.model.optimizer)  # TensorBoard logs it too
        row = {"epoch": epoch + 1, "step": (epoch + 1) * self.steps_per_epoch, "split": "train"}
        row.update({k: float(v) for k, v in logs.items()})
        for technique in self.techniques:
            row.update(technique.epoch_state(epoch))
        row["epoch_time_s"] = round(time.perf_counter() - self._t0, 3)
        row["train_time_s"] = round(self._train_s if self._train_s is not None else row["epoch_time_s"], 3)
        self.history.append(row)
        self.run.append_metrics(row)
        self.run.update(epochs_completed=epoch + 1)


class TrackEpochs(keras.callbacks.Callback):
    """Hands each epoch row of MetricsLog to the MLflow tracker (placed right after MetricsLog).
    When fit starts, the rows of earlier attempts go too: the tracker skips the epochs the
    server has, so a kill between logging and sending loses none and repeats none."""

    def __init__(self, tracker, metrics_log: MetricsLog):
        super().__init__()
        self.tracker, self.metrics_log = tracker, metrics_log

    def on_train_begin(self, logs=None):
        for row in self.metrics_log.history:
            self.tracker.log_epoch(row)

    def on_epoch_end(self, epoch, logs=None):
        self.tracker.log_epoch(self.metrics_log.history[-1])


class EvalWeights(keras.callbacks.Callback):
    """Puts in place the weights that validation and checkpoints use (a technique's, e.g. the
    EMA) when validation starts and when the epoch ends; placed before the checkpoints."""

    def __init__(self, techniques):
        super().__init__()
        self.techniques = techniques

    def _eval_weights(self):
        for technique in self.techniques:
            technique.use_eval_weights(self.model)

    def on_test_begin(self, logs=None):
        self._eval_weights()

    def on_epoch_end(self, epoch, logs=None):  # also when there is no validation
        self._eval_weights()


class TrainWeights(keras.callbacks.Callback):
    """Puts the training weights back after the checkpoints, before the backup saves them, and
    when fit ends (also interrupted)."""

    def __init__(self, techniques):
        super().__init__()
        self.techniques = techniques

    def _train_weights(self):
        for technique in self.techniques:
            technique.use_train_weights(self.model)

    def on_epoch_end(self, epoch, logs=None):
        self._train_weights()

    def on_train_end(self, logs=None):
        self._train_weights()


class ScheduleEpochEnd(keras.callbacks.Callback):
    """A schedule that follows a metric (plateau) sees each epoch's logs; placed before the
    backup, which saves the state it changed."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def on_epoch_end(self, epoch, logs=None):
        self.schedule.epoch_end(dict(logs or {}))


class RichProgress(keras.callbacks.Callback):
    """A rich progress bar per epoch with live metrics (for interactive terminals)."""

    def __init__(self, epochs: int, steps: int, console):
        super().__init__()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.epochs, self.steps = epochs, steps
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=console,
            transient=False,
        )

    def on_train_begin(self, logs=None):
        self.progress.start()

    def on_epoch_begin(self, epoch, logs=None):
        self.task = self.progress.add_task("", total=self.steps, epoch=epoch + 1, epochs=self.epochs, metrics="")

    def on_train_batch_end(self, batch, logs=None):
        text = "  ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items())
        self.progress.update(self.task, completed=batch + 1, metrics=text)

    def on_epoch_end(self, epoch, logs=None):
        text = "  ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
        self.progress.update(self.task, completed=self.steps, metrics=text)

    def on_train_end(self, logs=None):
        self.progress.stop()


class EpochLines(keras.callbacks.Callback):
    """One plain line per epoch on stderr (for logs of batch jobs run with --verbose)."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        text = "  ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
        print(f"epoch {epoch + 1}/{self.epochs}  {text}  ({time.perf_counter() - self._t0:.1f}s)",
              file=sys.stderr, flush=True)


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, step: int):
        self.epoch, self.step = epoch, step
        super().__init__(f"non-finite loss at epoch {epoch} step {step}")


class Interrupted(KeyboardInterrupt):
    """Raised at a batch boundary after a backup was saved for SIGINT/SIGTERM."""

    def __init__(self, signum: int, position: dict):
        self.signum, self.position = signum, position
        super().__init__(f"signal {signum} at epoch {position['epoch'] + 1} step {position['step']}")


class Backup(keras.callbacks.Callback):
    """Saves the full training state (train_state.py): at train start if none exists, at every
    epoch end, every `every_steps` steps, and when a stop signal is pending. Also stops the
    run at the first non-finite loss, before anything bad is saved.

    The position is counted here (epoch, batches done), not derived from
    `optimizer.iterations`: a float16 LossScaleOptimizer does not count the steps it skips."""

    def __init__(self, directory, steps_per_epoch: int, every_steps: int | None, guard, save_on_signal=True):
        super().__init__()
        self.directory, self.steps, self.every, self.guard = directory, steps_per_epoch, every_steps, guard
        # Under multi_worker a save is a collective every worker must join; a signal reaches one
        # worker, so it stops without saving and the job resumes from the last epoch-end backup.
        self.save_on_signal = save_on_signal
        self.epoch, self.step, self.skip = 0, 0, 0
        self.saved = {"epoch": 0, "step": 0}

    def begin_segment(self, first_epoch: int, skip_steps: int) -> None:
        """Called before each fit: its first epoch starts `skip_steps` batches in."""
        self.epoch, self.step, self.skip = first_epoch, skip_steps, skip_steps

    def position(self) -> dict:
        iterations = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        return {"epoch": self.epoch, "step": self.step, "iterations": iterations}

    def save(self, position=None) -> dict:
        from nnrun.engine import train_state

        position = position or self.position()
        train_state.save(self.model, self.directory, position)
        self.saved = position
        return position

    def on_train_begin(self, logs=None):
        from nnrun.engine import train_state

        if not train_state.exists(self.directory):
            self.save()
        else:
            self.saved = train_state.read_position(self.directory)

    def on_epoch_begin(self, epoch, logs=None):
        self.skip = self.skip if epoch == self.epoch else 0
        self.epoch, self.step = epoch, self.skip

    def on_train_batch_end(self, batch, logs=None):
        self.step = self.skip + batch + 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLoss(self.epoch + 1, self.step)
        if self.guard is not None and self.guard.requested:
            raise Interrupted(self.guard.requested, self.save() if self.save_on_signal else self.saved)
        if self.every and self.step % self.every == 0 and self.step < self.steps:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        for key in ("loss", "val_loss"):  # the last update may have produced non-finite weights
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                raise NonFiniteLoss(epoch + 1, self.step)
        if self.step < self.steps and not self.model.stop_training:
            # Keras ends an epoch whose input ran out early with only a warning ("Your input ran
            # out of data"); backing it up as complete would make the run and its resume wrong.
            from nnrun.errors import RunFailed

            raise RunFailed(f"the training input ended after {self.step} of {self.steps} batches "
                            f"in epoch {epoch + 1}")
        self.epoch, self.step, self.skip = epoch + 1, 0, 0
        self.save()


class RestoreMetrics(keras.callbacks.Callback):
    """Puts back the metric accumulators of a resumed mid-epoch position (Keras resets
    metrics at each epoch start, after which this runs), so the epoch's metrics are the
    same as in an uninterrupted run."""

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def on_epoch_begin(self, epoch, logs=None):
        from nnrun.engine import train_state

        train_state.restore(self.model, self.directory, groups=("metrics",))


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose patience counter survives a resume and the fit segments of one
    run: every on_train_begin replays the epochs logged so far (`history` is the live list
    MetricsLog appends to)."""

    def __init__(self, history: list[dict], **kwargs):
        super().__init__(**kwargs)
        self.history = history

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.monitor_op is None:
            self._set_monitor_op()  # Keras sets it lazily at the first epoch end
        for row in self.history:
            current = row.get(self.monitor)
            if current is None:
                continue
            self.wait += 1
            if self._is_improvement(current, self.best):
                self.best, self.wait = current, 0


class AtomicCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint whose file is never half written: Keras saves best.keras / last.keras in
    place, so a kill during a save leaves a truncated checkpoint and a concurrent `evaluate`
    can read half a file. Here the model is saved to a temp file beside it, synced, and moved
    into place with os.replace (atomic on POSIX): readers see the old file or the new one.
    Keras decides when to save (`_should_save_model`: save_best_only, the monitor, the mode),
    exactly as ModelCheckpoint does; only the write differs."""

    def _save_model(self, epoch, batch, logs):
        import os

        filepath = str(self._get_file_path(epoch, batch, logs))
        if not self._should_save_model(epoch, batch, logs, filepath):
            return
        directory, name = os.path.split(filepath)
        os.makedirs(directory or ".", exist_ok=True)
        temp = os.path.join(directory, f".{name}.{os.getpid()}.tmp.keras")  # Keras needs the .keras suffix
        try:
            self.model.save(temp, overwrite=True)
            with open(temp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(temp, filepath)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
