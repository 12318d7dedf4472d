"""Callbacks nnrun adds to Keras' own: metrics.jsonl rows, rich progress, plain epoch lines."""

from __future__ import annotations

import sys
import time

import keras


def current_lr(optimizer) -> float:
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


class MetricsLog(keras.callbacks.Callback):
    """Append one JSON row per epoch to metrics.jsonl: epoch, step, split, every metric, lr, time."""

    def __init__(self, run, steps_per_epoch: int):
        super().__init__()
        self.run = run
        self.steps_per_epoch = steps_per_epoch
        self.history: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["learning_rate"] = current_lr(self.model.optimizer)  # TensorBoard logs it too
        row = {"epoch": epoch + 1, "step": (epoch + 1) * self.steps_per_epoch, "split": "train"}
        row.update({k: float(v) for k, v in logs.items()})
        row["epoch_time_s"] = round(time.perf_counter() - self._t0, 3)
        self.history.append(row)
        self.run.append_metrics(row)
        self.run.update(epochs_completed=epoch + 1)


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
