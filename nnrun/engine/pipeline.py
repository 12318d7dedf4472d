"""tf.data input pipelines for in-memory and streamed splits.

The training order is a pure function of (seed, epoch): each epoch draws its own stateless
permutation (of the examples in memory, or of the files a streamed source decodes as it reads
them) or seeds its shuffle buffer (other streams), and every random choice a technique makes
in a batch is keyed on (seed, epoch, step), or per file on (seed, epoch, file) for a crop fused
into the decode. A run resumed at epoch e, step s therefore sees exactly the batches an
uninterrupted run sees. In-memory batches are gathered from the arrays in one op per batch.
"""

from __future__ import annotations

import math

from nnrun.components.data.base import Split


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def _encode(tf, labels, num_classes: int, label_mode: str):
    """Labels as the loss wants them: "onehot" float vectors, "sparse" integers, or "raw"."""
    return tf.one_hot(labels, num_classes, dtype=tf.float32) if label_mode == "onehot" else labels


def model_inputs(tf, x):
    """Raw integer images (uint8 pixels, rank >= 4 once batched) as float32 in the raw range, for
    the techniques and the model (which rescales and normalises); token ids and floats unchanged."""
    if x.dtype.is_integer and x.shape.rank is not None and x.shape.rank >= 4:
        return tf.cast(x, tf.float32)
    return x


def batch_key(tf, seed: int, epoch, step, salt: int):
    """Stateless seed for one (epoch, step, technique): independent streams, no hidden state.
    step None: the technique's key for the whole epoch."""
    key = tf.random.experimental.stateless_fold_in(tf.constant([seed, salt], tf.int64), epoch)
    return key if step is None else tf.random.experimental.stateless_fold_in(key, step)


def train_dataset(split: Split, *, batch_size: int, seed: int, num_classes: int, label_mode: str,
                  first_epoch: int, last_epoch: int, skip_steps: int = 0, techniques=()):
    """Batches for epochs [first_epoch, last_epoch) (after skipping `skip_steps` batches).

    Elements are (inputs, labels). Keras' fit keeps one iterator across epochs when
    steps_per_epoch is given, so epoch e consumes exactly the batches of permutation e.
    """
    import tensorflow as tf

    techniques = sorted(techniques, key=lambda t: t.priority)
    if split.stream is not None:
        # A source that decodes its files as they are read takes a cropping technique's crop into
        # the decode (JPEGs then decode only the crop's window); that technique's batch step is skipped.
        fused = next((t for t in techniques if t.crops_stored_images), None) if split.decode is not None else None
        crop_of = None
        if fused is not None:
            salt = techniques.index(fused) + 1

            def crop_of(epoch):
                return fused.example_crop(epoch, batch_key(tf, seed, epoch, None, salt))

        skipped = skip_steps if split.decode is not None else 0  # such a source skips files, not decoded batches
        return _finish(_streamed_batches(tf, split, batch_size, seed, first_epoch, last_epoch, crop_of, skipped), tf,
                       seed, num_classes, label_mode, skip_steps - skipped, techniques, gather=None, fused=fused)
    x = tf.constant(split.x)
    y = tf.constant(split.y)
    n = len(split)
    total = steps_per_epoch(n, batch_size) * batch_size

    def epoch_stream(epoch):
        key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), epoch)
        order = None
        for t in techniques:
            order = t.order_for_epoch(epoch, key, n, total)
            if order is not None:
                break
        if order is None:
            order = _permutation(tf, key, n)
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate()
        return batches.map(lambda step, index: (epoch, step, index))

    ds = tf.data.Dataset.range(first_epoch, last_epoch).flat_map(epoch_stream)
    return _finish(ds, tf, seed, num_classes, label_mode, skip_steps, techniques,
                   gather=lambda index: (tf.gather(x, index), tf.gather(y, index)))


def _permutation(tf, key, n: int):
    """The epoch's order of n examples, from its stateless key."""
    return tf.argsort(tf.random.stateless_uniform([n], seed=key))


