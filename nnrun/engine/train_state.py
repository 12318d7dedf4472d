"""Full training state in one atomically written file: checkpoints/backup/state.npz.

Why not keras.callbacks.BackupAndRestore: it resumes only at an epoch start, does not save
the metric accumulators (so a mid-epoch resume reports different epoch metrics), and loading
weights into a model whose optimizer is not built yet silently drops the optimizer state.
Here the optimizer and metrics are built first (as `fit` itself does), and model variables
(weights, BatchNorm statistics, dropout seed-generator state), optimizer variables and
metric variables are saved and restored together, with the position (epoch, step).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

STATE = "state.npz"
GROUPS = ("model", "optimizer", "metrics")


def _variables(model) -> dict[str, list]:
    # The learning rate is configuration (config + schedule at `iterations`), not state: leaving
    # it out lets a NaN rollback or `--allow-change optimizer.learning_rate` take effect.
    optimizer = [v for v in model.optimizer.variables if not v.path.endswith("learning_rate")]
    return {"model": model.variables, "optimizer": optimizer, "metrics": model.metrics_variables}


def build_for_restore(model, batch_spec) -> None:
    """Create optimizer and metric variables before a restore (they are otherwise lazy).
    `batch_spec`: a batch, or its structure of tf.TensorSpec (only shapes and dtypes are used)."""
    # `_symbolic_build` is what Model.fit calls before its first step; calling it here makes the
    # variable lists complete and in the same order as in the run that saved them.
    model._symbolic_build(data_batch=batch_spec)


def save(model, directory: Path, position: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    import keras

    arrays = {f"{group}/{i:05d}": keras.ops.convert_to_numpy(v)
              for group, variables in _variables(model).items() for i, v in enumerate(variables)}
    arrays["position"] = np.array(json.dumps(position))
    tmp = directory / f".{STATE}.{os.getpid()}.tmp.npz"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / STATE)


def exists(directory: Path) -> bool:
    return (directory / STATE).is_file()


def read_position(directory: Path) -> dict:
    with np.load(directory / STATE) as data:
        return json.loads(str(data["position"]))


def restore(model, directory: Path, groups: tuple = GROUPS) -> dict:
    """Assign the saved variables of `groups`; returns the saved position. Shapes must match.

    Keras resets metrics at every epoch start, so the engine restores "metrics" separately,
    from a callback's on_epoch_begin of the resumed epoch."""
    with np.load(directory / STATE) as data:
        for group, variables in _variables(model).items():
            if group not in groups:
                continue
            saved = sorted(k for k in data.files if k.startswith(group + "/"))
            if len(saved) != len(variables):
                raise ValueError(f"backup has {len(saved)} {group} variables, the model has {len(variables)}")
            for key, var in zip(saved, variables):
                value = data[key]
                if tuple(value.shape) != tuple(var.shape):
                    raise ValueError(f"backup {key} has shape {value.shape}, variable {var.path} {var.shape}")
                var.assign(value)
        return json.loads(str(data["position"]))
