"""Preprocessing shared by the real data sources (image_folder, npz, tfds).

By default sources decode into in-memory numpy splits (the engine's pipeline gathers batches by
index, so a resumed run replays exactly the same batches); rescaling and normalisation are then
applied once, to the arrays, at build time. Streamed splits (`cache: file | none`, see stream.py)
get the same rescaling and normalisation as a map in their tf.data pipeline. Either way the
normalisation statistics come from the training split only.
Per-example random augmentation (flip, crop with padding) is the `augment` technique
(nnrun/components/data/augment.py): it must run per batch, keyed on (seed, epoch, step).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from nnrun.components.data.base import DataBundle, Split
from nnrun.errors import ConfigError
from nnrun.registry import Params


class ImagePreprocess(Params):
    """Fields every image source shares (mixed into each source's params)."""

    rescale: float | None = Field(
        None, gt=0, description="multiply pixels by this; default: 1/255 for integer images, 1 for float images"
    )
    normalize: Literal["none", "train", "fixed"] = Field(
        "none", description="none; train: subtract the per-channel mean and divide by the std of the "
        "training split; fixed: use `mean` and `std`"
    )
    mean: list[float] | None = Field(None, description="per-channel mean for normalize: fixed (after rescale)")
    std: list[float] | None = Field(None, description="per-channel std for normalize: fixed (after rescale)")

    @model_validator(mode="after")
    def _check_fixed(self):
        if self.normalize == "fixed":
            if not self.mean or not self.std or len(self.mean) != len(self.std):
                raise ValueError("normalize: fixed needs `mean` and `std` lists of the same length")
            if min(self.std) <= 0:
                raise ValueError("std entries must be > 0")
        elif self.mean is not None or self.std is not None:
            raise ValueError("`mean` and `std` are only used with normalize: fixed")
        return self


def as_float_images(x: np.ndarray, rescale: float | None) -> np.ndarray:
    """Images as float32 (N, H, W, C); integer images default to the 0..1 range."""
    if x.ndim == 3:  # (N, H, W) grayscale
        x = x[..., None]
    if rescale is None:
        rescale = 1 / 255 if np.issubdtype(x.dtype, np.integer) else 1.0
    out = x.astype(np.float32)
    if rescale != 1.0:
        out *= np.float32(rescale)
    return out


def _normalization(p: ImagePreprocess, channels: int, meta: dict, train_statistics):
    """(mean, std) that `p.normalize` asks for, recorded in `meta`, or None: "train" calls
    `train_statistics()` (per-channel, after rescale), "fixed" checks the configured lists."""
    if p.normalize == "none":
        return None
    if p.normalize == "train":
        mean, std = train_statistics()
        std = np.where(std > 1e-8, std, 1.0)  # a constant channel stays finite
    else:
        mean, std = np.asarray(p.mean), np.asarray(p.std)
        if len(mean) != channels:
            raise ConfigError(f"mean/std have {len(mean)} entries, the images have {channels} channels",
                              "data.params.mean")
    meta["normalization"] = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    return mean, std


def finish_images(splits: dict[str, Split], p: ImagePreprocess, class_names: list[str], num_classes: int,
                  source: str) -> DataBundle:
    """Rescale and normalise image splits (statistics from "train") and wrap them in a bundle."""
    unique = list({id(s): s for s in splits.values()}.values())  # val may be the test split itself
    for split in unique:
        split.x = as_float_images(split.x, p.rescale)
    train = splits["train"].x
    meta: dict = {"source": source}
    # float64 sums: float32 accumulation over millions of pixels loses digits.
    stats = _normalization(p, train.shape[-1], meta, lambda: (train.mean(axis=(0, 1, 2), dtype=np.float64),
                                                              train.std(axis=(0, 1, 2), dtype=np.float64)))
    if stats is not None:
        mean, std = stats
        for split in unique:
            split.x = ((split.x - mean.astype(np.float32)) / std.astype(np.float32)).astype(np.float32)
    shape = tuple(int(d) for d in splits["train"].x.shape[1:])
    return DataBundle(splits, shape, num_classes, class_names, meta=meta)


def labels_as_indices(y: np.ndarray, name: str) -> np.ndarray:
    """Integer class labels from integer or one-hot arrays."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    y = y.reshape(len(y))
    if not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
        raise ConfigError(f"{name} must hold integer class labels (or one-hot rows)", "data.params")
    y = y.astype(np.int32)
    if len(y) and y.min() < 0:
        raise ConfigError(f"{name} has negative class labels", "data.params")
    return y


def holdout_mask(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which examples go to validation: a fraction per class, so small classes keep examples."""
    rng = np.random.default_rng(seed)
    val_idx = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        val_idx.extend(idx[: max(1, round(fraction * len(idx)))] if len(idx) > 1 else [])
    val_mask = np.zeros(len(y), bool)
    val_mask[np.asarray(val_idx, dtype=int)] = True
    return val_mask


def holdout(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split off a validation fraction, stratified by class."""
    val_mask = holdout_mask(y, fraction, seed)
    return Split(x[~val_mask], y[~val_mask]), Split(x[val_mask], y[val_mask])


def finish_streams(raws: dict, p, class_names: list[str], num_classes: int, source: str,
                   shape: tuple) -> DataBundle:
    """finish_images for streamed splits. `raws` maps a split name to (function returning the raw
    dataset of (uint8 image, label), labels array); the same pair may serve two names."""
    from nnrun.components.data.stream import DEFAULT_SHUFFLE_BUFFER, channel_statistics, transform

    scale = p.rescale if p.rescale is not None else 1 / 255
    meta: dict = {"source": source, "cache": p.cache}
    stats = _normalization(p, shape[-1], meta,
                           lambda: tuple(v * scale for v in channel_statistics(raws["train"][0]())))
    mean, std = stats if stats is not None else (None, None)
    buffer = p.shuffle_buffer or DEFAULT_SHUFFLE_BUFFER
    prepare = transform(scale, mean, std)
    splits = {name: Split(None, np.asarray(y, np.int32), stream=raw, transform=prepare, shuffle_buffer=buffer)
              for name, (raw, y) in raws.items()}
    return DataBundle(splits, tuple(int(d) for d in shape), num_classes, class_names, meta=meta)
