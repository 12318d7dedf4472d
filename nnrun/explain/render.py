"""Overlay PNGs (heatmap over the image, classes and probability in the title) and a grid; for
token sequences, the tokens in boxes coloured by their signed attribution (red for, blue against).

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


TOKENS_PER_LINE = 16


def _draw_tokens(ax, words: list[str], heat, title: str, fontsize: float, width: int | None = None) -> None:
    """Tokens in reading order, wrapped every TOKENS_PER_LINE, each box coloured by its heat in
    [-1, 1] on a diverging map (0 white); `width` boxes across (panels of a grid share one)."""
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    cmap = colormaps["RdBu_r"]
    cols = max(1, min(TOKENS_PER_LINE, len(words)))
    lines = max(1, math.ceil(len(words) / cols))
    ax.set_xlim(0, max(cols, width or 0))
    ax.set_ylim(lines, 0)
    for k, (word, h) in enumerate(zip(words, np.asarray(heat, np.float64))):
        row, col = divmod(k, cols)
        ax.add_patch(Rectangle((col + 0.04, row + 0.08), 0.92, 0.84, facecolor=cmap((h + 1) / 2), edgecolor="0.6",
                               linewidth=0.5))
        ax.text(col + 0.5, row + 0.5, word if len(word) <= 8 else word[:7] + "…", ha="center", va="center",
                fontsize=fontsize, color="white" if abs(h) > 0.65 else "black")
    ax.set_title(title, fontsize=fontsize + 1)
    ax.axis("off")


def _token_lines(words) -> int:
    return max(1, math.ceil(len(words) / TOKENS_PER_LINE))


def tokens(path: Path, words: list[str], heat, title: str) -> None:
    cols = max(1, min(TOKENS_PER_LINE, len(words)))
    fig = _figure(max(3.4, 0.55 * cols), 0.9 + 0.5 * _token_lines(words))
    _draw_tokens(fig.add_subplot(1, 1, 1), words, heat, title, 8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def token_grid(path: Path, rows: list[tuple[list[str], np.ndarray]], titles: list[str], suptitle: str = "") -> None:
    """One panel per example, stacked; each panel as `tokens` draws it."""
    heights = [0.45 + 0.45 * _token_lines(words) for words, _ in rows]
    cols = max([min(TOKENS_PER_LINE, len(words)) for words, _ in rows] + [1])
    fig = _figure(max(4.0, 0.5 * cols), sum(heights) + (0.4 if suptitle else 0))
    spec = fig.add_gridspec(len(rows), 1, height_ratios=heights)
    for i, ((words, heat), title) in enumerate(zip(rows, titles)):
        _draw_tokens(fig.add_subplot(spec[i, 0]), words, heat, title.replace("\n", " | "), 6.5, cols)
    if suptitle:
        fig.suptitle(f"{suptitle}\nred: for the target class, blue: against", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
