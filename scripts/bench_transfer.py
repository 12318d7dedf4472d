"""Does fine-tuning help? Transfer tasks, each fine-tuned four ways, at several learning rates and seeds.

Each task pretrains a small ResNet on some classes, then fine-tunes on *other* classes from a
few images per class (default 10), the setting of the held-out task where the old `finetune`
defaults scored 0.24 against 0.70 for `model.init_from` alone:

    digits    scikit-learn's handwritten digits (real, 8x8 upscaled to 32 px): 0-4 -> 5-9
    textures  crops of natural photos, one photo per class (real): 12 photos -> 5 others;
              train crops from each photo's left part, validation crops from its right part
    shapes    nnrun's synthetic shapes: circle, square -> triangle, cross
    digits_rev, textures_b   the same kinds of task with other classes (5-9 -> 0-4; another
              split of the photos): held out, they were not used to choose the defaults

Variants (paired: the same seeds, hence the same few-shot subsets, for every variant):
    scratch   no pretraining
    init      model.init_from the pretrain run, no technique
    old       + finetune with the old defaults (freeze_epochs 1, backbone_lr_scale 0.1, head at
              the base rate, BatchNorm trained after unfreezing)
    new       + finetune with today's defaults
    (--candidates adds more finetune settings, to choose the defaults)

Prints a table of val_accuracy (mean and standard deviation over seeds) per task and learning
rate, the paired difference new - init with its 95% interval, and a last line of JSON.

    pip install scikit-learn                 # digits and two sample photos
    python scripts/bench_transfer.py --photos DIR [--quick]

DIR holds at least 14 natural photos (plus scikit-learn's two and matplotlib's one), e.g.
scikit-image's sample images: `pip download scikit-image --no-deps` and unzip skimage/data/*.
Every run is an ordinary nnrun training run (engine.train, in this one process), so the
numbers are what `nnrun train` gives.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = 32
MODEL = {"name": "resnet", "params": {"stages": [16, 32, 64], "blocks_per_stage": 1}}
OLD = {"freeze_epochs": 1, "backbone_lr_scale": 0.1, "head_lr_scale": 1.0, "batchnorm": "train"}
CANDIDATES = {  # changes to today's defaults, to choose them (--candidates)
    "head1": {"head_lr_scale": 1.0},
    "head3": {"head_lr_scale": 3.0},
    "head1_bb0.3": {"head_lr_scale": 1.0, "backbone_lr_scale": 0.3},
    "head3_bb0.3": {"head_lr_scale": 3.0, "backbone_lr_scale": 0.3},
    "head3_bb0.5": {"head_lr_scale": 3.0, "backbone_lr_scale": 0.5},
}
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


# -- tasks -------------------------------------------------------------------------------------

def _resize(images: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    out = [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR)) for im in images]
    return np.stack(out)


def digits_task(reverse: bool = False) -> tuple[dict, dict]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = _resize(np.clip(d.images * 16, 0, 255).astype(np.uint8), SIZE)[..., None].repeat(3, axis=-1)
    y = d.target
    low, high = {"x": x[y < 5], "y": y[y < 5]}, {"x": x[y >= 5], "y": y[y >= 5] - 5}
    return (high, low) if reverse else (low, high)


def _photos(directory: Path | None) -> list[np.ndarray]:
    """RGB photos: scikit-learn's two sample images, matplotlib's grace_hopper, and DIR's."""
    from PIL import Image

    photos = []
    try:
        from sklearn.datasets import load_sample_images

        photos += list(load_sample_images().images)
    except ImportError:
        pass
    import matplotlib

    photos.append(np.asarray(Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
                             .convert("RGB")))
    if directory is not None:
        for path in sorted(directory.iterdir()):
            if path.suffix.lower() in PHOTO_SUFFIXES:
                img = Image.open(path).convert("RGB")
                if min(img.size) >= 256:  # photos, not icons or small test patterns
                    photos.append(np.asarray(img))
    return photos


def _crops(photo: np.ndarray, n: int, rng, part: str) -> np.ndarray:
    """n random square crops (side 20-45% of the short side) from the left 60% or the right 40%."""
    h, w = photo.shape[:2]
    lo, hi = (0, int(0.6 * w)) if part == "left" else (int(0.6 * w), w)
    out = []
    for _ in range(n):
        side = int(rng.uniform(0.2, 0.45) * min(h, w))
        side = min(side, hi - lo, h)
        x0 = int(rng.integers(lo, hi - side + 1))
        y0 = int(rng.integers(0, h - side + 1))
        out.append(photo[y0:y0 + side, x0:x0 + side])
    return _resize(np.stack([_resize(c[None], 64)[0] for c in out]), SIZE)


