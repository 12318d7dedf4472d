"""The one image decoder every image-file path runs (image_folder in each cache mode, and
`nnrun predict`): a tf.data pipeline, so ordinary files decode in TensorFlow's kernels, in
tf.data's threads, without the GIL. The same file gives the same pixels wherever it is read.

Each file gets a route when the file list is built (routes.py, from its header):
- TensorFlow's own decoders for what they decode exactly as Pillow does (measured on TF 2.21):
  8-bit JPEG in L or RGB without EXIF rotation (`decode_jpeg` with INTEGER_ACCURATE, Pillow's
  DCT, and the same reduced DCT scale as Pillow's `draft`), 8-bit PNG (gray, RGB, RGBA,
  palette without transparency), single-frame GIF without transparency, uncompressed 24/32-bit
  BMP, single-frame WebP without alpha;
- Pillow (decode.decode_full, through tf.numpy_function) for everything else: 16-bit, CMYK,
  EXIF-rotated, MPO, palette or gray with alpha, and any other mode (decode.py's rules).
Both give the full-size 8-bit RGB image; then, for every route alike: ITU-R 601-2 luma in
Pillow's integer arithmetic for one channel, and `tf.image.resize` (bilinear, antialiased),
rounded to uint8. Defining the resize in TensorFlow for all files makes the routes agree. The
resize is to image_size x image_size, or (`keep_aspect`, image_folder's storage_size) the short
side to image_size with the aspect ratio kept, then the centre image_size square.

Errors: a TensorFlow decode op that fails raises inside tf.data, where it carries no file name
and, inside Dataset.save, deadlocks (tensorflow#61736). So every file is tagged with its index,
failed elements are dropped (`ignore_errors`), and each gap in the indices is decoded again
through Pillow, which returns the reason (or, if Pillow can read it, the image). The dataset
therefore yields exactly one (image, error) per file, in order, and never raises for a file.
"""

from __future__ import annotations

import os

import numpy as np

from nnrun.components.data.decode import UnreadableImage, decode_full, size_of
from nnrun.components.data.routes import PILLOW

def decode_dataset(paths: list[str], routes, image_size, channels: int, max_pixels: int, keep_aspect: bool = False):
    """tf.data dataset of (uint8 image [height, width, channels], error string), one per path,
    in order: b"" and the image, or the UnreadableImage reason and zeros (module docstring)."""
    import tensorflow as tf

    height, width = size_of(image_size)
    n = len(paths)
    paths_t = tf.constant([str(p) for p in paths] or [""], tf.string)
    routes_t = tf.constant(np.asarray(routes, np.int32) if n else np.zeros([1], np.int32), tf.int32)
    blank = tf.zeros([height, width, channels], tf.uint8)

    def pillow_py(path):
        try:
            return decode_full(os.fsdecode(path), (height, width), max_pixels), np.bytes_(b"")
        except UnreadableImage as exc:
            return np.zeros((1, 1, 3), np.uint8), np.bytes_(str(exc).encode())

    def pillow(path):  # L sources stay one channel: a huge gray image is not tripled in memory
        image, error = tf.numpy_function(pillow_py, [path], [tf.uint8, tf.string], stateful=False,
                                         name="decode_image_file")
        return tf.ensure_shape(image, [None, None, None]), tf.ensure_shape(error, [])

    def native(decode):
        def run(path):
            return tf.ensure_shape(decode(tf.io.read_file(path)), [None, None, None]), tf.constant(b"")
        return run

    branches = [
        pillow,
        *(native(lambda c, r=r: tf.io.decode_jpeg(c, channels=3, ratio=r, dct_method="INTEGER_ACCURATE"))
          for r in (1, 2, 4, 8)),
        native(lambda c: tf.io.decode_png(c, channels=3)),
        native(lambda c: tf.io.decode_gif(c)[0]),
        native(lambda c: tf.io.decode_bmp(c, channels=3)),
        native(lambda c: tf.io.decode_webp(c, channels=3)[0]),
    ]

    def finish(image, error):
        """Full-size L or RGB -> (height, width, channels) uint8 (an error's 1x1 zeros give zeros;
        a tf.where on the error instead halves the throughput)."""
        gray = tf.equal(tf.shape(image)[-1], 1)
        if channels == 1:
            image = tf.cond(gray, lambda: image, lambda: _luma(tf, image))
        else:
            image = tf.cond(gray, lambda: tf.tile(image, [1, 1, 3]), lambda: image)
        if keep_aspect:
            resized = _short_side_square(tf, image, height)
        else:
            resized = tf.image.resize(image, [height, width], method="bilinear", antialias=True)
        out = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
        return tf.ensure_shape(out, [height, width, channels]), error

    def first(i):
        path = paths_t[i]
        image, error = tf.switch_case(routes_t[i], [lambda b=b: b(path) for b in branches])
        return (i, *finish(image, error))

    def again(j):  # a file a TensorFlow decoder refused: Pillow says why (or reads it)
        return finish(*pillow(paths_t[j]))

    end = tf.data.Dataset.from_tensors((tf.constant(n, tf.int64), blank, tf.constant(b"")))
    ds = (tf.data.Dataset.range(n).map(first, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .ignore_errors().concatenate(end)
          .scan(tf.constant(0, tf.int64), lambda expected, e: (e[0] + 1, (expected, *e))))

    def fill(expected, i, image, error):
        gap = tf.data.Dataset.range(expected, i).map(again)
        return gap.concatenate(tf.data.Dataset.from_tensors((image, error)).take(tf.cast(i < n, tf.int64)))

    return ds.flat_map(fill)


def _short_side_square(tf, image, side: int):
    """The short side resized to `side` (the long one rounded to keep the aspect ratio), then
    the centre side x side square (offsets rounded down, as Keras' CenterCrop)."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    short = tf.minimum(h, w)
    new_h = tf.maximum(side, (2 * h * side + short) // (2 * short))
    new_w = tf.maximum(side, (2 * w * side + short) // (2 * short))
    resized = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
    return resized[(new_h - side) // 2:(new_h - side) // 2 + side, (new_w - side) // 2:(new_w - side) // 2 + side]


def _luma(tf, image):
    """RGB -> L exactly as Pillow's convert("L"): (19595 R + 38470 G + 7471 B + 32768) >> 16."""
    rgb = tf.cast(image, tf.int32)
    luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 32768) // 65536
    return tf.cast(luma, tf.uint8)[..., None]


def routes_of(paths: list[str], image_size, max_pixels: int) -> np.ndarray:
    """Each file's route, where nothing was checked before (predict): a file the check refuses
    goes to Pillow, whose decode then gives the reason."""
    from nnrun.components.data.decode import check_file

    def route(path):
        try:
            return check_file(path, image_size, max_pixels)
        except UnreadableImage:
            return PILLOW

    return np.array([route(p) for p in paths], np.int32)


def decode_one(path, image_size, channels: int, max_pixels: int, route: int | None = None,
               keep_aspect: bool = False) -> np.ndarray:
    """One file through the same pipeline, eagerly (tests, and callers outside tf.data);
    raises UnreadableImage."""
    from nnrun.components.data.decode import check_file

    if route is None:
        route = check_file(path, image_size, max_pixels)
    image, error = next(iter(decode_dataset([str(path)], [route], image_size, channels, max_pixels, keep_aspect)))
    if error.numpy():
        raise UnreadableImage(error.numpy().decode(errors="replace"))
    return image.numpy()
