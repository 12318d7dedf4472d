"""`image_folder`: a user's own images, one subfolder per class.

Layouts: `path/train/<class>/*` with an optional `path/val/` (or `validation/`, `test/`), or
`path/<class>/*` with `validation_split`. Every cache mode decodes through the same pipeline
(graph_decode.py: TensorFlow's decoders for ordinary JPEG/PNG/GIF/BMP/WebP, Pillow for the
rest, 16-bit scaled to 8, EXIF orientation applied, alpha dropped, an antialiased bilinear
resize to `image_size`, or with `storage_size` the short side to it, aspect kept, centre
square), so a file gives the same pixels in each. With `storage_size` the training images are
kept whole, at their own sizes (in memory: stored_images.py; in the file cache: cropped from
ragged batches), and read as those centre squares or straight into a random_resized_crop
crop. Every file is checked by name first (decode.inspect_file, which also picks its route and
reads its size). With `cache: memory` (default) the images are decoded once, at build time, so
a corrupt or non-image file is reported by name, with the reason, before a run directory
exists (keras.utils.image_dataset_from_directory would fail inside a tf.data op mid-training
instead). With `cache: file | none` (data larger than memory, see stream.py) a cache write
names every file that does not decode, and a file that stops decoding during training (changed
after the check) fails the run with its name and reason. With `cache: none` training reads the
files in a permutation of the list per epoch (Split.decode), with no shuffle buffer, and
random_resized_crop is fused into the decode.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from nnrun.components.data.base import DataBundle, Split
from nnrun.components.data.decode import MAX_PIXELS, UnreadableImage, inspect_file
from nnrun.components.data.preprocess import ImagePreprocess, finish_images, finish_streams, holdout_mask
from nnrun.components.data.graph_decode import centre_square, stored_shapes
from nnrun.components.data.stored_images import StoredImages
from nnrun.components.data.stream import StreamOptions, cache_path, cached, raw_batch, reuse
from nnrun.errors import ConfigError
from nnrun.registry import register

VAL_DIRS = ("val", "validation")


class ImageFolderParams(ImagePreprocess, StreamOptions):
    path: str = Field(description="folder with train/ (and val/ or test/) subfolders, or one folder of class folders")
    image_size: int = Field(32, ge=8, le=1024, description="height and width every image is resized to (the "
                            "training size)")
    storage_size: int | None = Field(None, ge=8, le=2048, description="keep images larger than image_size: the short "
                                     "side resized to this, the aspect ratio kept; a cropping technique "
                                     "(random_resized_crop) makes the training images from the whole image; "
                                     "evaluation uses its centre square. Default: every image resized to "
                                     "image_size x image_size")
    color_mode: Literal["rgb", "grayscale"] = Field("rgb", description="decode to 3 channels or 1")
    validation_split: float | None = Field(
        None, gt=0, lt=1, description="hold out this fraction of train (per class) when there is no val/ folder"
    )
    skip_invalid: bool = Field(False, description="skip unreadable files (listed on stderr) instead of failing")
    max_pixels: int = Field(MAX_PIXELS, ge=1, description="pixel budget per image: a file that would decode to more "
                            "pixels (a JPEG counted at the reduced scale it is decoded at) is unreadable; bounds "
                            "the memory a decode needs (default: Pillow's MAX_IMAGE_PIXELS)")
    seed: int = Field(0, ge=0, description="seed of the validation_split hold-out and of the streamed file order")

    @model_validator(mode="after")
    def _storage(self):
        if self.storage_size is not None and self.storage_size < self.image_size:
            raise ValueError(f"storage_size ({self.storage_size}) must be at least image_size ({self.image_size})")
        if self.cache == "none" and self.shuffle_buffer is not None:
            raise ValueError("shuffle_buffer applies to cache: file; with cache: none image_folder permutes its whole "
                             "file list every epoch and decodes the files in that order (no buffer)")
        return self

    @property
    def stored(self) -> int:
        """The side of the stored images."""
        return self.storage_size or self.image_size


def _classes(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """Every non-hidden file under `folder`, recursively, sorted, following symlinked folders (as
    dataset tools often leave class folders) but never into a folder twice (a link loop).
    Training and `nnrun predict` list folders with this one function."""
    found, seen = [], set()
    for top, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(top) / n for n in names if not n.startswith(".") and os.path.isfile(os.path.join(top, n))]
    return sorted(found)


def _list(root: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """Image files under root/<class>/ (recursively, sorted) and their class indices."""
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue  # a class may be missing from val/; it still keeps its label index
        found = image_files(folder)
        files += found
        labels += [label] * len(found)
    if not files:
        raise ConfigError(f"no images found under {root}", "data.params.path")
    return files, np.asarray(labels, np.int32)


def _named(bad: list) -> str:
    """The first three (file, reason) pairs, and how many more."""
    return ", ".join(f"{f} ({why})" for f, why in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")


def _keep_readable(files: list[Path], labels: np.ndarray, bad: list, p: ImageFolderParams):
    """Fail naming the unreadable files, or (skip_invalid) drop them with a line on stderr each.
    `bad` holds (file, reason) pairs."""
    if bad and not p.skip_invalid:
        raise ConfigError(f"{len(bad)} file(s) are not readable images: {_named(bad)}; "
                          f"remove them or set skip_invalid: true", "data.params.path")
    if bad:
        import sys

        for file, why in bad:
            print(f"image_folder: skipped {file}: {why}", file=sys.stderr)
    skipped = {f for f, _ in bad}
    keep = np.array([f not in skipped for f in files], bool)
    if not keep.any():
        raise ConfigError("no readable images found", "data.params.path")
    return [f for f, k in zip(files, keep) if k], labels[keep]


def _channels(p: ImageFolderParams) -> int:
    return 3 if p.color_mode == "rgb" else 1


def _each(work, files: list[Path]) -> list:
    """work(file) for every file, in order, on a few threads (Pillow releases the GIL while it
    decodes and resizes); an UnreadableImage is returned in the file's place."""
    from concurrent.futures import ThreadPoolExecutor

    def safe(file):
        try:
            return work(file)
        except UnreadableImage as exc:
            return exc

    workers = min(8, os.cpu_count() or 1)
    if workers == 1 or len(files) < 64:
        return [safe(f) for f in files]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(safe, files))