def textures_task(directory: Path | None, split_seed: int = 0) -> tuple[dict, dict]:
    photos = _photos(directory)
    if len(photos) < 17:
        raise SystemExit(f"textures: found {len(photos)} photos, need 17: pass --photos DIR (see the docstring)")
    rng = np.random.default_rng(split_seed)
    order = rng.permutation(len(photos))
    pre_ids, fine_ids = order[:12], order[12:17]  # pretraining on varied photos learns features that transfer

    def build(ids, n_left, n_right):
        xs, ys, parts = [], [], []
        for label, i in enumerate(ids):
            for part, n in (("left", n_left), ("right", n_right)):
                if n:
                    xs.append(_crops(photos[i], n, rng, part))
                    ys.append(np.full(n, label))
                    parts.append(np.full(n, part == "right"))
        return {"x": np.concatenate(xs), "y": np.concatenate(ys), "right": np.concatenate(parts)}

    return build(pre_ids, 250, 0), build(fine_ids, 120, 60)


def shapes_task() -> tuple[dict, dict]:
    from nnrun.components.data.shapes import ShapesParams, generate

    def make(classes, n, seed):
        split = generate(n, ShapesParams(image_size=SIZE, classes=classes, seed=seed), 0)
        return {"x": np.round(split.x * 255).astype(np.uint8), "y": split.y}

    return make(["circle", "square"], 2000, 1), make(["triangle", "cross"], 600, 2)


def few_shot(task: dict, shots: int, seed: int, val_per_class: int) -> dict:
    """`shots` training examples per class (a seed's own draw) and a fixed validation set
    (textures: the right parts of the photos, which no training crop overlaps)."""
    rng = np.random.default_rng(1000 + seed)
    fixed = np.random.default_rng(7)
    train, val = [], []
    for label in np.unique(task["y"]):
        idx = np.flatnonzero(task["y"] == label)
        if "right" in task:
            left, right = idx[~task["right"][idx]], idx[task["right"][idx]]
            train.append(rng.choice(left, shots, replace=False))
            val.append(right[:val_per_class])
        else:
            pool = fixed.permutation(idx)
            val.append(pool[:val_per_class])
            train.append(rng.choice(pool[val_per_class:], shots, replace=False))
    t, v = np.concatenate(train), np.concatenate(val)
    return {"x_train": task["x"][t], "y_train": task["y"][t], "x_val": task["x"][v], "y_val": task["y"][v]}


