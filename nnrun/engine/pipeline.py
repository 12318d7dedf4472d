"""tf.data input pipelines for in-memory splits.

The training order is a pure function of (seed, epoch): each epoch draws its own stateless
permutation, so a run resumed at epoch k sees exactly the batches an uninterrupted run sees.
Batches are gathered from the arrays in one op per batch (no per-example Python or map).
"""

from __future__ import annotations

import math

from nnrun.components.data.base import Split


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def _encode(tf, labels, num_classes: int, label_mode: str):
    """Labels as the loss wants them: "onehot" float vectors, "sparse" integers, or "raw"."""
    return tf.one_hot(labels, num_classes, dtype=tf.float32) if label_mode == "onehot" else labels


def train_dataset(split: Split, *, batch_size: int, seed: int, num_classes: int, label_mode: str,
                  first_epoch: int, last_epoch: int):
    """Batches for epochs [first_epoch, last_epoch), each epoch in its own seeded order.

    Elements are (images, labels). Keras' fit keeps one iterator across epochs when
    steps_per_epoch is given, so epoch e consumes exactly the batches of permutation e.
    """
    import tensorflow as tf

    x = tf.constant(split.x)
    y = tf.constant(split.y)
    n = len(split)

    def epoch_batches(epoch):
        keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(tf.argsort(keys)).batch(batch_size)

    def gather(index):
        return tf.gather(x, index), _encode(tf, tf.gather(y, index), num_classes, label_mode)

    ds = tf.data.Dataset.range(first_epoch, last_epoch).flat_map(epoch_batches)
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(split: Split, *, batch_size: int, num_classes: int, label_mode: str):
    """Fixed-order batches for validation / test, cached after the first pass."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y)).batch(batch_size)
    ds = ds.map(lambda x, y: (x, _encode(tf, y, num_classes, label_mode)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.cache().prefetch(tf.data.AUTOTUNE)
