"""Open a finished run for inference: the one way evaluate, predict, export and explain start.

`open_run` checks what can be checked without TensorFlow (the run directory, the checkpoint's
name and file) with one set of messages; the config, the data facts, the eval transforms and
the model are then read on first use, in the order each command needs them. All four feed
the model through `pipeline.eval_inputs` (cast raw inputs, then the techniques' eval layers);
the model itself rescales and normalises. So there is one preprocessing path from raw inputs
to predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from nnrun.errors import UsageError, first_line
from nnrun.rundir import RunDir

CHECKPOINTS = ("best", "last")


@dataclass
class DataFacts:
    """What inference needs to know about a run's data without loading it: run.json's "data"
    record (class names, raw input shape and dtype, the preprocessing the model applies)."""

    class_names: list[str]
    num_classes: int
    input_shape: tuple
    input_dtype: str
    preprocess: dict | None
    task: str = "classification"
    train_size: int | None = None  # image_folder's storage_size: the side training crops to

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3


class FinishedRun:
    """A run directory opened for inference with one of its checkpoints (see `open_run`)."""

    def __init__(self, run: RunDir, checkpoint: str):
        self.run, self.checkpoint = run, checkpoint
        self.checkpoint_path = run.checkpoints / f"{checkpoint}.keras"

    @cached_property
    def cfg(self):
        """The run's resolved config (RunDir.read_config)."""
        return self.run.read_config()

    @cached_property
    def facts(self) -> DataFacts:
        """The run's data facts from run.json; runs recorded before run.json held them rebuild the data."""
        record = self.run.read().get("data")
        if not record:
            from nnrun.engine.build import build_data

            record = build_data(self.cfg).describe()
        return DataFacts(list(record["class_names"]), int(record["num_classes"]), tuple(record["input_shape"]),
                         record["input_dtype"], record.get("preprocess"), record.get("task", "classification"),
                         record.get("train_size"))

    def eval_techniques(self, num_train: int | None = None) -> list:
        """The run's techniques, built as in training, for their eval transforms (e.g. eval_size).
        `num_train` (what the techniques' step counts use) defaults to the recorded training size."""
        from nnrun.engine import build

        if num_train is None:
            num_train = self.run.read().get("data", {}).get("num_train") or self.cfg.data.batch_size
        return build.build_techniques(self.cfg, build.technique_context(self.cfg, self.facts, num_train=num_train))

    def setup_runtime(self):
        """Configure TensorFlow for this run (threads, seeds, determinism, dtype policy)."""
        from nnrun.engine import runtime

        return runtime.setup(self.cfg)

    def load_model(self):
        """Load the checkpoint with safe_mode (no arbitrary code from model files)."""
        import keras

        from nnrun.components.custom_objects import load_all

        load_all()  # registers nnrun's custom layers (siamese pairs, attention) so safe_mode can rebuild them
        try:
            return keras.saving.load_model(self.checkpoint_path, compile=False, safe_mode=True)
        except ValueError as exc:  # e.g. a Lambda layer: safe_mode refuses to deserialise code
            raise UsageError(f"refusing to load {self.checkpoint_path}: {first_line(exc)}") from None


def open_run(run_dir: str | Path, checkpoint: str = "best") -> FinishedRun:
    """The run at `run_dir` with checkpoints/<checkpoint>.keras, or a UsageError (exit 2, before
    TensorFlow is imported) naming what is wrong."""
    if checkpoint not in CHECKPOINTS:
        raise UsageError(f"--checkpoint must be best or last, got {checkpoint!r}")
    opened = FinishedRun(RunDir.open(run_dir), checkpoint)
    if not opened.checkpoint_path.is_file():
        raise UsageError(f"run has no checkpoint checkpoints/{checkpoint}.keras (did training finish?): "
                         f"{opened.run.path}")
    return opened