def pretrain_split(task: dict) -> dict:
    rng = np.random.default_rng(3)
    order = rng.permutation(len(task["y"]))
    n_val = max(100, len(order) // 6)
    return {"x_train": task["x"][order[n_val:]], "y_train": task["y"][order[n_val:]],
            "x_val": task["x"][order[:n_val]], "y_val": task["y"][order[:n_val]]}


# -- runs --------------------------------------------------------------------------------------

def config(name: str, npz: Path, root: Path, lr: float, epochs: int, batch: int, seed: int, init_from=None,
           finetune: dict | None = None, classes: list[str] | None = None):
    from nnrun.config import resolve

    params = {"path": str(npz), **({"class_names": classes} if classes else {})}
    raw = {"name": name, "seed": seed,
           "data": {"dataset": "npz", "params": params, "batch_size": batch},
           "model": {**MODEL, **({"init_from": str(init_from)} if init_from else {})},
           "optimizer": {"name": "adam", "learning_rate": lr},
           "train": {"epochs": epochs, "techniques": {"finetune": finetune} if finetune is not None else {}},
           "runtime": {"runs_root": str(root), "deterministic": True}}
    return resolve(raw)


def train(cfg) -> dict:
    import keras

    from nnrun.engine.train import Output, train as run_training
    from nnrun.search.worker import released_gradient_registrations

    keras.backend.clear_session()
    with released_gradient_registrations():
        run = run_training(cfg, ["bench_transfer"], Output(console=None, progress=False, epoch_lines=False))
    return run.read()


def ci95(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of a 95% t interval (n - 1 degrees of freedom)."""
    t = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, t.get(len(values) - 1, 2.0) * statistics.stdev(values) / math.sqrt(len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="digits,textures,shapes")
    parser.add_argument("--lrs", default="1e-3,3e-3,1e-2")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shots", type=int, default=10, help="training images per class in the fine-tune")
    parser.add_argument("--epochs", type=int, default=15, help="fine-tune epochs")
    parser.add_argument("--photos", type=Path, default=None, help="folder of natural photos for textures")
    parser.add_argument("--candidates", action="store_true", help="also other finetune settings (to choose defaults)")
    parser.add_argument("--variants", default=None,
                        help="run only these variants (comma-separated names), e.g. to add candidates to an earlier "
                        "table: every run is deterministic, so the others would come out the same")
    parser.add_argument("--quick", action="store_true", help="one task, one lr, 2 seeds, 6 epochs: a smoke test")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temp folder)")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.lrs, args.seeds, args.epochs = "shapes", "3e-3", 2, 6

    from nnrun.engine import runtime

    runtime.import_tensorflow()
    from nnrun.components.techniques.finetune import FinetuneParams

    new = FinetuneParams().model_dump()
    variants = {"scratch": None, "init": None, "old": OLD, "new": new}
    if args.candidates:
        variants.update({k: {**new, **v} for k, v in CANDIDATES.items()})
    if args.variants:
        unknown = sorted(set(args.variants.split(",")) - set(variants))
        if unknown:
            raise SystemExit(f"unknown variants {unknown}; known: {', '.join(variants)} (--candidates adds some)")
        variants = {k: v for k, v in variants.items() if k in args.variants.split(",")}
    lrs = [float(v) for v in args.lrs.split(",")]
    work = args.out or Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    work.mkdir(parents=True, exist_ok=True)
    makers = {"digits": digits_task, "textures": lambda: textures_task(args.photos), "shapes": shapes_task,
              # held out: not used to choose the defaults
              "digits_rev": lambda: digits_task(reverse=True), "textures_b": lambda: textures_task(args.photos, 1)}
    results: dict = {}
    start = time.perf_counter()
    for task_name in args.tasks.split(","):
        pre, fine = makers[task_name]()
        np.savez(work / f"{task_name}-pre.npz", **pretrain_split(pre))
        # Named apart, as the held-out task's classes were: init_from then re-creates the head.
        pre_cfg = config(f"{task_name}-pre", work / f"{task_name}-pre.npz", work / "runs", 1e-3, 10, 64, 0,
                         classes=[f"pre{i}" for i in np.unique(pre["y"])])
        pre_record = train(pre_cfg)
        pre_run = work / "runs" / f"{task_name}-pre"
        print(f"{task_name}: pretrained on {len(pre['y'])} images, val_accuracy "
              f"{pre_record['final_metrics']['val_accuracy']:.3f}", file=sys.stderr, flush=True)
        for seed in range(args.seeds):
            np.savez(work / f"{task_name}-fine-{seed}.npz", **few_shot(fine, args.shots, seed, 60))
        for lr in lrs:
            for variant, finetune in variants.items():
                scores = []
                for seed in range(args.seeds):
                    cfg = config(f"{task_name}-{variant}-lr{lr:g}", work / f"{task_name}-fine-{seed}.npz",
                                 work / "runs", lr, args.epochs, 16, seed,
                                 init_from=None if variant == "scratch" else pre_run, finetune=finetune,
                                 classes=[f"new{i}" for i in np.unique(fine["y"])])
                    record = train(cfg)
                    scores.append(float(record["final_metrics"]["val_accuracy"]))
                results.setdefault(task_name, {}).setdefault(f"{lr:g}", {})[variant] = scores
                print(f"{task_name} lr {lr:g} {variant:<14} {' '.join(f'{s:.3f}' for s in scores)}",
                      file=sys.stderr, flush=True)
    report(results, variants, time.perf_counter() - start, args)


def report(results: dict, variants: dict, seconds: float, args) -> None:
    names = list(variants)
    print(f"\nval_accuracy, mean ± sd over {args.seeds} seeds ({args.shots} images per class, "
          f"{args.epochs} epochs); new - init: paired mean [95% interval]")
    width = max(16, *(len(n) + 2 for n in names))
    print(f"{'task':<12}{'lr':>7}" + "".join(f"{n:>{width}}" for n in names) + f"{'new - init':>22}")
    verdict = {"never_below_init": True, "beats_scratch": True}
    summary = {}
    for task, by_lr in results.items():
        for lr, scores in by_lr.items():
            cells = "".join(f"{statistics.fmean(scores[n]):>{width - 8}.3f} ± {statistics.pstdev(scores[n]):.3f}"
                            for n in names)
            summary[f"{task}@{lr}"] = {n: round(statistics.fmean(scores[n]), 4) for n in names}
            if not {"new", "init", "scratch"} <= set(names):
                print(f"{task:<12}{lr:>7}{cells}")
                continue
            diff, half = ci95([a - b for a, b in zip(scores["new"], scores["init"])])
            print(f"{task:<12}{lr:>7}{cells}{diff:>+10.3f} [{diff - half:+.3f}, {diff + half:+.3f}]")
            noise = max(statistics.pstdev(scores["new"]), statistics.pstdev(scores["init"]), 0.01)
            below = statistics.fmean(scores["new"]) < statistics.fmean(scores["init"]) - noise
            summary[f"{task}@{lr}"]["new_minus_init"] = [round(diff, 4), round(half, 4)]
            verdict["never_below_init"] &= not below
            verdict["beats_scratch"] &= statistics.fmean(scores["new"]) > statistics.fmean(scores["scratch"])
    if not {"new", "init", "scratch"} <= set(names):
        verdict = None
    print(json.dumps({"results": summary, "verdict": verdict, "scores": results, "seconds": round(seconds, 1),
                      "seeds": args.seeds, "shots": args.shots, "epochs": args.epochs}))


if __name__ == "__main__":
    main()
