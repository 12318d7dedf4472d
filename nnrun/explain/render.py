"""Overlay PNGs (heatmap over the image, classes and probability in the title) and a grid.

Uses matplotlib's object API with the Agg canvas, so nothing depends on a display or on
pyplot's global state.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def displayable(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> something imshow draws: RGB for 3+ channels, grey for 1, scaled to [0, 1]."""
    image = np.asarray(image, np.float32)
    image = image[..., :3] if image.shape[-1] >= 3 else image[..., 0]
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 1:
        image = (image - low) / max(high - low, 1e-12)
    return image


def _draw(ax, image, heatmap, title, fontsize):
    shown = displayable(image)
    ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.imshow(heatmap, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
    ax.set_title(title, fontsize=fontsize)
    ax.axis("off")


def overlay(path: Path, image, heatmap, title: str) -> None:
    fig = _figure(3.4, 3.6)
    _draw(fig.add_subplot(1, 1, 1), image, heatmap, title, 9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def grid(path: Path, images, heatmaps, titles: list[str], suptitle: str = "") -> None:
    n = len(images)
    cols = min(8, n)
    rows = math.ceil(n / cols)
    fig = _figure(1.9 * cols, 2.1 * rows + (0.4 if suptitle else 0))
    for i in range(n):
        _draw(fig.add_subplot(rows, cols, i + 1), images[i], heatmaps[i], titles[i], 6.5)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
