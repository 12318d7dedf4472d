"""Where a classifier fails, from its predicted probabilities on a whole split: the confusion
matrix, per-class precision / recall / F1, calibration (expected calibration error over 15
equal-width confidence bins, Guo et al. 2017, and the reliability diagram) and, for images,
the most confidently wrong examples.

Training writes them for val at the end of a run, `nnrun evaluate` for the split it scores,
into RUN_DIR/diagnostics/ (<split>.json and three figures); report.html shows them. The
numbers are plain numpy on the whole split, so they are exact, not streamed estimates.
"""

from __future__ import annotations

import json
import typing

if typing.TYPE_CHECKING:
    import numpy as np

DIRECTORY = "diagnostics"
BINS = 15
WRONG = 16  # confidently wrong images in the grid


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class] (rows true, as sklearn.metrics.confusion_matrix)."""
    import numpy as np

    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return matrix


def per_class_scores(matrix: np.ndarray) -> list[dict]:
    """Precision, recall, F1 and support of each class from a confusion matrix; a class never
    predicted (or never present) scores 0 there, as sklearn's zero_division=0."""
    import numpy as np

    true_pos = np.diag(matrix).astype(np.float64)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    out = []
    for c in range(len(matrix)):
        precision = true_pos[c] / predicted[c] if predicted[c] else 0.0
        recall = true_pos[c] / support[c] if support[c] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append({"precision": float(precision), "recall": float(recall), "f1": float(f1),
                    "support": int(support[c])})
    return out


def calibration(probs: np.ndarray, y_true: np.ndarray, bins: int = BINS) -> tuple[float, list[dict]]:
    """Expected calibration error and the reliability bins: confidence = the top probability,
    bin b holds confidences in (b / bins, (b + 1) / bins] (a confidence of 0 goes to the first);
    ECE = sum over bins of (count / N) * |accuracy - mean confidence|."""
    import numpy as np

    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        row = {"lower": b / bins, "upper": (b + 1) / bins, "count": count, "confidence": None, "accuracy": None}
        if count:
            row["confidence"], row["accuracy"] = float(confidence[inside].mean()), float(correct[inside].mean())
            ece += count / len(confidence) * abs(row["accuracy"] - row["confidence"])
        table.append(row)
    return float(ece), table


def diagnose(probs: np.ndarray, y_true: np.ndarray, class_names: list[str]) -> dict:
    """Everything above for one split, as a JSON-able dict (the worst examples by index)."""
    import numpy as np

    y_true = np.asarray(y_true, np.int64)
    predicted = probs.argmax(axis=1)
    matrix = confusion_matrix(y_true, predicted, len(class_names))
    ece, bins = calibration(probs, y_true)
    wrong = np.flatnonzero(predicted != y_true)
    worst = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:WRONG]
    return {"examples": int(len(y_true)), "accuracy": float(np.mean(predicted == y_true)),
            "class_names": list(class_names), "confusion_matrix": matrix.tolist(),
            "per_class": dict(zip(class_names, per_class_scores(matrix))),
            "calibration_error": ece, "bins": bins,
            "confidently_wrong": [{"index": int(i), "true": class_names[y_true[i]],
                                   "predicted": class_names[predicted[i]],
                                   "probability": float(probs[i, predicted[i]])} for i in worst]}


def headline(summary: dict, split: str) -> dict:
    """The scalar metrics for final_metrics / evaluate's scores: macro F1 and the ECE."""
    f1 = [c["f1"] for c in summary["per_class"].values() if c["support"]]
    return {f"{split}_macro_f1": float(sum(f1) / len(f1)) if f1 else 0.0,
            f"{split}_calibration_error": summary["calibration_error"]}


def write(run, split: str, summary: dict, images: np.ndarray | None = None) -> None:
    """RUN_DIR/diagnostics/<split>.json, <split>_confusion.png, <split>_reliability.png and, given
    the split's raw images (in the order of summary["confidently_wrong"]), <split>_wrong.png.
    `run` is the RunDir: the folder must not be a link (run.own_dir), every file is replaced
    atomically (a link in its place is replaced, never followed)."""
    from nnrun.engine import diagnostic_plots
    from nnrun.rundir import atomic_write

    directory = run.own_dir(DIRECTORY)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / f"{split}.json", json.dumps(summary, indent=1))
    atomic_write(directory / f"{split}_confusion.png", diagnostic_plots.confusion(summary))
    atomic_write(directory / f"{split}_reliability.png", diagnostic_plots.reliability(summary))
    if images is not None and summary["confidently_wrong"]:
        atomic_write(directory / f"{split}_wrong.png", diagnostic_plots.wrong_grid(summary, images))


def split_images(split, indices: list[int]) -> np.ndarray | None:
    """The raw images at `indices` of an image split (None for other inputs): from memory, or
    one pass over the stream up to the last index needed."""
    import numpy as np

    if not indices:
        return None
    if split.x is not None:
        return split.x[indices] if split.x.ndim == 4 else None
    wanted, found = set(indices), {}
    for i, (x, _) in enumerate(split.stream().as_numpy_iterator()):
        if x.ndim != 3:
            return None
        if i in wanted:
            found[i] = x
        if len(found) == len(wanted):
            break
    return np.stack([found[i] for i in indices])
