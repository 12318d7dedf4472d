"""`random_resized_crop` (Szegedy et al. 2015; timm's and torchvision's RandomResizedCrop): each
training image is a random crop of the stored image, of random area and aspect ratio, resized
to the training size. Evaluation, predict and exports instead take the centre crop (timm's
`crop_pct`) and resize it, in Keras layers that exports carry.

The draw is torchvision's: area a uniform fraction `scale` of the image, aspect ratio (width /
height) log-uniform in `ratio`, the first of 10 draws that fits, placed uniformly; when none
fits, the centre crop with the ratio clamped to `ratio`. Every number comes from the stateless
key of (seed, epoch, step), per example, inside the graph, so a resumed run replays the same
crops (Keras' RandomCrop and RandomZoom draw from stateful generators, once per batch).

The crop is drawn in each whole image. image_folder with `cache: none` or `memory` gives its
examples one at a time (Split.decode), and the crop (example_crop) is taken as each is read:
fused into the decode and resized with antialiasing (none), or from each image held at its own
size (memory). Other sources are cropped a batch at a time (batch_transform) in one
`tf.image.crop_and_resize`, bilinear with the corner pixels aligned: stored squares, or
image_folder's file cache of whole images, batched ragged and zero-padded (each crop stays
inside its image). Neither of the last two antialiases: a crop is at most `storage_size /
image_size` (x 4/3 for a whole image) times its output's side, so aliasing stays small when
the storage size is close to the training size (256 for 224, as timm's eval resize).

With `progressive_resizing`, the crop is resized straight to that epoch's size (and the
schedule does not resize again).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from nnrun.components.techniques.base import Technique
from nnrun.components.techniques.random_erasing import check_area_and_ratio
from nnrun.errors import ConfigError
from nnrun.registry import Params, register

ATTEMPTS = 10


class RandomResizedCropParams(Params):
    scale: tuple[float, float] = Field((0.08, 1.0), description="[min, max] area of the crop, as a fraction of the stored image")
    ratio: tuple[float, float] = Field((3 / 4, 4 / 3), description="[min, max] aspect ratio (width / height), drawn log-uniformly")
    interpolation: Literal["bilinear", "nearest"] = Field("bilinear", description="how a crop is resized to the training size")
    crop_pct: float = Field(0.875, gt=0, le=1, description="evaluation, predict and exports: the centre square of this "
                            "fraction of the short side, resized to the training size (timm's crop_pct)")

    @model_validator(mode="after")
    def _ranges(self):
        check_area_and_ratio(self.scale, self.ratio)
        return self


def crop_boxes(tf, key, n, height, width, scale, ratio):
    """(top, left, crop height, crop width), int32 (n,) each, drawn as torchvision's
    RandomResizedCrop.get_params, for n images of height x width (int32 scalars, or (n,)
    vectors for images of different sizes)."""
    k_area, k_ratio, k_y, k_x = tf.unstack(tf.random.experimental.stateless_split(key, 4))
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    rows, cols = tf.reshape(height, [-1, 1]), tf.reshape(width, [-1, 1])  # against the (n, ATTEMPTS) draws
    area = tf.cast(rows * cols, tf.float32)
    target = area * tf.random.stateless_uniform([n, ATTEMPTS], seed=k_area, minval=scale[0], maxval=scale[1])
    aspect = tf.exp(tf.random.stateless_uniform([n, ATTEMPTS], seed=k_ratio, minval=math.log(ratio[0]),
                                                maxval=math.log(ratio[1])))
    w = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
    h = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
    fits = (w > 0) & (w <= cols) & (h > 0) & (h <= rows)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    h, w = tf.gather(h, first, batch_dims=1), tf.gather(w, first, batch_dims=1)
    fits = tf.reduce_any(fits, axis=1)
    # None fits: the whole image, its ratio clamped to `ratio` (torchvision's fallback).
    in_ratio = tf.cast(width, tf.float32) / tf.cast(height, tf.float32)
    fall_w = tf.where(in_ratio > ratio[1], tf.cast(tf.round(tf.cast(height, tf.float32) * ratio[1]), tf.int32), width)
    fall_h = tf.where(in_ratio < ratio[0], tf.cast(tf.round(tf.cast(width, tf.float32) / ratio[0]), tf.int32), height)
    h, w = tf.where(fits, h, fall_h), tf.where(fits, w, fall_w)
    top = tf.cast(tf.floor(tf.random.stateless_uniform([n], seed=k_y) * tf.cast(height - h + 1, tf.float32)), tf.int32)
    left = tf.cast(tf.floor(tf.random.stateless_uniform([n], seed=k_x) * tf.cast(width - w + 1, tf.float32)), tf.int32)
    top = tf.where(fits, top, (height - h) // 2)
    left = tf.where(fits, left, (width - w) // 2)
    return top, left, h, w


def resize_crops(tf, images, top, left, h, w, size, method="bilinear"):
    """Each image's crop [top, top+h) x [left, left+w) resized to size x size in one
    crop_and_resize, the box running from the centre of the crop's first pixel to that of its
    last (align_corners), so that every sample lies inside the crop: a box reaching past it
    (half-pixel centres) would blend in pixels beyond the crop, or zeros beyond the image."""
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    h, w, top, left = (tf.cast(v, tf.float32) for v in (h, w, top, left))
    y_scale, x_scale = tf.maximum(height - 1, 1.0), tf.maximum(width - 1, 1.0)
    boxes = tf.stack([top / y_scale, left / x_scale, (top + h - 1) / y_scale, (left + w - 1) / x_scale], axis=1)
    out = tf.image.crop_and_resize(images, boxes, tf.range(shape[0]), tf.stack([size, size]), method=method)
    return tf.cast(out, images.dtype)


class RandomResizedCrop(Technique):
    name = "random_resized_crop"
    priority = 5  # first: the other augmentations see the training-size crop
    crops_stored_images = True

    def __init__(self, p: RandomResizedCropParams, ctx):
        if ctx.image_size is None:
            raise ConfigError("works on image data only", "train.techniques.random_resized_crop")
        self.p = p
        self.ctx = ctx
        self.stored = ctx.stored_size or ctx.image_size
        self.eval_crop = max(1, round(self.stored * p.crop_pct))  # the centre square's side, in stored pixels
        self._eval = None

    def _size(self, tf, epoch):
        """The output side: progressive resizing's size for the epoch, else the training size."""
        schedule = self.ctx.techniques.get("progressive_resizing")
        if schedule is None:
            return tf.constant(self.ctx.image_size, tf.int32)
        return schedule.size_tensor(tf, epoch)

    def batch_transform(self, images, labels, epoch, key):
        """A batch of stored squares, or a ragged batch of whole images of their own sizes (the
        file cache with storage_size), each cropped within its own extent."""
        import tensorflow as tf

        if isinstance(images, tf.RaggedTensor):
            heights = tf.cast(images.row_lengths(), tf.int32)
            widths = tf.cast(tf.gather(images.values.row_lengths(), images.row_starts()), tf.int32)
            images = images.to_tensor()  # zero-padded to the largest; each crop stays inside its image
        else:
            shape = tf.shape(images)
            heights, widths = shape[1], shape[2]
        top, left, h, w = crop_boxes(tf, key, tf.shape(images)[0], heights, widths, self.p.scale, self.p.ratio)
        return resize_crops(tf, images, top, left, h, w, self._size(tf, epoch), self.p.interpolation), labels

    def example_crop(self, epoch, key):
        """The same draw per example of a source that reads its examples one at a time
        (image_folder: files with `cache: none`, or stored images of their own aspect ratios
        with `cache: memory`), for all its examples at once from the epoch's key, each box
        in the example's whole image; resized by the source (antialiased from a file's full
        decode, not from a stored image, which is close to the training size)."""
        import tensorflow as tf

        from nnrun.components.data.base import ExampleCrop

        def boxes(heights, widths):
            return crop_boxes(tf, key, tf.size(heights), heights, widths, self.p.scale, self.p.ratio)

        return ExampleCrop(boxes, self._size(tf, epoch), self.p.interpolation)

    def eval_layers(self) -> list:
        """Keras' CenterCrop of round(crop_pct * stored side) pixels, then Resizing (bilinear,
        antialiased) to the training size: one instance, reused by every pipeline and exports."""
        import keras

        side, size = self.eval_crop, self.ctx.image_size
        if self._eval is None:
            self._eval = []
            if side != self.stored:
                self._eval.append(keras.layers.CenterCrop(side, side, dtype="float32", name="eval_centre_crop"))
            if side != size:
                self._eval.append(keras.layers.Resizing(size, size, interpolation="bilinear", antialias=True,
                                                        dtype="float32", name="eval_crop_resize"))
        return self._eval

    def record(self) -> dict:
        return {**self.p.model_dump(), "stored_size": self.stored, "eval_crop": self.eval_crop}


@register("technique", "random_resized_crop", RandomResizedCropParams)
def build(p: RandomResizedCropParams, ctx) -> RandomResizedCrop:
    """RandomResizedCrop per example (stateless) for training; the centre crop (crop_pct) for evaluation and exports."""
    return RandomResizedCrop(p, ctx)
