"""tf.data input pipelines for in-memory splits.

The training order is a pure function of (seed, epoch): each epoch draws its own stateless
permutation, and every random choice a technique makes in a batch is keyed on
(seed, epoch, step). A run resumed at epoch e, step s therefore sees exactly the batches an
uninterrupted run sees. Batches are gathered from the arrays in one op per batch.
"""

from __future__ import annotations

import math

from nnrun.components.data.base import Split


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def _encode(tf, labels, num_classes: int, label_mode: str):
    """Labels as the loss wants them: "onehot" float vectors, "sparse" integers, or "raw"."""
    return tf.one_hot(labels, num_classes, dtype=tf.float32) if label_mode == "onehot" else labels


def batch_key(tf, seed: int, epoch, step, salt: int):
    """Stateless seed for one (epoch, step, technique): independent streams, no hidden state."""
    key = tf.random.experimental.stateless_fold_in(tf.constant([seed, salt], tf.int64), epoch)
    return tf.random.experimental.stateless_fold_in(key, step)


def train_dataset(split: Split, *, batch_size: int, seed: int, num_classes: int, label_mode: str,
                  first_epoch: int, last_epoch: int, skip_steps: int = 0, techniques=()):
    """Batches for epochs [first_epoch, last_epoch) (after skipping `skip_steps` batches).

    Elements are (inputs, labels). Keras' fit keeps one iterator across epochs when
    steps_per_epoch is given, so epoch e consumes exactly the batches of permutation e.
    """
    import tensorflow as tf

    x = tf.constant(split.x)
    y = tf.constant(split.y)
    n = len(split)
    total = steps_per_epoch(n, batch_size) * batch_size
    techniques = sorted(techniques, key=lambda t: t.priority)

    def epoch_stream(epoch):
        key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), epoch)
        order = None
        for t in techniques:
            order = t.order_for_epoch(epoch, key, n, total)
            if order is not None:
                break
        if order is None:
            order = tf.argsort(tf.random.stateless_uniform([n], seed=key))
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate()
        return batches.map(lambda step, index: (epoch, step, index))

    def make_batch(epoch, step, index):
        inputs = tf.gather(x, index)
        labels = _encode(tf, tf.gather(y, index), num_classes, label_mode)
        for salt, t in enumerate(techniques, start=1):
            inputs, labels = t.batch_transform(inputs, labels, epoch, batch_key(tf, seed, epoch, step, salt))
        return inputs, labels

    ds = tf.data.Dataset.range(first_epoch, last_epoch).flat_map(epoch_stream)
    if skip_steps:
        ds = ds.skip(skip_steps)
    ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(split: Split, *, batch_size: int, num_classes: int, label_mode: str, techniques=()):
    """Fixed-order batches for validation / test, cached after the first pass."""
    import tensorflow as tf

    def prepare(x, y):
        for t in techniques:
            x = t.eval_transform(x)
        return x, _encode(tf, y, num_classes, label_mode)

    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y)).batch(batch_size)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.cache().prefetch(tf.data.AUTOTUNE)
