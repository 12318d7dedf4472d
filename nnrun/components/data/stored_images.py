"""Images of their own sizes held in memory: image_folder's training split with `storage_size`
and `cache: memory`, each image stored with its short side at storage_size and its aspect
ratio kept, so that random_resized_crop draws from the whole image (as timm and torchvision
do) rather than from its centre square.

They are one flat uint8 buffer with each image's offset and shape (a batch array needs one
shape). They are read one example at a time, like the files of a streamed split (Split.decode):
in any order, each straight into its crop when given one, otherwise as its centre square, which
is exactly the image the other cache modes store (graph_decode's short-side resize is the
same). The buffer becomes one TensorFlow tensor once, outside any traced function: a numpy
array captured inside one would be copied into the graph.
"""

from __future__ import annotations

import numpy as np

from nnrun.components.data.graph_decode import centre_square


class StoredImages:
    def __init__(self, flat: np.ndarray, shapes: np.ndarray, channels: int, side: int, labels: np.ndarray):
        self.flat, self.shapes, self.channels, self.side = flat, np.asarray(shapes, np.int32), channels, side
        self.labels = np.asarray(labels, np.int32)
        self.offsets = np.concatenate([[0], np.cumsum(self.shapes.prod(axis=1).astype(np.int64) * channels)[:-1]])
        self._tensors = None

    def __len__(self) -> int:
        return len(self.labels)

    def tensors(self):
        """(buffer, offsets, shapes, labels) as tensors, made once, eagerly."""
        import tensorflow as tf

        if self._tensors is None:
            with tf.init_scope():  # eager even when called while a tf.data function is traced
                self._tensors = (tf.constant(self.flat), tf.constant(self.offsets, tf.int64),
                                 tf.constant(self.shapes), tf.constant(self.labels))
        return self._tensors

    def read(self, order=None, crop=None):
        """Dataset of (uint8 image, label) for the examples at `order` (indices; default all, in
        order): with `crop` (base.ExampleCrop), each example's crop, drawn in its whole stored
        image and resized; else its centre side x side square."""
        import tensorflow as tf

        flat, offsets, shapes, labels = self.tensors()
        order = tf.range(len(self), dtype=tf.int64) if order is None else tf.cast(order, tf.int64)
        side, channels = self.side, self.channels
        if crop is not None:
            windows = tf.stack(crop.boxes(shapes[:, 0], shapes[:, 1]), axis=1)

        def one(i):
            h, w = shapes[i, 0], shapes[i, 1]
            image = tf.reshape(flat[offsets[i]:offsets[i] + tf.cast(h * w * channels, tf.int64)], [h, w, channels])
            if crop is None:
                return tf.ensure_shape(centre_square(tf, image, side), [side, side, channels]), labels[i]
            top, left, ch, cw = tf.unstack(windows[i])
            # Not antialiased, as the batch crop of stored squares is not: a crop's side is at most
            # storage_size / image_size x 4/3 (random_resized_crop's widest ratio) times the
            # output's (1.52 for 256 / 224), and antialiasing cut the throughput to a third.
            resized = crop.resize(tf, image[top:top + ch, left:left + cw], antialias=False)
            return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8), labels[i]

        return tf.data.Dataset.from_tensor_slices(order).map(one, num_parallel_calls=tf.data.AUTOTUNE,
                                                             deterministic=True)
