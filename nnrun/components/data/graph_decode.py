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
side to image_size with the aspect ratio kept, then the centre image_size square. Training
with `cache: none` may instead take a random crop per file (random_resized_crop): the crop of
the whole decoded image, resized with antialiasing; a JPEG's crop is decoded alone
(decode_and_crop_jpeg), so only its window is decoded.

Errors: a TensorFlow decode op that fails raises inside tf.data, where it carries no file name
and, inside Dataset.save, deadlocks (tensorflow#61736). So every file is tagged with its index,
failed elements are dropped (`ignore_errors`), and each gap in the indices is decoded again
through Pillow, which returns the reason (or, if Pillow can read it, the image). The dataset
therefore yields exactly one (image, error) per file, in order, and never raises for a file.
The gaps are looked for GAP_BATCH files at a time, by one scan and one parallel map, then
unbatched: a flat_map building a dataset for every file had cost a quarter of the streamed
throughput, and a function call per file (a scan, a map, a tf.cond) costs it too.
"""

from __future__ import annotations

import os

import numpy as np

from nnrun.components.data.decode import UnreadableImage, decode_full, size_of
from nnrun.components.data.routes import JPEG1, JPEG8, PILLOW

GAP_BATCH = 64  # decoded files checked for gaps at a time


def decode_dataset(paths: list[str], routes, image_size, channels: int, max_pixels: int, keep_aspect: bool = False,
                   order=None, crop=None, labels=None, check=None, sizes=None, whole: bool = False):
    """tf.data dataset of (uint8 image [height, width, channels], error string), one per path,
    in order: b"" and the image, or the UnreadableImage reason and zeros (module docstring).

    `order` (int tensor, indices into `paths`): the files to read, in that order (default: all,
    as listed). `crop` (base.ExampleCrop) with `sizes` ((height, width) of each file's decoded
    image, decode.inspect_file's): each file decoded straight into its training crop, the box
    crop.boxes drew for it, resized to crop.size (JPEGs through decode_and_crop_jpeg, which
    decodes only the rows and blocks the window needs). The boxes of all the files are drawn
    at once: drawn per file, in a map, the draw's few dozen small ops cost a quarter of the
    throughput.
    `whole` (with keep_aspect and `sizes`): each image resized to stored_shapes(sizes) (the short
    side to image_size, the aspect ratio kept), not cut to its centre square (inside, while the
    files are checked 64 at a time, flattened and zero-padded to the largest of them: images of
    different sizes cannot be batched).
    `labels` and `check`: elements are (image, label) instead, and check(paths, errors) (each a
    batch of up to GAP_BATCH files) gives the op that deals with the errors, run before they are
    handed on (once per batch: a function call per file costs throughput)."""
    import tensorflow as tf

    height, width = size_of(image_size)
    n = len(paths)
    paths_t = tf.constant([str(p) for p in paths] or [""], tf.string)
    routes_t = tf.constant(np.asarray(routes, np.int32) if n else np.zeros([1], np.int32), tf.int32)
    order_t = tf.range(n, dtype=tf.int64) if order is None else tf.cast(order, tf.int64)
    labels_t = None if labels is None else tf.constant(np.asarray(labels) if n else np.zeros([1], np.int32))
    out_shape = [height, width, channels] if crop is None else [None, None, channels]
    blank = tf.zeros([height, width, channels] if crop is None else tf.stack([crop.size, crop.size, channels]),
                     tf.uint8)
    if whole:
        shapes = stored_shapes(sizes, height) if n else np.ones([1, 2], np.int32)
        out_shape = [int(shapes.prod(axis=1).max()) * channels]
        blank, shapes = tf.zeros(out_shape, tf.uint8), tf.constant(shapes)

    def pillow_py(path):
        try:
            return decode_full(os.fsdecode(path), (height, width), max_pixels), np.bytes_(b"")
        except UnreadableImage as exc:
            return np.zeros((1, 1, 3), np.uint8), np.bytes_(str(exc).encode())

    def pillow(path):  # L sources stay one channel: a huge gray image is not tripled in memory
        image, error = tf.numpy_function(pillow_py, [path], [tf.uint8, tf.string], stateful=False,
                                         name="decode_image_file")
        return tf.ensure_shape(image, [None, None, None]), tf.ensure_shape(error, [])

    if crop is not None:
        listed = tf.constant(np.asarray(sizes, np.int32).reshape([-1, 2]) if n else np.ones([1, 2], np.int32))
        windows = tf.stack(crop.boxes(listed[:, 0], listed[:, 1]), axis=1)  # (top, left, height, width) per file

    def cut(i, image):
        """With `crop`: file i's crop of its decoded image, kept inside it (a file whose size
        changed since it was listed still gives a crop)."""
        if crop is None:
            return image
        shape = tf.shape(image)
        top, left = tf.minimum(windows[i, 0], shape[0] - 1), tf.minimum(windows[i, 1], shape[1] - 1)
        return image[top:top + tf.maximum(windows[i, 2], 1), left:left + tf.maximum(windows[i, 3], 1)]

    def native(decode):
        def run(path):
            return tf.ensure_shape(decode(tf.io.read_file(path)), [None, None, None]), tf.constant(b"")
        return run

    jpeg_ratios = (1, 2, 4, 8)  # routes JPEG1..JPEG8
    branches = [  # by route, each giving (full-size image, error)
        pillow,
        *(native(lambda c, r=r: tf.io.decode_jpeg(c, channels=3, ratio=r, dct_method="INTEGER_ACCURATE"))
          for r in jpeg_ratios),
        native(lambda c: tf.io.decode_png(c, channels=3)),
        native(lambda c: tf.io.decode_gif(c)[0]),
        native(lambda c: tf.io.decode_bmp(c, channels=3)),
        native(lambda c: tf.io.decode_webp(c, channels=3)[0]),
    ]

    present = sorted({int(r) for r in np.asarray(routes).ravel()}) or [PILLOW]  # the routes this list needs

    def jpeg_crop(path, i, route):
        """A JPEG route's crop, decoded alone: its window lies in the DCT-scaled image (the
        size listed for the file); one that does not fit (the file changed) fails the decode,
        and Pillow reads the file instead."""
        contents = tf.io.read_file(path)
        decoders = {r: lambda r=r: tf.io.decode_and_crop_jpeg(contents, windows[i], channels=3,
                                                              ratio=jpeg_ratios[r - JPEG1], dct_method="INTEGER_ACCURATE")
                    for r in present if JPEG1 <= r <= JPEG8}
        return tf.ensure_shape(_by_route(tf, route, decoders), [None, None, None]), tf.constant(b"")

    def decode(i):
        """File i decoded by its route (and, with `crop`, cut to its crop)."""
        path, route = paths_t[i], routes_t[i]
        if crop is None:
            return _by_route(tf, route, {r: lambda b=branches[r]: b(path) for r in present})
        cropped = {r: lambda b=branches[r]: (lambda image, error: (cut(i, image), error))(*b(path))
                   for r in present if not JPEG1 <= r <= JPEG8}
        if len(cropped) < len(present):  # some JPEG routes: one branch decodes their crops
            cropped[JPEG1] = lambda: jpeg_crop(path, i, route)
        jpeg = (route >= JPEG1) & (route <= JPEG8)
        return _by_route(tf, tf.where(jpeg, JPEG1, route), cropped)

    def finish(image, error, i, gray: bool = True):
        """Full-size L or RGB (or its crop) -> (height, width, channels) uint8 (an error's 1x1
        zeros give zeros; a tf.where on the error instead halves the throughput). No tf.cond on
        the channel count: each cond is a function call per file, which costs throughput.
        `gray`: the image may have one channel (only Pillow gives L; TensorFlow's decoders are
        asked for RGB), else the ops that would widen it are left out, as every op run per
        file costs throughput."""
        if channels == 1:
            image = _luma(tf, image)
        elif gray:  # L repeated into three channels; RGB as it is (a tile by 1 passes it through)
            image = tf.tile(image, tf.stack([1, 1, 3 // tf.shape(image)[-1]]))
        if crop is not None:
            resized = crop.resize(tf, image)
        elif whole:
            resized = tf.image.resize(image, shapes[i], method="bilinear", antialias=True)
        elif keep_aspect:
            resized = _short_side_square(tf, image, height)
        else:
            resized = tf.image.resize(image, [height, width], method="bilinear", antialias=True)
        out = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
        if whole:
            out = tf.reshape(out, [-1])
            out = tf.pad(out, [[0, out_shape[0] - tf.size(out)]])
        return tf.ensure_shape(out, out_shape), error

    def first(position):
        i = order_t[position]
        return (position, *finish(*decode(i), i, gray=PILLOW in present))

    def again(position):  # a file a TensorFlow decoder refused: Pillow says why (or reads it)
        i = order_t[position]
        image, error = pillow(paths_t[i])
        return finish(cut(i, image), error, i)

    count = tf.shape(order_t, out_type=tf.int64)[0]
    end = tf.data.Dataset.from_tensors((count, blank, tf.constant(b"")))  # marks failures at the end
    ds = (tf.data.Dataset.range(count).map(first, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .ignore_errors().concatenate(end).batch(GAP_BATCH)
          .scan(tf.constant(0, tf.int64), lambda expected, b: (b[0][-1] + 1, (expected, *b))))

    def fill(expected, positions, images, errors):
        """A batch of decoded files whose positions should run on from `expected`: as it is
        when none is missing (the end marker dropped), else with each missing file read
        through Pillow in its place. Unbatched below: the scan and this map run once per
        GAP_BATCH files, as a function call per file costs throughput."""
        last = positions[-1]
        size = last - expected + tf.cast(last < count, tf.int64)  # files this batch stands for

        def with_gaps():
            slot = positions - expected  # where each decoded file goes; the end marker at `size`
            found = tf.scatter_nd(slot[:, None], tf.range(1, tf.size(positions) + 1), [size + 1])[:size]

            def one(q):
                return tf.cond(found[q] > 0, lambda: (images[found[q] - 1], errors[found[q] - 1]),
                               lambda: again(expected + tf.cast(q, tf.int64)))

            return tf.map_fn(one, tf.range(tf.cast(size, tf.int32)),
                             fn_output_signature=(tf.TensorSpec(out_shape, tf.uint8), tf.string))

        whole = tf.equal(tf.size(positions, out_type=tf.int64), last - expected + 1)
        images, errors = tf.cond(whole, lambda: (images[:size], errors[:size]), with_gaps)
        if check is None:
            return images, errors
        files = tf.gather(order_t, tf.range(expected, expected + size))
        with tf.control_dependencies([check(tf.gather(paths_t, files), errors)]):
            return tf.identity(images), tf.gather(labels_t, files)

    out = ds.map(fill, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
    if not whole:
        return out

    def unpad(k, image, second):
        shape = shapes[order_t[k]]
        return tf.reshape(image[:shape[0] * shape[1] * channels], [shape[0], shape[1], channels]), second

    return out.enumerate().map(lambda k, element: unpad(k, *element), num_parallel_calls=tf.data.AUTOTUNE,
                               deterministic=True)


def _by_route(tf, route, branches: dict):
    """branches[route](), for the routes a file list holds: the branch itself when there is one
    (a folder of ordinary JPEGs decodes without a switch), else one switch_case over them.
    Fewer branches make a smaller graph, which a pipeline builds every time it starts."""
    routes = sorted(branches)
    if len(routes) == 1:
        return branches[routes[0]]()
    index = np.zeros(max(routes) + 1, np.int32)
    index[routes] = np.arange(len(routes))
    return tf.switch_case(tf.gather(tf.constant(index), route), [branches[r] for r in routes])


def _short_side(h, w, side: int, minimum, maximum):
    """(height, width) with the short side `side` and the long one rounded to keep the aspect
    ratio: for TensorFlow or numpy integers (minimum, maximum: tf's or np's)."""
    short = minimum(h, w)
    return maximum(side, (2 * h * side + short) // (2 * short)), maximum(side, (2 * w * side + short) // (2 * short))


def stored_shapes(sizes, side: int) -> np.ndarray:
    """The (height, width) the images of `sizes` ((n, 2) decoded sizes) are stored at with
    their aspect ratios kept (decode_dataset's `whole`): the sizes _short_side_square resizes
    them to before taking the centre square."""
    sizes = np.asarray(sizes, np.int64).reshape([-1, 2])
    return np.stack(_short_side(sizes[:, 0], sizes[:, 1], side, np.minimum, np.maximum), axis=1).astype(np.int32)


def _short_side_square(tf, image, side: int):
    """The short side resized to `side` (the long one rounded to keep the aspect ratio), then
    the centre side x side square (offsets rounded down, as Keras' CenterCrop)."""
    shape = tf.shape(image)
    new_h, new_w = _short_side(shape[0], shape[1], side, tf.minimum, tf.maximum)
    return centre_square(tf, tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True), side)


def centre_square(tf, image, side: int):
    """The centre side x side square of an image at least that large (offsets rounded down, as
    Keras' CenterCrop): how a stored whole image reads as the square every mode stores."""
    shape = tf.shape(image)
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    return image[top:top + side, left:left + side]


def _luma(tf, image):
    """RGB -> L exactly as Pillow's convert("L"): (19595 R + 38470 G + 7471 B + 32768) >> 16; an
    L image (one channel) as it is, by the same sum with the weight 65536."""
    channels = tf.shape(image)[-1]  # 1 or 3
    weights = tf.constant([65536, 19595, 38470, 7471], tf.int32)[channels // 3:channels // 3 + channels]
    luma = (tf.reduce_sum(tf.cast(image, tf.int32) * weights, axis=-1) + 32768) // 65536
    return tf.cast(luma, tf.uint8)[..., None]


def inspect_files(paths: list[str], image_size, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """(routes, (height, width) sizes) of files nothing checked before (predict, tests): a file
    the check refuses goes to Pillow, whose decode then gives the reason."""
    from nnrun.components.data.decode import inspect_file

    def inspect(path):
        try:
            return inspect_file(path, image_size, max_pixels)
        except UnreadableImage:
            return PILLOW, 1, 1

    found = np.array([inspect(p) for p in paths], np.int32).reshape([-1, 3])
    return found[:, 0], found[:, 1:]


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