def _load(files: list[Path], labels: np.ndarray, p: ImageFolderParams, whole: bool = False) -> Split:
    """Decode and resize every file into memory (cache: memory), through the same pipeline as
    the streamed modes, so that each mode gives the same pixels by construction. `whole` (the
    training split with storage_size): each image with its aspect ratio kept (stored_images.py)."""
    files, labels, routes, sizes = _check_files(files, labels, p)
    failures: list = []
    channels = _channels(p)
    if whole:
        shapes = stored_shapes(sizes, p.stored)
        lengths = shapes.prod(axis=1).astype(np.int64) * channels
        x = np.empty(int(lengths.sum()), np.uint8)
        ends = np.cumsum(lengths)
    else:
        x = np.empty((len(files), p.stored, p.stored, channels), np.uint8)
    decoded = _decoded(p, files, labels, routes, "record", failures, sizes=sizes, whole=whole)
    for i, (image, _) in enumerate(decoded.as_numpy_iterator()):
        if whole:
            x[ends[i] - lengths[i]:ends[i]] = image.ravel()
        else:
            x[i] = image
    keep = np.ones(len(files), bool)
    if failures:  # rare: only then is the decoded data copied without the failed files
        failed = {f for f, _ in failures}
        keep = np.array([str(f) not in failed for f in files], bool)
        _keep_readable(files, labels, _as_files(files, failures), p)
        labels = labels[keep]
        x = x[keep] if not whole else np.concatenate([x[end - length:end] for end, length, k
                                                      in zip(ends, lengths, keep) if k])
    if not whole:
        return Split(x, labels)
    held = StoredImages(x, shapes[keep], channels, p.stored, labels)
    return Split(None, labels, stream=held.read, transform=raw_batch, decode=held.read, held=held)


def _as_files(files: list[Path], failures: list) -> list:
    """The pipeline's (path text, reason) failures as sorted (file, reason) pairs."""
    by_name = {str(f): f for f in files}
    return sorted((by_name.get(f, Path(f)), why) for f, why in failures)


def _check_files(files: list[Path], labels: np.ndarray, p: ImageFolderParams):
    """Check each file up front (decode.inspect_file: the header, a PNG's checksums, a JPEG's end
    marker; other formats are decoded), so a bad file is named now rather than failing a
    tf.data op later; (files, labels, routes, (height, width) decoded sizes) of the readable ones."""
    results = _each(lambda f: inspect_file(f, p.stored, p.max_pixels), files)
    found = {f: r for f, r in zip(files, results) if not isinstance(r, UnreadableImage)}
    files, labels = _keep_readable(files, labels, [(f, str(r)) for f, r in zip(files, results)
                                                   if isinstance(r, UnreadableImage)], p)
    inspected = np.array([found[f] for f in files], np.int32).reshape([-1, 3])
    return files, labels, inspected[:, 0], inspected[:, 1:]


