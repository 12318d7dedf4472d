"""`tfds`: any TensorFlow Datasets data set, decoded into memory or streamed.

Availability is checked before anything is read: with `download: false` (the default) a data
set that is not prepared in `data_dir` is a one-line ConfigError saying how to prepare it,
instead of TFDS trying (and retrying) a download on a machine without network. Splits are
read once into numpy arrays (the engine's pipeline gathers batches by index for exact resume);
image data sets larger than memory stream instead with `cache: file | none` (see stream.py).
`max_examples` caps each split.
Images go through the shared image preprocessing; text features become token ids through
keras.layers.TextVectorization adapted on the training split (pad id 0, for the transformer).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from nnrun.components.data.base import DataBundle, Split
from nnrun.components.data.preprocess import ImagePreprocess, finish_images, finish_streams, labels_as_indices
from nnrun.components.data.stream import StreamOptions, cached, reuse
from nnrun.errors import ConfigError, first_line
from nnrun.registry import register


class TfdsParams(ImagePreprocess, StreamOptions):
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


def _feature_names(builder, p: TfdsParams) -> tuple[str, str]:
    """(input, label) feature names, checked against the data set's features."""
    features = list(builder.info.features.keys()) if hasattr(builder.info.features, "keys") else []
    if p.as_supervised:
        keys = builder.info.supervised_keys
        if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
            raise ConfigError(f"{p.name!r} has no (input, label) supervised keys: set as_supervised: false with "
                              f"input_key and label_key (features: {', '.join(features)})", "data.params.as_supervised")
        return keys[0], keys[1]
    for field, name in (("input_key", p.input_key), ("label_key", p.label_key)):
        if name not in features:
            raise ConfigError(f"{p.name!r} has no feature {name!r}; it has: {', '.join(features)}",
                              f"data.params.{field}")
    return p.input_key, p.label_key


def _dataset(builder, split: str, p: TfdsParams, decoders=None):
    """(input, label) pairs of a split in the order of its files, resized when image_size is set."""
    import tensorflow as tf

    try:
        ds = builder.as_dataset(split=split, as_supervised=p.as_supervised, shuffle_files=False, decoders=decoders)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"TFDS split {split!r} of {p.name!r}: {first_line(exc)}", "data.params") from None
    if not p.as_supervised:
        ds = ds.map(lambda ex: (ex[p.input_key], ex[p.label_key]))
    if p.max_examples:
        ds = ds.take(p.max_examples)
    if p.image_size and decoders is None and len(ds.element_spec[0].shape) == 3:
        def resize(x, y):
            size = (p.image_size, p.image_size)
            return tf.cast(tf.round(tf.image.resize(x, size, antialias=True)), x.dtype), y
        ds = ds.map(resize)
    return ds


def _read(builder, split: str, p: TfdsParams):
    """A split decoded into memory (cache: memory)."""
    import tensorflow_datasets as tfds

    ds = _dataset(builder, split, p)
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


def _stream(builder, split: str, p: TfdsParams):
    """A streamed split (cache: file | none): (raw dataset function, labels). The labels are read
    in one pass that skips decoding the inputs."""
    import tensorflow_datasets as tfds

    key = {"source": "tfds", "name": p.name, "version": str(builder.info.version), "data_dir": str(builder.data_dir),
           "split": split, "as_supervised": p.as_supervised, "input_key": p.input_key, "label_key": p.label_key,
           "max_examples": p.max_examples, "image_size": p.image_size}
    found = reuse(key, p)
    if found is not None:
        return found
    skip = {_feature_names(builder, p)[0]: tfds.decode.SkipDecoding()}
    labels = labels_as_indices(np.asarray([y for _, y in tfds.as_numpy(_dataset(builder, split, p, skip))]),
                               f"{p.name} labels")
    if not len(labels):
        raise ConfigError(f"TFDS split {split!r} of {p.name!r} is empty", "data.params")

    def failed(exc):
        return ConfigError(f"cannot read TFDS split {split!r} of {p.name!r}: {first_line(exc)}", "data.params")

    return cached(lambda: _dataset(builder, split, p), key, p, labels, on_error=failed), labels


def _stream_shape(builder, p: TfdsParams) -> tuple:
    """The image shape a streamed model input has; streams need it known without reading."""
    feature = builder.info.features[_feature_names(builder, p)[0]]
    shape = tuple(getattr(feature, "shape", ()) or ())
    dtype = getattr(feature, "np_dtype", None) or getattr(feature, "dtype", None)
    if len(shape) != 3 or np.dtype(getattr(dtype, "as_numpy_dtype", dtype) or object) != np.uint8:
        raise ConfigError(f"cache: {p.cache} streams image data sets only; {p.name!r} input "
                          f"{_feature_names(builder, p)[0]!r} is {type(feature).__name__} {shape}: use cache: memory",
                          "data.params.cache")
    if p.image_size:
        return (p.image_size, p.image_size, shape[2])
    if None in shape:
        raise ConfigError(f"{p.name!r} has images of different sizes: set data.params.image_size",
                          "data.params.image_size")
    return shape


def _classes(label_feature, labels: list[np.ndarray]) -> tuple[int, list[str]]:
    """Class count and names from the label feature, else from the largest label seen."""
    num_classes = int(getattr(label_feature, "num_classes", 0) or max(y.max() for y in labels) + 1)
    return num_classes, list(getattr(label_feature, "names", None) or [str(i) for i in range(num_classes)])


@register("dataset", "tfds", TfdsParams)
def build(p: TfdsParams) -> DataBundle:
    """Any TensorFlow Datasets data set (images or text), in memory or streamed; offline by default."""
    builder = _builder(p)
    available = set(builder.info.splits)
    val_split = p.val_split or ("validation" if "validation" in available else "test")
    label_feature = builder.info.features[_feature_names(builder, p)[1]]
    if p.cache != "memory":
        shape = _stream_shape(builder, p)
        parts = {"train": p.train_split, "val": val_split, **({"test": p.test_split} if p.test_split else {})}
        streams = {name: _stream(builder, split, p) for name, split in parts.items()}
        num_classes, names = _classes(label_feature, [y for _, y in streams.values()])
        return finish_streams(streams, p, names, num_classes, "tfds", shape)
    splits = {"train": _read(builder, p.train_split, p), "val": _read(builder, val_split, p)}
    if p.test_split:
        splits["test"] = _read(builder, p.test_split, p)
    num_classes, names = _classes(label_feature, [s.y for s in splits.values()])
    x = splits["train"].x
    if x.dtype == object:  # text
        meta = _text(splits, p)
        return DataBundle(splits, (p.sequence_length,), num_classes, names, meta={"source": "tfds", **meta})
    if x.ndim in (3, 4):
        return finish_images(splits, p, names, num_classes, "tfds")
    return DataBundle(splits, tuple(int(d) for d in x.shape[1:]), num_classes, names, meta={"source": "tfds"})
