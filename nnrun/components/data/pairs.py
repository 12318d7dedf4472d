"""`pairs`: seeded same/different pairs of `shapes` images, for siamese / contrastive training.

x has shape (N, 2, H, W, 3); y = 1 when both images show the same shape class, 0 otherwise
(the label convention of the `contrastive` loss). The two images of a pair are independent
draws (position, size, colours, noise), so "same" means same class, not same picture.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from nnrun.components.data import shapes
from nnrun.components.data.base import DataBundle, Split, standard_splits
from nnrun.registry import register


class PairsParams(shapes.ShapeLook):
    same_fraction: float = Field(0.5, gt=0, lt=1, description="fraction of pairs with the same class")


def generate(n: int, p: PairsParams, stream: int) -> Split:
    """`n` pairs of split `stream`, deterministic in (seed, stream)."""
    image_params = shapes.ShapesParams(**p.model_dump(include=set(shapes.ShapeLook.model_fields)))
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
    s = p.image_size
    return DataBundle(standard_splits(generate, p), (2, s, s, 3), 2, ["different", "same"], task="pairs",
                      meta={"image_shape": (s, s, 3)})
