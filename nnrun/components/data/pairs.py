"""`pairs`: seeded same/different pairs of `shapes` images, for siamese / contrastive training.

x has shape (N, 2, H, W, 3); y = 1 when both images show the same shape class, 0 otherwise
(the label convention of the `contrastive` loss). The two images of a pair are independent
draws (position, size, colours, noise), so "same" means same class, not same picture.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from nnrun.components.data import shapes
from nnrun.components.data.base import DataBundle, Split
from nnrun.registry import Params, register


class PairsParams(Params):
    num_train: int = Field(2000, gt=0, le=500_000, description="training pairs")
    num_val: int = Field(500, gt=0, le=500_000, description="validation pairs")
    num_test: int = Field(0, ge=0, le=500_000, description="test pairs (0: no test split)")
    image_size: int = Field(32, ge=8, le=256, description="height and width in pixels")
    classes: list[Literal["circle", "square", "triangle", "cross"]] = Field(
        list(shapes.SHAPES), min_length=2, description="which shapes the pairs are drawn from"
    )
    same_fraction: float = Field(0.5, gt=0, lt=1, description="fraction of pairs with the same class")
    min_scale: float = Field(0.3, gt=0, le=1, description="smallest object diameter / image size")
    max_scale: float = Field(0.6, gt=0, le=1, description="largest object diameter / image size")
    noise: float = Field(0.08, ge=0, le=1, description="std of background pixel noise")
    seed: int = Field(0, ge=0, description="data seed (independent of the run seed)")

    @model_validator(mode="after")
    def _check(self):
        if self.min_scale > self.max_scale:
            raise ValueError(f"min_scale {self.min_scale} > max_scale {self.max_scale}")
        return self


def generate(n: int, p: PairsParams, stream: int) -> Split:
    """`n` pairs of split `stream`, deterministic in (seed, stream)."""
    image_params = shapes.ShapesParams(
        image_size=p.image_size, classes=p.classes, min_scale=p.min_scale, max_scale=p.max_scale,
        noise=p.noise, seed=p.seed,
    )
    rng = np.random.default_rng([p.seed, 100 + stream])
    k = len(p.classes)
    same = rng.permutation(np.arange(n) < round(p.same_fraction * n))
    first = rng.integers(0, k, n)
    second = np.where(same, first, (first + rng.integers(1, k, n)) % k)  # a different class when not same
    a = shapes.generate(n, image_params, 2 * stream + 10, labels=first)
    b = shapes.generate(n, image_params, 2 * stream + 11, labels=second)
    x = np.stack([a.x, b.x], axis=1)
    return Split(x, same.astype(np.int32))


@register("dataset", "pairs", PairsParams)
def build(p: PairsParams) -> DataBundle:
    """Same/different pairs of synthetic shape images (y=1 same class), x of shape (N, 2, H, W, 3)."""
    splits = {"train": generate(p.num_train, p, 0), "val": generate(p.num_val, p, 1)}
    if p.num_test:
        splits["test"] = generate(p.num_test, p, 2)
    s = p.image_size
    return DataBundle(splits, (2, s, s, 3), 2, ["different", "same"], task="pairs",
                      meta={"image_shape": (s, s, 3)})
