"""`shapes`: seeded synthetic images of geometric shapes, with object masks as ground truth.

Each image holds one shape (circle, square, triangle, cross) at a random position, size and
colour over a noisy background. The mask of the object is kept so interpretation methods can
be checked (pointing game), and a difficulty proxy (small objects and heavy noise are hard).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from nnrun.components.data.base import DataBundle, Split, standard_splits
from nnrun.registry import Params, register

SHAPES = ("circle", "square", "triangle", "cross")
_CHUNK = 512


class SplitSizes(Params):
    """Sizes of the splits of a built-in synthetic data set (examples, or pairs for `pairs`)."""

    num_train: int = Field(2000, gt=0, le=1_000_000, description="training examples")
    num_val: int = Field(500, gt=0, le=1_000_000, description="validation examples")
    num_test: int = Field(0, ge=0, le=1_000_000, description="test examples (0: no test split)")
    seed: int = Field(0, ge=0, description="data seed (independent of the run seed)")


class ShapeLook(SplitSizes):
    """How the shape images look (shared by `shapes` and `pairs`)."""

    image_size: int = Field(32, ge=8, le=512, description="height and width in pixels")
    classes: list[Literal["circle", "square", "triangle", "cross"]] = Field(
        list(SHAPES), min_length=2, description="which shapes, in label order"
    )
    min_scale: float = Field(0.3, gt=0, le=1, description="smallest object diameter / image size")
    max_scale: float = Field(0.6, gt=0, le=1, description="largest object diameter / image size")
    noise: float = Field(0.08, ge=0, le=1, description="std of background pixel noise")

    @model_validator(mode="after")
    def _check_look(self):
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must not repeat")
        if self.min_scale > self.max_scale:
            raise ValueError(f"min_scale {self.min_scale} > max_scale {self.max_scale}")
        return self


class ShapesParams(ShapeLook):
    class_balance: list[float] | None = Field(
        None, description="relative class frequencies, e.g. [0.9, 0.05, 0.05]; default balanced"
    )

    @model_validator(mode="after")
    def _check(self):
        if self.class_balance is not None:
            if len(self.class_balance) != len(self.classes):
                raise ValueError(
                    f"class_balance has {len(self.class_balance)} entries for {len(self.classes)} classes"
                )
            if min(self.class_balance) <= 0:
                raise ValueError("class_balance entries must be > 0")
        return self


def _shape_masks(kind: np.ndarray, cx, cy, r, size: int) -> np.ndarray:
    """Boolean masks (N, size, size) of each example's shape, computed vectorised."""
    grid = np.arange(size, dtype=np.float32) + 0.5
    xx, yy = grid[None, None, :], grid[None, :, None]
    cx, cy, r = cx[:, None, None], cy[:, None, None], r[:, None, None]
    dx, dy = np.abs(xx - cx), np.abs(yy - cy)
    circle = dx**2 + dy**2 <= r**2
    square = (dx <= 0.8 * r) & (dy <= 0.8 * r)
    top, bottom = cy - r, cy + 0.75 * r
    triangle = (yy >= top) & (yy <= bottom) & (dx <= r * (yy - top) / (1.75 * r))
    arm = 0.3 * r
    cross = ((dx <= arm) & (dy <= r)) | ((dy <= arm) & (dx <= r))
    by_kind = np.stack([circle, square, triangle, cross], axis=0)  # (4, N, H, W)
    return by_kind[kind, np.arange(len(kind))]


def generate(n: int, p: ShapesParams, stream: int, labels: np.ndarray | None = None) -> Split:
    """`n` images of split `stream` (0 train, 1 val, 2 test), deterministic in (seed, stream).

    `labels` (indices into `p.classes`) fixes each image's class, e.g. to build pairs.
    """
    rng = np.random.default_rng([p.seed, stream])
    k = len(p.classes)
    if labels is not None:
        labels = np.asarray(labels)
        n = len(labels)
    elif p.class_balance is None:
        labels = rng.permutation(np.arange(n) % k)
    else:
        probs = np.asarray(p.class_balance, dtype=np.float64)
        labels = rng.choice(k, size=n, p=probs / probs.sum())
    kinds = np.array([SHAPES.index(c) for c in p.classes])[labels]
    s = p.image_size
    scale = rng.uniform(p.min_scale, p.max_scale, n)
    r = scale * s / 2
    cx = rng.uniform(r, s - r)
    cy = rng.uniform(r, s - r)
    noise_level = p.noise * rng.uniform(0.5, 1.5, n)
    dark_object = rng.random(n) < 0.5
    low = rng.uniform(0.0, 0.35, (n, 3))
    high = rng.uniform(0.65, 1.0, (n, 3))
    obj_colour = np.where(dark_object[:, None], low, high)
    bg_colour = np.where(dark_object[:, None], high, low)

    images = np.empty((n, s, s, 3), np.float32)
    masks = np.empty((n, s, s), bool)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(n, start + _CHUNK))
        m = _shape_masks(kinds[sl], cx[sl], cy[sl], r[sl], s)
        img = np.where(m[..., None], obj_colour[sl, None, None, :], bg_colour[sl, None, None, :])
        img = img + rng.normal(0, 1, img.shape) * noise_level[sl, None, None, None]
        images[sl] = np.clip(img, 0, 1)
        masks[sl] = m
    size_term = 1 - (scale - p.min_scale) / max(p.max_scale - p.min_scale, 1e-9)
    noise_term = (noise_level / max(p.noise, 1e-9) - 0.5) if p.noise > 0 else np.zeros(n)
    difficulty = np.clip(0.5 * size_term + 0.5 * noise_term, 0, 1).astype(np.float32)
    return Split(images, labels.astype(np.int32), masks, difficulty)


@register("dataset", "shapes", ShapesParams)
def build(p: ShapesParams) -> DataBundle:
    """Synthetic shapes (circle/square/triangle/cross) with object masks; needs no download."""
    return DataBundle(standard_splits(generate, p), (p.image_size, p.image_size, 3), len(p.classes), list(p.classes))
