"""Open a finished run for inference: its config, checkpoint, data description and eval transforms.

evaluate, predict, export and explain all go through here, and all feed the model through
`pipeline.eval_inputs` (cast raw inputs, then the techniques' eval layers); the model itself
rescales and normalises. So there is one preprocessing path from raw inputs to predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nnrun.rundir import RunDir
from nnrun.errors import UsageError, first_line

CHECKPOINTS = ("best", "last")


def check_checkpoint(run: RunDir, which: str) -> Path:
    """checkpoints/<which>.keras of the run, or a UsageError (before TensorFlow is imported)."""
    if which not in CHECKPOINTS:
        raise UsageError(f"--checkpoint must be best or last, got {which!r}")
    path = run.checkpoints / f"{which}.keras"
    if not path.is_file():
        raise UsageError(f"run has no checkpoint {path.relative_to(run.path)} (did training finish?): {run.path}")
    return path


def load_checkpoint(run: RunDir, which: str = "best"):
    """Load checkpoints/<which>.keras with safe_mode (no arbitrary code from model files)."""
    path = check_checkpoint(run, which)
    import keras

    from nnrun.components.custom_objects import load_all

    load_all()  # registers nnrun's custom layers (siamese pairs, attention) so safe_mode can rebuild them
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as exc:  # e.g. a Lambda layer: safe_mode refuses to deserialise code
        raise UsageError(f"refusing to load {path}: {first_line(exc)}") from None


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

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3


def data_facts(run: RunDir, cfg) -> DataFacts:
    """The run's data facts from run.json; runs recorded before run.json held them rebuild the data."""
    record = run.read().get("data")
    if not record:
        from nnrun.engine.build import build_data

        record = build_data(cfg).describe()
    return DataFacts(list(record["class_names"]), int(record["num_classes"]), tuple(record["input_shape"]),
                     record["input_dtype"], record.get("preprocess"), record.get("task", "classification"))


def eval_techniques(cfg, facts: DataFacts, num_train: int):
    """The run's techniques, built as in training, for their eval transforms (e.g. eval_size)."""
    from nnrun.engine import build

    return build.build_techniques(cfg, build.technique_context(cfg, facts, num_train=num_train))