def _decoded(p: ImageFolderParams, files: list[Path], labels: np.ndarray, routes: np.ndarray, on_failure: str,
             failures: list | None = None, order=None, crop=None, sizes=None, whole: bool = False):
    """The dataset of (uint8 image, label) of `files` (which passed the up-front check), in order
    (or that of `order`, indices into `files`; with `crop`, each image that ExampleCrop of its
    file, drawn in its listed `sizes`; `whole`: decode_dataset's), decoded by
    graph_decode.decode_dataset (TensorFlow's decoders for ordinary files, Pillow for the rest,
    in parallel). What a file that still does not decode (or changed
    since) does:

    - "record" (writing the file cache, or filling memory): a blank image, and (path, reason)
      appended to `failures`. A cache write must not raise: Dataset.save deadlocks on an error
      after its first element (tensorflow#61736). The caller discards such a cache (or such
      images) and names the files.
    - "fail" (cache: none): a line naming the file and the reason on stderr, then an error that
      stops the run (Keras reports it as "Graph execution error", hence the line first).
    - "blank" (cache: none with skip_invalid): the same line, and a blank image in its place, so
      the epoch keeps its length and the labels and the resume position stay right.
    """
    import sys

    import tensorflow as tf

    from nnrun.components.data.graph_decode import decode_dataset

    def note(paths, errors):
        failures.extend((os.fsdecode(f), e.decode(errors="replace")) for f, e in zip(paths, errors))
        return np.bool_(True)

    def check(paths, errors):
        """The op for a batch of files: record / print the failed ones (and, "fail", stop)."""
        bad = tf.not_equal(errors, "")
        failed = tf.reduce_any(bad)
        paths, errors = tf.boolean_mask(paths, bad), tf.boolean_mask(errors, bad)
        if on_failure == "record":
            return tf.cond(failed, lambda: tf.numpy_function(note, [paths, errors], tf.bool, stateful=True),
                           lambda: tf.constant(True))
        messages = tf.strings.join(["image_folder: cannot decode ", paths, ": ", errors,
                                    " (skip_invalid: a blank image stands in for it)" if on_failure == "blank" else ""])
        done = tf.cond(failed, lambda: tf.print(tf.strings.reduce_join(messages, separator="\n"),
                                                output_stream=sys.stderr), tf.no_op)
        if on_failure == "fail":
            with tf.control_dependencies([done]):
                first = tf.concat([messages, [""]], 0)[0]
                done = tf.debugging.Assert(tf.logical_not(failed), [first], summarize=1, name="image_folder_decode")
        return done

    return decode_dataset([str(f) for f in files], routes, p.stored, _channels(p), p.max_pixels,
                          keep_aspect=p.storage_size is not None, order=order, crop=crop, labels=labels, check=check,
                          sizes=sizes, whole=whole)


def _stream(name: str, files: list[Path], labels: np.ndarray, p: ImageFolderParams):
    """Streamed split: (raw dataset function, labels); decoded by tf.data per epoch or into the file cache.
    An existing file cache of the same listing is reused without opening the files again. The
    training split's file cache with storage_size holds whole images of their own sizes, for the
    crop: (their centre squares, labels, the whole images) then."""
    whole = p.cache == "file" and p.storage_size is not None and name == "train"
    read, labels = _streamed(name, files, labels, p, whole)
    return (_centre_squares(read, p.stored), labels, read) if whole else (read, labels)


