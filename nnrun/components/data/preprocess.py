"""Preprocessing shared by the real data sources (image_folder, npz, tfds).

Sources keep their images raw (uint8 as decoded, or the array's own dtype) in memory or in
their streams. Rescaling and normalisation are not applied to the data: they are described in
`DataBundle.preprocess` and built as the model's first layers (Rescaling, Normalization; see
nnrun/components/models/inputs.py), so training, evaluate, predict and exported models all
take the same raw inputs and share one preprocessing path. The normalisation statistics come
from the training split only and are recorded in run.json and export.json.
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


def default_rescale(dtype) -> float:
    """Integer images default to the 0..1 range (uint16: 1/65535, other integers 1/255)."""
    if np.issubdtype(dtype, np.integer):
        return 1 / 65535 if np.dtype(dtype) == np.uint16 else 1 / 255
    return 1.0


def with_channels(x: np.ndarray) -> np.ndarray:
    """(N, H, W) grayscale -> (N, H, W, 1); other shapes unchanged (no copy, no cast)."""
    return x[..., None] if x.ndim == 3 else x


def channel_moments(x: np.ndarray, scale: float, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of `x * scale` over (N, H, W), accumulated in float64 chunk by
    chunk (a float64 copy of a whole uint8 split would take 8x its memory)."""
    channels = x.shape[-1]
    count, sums, squares = 0, np.zeros(channels), np.zeros(channels)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].reshape(-1, channels).astype(np.float64) * scale
        count += len(part)
        sums += part.sum(axis=0)
        squares += np.square(part).sum(axis=0)
    mean = sums / count
    return mean, np.sqrt(np.maximum(squares / count - mean**2, 0.0))


def _preprocess(p: ImagePreprocess, scale: float, channels: int, train_statistics) -> dict:
    """DataBundle.preprocess for `p`: the rescale factor and, when `p.normalize` asks, the
    per-channel (mean, std) after rescaling ("train": `train_statistics()`, "fixed": the config's)."""
    spec: dict = {"rescale": float(scale), "mean": None, "std": None}
    if p.normalize == "none":
        return spec
    if p.normalize == "train":
        mean, std = train_statistics()
        std = np.where(std > 1e-8, std, 1.0)  # a constant channel stays finite
    else:
        mean, std = np.asarray(p.mean), np.asarray(p.std)
        if len(mean) != channels:
            raise ConfigError(f"mean/std have {len(mean)} entries, the images have {channels} channels",
                              "data.params.mean")
    spec.update(mean=[float(v) for v in mean], std=[float(v) for v in std])
    return spec


def finish_images(splits: dict[str, Split], p: ImagePreprocess, class_names: list[str], num_classes: int,
                  source: str) -> DataBundle:
    """Wrap raw image splits in a bundle whose `preprocess` (statistics from "train") the model applies."""
    unique = list({id(s): s for s in splits.values()}.values())  # val may be the test split itself
    for split in unique:
        split.x = split.x if split.held is not None else with_channels(split.x)
    if splits["train"].held is not None:  # images of their own sizes (stored_images.py)
        return _finish_held(splits, p, class_names, num_classes, source)
    train = splits["train"].x
    scale = p.rescale if p.rescale is not None else default_rescale(train.dtype)
    preprocess = _preprocess(p, scale, train.shape[-1], lambda: channel_moments(train, scale))
    shape = tuple(int(d) for d in train.shape[1:])
    return DataBundle(splits, shape, num_classes, class_names, meta={"source": source}, preprocess=preprocess)


def _finish_held(splits: dict[str, Split], p: ImagePreprocess, class_names: list[str], num_classes: int,
                 source: str) -> DataBundle:
    """finish_images for a training split of uint8 images held at their own sizes: the statistics
    of the centre squares it reads as (the images the streamed modes compute them from)."""
    from nnrun.components.data.stream import channel_statistics

    held = splits["train"].held
    scale = p.rescale if p.rescale is not None else default_rescale(np.uint8)
    preprocess = _preprocess(p, scale, held.channels,
                             lambda: tuple(v * scale for v in channel_statistics(held.read())))
    return DataBundle(splits, (held.side, held.side, held.channels), num_classes, class_names,
                      meta={"source": source}, preprocess=preprocess)


MAX_CLASSES = 1_000_000  # labels are class indices 0..K-1; a larger K is ids, not classes


def labels_as_indices(y: np.ndarray, name: str, where: str | None = "data.params") -> np.ndarray:
    """Integer class labels (int32) from integer or one-hot arrays. Checked before the cast: a
    label must be a whole number in 0..MAX_CLASSES-1 (int64 2**32 would wrap to 0 in int32, and
    one label of 2**31-1 would make two billion class names)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    y = y.reshape(len(y))
    numeric = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
    if y.dtype == np.bool_ or not numeric or (np.issubdtype(y.dtype, np.floating)
                                              and not (np.all(np.isfinite(y)) and np.all(np.mod(y, 1) == 0))):
        raise ConfigError(f"{name} must hold integer class labels (or one-hot rows)", where)
    if len(y) and y.min() < 0:
        raise ConfigError(f"{name} has negative class labels", where)
    if len(y) and y.max() >= MAX_CLASSES:
        raise ConfigError(f"{name} has the label {int(y.max())}; labels are class indices 0..K-1 with at most "
                          f"{MAX_CLASSES:,} classes (map ids to indices first)", where)
    return y.astype(np.int32)


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
                   shape: tuple, decoding: bool = False) -> DataBundle:
    """finish_images for streamed splits. `raws` maps a split name to (function returning the raw
    dataset of (uint8 image, label), labels array[, function returning the whole images to
    train on (Split.whole)]); the same tuple may serve two names.
    `decoding`: the functions also take (order, crop) (Split.decode); no shuffle buffer then."""
    from nnrun.components.data.stream import DEFAULT_SHUFFLE_BUFFER, channel_statistics, raw_batch

    scale = p.rescale if p.rescale is not None else 1 / 255
    preprocess = _preprocess(p, scale, shape[-1],
                             lambda: tuple(v * scale for v in channel_statistics(raws["train"][0]())))
    buffer = 0 if decoding else p.shuffle_buffer or DEFAULT_SHUFFLE_BUFFER
    splits = {name: Split(None, np.asarray(y, np.int32), stream=raw, transform=raw_batch, shuffle_buffer=buffer,
                          decode=raw if decoding else None, whole=whole[0] if whole else None)
              for name, (raw, y, *whole) in raws.items()}
    return DataBundle(splits, tuple(int(d) for d in shape), num_classes, class_names,
                      meta={"source": source, "cache": p.cache}, preprocess=preprocess)
