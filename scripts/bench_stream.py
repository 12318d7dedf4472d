"""Input-pipeline throughput of image_folder against hand-written tf.data on the same files.

Usage:
  python scripts/bench_stream.py --make-photos DIR [--images 1500]   # photo crops (needs scikit-image)
  python scripts/bench_stream.py --path DIR --image-size 224 [--repeats 3] [--rrc]

Each pipeline iterates one training epoch (shuffle, decode, resize, batch, float32 and a
horizontal flip per image) without a model; the pipelines take turns, `--repeats` times. Each epoch gives two figures:
`images_per_s`, the epoch's images over its whole time, and `warm_images_per_s`, the images
after the first batch over the time after it, which is what every epoch of a training run
after its first one delivers (a pipeline's start-up, building its graph and filling buffers,
is paid once per `fit`; `startup_s` lists it). The ratios are of the median warm figures:
- none: nnrun `cache: none` / hand read_file + decode_jpeg + resize (antialias) + flip;
- memory: nnrun `cache: memory` / a hand in-RAM pipeline over the same decoded array;
- threads: nnrun `cache: none` on 2 tf.data threads / on 1, each op on one thread
  (max_intra_op_parallelism 1), so it is how decoding scales with the cores given to it;
  threads_hand is the same for the hand pipeline (what the machine allows);
- rrc: nnrun random_resized_crop, streamed (`cache: none`, storage_size = image_size / 0.875;
  each file decoded straight into its crop) / hand sample_distorted_bounding_box +
  decode_and_crop_jpeg.
With --rrc, nnrun_memory_rrc (no ratio, no hand twin) is random_resized_crop from the images
held in RAM at their own sizes (`cache: memory` with storage_size).
Targets (issue 22): none >= 1.0, rrc >= 0.9, memory >= 0.9, threads >= 1.7.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_photos(root: Path, n: int, seed: int = 0) -> None:
    """`n` JPEGs (quality 90) in two class folders: random crops, 200-640 px a side, of the
    photos scikit-image ships, so they decode like photos (noise does not)."""
    from PIL import Image
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "hubble_deep_field",
             "retina", "motorcycle_left", "colorwheel", "camera", "page", "moon", "logo", "horse", "coins",
             "grass", "gravel", "brick", "clock", "text"]
    photos = []
    for name in names:
        try:
            img = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - a sample this scikit-image does not ship offline
            continue
        if img.dtype != np.uint8 or img.ndim not in (2, 3):
            continue
        img = img[..., :3] if img.ndim == 3 else np.repeat(img[..., None], 3, axis=-1)
        if min(img.shape[:2]) >= 200:
            photos.append(img)
    rng = np.random.default_rng(seed)
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = (int(rng.integers(min(200, h), min(640, h) + 1)), int(rng.integers(min(200, w), min(640, w) + 1)))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        folder = root / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo[top:top + ch, left:left + cw]).save(folder / f"{i:05d}.jpg", quality=90)
    print(f"{n} photo crops from {len(photos)} scikit-image samples in {root}", file=sys.stderr)


def one_epoch(ds) -> tuple[float, float, float]:
    """(images/s over the epoch, images/s after its first batch, seconds to the first batch)."""
    start = time.perf_counter()
    batches = iter(ds)
    first = int(next(batches)[0].shape[0])
    warm = time.perf_counter()
    count = sum(int(x.shape[0]) for x, _ in batches)
    end = time.perf_counter()
    return (first + count) / (end - start), count / (end - warm), warm - start


def threads(ds, n: int):
    """`ds` on n tf.data threads, each op on one thread (TensorFlow would otherwise spread a
    resize over the other cores, and one tf.data thread would not mean one core)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = n
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


def nnrun_epochs(split, batch_size: int, num_classes: int, image_size: int, epoch: int, stored: int | None = None):
    """nnrun's training pipeline with a flip (and, for images stored at `stored`, random_resized_crop)."""
    from nnrun.components.data.augment import Augment, AugmentParams
    from nnrun.components.techniques.base import TechniqueContext
    from nnrun.components.techniques.random_resized_crop import RandomResizedCrop, RandomResizedCropParams
    from nnrun.engine import pipeline

    ctx = TechniqueContext(epochs=1, batch_size=batch_size, steps_per_epoch=1, image_size=image_size,
                           label_mode="onehot", stored_size=stored)
    techniques = [Augment(AugmentParams(flip="horizontal"), ctx)]
    if stored:
        techniques.append(RandomResizedCrop(RandomResizedCropParams(), ctx))
    return pipeline.train_dataset(split, batch_size=batch_size, seed=0, num_classes=num_classes, label_mode="onehot",
                                  first_epoch=epoch, last_epoch=epoch + 1, techniques=techniques)


def hand_flip(epoch: int):
    """The hand pipelines' batch step: float32 and a random horizontal flip per image."""
    import tensorflow as tf

    def flip(x, y):
        return tf.image.stateless_random_flip_left_right(tf.cast(x, tf.float32), [epoch, 0]), y

    return flip


