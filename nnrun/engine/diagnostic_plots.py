"""The figures of diagnostics.py, as PNG bytes: the confusion matrix (counts, and colours
normalised per true class), the reliability diagram, and the grid of the most confidently
wrong images."""

from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    import io

    plt = _pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def confusion(summary: dict) -> bytes:
    """Rows: true class; colour: the row-normalised fraction; text: the count (up to 30 classes)."""
    plt = _pyplot()
    counts = np.asarray(summary["confusion_matrix"], np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    names, n = summary["class_names"], len(counts)
    side = min(12.0, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    if n <= 30:
        ax.set_xticks(range(n), names, rotation=90)
        ax.set_yticks(range(n), names)
        for (i, j), value in np.ndenumerate(counts):
            if value:
                ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=8,
                        color="white" if fractions[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix ({summary['examples']} examples, accuracy {summary['accuracy']:.3f})")
    return _png(fig)


def reliability(summary: dict) -> bytes:
    """Accuracy against confidence per bin, the diagonal of perfect calibration, and the counts."""
    plt = _pyplot()
    bins = summary["bins"]
    width = bins[0]["upper"] - bins[0]["lower"]
    filled = [b for b in bins if b["count"]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar([b["lower"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
            edgecolor="#1f4e79", color="#9ecae1", label="accuracy")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o", color="#cf222e", ms=3,
             label="mean confidence")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"reliability (ECE {summary['calibration_error']:.3f}, {len(bins)} bins)")
    bottom.bar([b["lower"] for b in bins], [b["count"] for b in bins], width=width, align="edge", color="#bbb")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("examples")
    bottom.set_xlim(0, 1)
    return _png(fig)


def _displayable(images: np.ndarray) -> np.ndarray:
    """Raw images as floats in 0..1 for imshow: integers by their dtype's range, floats as they
    are when they lie in 0..1, else stretched per image."""
    x = np.asarray(images)
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float64) / (65535.0 if x.dtype == np.uint16 else 255.0)
    x = x.astype(np.float64)
    if x.min() >= 0 and x.max() <= 1:
        return x
    low = x.min(axis=(1, 2, 3), keepdims=True)
    span = np.maximum(x.max(axis=(1, 2, 3), keepdims=True) - low, 1e-12)
    return (x - low) / span


def wrong_grid(summary: dict, images: np.ndarray) -> bytes:
    """The most confidently wrong images (in summary order), titled predicted / true / probability."""
    plt = _pyplot()
    rows = summary["confidently_wrong"]
    pictures = _displayable(images)
    columns = min(8, len(rows))
    lines = (len(rows) + columns - 1) // columns
    fig, axes = plt.subplots(lines, columns, figsize=(1.7 * columns, 2.3 * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row, picture in zip(axes.flat, rows, pictures):
        ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{row['predicted']} {row['probability']:.2f}\ntrue {row['true']}", fontsize=7)
    fig.suptitle("most confidently wrong", fontsize=9)
    return _png(fig)
