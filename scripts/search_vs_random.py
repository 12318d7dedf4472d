#!/usr/bin/env python3
"""TPE with the median pruner against random search, on the quickstart (configs/quickstart.yaml).

Both searches explore the same space (configs/search_quickstart.yaml: learning rate, weight
decay, label smoothing) with the same number of epochs per trial and the same warm worker:

  random  sampler random, no pruner, --trials trials: its best val_accuracy is the target
  tpe     sampler tpe (5 random start-up trials), median pruner (warm-up 1 epoch), --trials trials

and prints, for each, the total epochs trained, and the epochs trained until its first trial
reached the random search's best. Last line: one JSON object with every figure.

Usage: python scripts/search_vs_random.py [--trials 16] [--epochs 4] [--out DIR]
(about 15 minutes for 16 + 16 trials of 4 epochs on 2 quiet CPU cores)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "search_quickstart.yaml"


def run_search(label: str, search: dict, args, out: Path, seed: int) -> dict:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["name"] = f"svr-{label}"
    spec["base"] = str(ROOT / "configs" / spec["base"])
    spec["set"] = {**spec.get("set", {}), "train.epochs": args.epochs}
    spec["search"] = {**search, "trials": args.trials, "seed": seed, "metric": "val_accuracy"}
    path = out / f"{label}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    nnrun = str(Path(sys.executable).parent / "nnrun")
    t0 = time.perf_counter()
    with open(out / f"{label}.log", "w") as log:
        proc = subprocess.run([nnrun, "sweep", str(path), "--out", str(out / label)], stdout=log,
                              stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{label} search failed (exit {proc.returncode}); see {out / f'{label}.log'}")
    rows = sorted((json.loads(line) for line in (out / label / "sweep.jsonl").read_text().splitlines()),
                  key=lambda r: r["trial"])
    return {"rows": rows, "wall_s": round(time.perf_counter() - t0, 1),
            "info": json.loads((out / label / "search.json").read_text())}


def epochs_until(rows: list[dict], target: float) -> tuple[int | None, int | None]:
    """(epochs trained until the first completed trial with value >= target, that trial)."""
    spent = 0
    for r in rows:
        spent += int(r["epochs"] or 0)
        if r["status"] == "completed" and r["value"] is not None and r["value"] >= target:
            return spent, r["trial"]
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="the random search's sampler seed")
    parser.add_argument("--tpe-seed", type=int, default=None,
                        help="TPE's sampler seed (default --seed: its start-up trials then draw the random "
                             "search's first values, a paired comparison)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "search_vs_random")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for label, search in (("random", {"sampler": "random", "pruner": "none"}),
                          ("tpe", {"sampler": "tpe", "startup_trials": 5,
                                   "pruner": {"name": "median", "warmup_epochs": 1}})):
        print(f"running the {label} search ({args.trials} trials of {args.epochs} epochs) ...", file=sys.stderr,
              flush=True)
        seed = args.seed if label == "random" or args.tpe_seed is None else args.tpe_seed
        results[label] = run_search(label, search, args, args.out, seed)
        info = results[label]["info"]
        print(f"  {label}: best val_accuracy {info['best']['value']:.4f} (trial {info['best']['trial']}), "
              f"{info['total_epochs']} epochs, {results[label]['wall_s']} s", file=sys.stderr, flush=True)
    target = results["random"]["info"]["best"]["value"]
    figures = {"target_val_accuracy": target, "trials": args.trials, "epochs_per_trial": args.epochs,
               "seeds": {"random": args.seed, "tpe": args.seed if args.tpe_seed is None else args.tpe_seed}}
    for label, res in results.items():
        until, trial = epochs_until(res["rows"], target)
        info = res["info"]
        figures[label] = {"best_val_accuracy": info["best"]["value"], "best_trial": info["best"]["trial"],
                          "total_epochs": info["total_epochs"], "epochs_to_target": until,
                          "trial_reaching_target": trial, "counts": info["counts"], "wall_s": res["wall_s"]}
    tpe, rnd = figures["tpe"], figures["random"]
    figures["tpe_reaches_target_in_fewer_epochs"] = (tpe["epochs_to_target"] is not None
                                                     and tpe["epochs_to_target"] < rnd["total_epochs"])
    print(f"random search: best val_accuracy {rnd['best_val_accuracy']:.4f}, {rnd['total_epochs']} epochs in total "
          f"(first reached at {rnd['epochs_to_target']} epochs, trial {rnd['trial_reaching_target']})")
    if tpe["epochs_to_target"] is None:
        print(f"TPE + median pruner: did not reach {target:.4f} in {args.trials} trials "
              f"(best {tpe['best_val_accuracy']:.4f}, {tpe['total_epochs']} epochs in total)")
    else:
        print(f"TPE + median pruner: reached {target:.4f} at {tpe['epochs_to_target']} epochs (trial "
              f"{tpe['trial_reaching_target']}); {tpe['total_epochs']} epochs in total, best "
              f"{tpe['best_val_accuracy']:.4f}, {tpe['counts']['pruned']} trials pruned")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
