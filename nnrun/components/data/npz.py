"""`npz`: arrays saved with numpy.savez: x_train, y_train, x_val|x_test, y_val|y_test.

Images (N, H, W) or (N, H, W, C) get the shared image preprocessing; any other feature shape
(e.g. token sequences) is passed through as is. Labels are integer classes or one-hot rows.
Loaded with allow_pickle=False: an .npz file cannot run code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from pydantic import Field

from nnrun.components.data.base import DataBundle, Split
from nnrun.components.data.preprocess import ImagePreprocess, finish_images, holdout, labels_as_indices
from nnrun.errors import ConfigError
from nnrun.registry import register


class NpzParams(ImagePreprocess):
    path: str = Field(description="the .npz file")
    class_names: list[str] | None = Field(None, description="label names in index order; default '0', '1', ...")
    validation_split: float | None = Field(
        None, gt=0, lt=1, description="hold out this fraction of train (per class) when there is no x_val/x_test"
    )
    seed: int = Field(0, ge=0, description="seed of the validation_split hold-out")


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ConfigError(f"npz file not found: {path}", "data.params.path")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path} is not a readable .npz file: {exc}", "data.params.path") from None


def _split(arrays: dict, part: str, path: Path) -> Split | None:
    x, y = arrays.get(f"x_{part}"), arrays.get(f"y_{part}")
    if x is None and y is None:
        return None
    if x is None or y is None:
        raise ConfigError(f"{path} has {'x' if y is None else 'y'}_{part} without its partner", "data.params.path")
    if len(x) != len(y):
        raise ConfigError(f"{path}: x_{part} has {len(x)} rows, y_{part} {len(y)}", "data.params.path")
    if len(x) == 0:
        raise ConfigError(f"{path}: x_{part} is empty", "data.params.path")
    return Split(x, labels_as_indices(y, f"y_{part}"))


@register("dataset", "npz", NpzParams)
def build(p: NpzParams) -> DataBundle:
    """Your arrays in one .npz file: x_train, y_train and x_val/y_val (or x_test/y_test)."""
    path = Path(p.path).expanduser()
    arrays = _read(path)
    splits = {name: s for name in ("train", "val", "test") if (s := _split(arrays, name, path)) is not None}
    if "train" not in splits:
        raise ConfigError(f"{path} has no x_train/y_train (it has: {', '.join(sorted(arrays))})", "data.params.path")
    if "val" not in splits:
        if p.validation_split:
            splits["train"], splits["val"] = holdout(splits["train"].x, splits["train"].y, p.validation_split, p.seed)
        elif "test" in splits:
            splits["val"] = splits["test"]
        else:
            raise ConfigError(f"{path} has no x_val or x_test: add one or set validation_split",
                              "data.params.validation_split")
    shapes = {name: s.x.shape[1:] for name, s in splits.items()}
    if len(set(shapes.values())) != 1:
        raise ConfigError(f"{path}: splits have different feature shapes {shapes}", "data.params.path")
    num_classes = int(max(s.y.max() for s in splits.values())) + 1
    names = p.class_names or [str(i) for i in range(num_classes)]
    if len(names) < num_classes:
        raise ConfigError(f"class_names has {len(names)} names for {num_classes} classes", "data.params.class_names")
    x = splits["train"].x
    if x.ndim in (3, 4) and (x.ndim == 3 or x.shape[-1] in (1, 3, 4)):  # images
        return finish_images(splits, p, names, len(names), "npz")
    if p.normalize != "none":
        raise ConfigError("normalize applies to images only", "data.params.normalize")
    return DataBundle(splits, tuple(int(d) for d in x.shape[1:]), len(names), names, meta={"source": "npz"})