def hand_files(files: list[str], labels: np.ndarray, image_size: int, batch_size: int, epoch: int):
    """What a Keras user writes: read, decode, resize with antialias, flip, batch."""
    import tensorflow as tf

    def load(path, label):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        image = tf.image.resize(image, [image_size, image_size], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), label

    ds = tf.data.Dataset.from_tensor_slices((files, labels)).shuffle(len(files), seed=epoch)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    return ds.map(hand_flip(epoch), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def hand_rrc(files: list[str], labels: np.ndarray, image_size: int, batch_size: int, epoch: int):
    """The ImageNet recipe's crop fused into the JPEG decode."""
    import tensorflow as tf

    def load(i, path, label):
        contents = tf.io.read_file(path)
        shape = tf.io.extract_jpeg_shape(contents)
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape, tf.zeros([1, 0, 4]), seed=[epoch, i], area_range=(0.08, 1.0),
            aspect_ratio_range=(3 / 4, 4 / 3), max_attempts=10, use_image_if_no_bounding_boxes=True)
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        image = tf.io.decode_and_crop_jpeg(contents, window, channels=3)
        image = tf.image.resize(image, [image_size, image_size], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), label

    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(files), dtype=tf.int64), files, labels))
    ds = ds.shuffle(len(files), seed=epoch).map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    return ds.map(hand_flip(epoch), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def hand_memory(x: np.ndarray, labels: np.ndarray, batch_size: int, epoch: int):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, labels)).shuffle(len(x), seed=epoch)
    return ds.batch(batch_size).map(hand_flip(epoch), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, help="an image folder of class subfolders (JPEGs)")
    parser.add_argument("--make-photos", type=Path, help="write a folder of photo crops here, then stop")
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rrc", action="store_true", help="also the RandomResizedCrop pipelines")
    args = parser.parse_args()
    if args.make_photos:
        make_photos(args.make_photos, args.images)
        return
    if args.path is None:
        parser.error("--path DIR (or --make-photos DIR first)")

    from nnrun.components.data import image_folder
    from nnrun.components.data.image_folder import image_files

    size, batch = args.image_size, args.batch_size
    classes = sorted(d.name for d in args.path.iterdir() if d.is_dir())
    files = [(str(f), i) for i, c in enumerate(classes) for f in image_files(args.path / c)]
    paths, labels = [f for f, _ in files], np.array([y for _, y in files], np.int32)
    build = {}
    data = {}
    stored = round(size / 0.875)  # timm's eval resize (256 for 224): what the crop is taken from
    for name, cache, storage in (("none", "none", None), ("memory", "memory", None), ("rrc", "none", stored),
                                 ("memory_rrc", "memory", stored)):
        if name in ("rrc", "memory_rrc") and not args.rrc:
            continue
        start = time.perf_counter()
        data[name] = image_folder.build(image_folder.ImageFolderParams(
            path=str(args.path), image_size=size, storage_size=storage, cache=cache, validation_split=0.05))
        build[name] = round(time.perf_counter() - start, 2)
    memory_x = np.asarray(data["memory"].split("train").x)
    memory_y = data["memory"].split("train").y
    n_classes = data["none"].num_classes
    pipelines = {
        "nnrun_none": lambda e: nnrun_epochs(data["none"].split("train"), batch, n_classes, size, e),
        "nnrun_none_1_thread": lambda e: threads(nnrun_epochs(data["none"].split("train"), batch, n_classes, size, e), 1),
        "nnrun_none_2_threads": lambda e: threads(nnrun_epochs(data["none"].split("train"), batch, n_classes, size, e), 2),
        "hand_none": lambda e: hand_files(paths, labels, size, batch, e),
        "hand_none_1_thread": lambda e: threads(hand_files(paths, labels, size, batch, e), 1),
        "hand_none_2_threads": lambda e: threads(hand_files(paths, labels, size, batch, e), 2),
        "nnrun_memory": lambda e: nnrun_epochs(data["memory"].split("train"), batch, n_classes, size, e),
        "hand_memory": lambda e: hand_memory(memory_x, memory_y, batch, e),
    }
    if args.rrc:
        pipelines["nnrun_rrc"] = lambda e: nnrun_epochs(data["rrc"].split("train"), batch, n_classes, size, e, stored)
        pipelines["nnrun_memory_rrc"] = lambda e: nnrun_epochs(data["memory_rrc"].split("train"), batch, n_classes,
                                                               size, e, stored)
        pipelines["hand_rrc"] = lambda e: hand_rrc(paths, labels, size, batch, e)
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    warm: dict[str, list[float]] = {name: [] for name in pipelines}
    startup: dict[str, list[float]] = {name: [] for name in pipelines}
    for epoch in range(args.repeats):  # interleaved: a slow moment of the machine hits every pipeline
        for name, make in pipelines.items():
            total, after_first, first = one_epoch(make(epoch))
            rates[name].append(round(total, 1))
            warm[name].append(round(after_first, 1))
            startup[name].append(round(first, 3))
            print(f"repeat {epoch + 1}: {name} {rates[name][-1]} images/s, {warm[name][-1]} after the first batch "
                  f"({startup[name][-1]} s)", file=sys.stderr, flush=True)
    median = {name: statistics.median(r) for name, r in warm.items()}

    def ratio(a, b):
        return round(median[a] / median[b], 3)

    ratios = {"none": ratio("nnrun_none", "hand_none"), "memory": ratio("nnrun_memory", "hand_memory"),
              "threads": ratio("nnrun_none_2_threads", "nnrun_none_1_thread"),
              "threads_hand": ratio("hand_none_2_threads", "hand_none_1_thread"),  # what this machine allows
              "rrc": ratio("nnrun_rrc", "hand_rrc") if args.rrc else None}
    print(json.dumps({"path": str(args.path), "files": len(paths), "image_size": size, "batch_size": batch,
                      "build_s": build, "images_per_s": rates, "warm_images_per_s": warm, "startup_s": startup,
                      "median_warm": median, "ratios": ratios}))


if __name__ == "__main__":
    main()
