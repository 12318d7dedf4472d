"""Streamed splits, for data sets larger than memory: `cache: file | none` on image_folder and tfds.

- `memory` (default): the source decodes every split into RAM once; each epoch is an exact
  permutation of the whole split.
- `file`: the decoded (resized, uint8) split is written once to a cache directory and read back
  from disk every epoch; later runs with the same source and decode settings reuse it.
- `none`: the source is decoded again every epoch (no RAM or disk beyond the shuffle buffer;
  image_folder needs none: it permutes its file list, see Split.decode).

Streamed training order is a shuffle buffer of `shuffle_buffer` examples whose seed is a pure
function of (seed, epoch) (or that permutation), so a resumed run still sees the batches an
uninterrupted run sees.

Why not `Dataset.cache(filename)`: an iterator stopped during the first pass (a kill, Ctrl-C, an
interrupted epoch) leaves a lockfile that makes every later run fail, and two runs sharing the
file (a sweep with --jobs 2) collide. The cache is instead written in full with `Dataset.save`
into a temporary directory and renamed into place, which is atomic: a reader sees a complete
cache or none, and the loser of a concurrent write discards its copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import Field, model_validator

from nnrun.process import alive
from nnrun.registry import Params

DEFAULT_SHUFFLE_BUFFER = 10_000


class StreamOptions(Params):
    """Fields of the sources that can stream (mixed into image_folder's and tfds' params)."""

    cache: Literal["memory", "file", "none"] = Field(
        "memory", description="memory: decode once into RAM; file: decode once into a disk cache and stream it "
        "each epoch; none: decode from the source every epoch"
    )
    cache_dir: str | None = Field(
        None, description="cache: file directory (default $NNRUN_CACHE_DIR, else ~/.cache/nnrun)"
    )
    shuffle_buffer: int | None = Field(
        None, gt=0, description=f"cache: file (and tfds' cache: none): examples in the shuffle buffer (default "
        f"{DEFAULT_SHUFFLE_BUFFER}); cache: memory, and image_folder's cache: none, permute the whole split"
    )

    @model_validator(mode="after")
    def _check_stream_options(self):
        if self.cache == "memory" and self.shuffle_buffer is not None:
            raise ValueError("shuffle_buffer applies to streamed data (cache: file or none); "
                             "cache: memory already permutes the whole split every epoch")
        if self.cache != "file" and self.cache_dir is not None:
            raise ValueError("cache_dir is only used with cache: file")
        return self


def cache_root(p: StreamOptions) -> Path:
    default = os.environ.get("NNRUN_CACHE_DIR") or Path.home() / ".cache" / "nnrun"
    return Path(p.cache_dir or default).expanduser()


CACHE_FORMAT = 3  # bump when the decoded content of a cache changes (decoder, resize, layout); 3: graph_decode


def cache_path(key: dict, p: StreamOptions) -> Path | None:
    """Where the file cache of `key` lives (None unless cache: file)."""
    if p.cache != "file":
        return None
    text = json.dumps({**key, "format": CACHE_FORMAT}, sort_keys=True, default=str)
    return cache_root(p) / f"{key.get('source', 'data')}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def reuse(key: dict, p: StreamOptions) -> tuple[Callable, np.ndarray] | None:
    """(reader, labels) of an existing file cache of `key`; None when there is none (yet)."""
    path = cache_path(key, p)
    if path is None or not (path / LABELS).is_file():
        return None
    return _reader(path), np.load(path / LABELS)


def cached(make: Callable, key: dict, p: StreamOptions, labels: np.ndarray, on_error: Callable | None = None) -> Callable:
    """A function returning the split's raw dataset: `make` itself for cache: none, else a reader of
    the file cache of `make()` identified by `key` (written now, with `labels`, when missing).

    `on_error(exc)` may turn a TensorFlow error while writing (e.g. a file that does not decode)
    into the ConfigError to raise; otherwise the error is reported as a failed cache write."""
    path = cache_path(key, p)
    if path is None:
        return make
    if not (path / LABELS).is_file():
        _write(make(), path, key, labels, on_error)
    return _reader(path)


LABELS = "labels.npy"


def _reader(path: Path) -> Callable:
    def read():
        import tensorflow as tf

        return tf.data.Dataset.load(str(path / "data"))

    return read


def _remove_stale(root: Path) -> None:
    """Remove temporary directories of cache writes on this host whose process no longer exists
    (killed mid-write): they can be large. Named `.<cache>.<host>.<pid>.<random>`."""
    host = platform.node()
    for tmp in root.glob(".*"):
        parts = tmp.name.rsplit(".", 2)
        if (len(parts) == 3 and parts[0].endswith(f".{host}") and parts[1].isdigit() and tmp.is_dir()
                and not alive(parts[1])):
            shutil.rmtree(tmp, ignore_errors=True)


def _write(ds, path: Path, key: dict, labels: np.ndarray, on_error) -> None:
    import tensorflow as tf

    from nnrun.errors import ConfigError, first_line

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path.parent)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{platform.node()}.{os.getpid()}."))
    except OSError as exc:
        raise ConfigError(f"cannot write the data cache in {path.parent}: {exc.strerror}",
                          "data.params.cache_dir") from None
    try:
        # One shard: Dataset.load then reads the elements back in the order they were written.
        ds.save(str(tmp / "data"), shard_func=lambda *_: tf.constant(0, tf.int64))
        (tmp / "key.json").write_text(json.dumps({**key, "format": CACHE_FORMAT}, indent=1, sort_keys=True, default=str))
        np.save(tmp / LABELS, labels)  # last: its presence marks a complete cache
        try:
            os.replace(tmp, path)
        except OSError:
            if not (path / LABELS).is_file():  # not a lost race with another run writing the same cache
                raise
    except (tf.errors.OpError, OSError) as exc:
        error = on_error(exc) if on_error is not None and isinstance(exc, tf.errors.OpError) else None
        raise (error or ConfigError(f"cannot write the data cache {path}: {type(exc).__name__}: {first_line(exc)}",
                                    "data.params.cache_dir")) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def channel_statistics(ds) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the images of a (x, y) dataset, in one streamed pass (float64)."""
    import tensorflow as tf

    channels = int(ds.element_spec[0].shape[-1])
    zeros = tf.zeros([channels], tf.float64)

    def add(total, batch):
        x = tf.reshape(tf.cast(batch[0], tf.float64), [-1, channels])
        return (total[0] + tf.cast(tf.shape(x)[0], tf.float64), total[1] + tf.reduce_sum(x, 0),
                total[2] + tf.reduce_sum(tf.square(x), 0))

    count, sums, squares = ds.batch(256).reduce((tf.constant(0.0, tf.float64), zeros, zeros), add)
    mean = sums.numpy() / count.numpy()
    var = np.maximum(squares.numpy() / count.numpy() - mean**2, 0.0)
    return mean, np.sqrt(var)


def raw_batch(x, y):
    """(raw images, labels) -> (float32 images in the raw range, int32 labels), for single
    examples or batches: the techniques work on floats; the model rescales and normalises."""
    import tensorflow as tf

    return tf.cast(x, tf.float32), tf.cast(y, tf.int32)