def _streamed_batches(tf, split: Split, batch_size: int, seed: int, first_epoch: int, last_epoch: int,
                      crop_of=None, skip_steps: int = 0):
    """(epoch, step, (x, y)) batches of a streamed split, in an order keyed on (seed, epoch): a
    source decoding its files (Split.decode) reads them in a permutation of the whole list,
    each file into its `crop_of(epoch)` crop when given, from the `skip_steps`-th batch of the
    first epoch on (a resumed epoch does not decode the files it already trained on); others
    go through a shuffle buffer holding the compact (uint8) examples. The float transform runs
    on whole batches after."""
    source = (split.whole or split.stream)() if split.decode is None else None

    def epoch_stream(epoch):
        key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), epoch)
        first_step = tf.constant(0, tf.int64)
        if split.decode is not None:
            crop = crop_of(epoch) if crop_of is not None else None
            first_step = tf.where(tf.equal(epoch, first_epoch), tf.constant(skip_steps, tf.int64), first_step)
            order = _permutation(tf, key, len(split))[tf.cast(first_step, tf.int32) * batch_size:]
            shuffled = split.decode(order, crop).batch(batch_size)
        else:
            # A scalar seed drawn from the key (the key's first word is the same for every epoch).
            shuffle_seed = tf.random.stateless_uniform([], seed=key, minval=1, maxval=2**31 - 1, dtype=tf.int64)
            # tf.data pairs an op seed with the global seed and compares the pair to (0, 0) in Python,
            # which raises for a tensor op seed when the global seed is 0 (e.g. `seed: 0`). A fixed seed
            # for this traced function's own graph avoids that; the order depends on shuffle_seed only.
            tf.random.set_seed(1)
            shuffled = source.shuffle(split.shuffle_buffer, seed=shuffle_seed)
            # Images of their own sizes make ragged batches: the cropping technique (random_resized_crop,
            # which a storage size requires) crops each from its own extent.
            shuffled = shuffled.ragged_batch(batch_size) if split.whole else shuffled.batch(batch_size)
        batches = shuffled.map(split.transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return batches.enumerate(start=first_step).map(lambda step, xy: (epoch, step, xy))

    return tf.data.Dataset.range(first_epoch, last_epoch).flat_map(epoch_stream)


def _finish(ds, tf, seed: int, num_classes: int, label_mode: str, skip_steps: int, techniques, gather, fused=None):
    """Skip into a resumed epoch, build each batch (gathered by index, or already streamed),
    apply the techniques (but `fused`, done in the decode) with their (seed, epoch, step) keys,
    prefetch."""

    def make_batch(epoch, step, batch):
        inputs, labels = gather(batch) if gather is not None else batch
        inputs, labels = model_inputs(tf, inputs), _encode(tf, labels, num_classes, label_mode)
        for salt, t in enumerate(techniques, start=1):
            if t is fused:
                continue
            inputs, labels = t.batch_transform(inputs, labels, epoch, batch_key(tf, seed, epoch, step, salt))
        return inputs, labels

    if skip_steps:
        ds = ds.skip(skip_steps)
    ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _shard_by_data(tf, ds.prefetch(tf.data.AUTOTUNE))


def _shard_by_data(tf, ds):
    """Under multi_worker each worker takes every N-th batch of the same ordered stream. AUTO would
    shard a file-backed source (TFDS records, a file cache) by file instead, changing the order."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def eval_inputs(tf, x, techniques=()):
    """A batch of raw inputs as the model sees them at evaluation: cast, then each technique's eval
    transform (e.g. progressive resizing's eval_size), in ascending priority (the centre crop
    before the resize to eval_size). Shared by validation, evaluate and predict."""
    x = model_inputs(tf, x)
    for layer in eval_layers(techniques):
        x = layer(x)
    return x


def eval_layers(techniques) -> list:
    """The techniques' eval-time Keras layers in the order they apply (ascending priority), for
    the evaluation pipeline and the layers exports put inside the model."""
    return [layer for t in sorted(techniques, key=lambda t: t.priority) for layer in t.eval_layers()]


def eval_dataset(split: Split, *, batch_size: int, num_classes: int, label_mode: str, techniques=()):
    """Fixed-order batches for validation / test (in memory: cached after the first pass)."""
    import tensorflow as tf

    def prepare(x, y):
        return eval_inputs(tf, x, techniques), _encode(tf, y, num_classes, label_mode)

    if split.stream is not None:  # streamed: read again each time (it may not fit in memory)
        ds = split.stream().batch(batch_size).map(split.transform, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        return _shard_by_data(tf, ds.prefetch(tf.data.AUTOTUNE))
    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y)).batch(batch_size)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return _shard_by_data(tf, ds.cache().prefetch(tf.data.AUTOTUNE))
