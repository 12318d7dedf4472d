"""`image_folder`: a user's own images, one subfolder per class.

Layouts: `path/train/<class>/*` with an optional `path/val/` (or `validation/`, `test/`), or
`path/<class>/*` with `validation_split`. Images of any size and mode are decoded with Pillow
and resized to `image_size` once, at build time, so a corrupt or non-image file is reported by
name before a run directory exists (keras.utils.image_dataset_from_directory would fail inside
a tf.data op mid-training instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from nnrun.components.data.base import DataBundle, Split
from nnrun.components.data.preprocess import ImagePreprocess, finish_images, holdout
from nnrun.errors import ConfigError
from nnrun.registry import register

VAL_DIRS = ("val", "validation")


class ImageFolderParams(ImagePreprocess):
    path: str = Field(description="folder with train/ (and val/ or test/) subfolders, or one folder of class folders")
    image_size: int = Field(32, ge=8, le=1024, description="height and width every image is resized to")
    color_mode: Literal["rgb", "grayscale"] = Field("rgb", description="decode to 3 channels or 1")
    validation_split: float | None = Field(
        None, gt=0, lt=1, description="hold out this fraction of train (per class) when there is no val/ folder"
    )
    skip_invalid: bool = Field(False, description="skip unreadable files (listed on stderr) instead of failing")
    seed: int = Field(0, ge=0, description="seed of the validation_split hold-out")


def _classes(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _load(root: Path, classes: list[str], p: ImageFolderParams) -> Split:
    from PIL import Image, UnidentifiedImageError

    mode = "RGB" if p.color_mode == "rgb" else "L"
    images, labels, bad = [], [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue  # a class may be missing from val/; it still keeps its label index
        for file in sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")):
            try:
                with Image.open(file) as img:
                    img = img.convert(mode).resize((p.image_size, p.image_size), Image.Resampling.BILINEAR)
                    images.append(np.asarray(img, dtype=np.uint8))
                    labels.append(label)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                bad.append((file, exc))
    if bad and not p.skip_invalid:
        names = ", ".join(str(f) for f, _ in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise ConfigError(f"{len(bad)} file(s) are not readable images: {names} "
                          f"(remove them or set skip_invalid: true)", "data.params.path")
    if bad:
        import sys

        for file, exc in bad:
            print(f"image_folder: skipped {file}: {type(exc).__name__}", file=sys.stderr)
    if not images:
        raise ConfigError(f"no images found under {root}", "data.params.path")
    x = np.stack(images)
    if x.ndim == 3:
        x = x[..., None]
    return Split(x, np.asarray(labels, np.int32))


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
    splits = {"train": _load(train_root, classes, p)}
    if test_root is not None:
        splits["test"] = _load(test_root, classes, p)
    if val_root is not None:
        splits["val"] = _load(val_root, classes, p)
    elif p.validation_split:
        splits["train"], splits["val"] = holdout(splits["train"].x, splits["train"].y, p.validation_split, p.seed)
    elif test_root is not None:
        splits["val"] = splits["test"]  # validate on test/ when that is all there is
    else:
        raise ConfigError(f"{root} has no val/ or test/ folder: set validation_split (e.g. 0.2)",
                          "data.params.validation_split")
    return finish_images(splits, p, classes, len(classes), "image_folder")
