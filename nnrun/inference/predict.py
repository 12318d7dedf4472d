"""`nnrun predict`: a finished run's model on new inputs (image files, folders, an .npz), to CSV.

Inputs go through the run's own path: files are decoded by the data sources' decoder (the same
Pillow path image_folder trains with, at the run's image size; for runs on float or uint16
data, converted to that data's dtype and scale: `as_run_inputs`), then `pipeline.eval_inputs`
(cast, the techniques' eval transforms) and the model, which rescales and normalises itself.
Decoding runs in parallel in tf.data; the model runs as one compiled function per batch.
A file that cannot be decoded is listed on stderr and skipped; nothing readable is exit 2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from nnrun.rundir import atomic_write, write_new_file
from nnrun.errors import ConfigError, UsageError
from nnrun.safe_text import csv_text

TTA = ("none", "flip")


@dataclass
class Rows:
    """What predict turns its INPUT arguments into: one row per file (or per .npz example)."""

    names: list[str]  # file paths, or "FILE.npz[i]"
    labels: list[int | None]  # true class from a class-named parent folder (or the .npz's y), if known
    paths: list[str] = field(default_factory=list)  # files to decode (empty for arrays)
    arrays: np.ndarray | None = None  # raw inputs from an .npz


def _files(inputs: list[Path]) -> list[Path]:
    """Files named directly, and every non-hidden file under folders (recursively, sorted,
    symlinked folders followed: image_folder's own listing)."""
    from nnrun.components.data.image_folder import image_files

    found = []
    for item in inputs:
        if item.is_dir():
            found += image_files(item)
        elif item.is_file():
            found.append(item)
        else:
            raise UsageError(f"input not found: {item}")
    return found


def _npz_rows(path: Path, facts) -> Rows:
    """Examples of an .npz: the array `x` (or x_test / x_val / x_train, in that order), labels from
    the matching `y` when present."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{path} is not a readable .npz file: {exc}") from None
    key = next((k for k in ("x", "x_test", "x_val", "x_train") if k in arrays), None)
    if key is None:
        raise UsageError(f"{path} has no array x (or x_test, x_val, x_train); it has: {', '.join(sorted(arrays))}")
    x = arrays[key]
    if x.ndim == 3 and facts.is_image:
        x = x[..., None]
    if facts.is_image and tuple(x.shape[1:]) != tuple(facts.input_shape):
        raise UsageError(f"{path}: {key} has examples of shape {tuple(x.shape[1:])}; the run's model takes "
                         f"{tuple(facts.input_shape)} (resize them, or pass image files)")
    y = arrays.get("y" + key[1:])
    labels: list[int | None] = [None] * len(x)
    if y is not None and len(y) == len(x):
        from nnrun.components.data.preprocess import labels_as_indices

        name = f"{path}: y{key[1:]}"
        try:
            indices = labels_as_indices(y, name, where=None)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        if len(indices) and indices.max() >= facts.num_classes:
            raise UsageError(f"{name} has the label {int(indices.max())}; this run's model has "
                             f"{facts.num_classes} classes (0..{facts.num_classes - 1})")
        labels = [int(v) for v in indices]
    return Rows([f"{path}[{i}]" for i in range(len(x))], labels, arrays=x)


def collect(inputs: list[Path], facts) -> Rows:
    """Rows for INPUT arguments: image files and folders, or one .npz."""
    npz = [p for p in inputs if p.suffix == ".npz" and p.is_file()]
    if npz:
        if len(inputs) != 1:
            raise UsageError("pass one .npz file alone, or image files and folders")
        return _npz_rows(npz[0], facts)
    if not facts.is_image:
        raise UsageError(f"this run's model takes {facts.input_dtype} arrays of shape {tuple(facts.input_shape)}, "
                         "not image files: pass an .npz with an array x")
    files = _files(inputs)
    if not files:
        raise UsageError(f"no files found in {', '.join(map(str, inputs))}")
    index = {name: i for i, name in enumerate(facts.class_names)}
    return Rows([str(f) for f in files], [index.get(f.parent.name) for f in files], paths=[str(f) for f in files])


def batches(rows: Rows, facts, batch_size: int, max_pixels: int | None = None):
    """tf.data batches of (raw inputs, error strings): files decoded in parallel, in order, each
    within the run's pixel budget (its data.params.max_pixels)."""
    import tensorflow as tf

    if rows.arrays is not None:
        x = tf.data.Dataset.from_tensor_slices(rows.arrays)
        ds = x.map(lambda a: (a, tf.constant(b"")))
    else:
        from nnrun.components.data.decode import MAX_PIXELS
        from nnrun.components.data.graph_decode import decode_dataset, inspect_files

        max_pixels = max_pixels or MAX_PIXELS
        height, width, channels = facts.input_shape
        ds = decode_dataset(rows.paths, inspect_files(rows.paths, (height, width), max_pixels)[0], (height, width),
                            channels, max_pixels, keep_aspect=bool(facts.train_size))
        if facts.input_dtype != "uint8":
            ds = ds.map(lambda image, error: (as_run_inputs(tf, image, facts), error))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def as_run_inputs(tf, pixels, facts):
    """Decoded uint8 pixels as the raw inputs of a run whose data is not uint8 (shapes' float
    images, an .npz of floats or uint16), on that data's own scale: the model multiplies its
    raw inputs by `rescale` (run.json's preprocess; 1 when it records none) and expects the
    0..1 range there, so pixel v becomes v / 255 / rescale (float 0..1 for shapes; v * 257 for
    uint16 at its default rescale of 1/65535), rounded and clipped for integer dtypes."""
    dtype = tf.as_dtype(facts.input_dtype)
    rescale = (facts.preprocess or {}).get("rescale") or 1.0
    x = tf.cast(pixels, tf.float64) / (255.0 * rescale)
    if dtype.is_integer:
        x = tf.clip_by_value(tf.round(x), dtype.min, dtype.max)
    return tf.cast(x, dtype)


def probabilities_fn(model, techniques, facts, tta: str):
    """One compiled function: raw batch -> class probabilities (float32), through eval_inputs;
    `tta: flip` averages the probabilities of the image and its mirror image."""
    import tensorflow as tf

    from nnrun.engine.pipeline import eval_inputs

    spec = tf.TensorSpec([None, *facts.input_shape], facts.input_dtype)

    @tf.function(input_signature=[spec])
    def probabilities(raw):
        x = eval_inputs(tf, raw, techniques)
        probs = tf.nn.softmax(tf.cast(model(x, training=False), tf.float32), axis=-1)
        if tta == "flip":
            flipped = tf.nn.softmax(tf.cast(model(tf.reverse(x, axis=[2]), training=False), tf.float32), axis=-1)
            probs = (probs + flipped) / 2
        return probs

    return probabilities


def _csv(names: list[str], probs: np.ndarray, labels: list, class_names: list[str], top_k: int,
         by_index: bool) -> str:
    """CSV text: path (or index), the predicted class and its probability, the top-k classes and
    probabilities, and the true class where the inputs say it."""
    with_true = any(label is not None for label in labels)
    header = ["index" if by_index else "path", "predicted", "probability"]
    for k in range(1, top_k + 1):
        header += [f"top{k}", f"top{k}_probability"]
    rows = [header + (["true"] if with_true else [])]
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    for name, p, top, label in zip(names, probs, order, labels):
        row = [name, class_names[top[0]], f"{p[top[0]]:.6f}"]
        for c in top:
            row += [class_names[c], f"{p[c]:.6f}"]
        rows.append(row + ([class_names[label] if label is not None else ""] if with_true else []))
    return csv_text(rows)  # class and file names that look like formulas are quoted for spreadsheets


def predict(run_dir: str | Path, inputs: list[Path], *, out: Path | None = None, top_k: int | None = None,
            checkpoint: str = "best", batch_size: int | None = None, tta: str = "none",
            warn: Callable[[str], None] = print, progress: Callable[[int, int], None] | None = None) -> dict:
    """Predict every readable input; writes the CSV and returns a summary (path, counts, accuracy, speed).
    `warn(line)` reports skipped files; `progress(done, total)` is called after each batch."""
    from nnrun.inference.open_run import open_run

    opened = open_run(run_dir, checkpoint)
    run = opened.run
    if tta not in TTA:
        raise UsageError(f"--tta must be one of {', '.join(TTA)}, got {tta!r}")
    if batch_size is not None and batch_size < 1 or top_k is not None and top_k < 1:
        raise UsageError("--batch-size and --top-k must be >= 1")
    cfg, facts = opened.cfg, opened.facts
    if facts.task != "classification":
        raise UsageError(f"predict needs a classification run; {cfg.data.dataset} is a {facts.task} data set")
    if tta == "flip" and not facts.is_image:
        raise UsageError("--tta flip needs an image model")
    rows = collect([Path(p) for p in inputs], facts)
    top_k = min(top_k or 5, facts.num_classes)
    batch_size = batch_size or cfg.data.eval_batch_size or cfg.data.batch_size
    predictions = run.own_dir("predictions") if out is None else None  # refused before any work if a link

    opened.setup_runtime()
    techniques = opened.eval_techniques()
    model = opened.load_model()
    probabilities = probabilities_fn(model, techniques, facts, tta)

    kept, probs, skipped = [], [], []
    first_batch_at = None
    start = time.perf_counter()
    for raw, errors in batches(rows, facts, batch_size, cfg.data.params.get("max_pixels")):
        errors = errors.numpy()
        ok = errors == b""
        base = len(kept) + len(skipped)
        for i in np.flatnonzero(~ok):
            skipped.append(rows.names[base + i])
            warn(f"skipped {rows.names[base + i]}: {errors[i].decode(errors='replace')}")
        batch_probs = probabilities(raw).numpy()
        if first_batch_at is None:
            first_batch_at = time.time()
        probs.append(batch_probs[ok])
        kept += [base + i for i in np.flatnonzero(ok)]
        if progress is not None:
            progress(len(kept) + len(skipped), len(rows.names))
    seconds = time.perf_counter() - start
    if not kept:
        raise UsageError(f"none of the {len(rows.names)} inputs could be read; nothing predicted")
    probs = np.concatenate(probs)
    names = [rows.names[i] for i in kept]
    labels = [rows.labels[i] for i in kept]
    text = _csv(names, probs, labels, facts.class_names, top_k, by_index=rows.arrays is not None)
    if out is not None:
        target = Path(out)
        atomic_write(target, text)
    else:  # predictions/<timestamp>.csv, -2, -3 ...: a name no other predict took
        predictions.mkdir(parents=True, exist_ok=True)
        target = write_new_file(predictions, time.strftime("%Y%m%d-%H%M%S"), ".csv", text)
    labelled = [i for i, label in enumerate(labels) if label is not None]
    accuracy = (float(np.mean([probs[i].argmax() == labels[i] for i in labelled])) if labelled else None)
    return {"path": str(target), "predicted": len(kept), "skipped": len(skipped), "accuracy": accuracy,
            "labelled": len(labelled), "checkpoint": checkpoint, "tta": tta, "seconds": round(seconds, 3),
            "images_per_s": round(len(rows.names) / seconds, 1) if seconds > 0 else None,
            "first_batch_at": first_batch_at}
