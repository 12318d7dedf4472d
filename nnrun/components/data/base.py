"""What a dataset builder returns: splits (in memory or streamed) plus what the model needs to know."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Split:
    """One split, holding raw inputs: what the source gives (uint8 images, token ids, float
    arrays), before any rescaling or normalisation (those are layers of the model, see
    DataBundle.preprocess). In memory: `x` holds every input. Streamed (data larger than
    memory): `x` is None, `stream()` returns a tf.data.Dataset of (raw image, label) pairs in a
    fixed order and `transform(x, y)` casts them for the pipeline (elementwise, so it runs on
    single examples or batches). The training pipeline shuffles the compact elements through a
    buffer of `shuffle_buffer` (or, with `decode`, reads the files in a permuted order) and
    transforms whole batches. `y` is always in memory (metrics and class balance need it)."""

    x: np.ndarray | None
    y: np.ndarray
    masks: np.ndarray | None = None  # ground-truth object masks (N, H, W), when the data set knows them
    difficulty: np.ndarray | None = None  # per-example difficulty proxy in [0, 1], when known
    stream: Callable | None = None
    transform: Callable | None = None
    shuffle_buffer: int = 0
    # Files decoded as they are read (image_folder, cache: none): decode(order, crop) gives the
    # examples at `order` (indices), each file decoded when read, with an ExampleCrop straight
    # into its crop; stream() is decode() in the listed order. The training pipeline permutes
    # the file list each epoch instead of shuffling decoded images through a buffer, so decoding
    # overlaps training from the first batch and no buffer of images is held.
    decode: Callable | None = None
    # Images of their own sizes held in memory (stored_images.StoredImages: image_folder with
    # storage_size, cache: memory): x is None, and stream and decode read from it.
    held: object | None = None
    # Streamed images of their own sizes to train on (image_folder's file cache with storage_size):
    # the training pipeline shuffles these and batches them ragged for the cropping technique;
    # stream() gives their centre squares.
    whole: Callable | None = None

    def __len__(self) -> int:
        return len(self.y)

    def head(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first n raw inputs and labels as arrays (explain, export references)."""
        if self.x is not None:
            return self.x[:n], self.y[:n]
        x, _ = next(self.stream().take(n).batch(n).map(self.transform).as_numpy_iterator())
        return x, self.y[:n]


@dataclass
class ExampleCrop:
    """A per-example crop that a source reading examples one at a time (Split.decode) fuses into
    the read: boxes(heights, widths), for the (n,) sizes of all its examples' whole images, ->
    (top, left, crop height, crop width), int32 (n,) each, resized to size x size (an int32
    tensor) by `method` ("bilinear" or "nearest"). A cropping technique draws the boxes
    (random_resized_crop)."""

    boxes: Callable
    size: object
    method: str

    def resize(self, tf, image, antialias: bool = True):
        """One crop resized to size x size (float32, before rounding); bilinear antialiases
        unless the source says its crops are never much larger than that."""
        return tf.image.resize(image, tf.stack([self.size, self.size]), method=self.method,
                               antialias=antialias and self.method == "bilinear")


@dataclass
class DataBundle:
    splits: dict[str, Split]
    input_shape: tuple
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    task: str = "classification"  # "classification" (integer class labels) or "pairs" (0/1 pair labels)
    meta: dict = field(default_factory=dict)  # extra facts a model may need, e.g. {"vocab_size": 32}
    # How raw inputs become model inputs, built into the model's first layers (so evaluate,
    # predict and exports take raw inputs): {"rescale": s, "mean": [...] | None, "std": [...] | None},
    # mean/std per channel after rescaling; None: the raw inputs are the model inputs.
    preprocess: dict | None = None
    # image_folder's storage_size: images are stored at input_shape (short side resized, aspect
    # kept, centre square) and a cropping technique (random_resized_crop) makes them train_size.
    train_size: int | None = None

    @property
    def input_dtype(self) -> str:
        """dtype of the raw inputs (streamed splits hold uint8 images)."""
        train = self.splits.get("train")
        return str(train.x.dtype) if train is not None and train.x is not None else "uint8"

    def describe(self) -> dict:
        """What a user of the trained model needs to feed it (run.json, export.json)."""
        return {"class_names": list(self.class_names), "num_classes": self.num_classes,
                "input_shape": list(self.input_shape), "input_dtype": self.input_dtype,
                "preprocess": self.preprocess, "task": self.task,
                "num_train": len(self.splits["train"]) if "train" in self.splits else None,
                **({"train_size": self.train_size} if self.train_size else {})}

    def split(self, name: str) -> Split:
        if name not in self.splits:
            from nnrun.errors import UsageError

            raise UsageError(f"data set has no {name!r} split; it has: {', '.join(self.splits)}")
        return self.splits[name]


def standard_splits(generate, p) -> dict[str, Split]:
    """train/val (and test when num_test > 0) of a seeded generator `generate(n, p, stream)`."""
    splits = {"train": generate(p.num_train, p, 0), "val": generate(p.num_val, p, 1)}
    if p.num_test:
        splits["test"] = generate(p.num_test, p, 2)
    return splits
