"""`tfds`: any TensorFlow Datasets data set, decoded into memory.

Availability is checked before anything is read: with `download: false` (the default) a data
set that is not prepared in `data_dir` is a one-line ConfigError saying how to prepare it,
instead of TFDS trying (and retrying) a download on a machine without network. Splits are
read once into numpy arrays (the engine's pipeline gathers batches by index for exact resume),
so the data set must fit in memory; `max_examples` caps each split.
Images go through the shared image preprocessing; text features become token ids through
keras.layers.TextVectorization adapted on the training split (pad id 0, for the transformer).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from nnrun.components.data.base import DataBundle, Split
from nnrun.components.data.preprocess import ImagePreprocess, finish_images, labels_as_indices
from nnrun.errors import ConfigError, first_line
from nnrun.registry import register


class TfdsParams(ImagePreprocess):
    name: str = Field(description="TFDS name, optionally with config and version, e.g. mnist, cifar10:3.0.2")
    train_split: str = Field("train", description="TFDS split for training, e.g. train or train[:90%]")
    val_split: str | None = Field(None, description="split for validation; default: validation if it exists, else test")
    test_split: str | None = Field(None, description="optional split for `nnrun evaluate --split test`")
    as_supervised: bool = Field(True, description="read (input, label) pairs by the data set's supervised keys")
    input_key: str = Field("image", description="input feature when as_supervised is false")
    label_key: str = Field("label", description="label feature when as_supervised is false")
    data_dir: str | None = Field(None, description="TFDS data directory; default ~/tensorflow_datasets")
    download: bool = Field(False, description="download and prepare when missing (needs network)")
    image_size: int | None = Field(None, ge=8, le=1024, description="resize images to this size (needed when sizes vary)")
    max_examples: int | None = Field(None, gt=0, description="read at most this many examples per split")
    max_tokens: int = Field(20000, ge=3, description="text: vocabulary size (with padding and unknown tokens)")
    sequence_length: int = Field(128, ge=1, description="text: tokens per example (padded or truncated)")


def _builder(p: TfdsParams):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(p.name, data_dir=p.data_dir)
    except Exception as exc:  # DatasetNotFoundError and friends: message names close matches
        raise ConfigError(f"unknown TFDS data set {p.name!r}: {first_line(exc)}", "data.params.name") from None
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # TFDS warns about the missing folder: we say it in one line
    if not builder.is_prepared():
        if not p.download:
            raise ConfigError(
                f"TFDS data set {p.name!r} is not prepared in {builder.data_dir}: run `tfds build {p.name}` "
                f"(with network) or set data.params.download: true", "data.params.download")
        try:
            builder.download_and_prepare()
        except Exception as exc:  # noqa: BLE001 - network or disk: one line, exit 2
            raise ConfigError(f"cannot download TFDS data set {p.name!r}: {first_line(exc)}",
                              "data.params.download") from None
    return builder


def _read(builder, split: str, p: TfdsParams):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        ds = builder.as_dataset(split=split, as_supervised=p.as_supervised)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"TFDS split {split!r} of {p.name!r}: {first_line(exc)}", "data.params") from None
    if not p.as_supervised:
        ds = ds.map(lambda ex: (ex[p.input_key], ex[p.label_key]))
    if p.max_examples:
        ds = ds.take(p.max_examples)
    if p.image_size and len(ds.element_spec[0].shape) == 3:
        def resize(x, y):
            size = (p.image_size, p.image_size)
            return tf.cast(tf.round(tf.image.resize(x, size, antialias=True)), x.dtype), y
        ds = ds.map(resize)
    xs, ys = [], []
    for x, y in tfds.as_numpy(ds):
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ConfigError(f"TFDS split {split!r} of {p.name!r} is empty", "data.params")
    if len({np.shape(x) for x in xs if not isinstance(x, bytes)}) > 1:
        raise ConfigError(f"{p.name!r} has inputs of different sizes: set data.params.image_size", "data.params.image_size")
    return Split(np.stack(xs) if not isinstance(xs[0], bytes) else np.array(xs, dtype=object),
                 labels_as_indices(np.asarray(ys), f"{p.name} labels"))


def _text(splits: dict[str, Split], p: TfdsParams) -> dict:
    """Token ids from strings, vocabulary from the training split only."""
    import keras

    vectorize = keras.layers.TextVectorization(max_tokens=p.max_tokens, output_sequence_length=p.sequence_length)
    vectorize.adapt([t.decode("utf-8", "replace") for t in splits["train"].x])
    for split in {id(s): s for s in splits.values()}.values():
        texts = [t.decode("utf-8", "replace") for t in split.x]
        split.x = np.asarray(vectorize(texts), dtype=np.int32)
    return {"vocab_size": len(vectorize.get_vocabulary()), "max_length": p.sequence_length, "pad_id": 0}


@register("dataset", "tfds", TfdsParams)
def build(p: TfdsParams) -> DataBundle:
    """Any TensorFlow Datasets data set (images or text), read into memory; offline by default."""
    builder = _builder(p)
    available = set(builder.info.splits)
    val_split = p.val_split or ("validation" if "validation" in available else "test")
    splits = {"train": _read(builder, p.train_split, p), "val": _read(builder, val_split, p)}
    if p.test_split:
        splits["test"] = _read(builder, p.test_split, p)
    label_feature = builder.info.features[builder.info.supervised_keys[1] if p.as_supervised else p.label_key]
    num_classes = int(getattr(label_feature, "num_classes", 0) or max(s.y.max() for s in splits.values()) + 1)
    names = list(getattr(label_feature, "names", None) or [str(i) for i in range(num_classes)])
    x = splits["train"].x
    if x.dtype == object:  # text
        meta = _text(splits, p)
        return DataBundle(splits, (p.sequence_length,), num_classes, names, meta={"source": "tfds", **meta})
    if x.ndim in (3, 4):
        return finish_images(splits, p, names, num_classes, "tfds")
    return DataBundle(splits, tuple(int(d) for d in x.shape[1:]), num_classes, names, meta={"source": "tfds"})
