"""Batched image operations with a parameter per example, for RandAugment and TrivialAugment.

Every function takes float images (B, H, W, C) in [0, top] (top = 255 for 8-bit data, 1 for
float data) and per-example parameters (B,), and returns images of the same shape: each
example gets its own op and magnitude in one graph, with no per-example Python. The colour
ops follow PIL's ImageOps / ImageEnhance, which the RandAugment paper's code and timm use;
the geometric ones are affine maps about the image centre (as torchvision), resampled
bilinearly, filled with grey.
"""

from __future__ import annotations

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L")


def _tf():
    import tensorflow as tf

    return tf


def _per_example(values, images):
    """(B,) -> (B, 1, 1, 1) to broadcast over an image batch."""
    tf = _tf()
    return tf.reshape(tf.cast(values, images.dtype), [-1, 1, 1, 1])


def gray(images):
    """Luma (B, H, W, 1); a single-channel image is its own."""
    tf = _tf()
    if images.shape[-1] == 1:
        return images
    return tf.reduce_sum(images * tf.constant(LUMA, images.dtype), axis=-1, keepdims=True)


def blend(degenerate, images, factor, top):
    """PIL ImageEnhance: degenerate + factor * (image - degenerate), clipped to the range."""
    tf = _tf()
    out = degenerate + _per_example(factor, images) * (images - degenerate)
    return tf.clip_by_value(out, 0.0, top)


def brightness(images, factor, top):
    return blend(_tf().zeros_like(images), images, factor, top)


def color(images, factor, top):
    tf = _tf()
    return blend(tf.broadcast_to(gray(images), tf.shape(images)), images, factor, top)


def contrast(images, factor, top):
    tf = _tf()
    mean = tf.reduce_mean(gray(images), axis=[1, 2, 3], keepdims=True)
    return blend(tf.broadcast_to(mean, tf.shape(images)), images, factor, top)


def sharpness(images, factor, top):
    """PIL's SMOOTH kernel ([[1,1,1],[1,5,1],[1,1,1]] / 13) as the degenerate image, border
    pixels kept as they are (as PIL)."""
    tf = _tf()
    channels = images.shape[-1]
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], images.dtype) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    smooth = tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], "VALID")
    smooth = tf.pad(smooth, [[0, 0], [1, 1], [1, 1], [0, 0]])
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    inside = tf.pad(tf.ones([height - 2, width - 2], images.dtype), [[1, 1], [1, 1]])[None, :, :, None]
    degenerate = inside * smooth + (1 - inside) * images
    return blend(degenerate, images, factor, top)


def to_levels(images, top):
    """The 8-bit levels (int32) of images in [0, top]."""
    tf = _tf()
    return tf.cast(tf.round(tf.clip_by_value(images, 0.0, top) * (255.0 / top)), tf.int32)


def from_levels(levels, top, dtype):
    tf = _tf()
    return tf.cast(levels, dtype) * (top / 255.0)


def posterize(images, bits, top):
    """Keep the `bits` high bits of each 8-bit level (PIL ImageOps.posterize)."""
    tf = _tf()
    shift = tf.reshape(8 - tf.cast(bits, tf.int32), [-1, 1, 1, 1])
    levels = tf.bitwise.left_shift(tf.bitwise.right_shift(to_levels(images, top), shift), shift)
    return from_levels(levels, top, images.dtype)


def solarize(images, threshold, top):
    """Invert every value at or above the threshold (PIL ImageOps.solarize)."""
    tf = _tf()
    return tf.where(images >= _per_example(threshold, images), top - images, images)


def autocontrast(images, top):
    """Stretch each channel to the full range (PIL ImageOps.autocontrast, no cutoff)."""
    tf = _tf()
    low = tf.reduce_min(images, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2], keepdims=True)
    scale = tf.where(high > low, top / tf.maximum(high - low, 1e-12), 1.0)
    offset = tf.where(high > low, low, 0.0)
    return tf.clip_by_value((images - offset) * scale, 0.0, top)


def equalize(images, top):
    """Histogram equalisation per channel, with PIL ImageOps.equalize's rule: step = (pixels -
    count of the last used level) // 255; level i -> (pixels below i + step // 2) // step."""
    tf = _tf()
    levels = to_levels(images, top)
    shape = tf.shape(levels)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    flat = tf.reshape(tf.transpose(levels, [0, 3, 1, 2]), [b * c, h * w])
    offsets = tf.range(b * c)[:, None] * 256
    hist = tf.reshape(tf.math.bincount(flat + offsets, minlength=256 * b * c, maxlength=256 * b * c), [b * c, 256])
    used = tf.cast(hist > 0, tf.int32) * tf.range(256)[None, :]
    last = tf.gather(hist, tf.reduce_max(used, axis=1), batch_dims=1)
    step = (tf.reduce_sum(hist, axis=1) - last) // 255
    below = tf.cumsum(hist, axis=1, exclusive=True)
    lut = tf.minimum((below + (step // 2)[:, None]) // tf.maximum(step, 1)[:, None], 255)
    lut = tf.where(step[:, None] > 0, lut, tf.range(256)[None, :])
    mapped = tf.gather(lut, flat, batch_dims=1)
    out = tf.transpose(tf.reshape(mapped, [b, c, h, w]), [0, 2, 3, 1])
    return from_levels(out, top, images.dtype)


def affine(images, shear_x, shear_y, translate_x, translate_y, degrees, top):
    """One affine map per example about the image centre: shears (tan of the angle), translations
    (pixels) and a rotation (degrees), resampled bilinearly, outside filled with grey."""
    tf = _tf()
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    angle = tf.cast(degrees, tf.float32) * (3.141592653589793 / 180)
    cos, sin = tf.cos(angle), tf.sin(angle)
    sx, sy = tf.cast(shear_x, tf.float32), tf.cast(shear_y, tf.float32)
    tx, ty = tf.cast(translate_x, tf.float32), tf.cast(translate_y, tf.float32)
    # Output (x, y) -> input: centre, rotate, shear, shift back and translate.
    a0, a1 = cos + sx * sin, sin + sx * cos  # shear x after rotation
    b0, b1 = -sin + sy * cos, cos - sy * sin  # shear y after rotation
    a2 = cx - a0 * cx - a1 * cy - tx
    b2 = cy - b0 * cx - b1 * cy - ty
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3], fill_value=tf.cast(top * 128 / 255, images.dtype),
        interpolation="BILINEAR", fill_mode="CONSTANT")
