"""`random_erasing` (Zhong et al. 2020): with some probability, overwrite a random rectangle of
each image, of random area and aspect ratio, with noise, zeros or the data's mean.

As torchvision's RandomErasing: the area is a uniform fraction `scale` of the image, the aspect
ratio log-uniform in `ratio`, the rectangle placed uniformly where it fits; up to 10 draws are
tried and an image none of them fits is left as it is. Per example, inside the graph, every
random number from the stateless key of (seed, epoch, step), for exact resume (Keras has no
erasing layer; its preprocessing layers draw from stateful generators).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from nnrun.components.techniques.base import Technique
from nnrun.errors import ConfigError
from nnrun.registry import Params, register

ATTEMPTS = 10


class RandomErasingParams(Params):
    probability: float = Field(0.25, ge=0, le=1, description="fraction of images that get a rectangle erased")
    scale: tuple[float, float] = Field((0.02, 1 / 3), description="[min, max] area of the rectangle, as a fraction of the image")
    ratio: tuple[float, float] = Field((0.3, 3.3), description="[min, max] aspect ratio (height / width), drawn log-uniformly")
    value: Literal["random", "zero", "mean"] = Field(
        "random", description="random: per-pixel uniform noise over the value range; zero; mean: the training data's per-channel mean")

    @model_validator(mode="after")
    def _ranges(self):
        check_area_and_ratio(self.scale, self.ratio)
        return self


def check_area_and_ratio(scale, ratio) -> None:
    """The [min, max] area fraction and aspect ratio of a random rectangle (random_erasing,
    random_resized_crop)."""
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must be 0 < min <= max <= 1, got {list(scale)}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must be 0 < min <= max, got {list(ratio)}")


class RandomErasing(Technique):
    name = "random_erasing"
    priority = 40  # after the other augmentations, before mixing (as timm)

    def __init__(self, p: RandomErasingParams, ctx):
        if ctx.image_size is None:
            raise ConfigError("works on image batches only", "train.techniques.random_erasing")
        self.p = p
        self.top = 255.0
        self.mean = None

    def check(self, data) -> None:
        self.top = 255.0 if "int" in data.input_dtype else 1.0
        if self.p.value == "mean":
            import numpy as np

            split = data.split("train")
            if split.x is None and split.held is None:
                raise ConfigError("value: mean needs the training split in memory (data.params.cache: memory)",
                                  "train.techniques.random_erasing.value")
            if split.x is None:  # held at their own sizes: the mean of the centre squares it reads as
                from nnrun.components.data.stream import channel_statistics

                self.mean = [float(v) for v in channel_statistics(split.held.read())[0]]
            else:
                self.mean = [float(v) for v in np.asarray(split.x, np.float64).mean(axis=(0, 1, 2))]

    def record(self) -> dict:
        return {**self.p.model_dump(), **({"mean": self.mean} if self.mean else {})}

    def rectangles(self, tf, key, n, height, width):
        """(apply, top, left, h, w) per example, as torchvision draws them (the first of ATTEMPTS
        draws that fits; none fits: not applied)."""
        k_apply, k_area, k_ratio, k_y, k_x = tf.unstack(tf.random.experimental.stateless_split(key, 5))
        area = tf.cast(height * width, tf.float32)
        target = area * tf.random.stateless_uniform([n, ATTEMPTS], seed=k_area, minval=self.p.scale[0],
                                                    maxval=self.p.scale[1])
        log_ratio = tf.random.stateless_uniform([n, ATTEMPTS], seed=k_ratio, minval=math.log(self.p.ratio[0]),
                                                maxval=math.log(self.p.ratio[1]))
        aspect = tf.exp(log_ratio)
        h = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
        w = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
        fits = (h < height) & (w < width) & (h > 0) & (w > 0)
        first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
        h, w = tf.gather(h, first, batch_dims=1), tf.gather(w, first, batch_dims=1)
        fits = tf.reduce_any(fits, axis=1)
        apply = fits & (tf.random.stateless_uniform([n], seed=k_apply) < self.p.probability)
        top = tf.cast(tf.floor(tf.random.stateless_uniform([n], seed=k_y) * tf.cast(height - h + 1, tf.float32)),
                      tf.int32)
        left = tf.cast(tf.floor(tf.random.stateless_uniform([n], seed=k_x) * tf.cast(width - w + 1, tf.float32)),
                       tf.int32)
        return apply, top, left, h, w

    def batch_transform(self, images, labels, epoch, key):
        import tensorflow as tf

        shape = tf.shape(images)
        n, height, width = shape[0], shape[1], shape[2]
        k_rect, k_fill = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        apply, top, left, h, w = self.rectangles(tf, k_rect, n, height, width)
        rows = tf.range(height)[None, :, None]
        cols = tf.range(width)[None, None, :]
        inside = ((rows >= top[:, None, None]) & (rows < (top + h)[:, None, None])
                  & (cols >= left[:, None, None]) & (cols < (left + w)[:, None, None]) & apply[:, None, None])
        if self.p.value == "random":
            fill = tf.random.stateless_uniform(shape, seed=k_fill, maxval=self.top, dtype=images.dtype)
        elif self.p.value == "zero":
            fill = tf.zeros_like(images)
        else:
            fill = tf.broadcast_to(tf.constant(self.mean, images.dtype), shape)
        return tf.where(inside[..., None], fill, images), labels


@register("technique", "random_erasing", RandomErasingParams)
def build(p: RandomErasingParams, ctx) -> RandomErasing:
    """Random erasing: a random rectangle of some images overwritten with noise, zeros or the mean; per example, stateless."""
    return RandomErasing(p, ctx)
