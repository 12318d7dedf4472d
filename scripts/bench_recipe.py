"""Does configs/recipe_photos.yaml help on photos? The recipe, the recipe without each of its
techniques (`nnrun ablate`), and the same network trained plainly, over the same seeds.

The task: natural photos (scikit-learn's two, matplotlib's one and those in --photos DIR), one
class per photo (10 classes). Training images are crops from the left 60% of each photo,
validation images from the right 40%, so no validation crop overlaps a training one; crops
are saved as JPEG (quality 90) of varied sizes (80-200 px), in train/<class>/ and val/<class>/.

    pip install scikit-learn
    python scripts/bench_recipe.py --photos DIR [--seeds 3] [--set train.epochs=30 ...]

Prints the plain baseline and the ablation table (mean, 95% interval, paired differences), and
a last line of JSON. Runs land in --out (default a temp folder).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

PLAIN = ["train.techniques={}", "loss.params.label_smoothing=0", "optimizer.schedule=constant",
         "model.params.stochastic_depth=0"]


def make_folder(out: Path, photos_dir: Path | None, per_class: int, val_per_class: int, seed: int = 0) -> Path:
    from PIL import Image

    from bench_transfer import _photos  # the same photo sources as the transfer benchmark

    photos = _photos(photos_dir)
    if len(photos) < 10:
        raise SystemExit(f"found {len(photos)} photos, need 10: pass --photos DIR (see bench_transfer.py)")
    rng = np.random.default_rng(seed)
    for label, photo in enumerate(photos[:10]):
        h, w = photo.shape[:2]
        for split, (lo, hi), n in (("train", (0, int(0.6 * w)), per_class), ("val", (int(0.6 * w), w), val_per_class)):
            folder = out / split / f"photo{label:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                side = min(int(rng.uniform(0.2, 0.5) * min(h, w)), hi - lo, h)
                x0, y0 = int(rng.integers(lo, hi - side + 1)), int(rng.integers(0, h - side + 1))
                size = int(rng.integers(80, 201))
                crop = Image.fromarray(photo[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.Resampling.LANCZOS)
                crop.save(folder / f"{i:04d}.jpg", quality=90)
    return out


def cli(*args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "nnrun", *args], cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"nnrun {' '.join(args)} failed:\n{res.stderr[-2000:]}")
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=80, help="training images per class")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="override for every run")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="bench-recipe-"))
    folder = make_folder(work / "photos", args.photos, args.per_class, 40)
    config = ROOT / "configs" / "recipe_photos.yaml"
    sets = [f"data.params.path={folder}", *args.sets]
    flags = [a for s in sets for a in ("--set", s)]
    res = cli("ablate", str(config), "--seeds", str(args.seeds), "--jobs", str(args.jobs), "--out",
              str(work / "ablation"), *flags)
    flags += ["--set", f"runtime.runs_root={work / 'runs'}"]  # the plain runs (a sweep sets its own)
    table = json.loads((Path(res.stdout.strip().splitlines()[-1]) / "ablation.json").read_text())
    full = table[0]
    plain = []
    for i in range(args.seeds):
        seed = int(sorted(full["values"], key=int)[i])
        res = cli("train", str(config), *flags, *[a for s in PLAIN for a in ("--set", s)],
                  "--set", f"seed={seed}", "--set", "name=recipe-plain", "--quiet")
        record = json.loads((Path(res.stdout.strip().splitlines()[-1]) / "run.json").read_text())
        plain.append(float(record["final_metrics"][full["metric"]]))
    paired = [full["values"][s] - p for s, p in zip(sorted(full["values"], key=int), plain)]
    print(f"\n{full['metric']} over seeds {sorted(full['values'], key=int)}")
    print(f"{'plain (no recipe)':<26}{statistics.fmean(plain):.4f} ± {statistics.pstdev(plain):.4f}  {plain}")
    for row in table:
        diff = "" if row["diff_to_full"] is None else f"   diff to full {row['diff_to_full']:+.4f} ± {row['diff_ci95']:.4f}"
        print(f"{row['variant']:<26}{row['mean']:.4f} ± {statistics.pstdev(list(row['values'].values())):.4f}{diff}")
    print(f"{'recipe - plain (paired)':<26}{statistics.fmean(paired):+.4f} (per seed {[round(p, 4) for p in paired]})")
    print(json.dumps({"plain": plain, "ablation": table, "recipe_minus_plain": paired, "sets": args.sets}))


if __name__ == "__main__":
    main()