def _centre_squares(read, side: int):
    """A reader of whole images as their centre side x side squares: what the other modes store."""
    def squares():
        import tensorflow as tf

        def centre(image, label):
            return tf.ensure_shape(centre_square(tf, image, side), [side, side, image.shape[-1]]), label

        return read().map(centre, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return squares


def _streamed(name: str, files: list[Path], labels: np.ndarray, p: ImageFolderParams, whole: bool):
    """_stream's (raw dataset function, labels): `whole`, of images of their own sizes."""
    import shutil

    listing = hashlib.sha256("\n".join(f"{f.resolve()}|{s.st_size}|{s.st_mtime_ns}"
                                        for f, s in ((f, f.stat()) for f in files)).encode()).hexdigest()
    key = {"source": "image_folder", "split": name, "image_size": p.image_size, "color_mode": p.color_mode,
           **({"storage_size": p.storage_size} if p.storage_size is not None else {}),
           "skip_invalid": p.skip_invalid, "seed": p.seed, "files": listing, "count": len(files),
           **({"layout": "whole"} if whole else {})}
    found = reuse(key, p)
    if found is not None:
        return found
    files, labels, routes, sizes = _check_files(files, labels, p)
    # Folders list one class after another; a shuffle buffer smaller than the split could not mix
    # them. The stream (and its cache) therefore holds the files in one fixed, seeded order.
    order = np.random.default_rng(p.seed).permutation(len(files))
    files, labels, routes, sizes = [files[i] for i in order], labels[order], routes[order], sizes[order]
    if p.cache == "none":  # Split.decode: read in any order, optionally straight into crops
        def decode(order=None, crop=None):
            return _decoded(p, files, labels, routes, "blank" if p.skip_invalid else "fail", order=order, crop=crop,
                            sizes=sizes)

        return decode, labels
    route_of, size_of = dict(zip(files, routes)), dict(zip(files, sizes))

    def write(files: list[Path], labels: np.ndarray):
        """The file cache's reader, and the (file, reason) of files that did not decode. Such a
        cache holds blanks for them, so it is removed again (a file can pass the check and still
        not decode, e.g. corrupt pixel data behind a valid header)."""
        failures: list = []
        routes = np.array([route_of[f] for f in files], np.int32)
        sizes = np.array([size_of[f] for f in files], np.int32).reshape([-1, 2])
        read = cached(lambda: _decoded(p, files, labels, routes, "record", failures, sizes=sizes, whole=whole), key,
                      p, labels)
        if failures:
            shutil.rmtree(cache_path(key, p), ignore_errors=True)
        return read, _as_files(files, failures)

    read, bad = write(files, labels)
    if bad:
        files, labels = _keep_readable(files, labels, bad, p)  # raises unless skip_invalid
        read, bad = write(files, labels)
        if bad:  # files changing while they are read
            raise ConfigError(f"{len(bad)} file(s) stopped decoding while the cache was written: {_named(bad)}",
                              "data.params.path")
    return read, labels


def _splits(root: Path, classes: list[str], parts: dict[str, Path], p: ImageFolderParams) -> dict:
    """Each split as (files, labels), with validation_split applied to the train files."""
    listed = {name: _list(folder, classes) for name, folder in parts.items()}
    if "val" not in parts and p.validation_split:
        files, labels = listed["train"]
        val = holdout_mask(labels, p.validation_split, p.seed)
        listed["train"] = [f for f, v in zip(files, val) if not v], labels[~val]
        listed["val"] = [f for f, v in zip(files, val) if v], labels[val]
    elif "val" not in parts and "test" in parts:
        listed["val"] = listed["test"]  # validate on test/ when that is all there is
    elif "val" not in parts:
        raise ConfigError(f"{root} has no val/ or test/ folder: set validation_split (e.g. 0.2)",
                          "data.params.validation_split")
    return listed


def _per_split(listed: dict, make) -> dict:
    """make(name, files, labels) for each split, once per file list (val may be test/ itself)."""
    made: dict = {}
    for name, (files, labels) in listed.items():
        if id(files) not in made:
            made[id(files)] = make(name, files, labels)
    return {name: made[id(files)] for name, (files, _) in listed.items()}


@register("dataset", "image_folder", ImageFolderParams)
def build(p: ImageFolderParams) -> DataBundle:
    """Your images in class subfolders (train/ + val/, or one folder with validation_split)."""
    root = Path(p.path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"image folder not found: {root}", "data.params.path")
    train_root = root / "train"
    if train_root.is_dir():
        classes = _classes(train_root)
        val_root = next((root / d for d in VAL_DIRS if (root / d).is_dir()), None)
        test_root = root / "test" if (root / "test").is_dir() else None
    else:
        train_root, val_root, test_root = root, None, None
        classes = _classes(root)
    if len(classes) < 2:
        raise ConfigError(f"{train_root} needs at least two class subfolders, found {len(classes)}",
                          "data.params.path")
    if val_root is not None:
        extra = sorted(set(_classes(val_root)) - set(classes))
        if extra:
            raise ConfigError(f"{val_root} has classes not in {train_root}: {', '.join(extra)}", "data.params.path")
    parts = {"train": train_root, **({"val": val_root} if val_root else {}), **({"test": test_root} if test_root else {})}
    listed = _splits(root, classes, parts, p)
    if p.cache != "memory":
        streams = _per_split(listed, lambda name, files, labels: _stream(name, files, labels, p))
        data = finish_streams(streams, p, classes, len(classes), "image_folder", (p.stored, p.stored, _channels(p)),
                              decoding=p.cache == "none")
    else:
        whole = p.storage_size is not None  # the training images keep their aspect ratios for the crop
        data = finish_images(_per_split(listed, lambda name, files, labels: _load(files, labels, p, whole and name == "train")),
                             p, classes, len(classes), "image_folder")
    data.train_size = p.image_size if p.storage_size is not None else None
    return data
