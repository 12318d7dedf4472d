"""Figures that say whether a heatmap can be trusted, given ground-truth object masks.

- Pointing game (Zhang et al. 2016): a hit when the heatmap's maximum lies on the object, within
  a tolerance that scales with the image (15 px at 224 px, as in their protocol and TorchRay);
  an empty mask is never a hit.
- Energy in mask: the share of the heatmap's mass on the object, next to the object's area share.
- Randomisation test (Adebayo et al. 2018): Spearman rank correlation between the maps of the
  trained model and of the same architecture re-initialised; a faithful method gives a low value.
"""

from __future__ import annotations

import numpy as np

TOLERANCE_AT_224 = 15


def tolerance(height: int, width: int) -> int:
    return max(1, round(TOLERANCE_AT_224 * max(height, width) / 224))


def pointing_hits(heatmaps: np.ndarray, masks: np.ndarray, tol: int | None = None) -> np.ndarray:
    """Per image: does the maximum of the heatmap fall within `tol` pixels of the object?"""
    n, h, w = heatmaps.shape
    tol = tolerance(h, w) if tol is None else tol
    hits = np.zeros(n, bool)
    for i in range(n):
        ys, xs = np.nonzero(masks[i])
        if len(ys) == 0:
            continue
        py, px = np.unravel_index(int(np.argmax(heatmaps[i])), (h, w))
        hits[i] = np.min((ys - py) ** 2 + (xs - px) ** 2) <= tol**2
    return hits


def energy_in_mask(heatmaps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Fraction of each heatmap's total on the object (NaN for an all-zero map)."""
    total = heatmaps.reshape(len(heatmaps), -1).sum(axis=1)
    inside = (heatmaps * masks).reshape(len(heatmaps), -1).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their average rank (as scipy.stats.rankdata; no scipy here)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0))[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps; NaN when either is constant (no ranking)."""
    ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


def randomised_model(model, seed: int = 0):
    """The same architecture with every weight re-drawn from its layer's initializer (and
    BatchNorm statistics reset): the "full" randomisation of Adebayo et al."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(model, recursive=True)
