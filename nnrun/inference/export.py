"""`nnrun export`: write a run's model for use outside nnrun, then prove the copy is faithful.

The export is reloaded the way a user would (keras: `keras.saving.load_model`; saved_model:
`tf.saved_model.load(...).serve`) and its outputs are compared with the trained model's on
inputs stored in RUN_DIR/exported/reference.npz. The reference is written on the first export
and reused afterwards, so every export of a run is checked against the same inputs and outputs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from nnrun.engine.rundir import RunDir, atomic_write, now_iso
from nnrun.errors import RunFailed, UsageError

FORMATS = {"keras": "model.keras", "saved_model": "saved_model"}
REFERENCE = "reference.npz"
NUM_REFERENCE = 8
# Float32 logits through a different runtime (graph vs eager, fused kernels) may differ in the
# last bits; a real mismatch (wrong weights, missing layer) is orders of magnitude larger.
RTOL, ATOL = 1e-4, 1e-5


def _inputs(x) -> list[np.ndarray]:
    return [np.asarray(a) for a in x] if isinstance(x, (list, tuple)) else [np.asarray(x)]


def _call(fn, inputs: list[np.ndarray]) -> np.ndarray:
    """One positional argument: the tensor, or the list of tensors for multi-input models."""
    out = fn(inputs[0] if len(inputs) == 1 else inputs)
    return np.asarray(out.numpy() if hasattr(out, "numpy") else out)


def _reference(run: RunDir, model, directory: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Stored inputs and the trained model's outputs on them (created on first use)."""
    path = directory / REFERENCE
    if path.is_file():
        with np.load(path) as ref:
            names = sorted((k for k in ref.files if k.startswith("input_")), key=lambda k: int(k.split("_")[1]))
            inputs = [ref[k] for k in names]
            return inputs, ref["outputs"]
    from nnrun.engine import build
    from nnrun.inference.evaluate import load_run_config

    data = build.build_data(load_run_config(run))
    split = next(data.splits[s] for s in ("val", "test", "train") if s in data.splits)
    inputs = _inputs(split.head(NUM_REFERENCE)[0])
    outputs = _call(lambda x: model(x, training=False), inputs)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".npz", delete=False) as fh:
        np.savez(fh, outputs=outputs, **{f"input_{i}": a for i, a in enumerate(inputs)})
    Path(fh.name).replace(path)
    return inputs, outputs


def _write_and_reload(model, fmt: str, target: Path):
    """Write the model to `target`, reload it from disk, return a callable on inputs."""
    import keras

    if fmt == "keras":
        model.save(target)
        reloaded = keras.saving.load_model(target, compile=False, safe_mode=True)
        return lambda x: reloaded(x, training=False)
    model.export(str(target), format="tf_saved_model", verbose=False)
    import tensorflow as tf

    reloaded = tf.saved_model.load(str(target))
    return lambda x: reloaded.serve(x)  # the closure keeps the loaded object (and its variables) alive


def export(run_dir: str | Path, fmt: str = "keras", checkpoint: str = "best") -> dict:
    """Export RUN_DIR's checkpoint as `fmt` under RUN_DIR/exported/; RunFailed if the reloaded
    export's outputs differ from the trained model's on the stored inputs (nothing is kept)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    run = RunDir.open(run_dir)
    from nnrun.engine import runtime
    from nnrun.inference.evaluate import load_checkpoint, load_run_config

    runtime.setup(load_run_config(run))
    model = load_checkpoint(run, checkpoint)
    directory = run.path / "exported"
    inputs, expected = _reference(run, model, directory)
    target = directory / FORMATS[fmt]
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".export-"))
    try:
        predict = _write_and_reload(model, fmt, staging / FORMATS[fmt])
        got = _call(predict, inputs)
        diff = float(np.max(np.abs(got.astype(np.float64) - expected))) if got.shape == expected.shape else None
        if diff is None or not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
            shown = "shape " + str(got.shape) + " vs " + str(expected.shape) if diff is None else f"max |diff| {diff:.3g}"
            raise RunFailed(f"exported {fmt} model does not reproduce the trained model's outputs on "
                            f"{len(expected)} stored inputs ({shown}); nothing was exported")
        if target.is_dir():
            shutil.rmtree(target)
        (staging / FORMATS[fmt]).replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = {"format": fmt, "path": str(target), "checkpoint": checkpoint, "checked_inputs": len(expected),
              "max_abs_diff": diff, "exported_at": now_iso()}
    manifest = directory / "export.json"
    try:
        exports = json.loads(manifest.read_text())
    except (OSError, ValueError):
        exports = {}
    exports[fmt] = result
    atomic_write(manifest, json.dumps(exports, indent=2) + "\n")
    return result
