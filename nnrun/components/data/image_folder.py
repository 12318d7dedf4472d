"""`image_folder`: a user's own images, one subfolder per class.

Layouts: `path/train/<class>/*` with an optional `path/val/` (or `validation/`, `test/`), or
`path/<class>/*` with `validation_split`. With `cache: memory` (default) images of any size and
mode are decoded with Pillow and resized to `image_size` once, at build time, so a corrupt or
non-image file is reported by name before a run directory exists
(keras.utils.image_dataset_from_directory would fail inside a tf.data op mid-training instead).
With `cache: file | none` (data larger than memory, see stream.py) tf.data decodes them; every
file's header is still checked by name first.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from nnrun.components.data.base import DataBundle, Split
from nnrun.components.data.preprocess import ImagePreprocess, finish_images, finish_streams, holdout_mask
from nnrun.components.data.stream import StreamOptions, cached, reuse
from nnrun.errors import ConfigError
from nnrun.registry import register

VAL_DIRS = ("val", "validation")
TF_FORMATS = {"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP"}  # what tf.io.decode_image reads (MPO: camera JPEGs)


class ImageFolderParams(ImagePreprocess, StreamOptions):
    path: str = Field(description="folder with train/ (and val/ or test/) subfolders, or one folder of class folders")
    image_size: int = Field(32, ge=8, le=1024, description="height and width every image is resized to")
    color_mode: Literal["rgb", "grayscale"] = Field("rgb", description="decode to 3 channels or 1")
    validation_split: float | None = Field(
        None, gt=0, lt=1, description="hold out this fraction of train (per class) when there is no val/ folder"
    )
    skip_invalid: bool = Field(False, description="skip unreadable files (listed on stderr) instead of failing")
    seed: int = Field(0, ge=0, description="seed of the validation_split hold-out and of the streamed file order")


def _classes(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _list(root: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """Image files under root/<class>/ (recursively, sorted) and their class indices."""
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue  # a class may be missing from val/; it still keeps its label index
        found = sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith("."))
        files += found
        labels += [label] * len(found)
    if not files:
        raise ConfigError(f"no images found under {root}", "data.params.path")
    return files, np.asarray(labels, np.int32)


def _named(files: list[Path]) -> str:
    """The first three files, and how many more."""
    return ", ".join(str(f) for f in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")


def _keep_readable(files: list[Path], labels: np.ndarray, bad: list, p: ImageFolderParams):
    """Fail naming the unreadable files, or (skip_invalid) drop them with a line on stderr each."""
    if bad and not p.skip_invalid:
        raise ConfigError(f"{len(bad)} file(s) are not readable images: {_named([f for f, _ in bad])} "
                          f"(remove them or set skip_invalid: true)", "data.params.path")
    if bad:
        import sys

        for file, exc in bad:
            print(f"image_folder: skipped {file}: {exc if isinstance(exc, str) else type(exc).__name__}",
                  file=sys.stderr)
    skipped = {f for f, _ in bad}
    keep = np.array([f not in skipped for f in files], bool)
    if not keep.any():
        raise ConfigError("no readable images found", "data.params.path")
    return [f for f, k in zip(files, keep) if k], labels[keep]


def _load(files: list[Path], labels: np.ndarray, p: ImageFolderParams) -> Split:
    """Decode and resize every file into memory (cache: memory)."""
    from PIL import Image, UnidentifiedImageError

    mode = "RGB" if p.color_mode == "rgb" else "L"
    images, bad = [], []
    for file in files:
        try:
            with Image.open(file) as img:
                images.append(np.asarray(img.convert(mode).resize((p.image_size, p.image_size),
                                                                  Image.Resampling.BILINEAR), dtype=np.uint8))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            bad.append((file, exc))
    _, labels = _keep_readable(files, labels, bad, p)
    x = np.stack(images)
    return Split(x[..., None] if x.ndim == 3 else x, labels)


def _check_files(files: list[Path], labels: np.ndarray, p: ImageFolderParams):
    """Streamed: check each file's header with Pillow (no pixel decoding), and that TensorFlow's
    decoder reads its format, so a bad file is named now rather than failing a tf.data op later."""
    from PIL import Image, UnidentifiedImageError

    bad = []
    for file in files:
        try:
            with Image.open(file) as img:
                fmt = img.format
                img.verify()
            if fmt not in TF_FORMATS:
                bad.append((file, f"{fmt} is not decoded by TensorFlow (use cache: memory, or convert to PNG/JPEG)"))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            bad.append((file, exc))
    return _keep_readable(files, labels, bad, p)


def _decoder(p: ImageFolderParams):
    import tensorflow as tf

    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        if p.color_mode == "grayscale":
            image = tf.image.rgb_to_grayscale(image)
        image = tf.image.resize(image, (p.image_size, p.image_size), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), label

    return decode


def _undecodable(files: list[Path], p: ImageFolderParams):
    """After a failed cache write: the ConfigError naming the files TensorFlow cannot decode, or
    None when they all decode (the write failed for another reason, e.g. a full disk)."""
    import tensorflow as tf

    decode, bad = _decoder(p), []
    for file in files:
        try:
            decode(tf.constant(str(file)), 0)
        except tf.errors.OpError:
            bad.append(file)
    if not bad:
        return None
    return ConfigError(f"TensorFlow cannot decode {len(bad)} file(s): {_named(bad)}", "data.params.path")


def _stream(name: str, files: list[Path], labels: np.ndarray, p: ImageFolderParams):
    """Streamed split: (raw dataset function, labels); decoded by tf.data per epoch or into the file cache.
    An existing file cache of the same listing is reused without opening the files again."""
    listing = hashlib.sha256("\n".join(f"{f.resolve()}|{s.st_size}|{s.st_mtime_ns}"
                                        for f, s in ((f, f.stat()) for f in files)).encode()).hexdigest()
    key = {"source": "image_folder", "split": name, "image_size": p.image_size, "color_mode": p.color_mode,
           "skip_invalid": p.skip_invalid, "seed": p.seed, "files": listing, "count": len(files)}
    found = reuse(key, p)
    if found is not None:
        return found
    files, labels = _check_files(files, labels, p)
    # Folders list one class after another; a shuffle buffer smaller than the split could not mix
    # them. The stream (and its cache) therefore holds the files in one fixed, seeded order.
    order = np.random.default_rng(p.seed).permutation(len(files))
    files, labels = [files[i] for i in order], labels[order]

    def make():
        import tensorflow as tf

        paths = tf.data.Dataset.from_tensor_slices(([str(f) for f in files], labels))
        return paths.map(_decoder(p), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return cached(make, key, p, labels, on_error=lambda exc: _undecodable(files, p)), labels


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
        channels = 3 if p.color_mode == "rgb" else 1
        return finish_streams(streams, p, classes, len(classes), "image_folder", (p.image_size, p.image_size, channels))
    splits = _per_split(listed, lambda name, files, labels: _load(files, labels, p))
    return finish_images(splits, p, classes, len(classes), "image_folder")
