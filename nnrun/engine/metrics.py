"""Which way a metric improves, and the metrics computed once after training on whole splits
(merged into run.json's final_metrics; the confusion matrix and calibration: diagnostics.py).

Streaming Keras metrics cannot give these: balanced accuracy needs every class's recall, and
the pair threshold is chosen on the training pairs before it is applied to validation. They
score the model as it is at the end of `fit` (the last epoch), like the other final metrics.
numpy is imported inside the functions: `nnrun runs` sorts with `higher_is_better` and must not
pay for the import.
"""

from __future__ import annotations

import typing

if typing.TYPE_CHECKING:
    import numpy as np

# Metrics where smaller is better; everything else (accuracy, auc, ...) sorts best = highest.
_LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "time", "perplexity", "epoch")


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` is better (what checkpoints, sorting and studies use)."""
    return not any(word in metric.lower() for word in _LOWER_IS_BETTER)


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[int, float]:
    """Recall of each class that occurs in y_true (a class with no examples has no recall)."""
    import numpy as np

    return {c: float(np.mean(y_pred[y_true == c] == c)) for c in range(num_classes) if np.any(y_true == c)}


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean per-class recall over the classes present (as sklearn's balanced_accuracy_score)."""
    import numpy as np

    return float(np.mean(list(per_class_recall(y_true, y_pred, num_classes).values())))


def pair_accuracy(distances: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Accuracy of "same iff distance <= threshold" (same: 1 same, 0 different)."""
    import numpy as np

    return float(np.mean((distances <= threshold) == (same == 1)))


def best_threshold(distances: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """Threshold maximising pair_accuracy on these pairs, and that accuracy.

    Every rule "same iff d <= t" is a cut in the sorted distances; cuts only fall between
    distinct values, so tied distances are never split. t is the midpoint of the cut.
    """
    import numpy as np

    order = np.argsort(distances, kind="stable")
    d, s = distances[order], (same[order] == 1).astype(np.int64)
    n, total_different = len(d), int(np.sum(s == 0))
    kept = np.arange(1, n + 1)  # first k pairs predicted "same"
    correct = np.cumsum(s) + (total_different - (kept - np.cumsum(s)))
    valid = np.append(d[1:] > d[:-1], True)  # cut after index k-1 only where the next value differs
    correct = np.where(valid, correct, -1)
    k = int(np.argmax(correct))
    if total_different >= correct[k]:  # calling every pair "different" is at least as good
        return float(d[0]) - 1.0, total_different / n
    threshold = float(d[k] if k == n - 1 else (d[k] + d[k + 1]) / 2)
    return threshold, float(correct[k]) / n


def pair_distances(model, split, batch_size: int) -> np.ndarray:
    import numpy as np

    embeddings = np.asarray(model.predict(split.x, batch_size=batch_size, verbose=0), dtype=np.float64)
    return np.linalg.norm(embeddings[:, 0] - embeddings[:, 1], axis=-1)


def final_metrics(model, data, cfg, val_dataset=None, run=None) -> dict:
    """Classification: per-class recall, balanced accuracy, macro F1 and the calibration error on
    val (through `val_dataset`, the validation pipeline with the techniques' eval transforms,
    when given), and, given the RunDir `run`, the diagnostics files of val (diagnostics.py). Pairs:
    val_pair_accuracy at the distance threshold chosen on the training pairs."""
    import numpy as np

    batch_size = cfg.data.eval_batch_size or cfg.data.batch_size
    val = data.split("val")
    if data.task == "pairs":
        train = data.split("train")
        threshold, train_accuracy = best_threshold(pair_distances(model, train, batch_size), train.y)
        return {"pair_threshold": threshold, "train_pair_accuracy": train_accuracy,
                "val_pair_accuracy": pair_accuracy(pair_distances(model, val, batch_size), val.y, threshold)}
    if val_dataset is None:
        from nnrun.engine import pipeline

        val_dataset = pipeline.eval_dataset(val, batch_size=batch_size, num_classes=data.num_classes,
                                            label_mode="sparse")
    probs = probabilities(model.predict(val_dataset, verbose=0))
    predicted = np.argmax(probs, axis=-1)
    names = data.class_names or [str(c) for c in range(data.num_classes)]
    recall = per_class_recall(val.y, predicted, data.num_classes)
    out = {f"val_recall_{names[c]}": r for c, r in recall.items()}
    out["val_balanced_accuracy"] = balanced_accuracy(val.y, predicted, data.num_classes)
    out.update(diagnose_split(probs, val, names, "val", run))
    return out


def probabilities(logits) -> np.ndarray:
    """Softmax of the model's logits, in float64 (outputs may be float16 under mixed precision)."""
    import numpy as np

    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def diagnose_split(probs: np.ndarray, split, class_names: list[str], name: str, run=None) -> dict:
    """The split's macro F1 and calibration error; given the RunDir `run`, its diagnostics files too."""
    from nnrun.engine import diagnostics

    summary = diagnostics.diagnose(probs, split.y, class_names)
    if run is not None:
        indices = [row["index"] for row in summary["confidently_wrong"]]
        diagnostics.write(run, name, summary, diagnostics.split_images(split, indices))
    return diagnostics.headline(summary, name)
