"""Input-pipeline throughput of image_folder with cache: memory, file and none.

Usage: python scripts/bench_stream.py [--images 2000] [--size 96] [--image-size 64] [--epochs 2]

Writes a folder of JPEG/PNG images of varied sizes (two classes), builds the data set with each
cache setting and iterates the training pipeline (shuffle, batch, augment) without a model.
Prints one JSON line: build seconds, images/s of each epoch, and the cache's size on disk.
The first `file` build writes the cache; the second build of the same folder reuses it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_folder(root: Path, n: int, size: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        label = i % 2
        folder = root / "train" / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = rng.integers(size // 2, size * 2, 2)
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pixels[..., label] = 255 - pixels[..., label] // 4
        Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 4 == 0 else 'jpg'}")


def epochs_per_second(split, epochs: int, batch_size: int, num_classes: int, image_size: int) -> list[float]:
    from nnrun.components.data.augment import Augment, AugmentParams
    from nnrun.components.techniques.base import TechniqueContext
    from nnrun.engine import pipeline

    ctx = TechniqueContext(epochs=epochs, batch_size=batch_size, steps_per_epoch=1, image_size=image_size,
                           label_mode="onehot")
    augment = Augment(AugmentParams(flip="horizontal", crop_padding=4), ctx)
    rates = []
    for epoch in range(epochs):
        ds = pipeline.train_dataset(split, batch_size=batch_size, seed=0, num_classes=num_classes,
                                    label_mode="onehot", first_epoch=epoch, last_epoch=epoch + 1,
                                    techniques=[augment])
        start = time.perf_counter()
        count = sum(int(x.shape[0]) for x, _ in ds)
        rates.append(round(count / (time.perf_counter() - start), 1))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=96, help="typical source image side (varied 0.5x-2x)")
    parser.add_argument("--image-size", type=int, default=64, help="image_size the source resizes to")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    from nnrun.components.data import image_folder

    tmp = Path(tempfile.mkdtemp(prefix="nnrun-bench-stream-"))
    try:
        make_folder(tmp / "imgs", args.images, args.size)
        out: dict = {"images": args.images, "image_size": args.image_size}
        for label, cache in (("memory", "memory"), ("file", "file"), ("file_reused", "file"), ("none", "none")):
            params = {"path": str(tmp / "imgs"), "image_size": args.image_size, "cache": cache,
                      "validation_split": 0.1}
            if cache == "file":
                params["cache_dir"] = str(tmp / "cache")
            start = time.perf_counter()
            data = image_folder.build(image_folder.ImageFolderParams(**params))
            build_s = round(time.perf_counter() - start, 2)
            rates = epochs_per_second(data.split("train"), args.epochs, args.batch_size, data.num_classes,
                                      args.image_size)
            out[label] = {"build_s": build_s, "images_per_s": rates}
        out["cache_mb"] = round(sum(f.stat().st_size for f in (tmp / "cache").rglob("*") if f.is_file()) / 2**20, 1)
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
