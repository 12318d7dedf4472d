"""`augment` technique: per-example random flip and crop-with-padding, in-graph, per batch.

A technique rather than a data-source option because it must run per batch inside tf.data
with every random number drawn from the stateless key of (seed, epoch, step): a resumed run
then augments exactly as an uninterrupted one. keras.layers.RandomFlip / RandomCrop draw from
a stateful SeedGenerator, which would break that.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nnrun.components.techniques.base import Technique
from nnrun.errors import ConfigError
from nnrun.registry import Params, register


class AugmentParams(Params):
    flip: Literal["none", "horizontal", "vertical", "both"] = Field("horizontal", description="random flips, each with p = 0.5")
    crop_padding: int = Field(0, ge=0, le=64, description="pad by this many pixels, then crop a random window of the original size")
    pad_mode: Literal["constant", "reflect"] = Field("reflect", description="padding for the crop: zeros or mirrored edges")


class Augment(Technique):
    name = "augment"
    priority = 10  # before resizing and mixing

    def __init__(self, p: AugmentParams, ctx):
        if ctx.image_size is None:
            raise ConfigError("works on image batches only", "train.techniques.augment")
        self.p = p

    def record(self) -> dict:
        return self.p.model_dump()

    def batch_transform(self, images, labels, epoch, key):
        import tensorflow as tf

        keys = tf.unstack(tf.random.experimental.stateless_split(key, 3))
        n = tf.shape(images)[0]
        for axis, k, wanted in ((2, keys[0], ("horizontal", "both")), (1, keys[1], ("vertical", "both"))):
            if self.p.flip in wanted:
                flip = tf.random.stateless_uniform([n], seed=k) < 0.5
                images = flip_where(tf, images, flip, axis)
        if self.p.crop_padding:
            images = self._crop(tf, images, keys[2])
        return images, labels

    def _crop(self, tf, images, key):
        """Per-example random window: gather rows then columns at per-example offsets."""
        pad = self.p.crop_padding
        shape = tf.shape(images)
        padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode=self.p.pad_mode.upper())
        offsets = tf.random.stateless_uniform([shape[0], 2], seed=key, maxval=2 * pad + 1, dtype=tf.int32)
        rows = offsets[:, :1] + tf.range(shape[1])[None, :]
        cols = offsets[:, 1:] + tf.range(shape[2])[None, :]
        out = tf.gather(padded, rows, axis=1, batch_dims=1)
        return tf.gather(out, cols, axis=2, batch_dims=1)


def flip_where(tf, images, flip, axis: int):
    """Each image of the batch reversed along `axis` where `flip` (bool, per image) holds: one
    gather of per-image indices. The same values as tf.where(flip, tf.reverse(images), images),
    2.6x faster on CPU (64 x 224 px float32; that pair was the in-memory pipeline's bottleneck),
    as it writes the batch once instead of reversing all of it and then selecting."""
    length = tf.shape(images)[axis]
    forward = tf.range(length)
    index = tf.where(flip[:, None], tf.reverse(forward, [0])[None], forward[None])
    return tf.gather(images, index, axis=axis, batch_dims=1)


@register("technique", "augment", AugmentParams)
def build(p: AugmentParams, ctx) -> Augment:
    """Per-example random flip and crop-with-padding, keyed on (seed, epoch, step) for exact resume."""
    return Augment(p, ctx)
