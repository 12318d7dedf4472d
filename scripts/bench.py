#!/usr/bin/env python3
"""Benchmark nnrun against the Keras loop a user would write by hand (and the seed's IG).

Runs each comparison side by side in one invocation, interleaving repeats (this machine is
noisy), and prints a readable table and, last, one JSON object with every figure:

  fit_ratio           nnrun training images/s / hand-written model.fit images/s (target >= 1.0)
  ig_speedup          batched integrated gradients / the seed's per-step loop, 64 steps (>= 10)
  cli_s               wall time of `nnrun --help` and `nnrun validate` (< 0.5 s; also `components`)
  pipeline_ratio      input pipeline images/s (quickstart, and with all techniques) /
                      the model's training images/s (>= 5: never input-bound)
  time_to_accuracy_s  training wall time for the quickstart to reach val_accuracy 0.90
  peak_rss_ratio      nnrun's peak RSS / the hand-written baseline's (<= 1.1)
  predict_ratio       `nnrun predict` images/s over a 2,000-file JPEG folder / a hand-written
                      tf.data (decode_jpeg, resize) + compiled-model loop over the same files, in
                      the same process, interleaved repeats (target >= 0.9)
  predict_startup_s   `nnrun predict` from process start to its first predicted batch
  sweep_overhead_s    (wall time of `nnrun sweep` over 8 one-epoch quickstart trials, one worker) / 8
                      minus the trials' mean training time (run.json wall_time_s, which starts once
                      the model is built): for a search: sweep (warm worker, TensorFlow imported
                      once) and for a random: sweep (one `nnrun train` process per trial); target
                      <= 1 s for the warm worker. `sweep.warm.overhead_beyond_trials_s` subtracts the
                      worker's whole time per trial instead (model build and compile included): what
                      the runner itself adds (start-up, the one TensorFlow import, the summary).
                      `sweep.warm.floor_s`: the part no runner can remove, the one TensorFlow import
                      (`tensorflow_import_s`, a fresh process) / 8 plus each trial's own preparation
                      before its run clock starts (`prepare_s`: in-worker time minus run time)

  peaks, mfu          scripts/bench_ceiling.py: measured matmul / 3x3-conv FLOP/s (fp32, bf16 where the
                      CPU has it) and model FLOP utilisation of quickstart and ResNet-20, nnrun and Keras

Usage: python scripts/bench.py [--quick] [--repeats N] [--only predict|sweep|ceiling]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
PY = sys.executable


def child_json(cmd: list[str]) -> dict:
    """Run one measured child process; it prints its figures (and its own peak RSS) as JSON."""
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def baseline(epochs: int) -> None:
    """The hand-written Keras loop (bench_ceiling.hand_written_fit): same data, model, optimizer,
    schedule, loss, batch size."""
    import resource

    from bench_ceiling import hand_written_fit

    rows, num_train = hand_written_fit(QUICKSTART, epochs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "peak_rss_mb": peak, "num_train": num_train}))


def nnrun_child(epochs: int, runs_root: str) -> None:
    """`nnrun train` in this process (so its own peak RSS can be reported), as a user runs it."""
    import resource

    from nnrun.cli import main

    sys.argv = ["nnrun", "train", str(QUICKSTART), "--quiet", "--set", f"train.epochs={epochs}",
                "--set", f"runtime.runs_root={runs_root}"]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main()
        except SystemExit as exc:
            if exc.code:
                raise
    run = Path(buf.getvalue().strip().splitlines()[-1])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    from nnrun.config import load_config

    record = {"num_train": load_config(run / "config.yaml").data.params["num_train"]}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "peak_rss_mb": peak, "num_train": record["num_train"]}))


def throughput(result: dict) -> float:
    """Training images/s after warm-up (epoch 1, which traces and compiles, is excluded)."""
    rows = result["rows"][1:]
    return result["num_train"] * len(rows) / sum(r["train_time_s"] for r in rows)


def time_to(result: dict, target: float = 0.90) -> float | None:
    elapsed = 0.0
    for row in result["rows"]:
        elapsed += row["epoch_time_s"]
        if row.get("val_accuracy", 0) >= target:
            return round(elapsed, 2)
    return None


def pipeline_rates() -> dict:
    """Input pipeline alone (no model): images/s over one epoch, plain and with all techniques."""
    from nnrun.config import load_config
    from nnrun.engine import build, pipeline, runtime

    out = {}
    for label, config in (("quickstart", QUICKSTART), ("all_techniques", ROOT / "configs" / "all_techniques.yaml")):
        cfg = load_config(config)
        runtime.setup(cfg)
        data = build.build_data(cfg)
        split = data.split("train")
        ctx = build.technique_context(cfg, data)
        labels, steps = ctx.label_mode, ctx.steps_per_epoch
        techniques = build.build_techniques(cfg, ctx)
        for t in techniques:
            t.prepare(ctx, data, lambda epochs: None)
        # the last epochs: full curriculum pool and the largest image size (the costliest)
        first = cfg.train.epochs - 2
        ds = pipeline.train_dataset(split, batch_size=cfg.data.batch_size, seed=0, num_classes=data.num_classes,
                                    label_mode=labels, first_epoch=first, last_epoch=cfg.train.epochs,
                                    techniques=techniques)
        it = iter(ds)
        for _ in range(steps):  # warm-up epoch
            next(it)
        t0 = time.perf_counter()
        n = 0
        for _ in range(steps):
            n += int(next(it)[0].shape[0])
        out[label] = n / (time.perf_counter() - t0)
    import keras

    keras.config.set_dtype_policy("float32")
    return out


def cli_times(repeats: int) -> dict:
    nnrun = str(Path(PY).parent / "nnrun")
    times = {}
    for label, args in (("help", ["--help"]), ("validate", ["validate", str(QUICKSTART)]),
                        ("components", ["components"])):
        walls = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([nnrun, *args], cwd=ROOT, capture_output=True, check=True)
            walls.append(time.perf_counter() - t0)
        times[label] = round(statistics.median(walls), 3)
    return times


def ig_speedup(quick: bool, run_dir: str) -> dict | None:
    script = ROOT / "scripts" / "bench_ig.py"
    args = [PY, str(script), run_dir, "--json"] + (["--quick"] if quick else [])
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "could not parse bench_ig.py output"}


PREDICT_CONFIG = """\
name: bench_predict
seed: 0
data:
  dataset: image_folder
  params: {{path: {root}, image_size: 32, validation_split: 0.1}}
  batch_size: 64
model:
  name: resnet
  params: {{stages: [16, 32, 64], blocks_per_stage: 1}}
train: {{epochs: 1}}
runtime: {{runs_root: {runs}}}
"""


def make_jpeg_folder(root: Path, n: int = 2000, size: int = 64) -> Path:
    """n JPEG files (size x size) in two class folders: light and dark noisy images."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        name = ("dark", "light")[i % 2]
        (root / name).mkdir(parents=True, exist_ok=True)
        base = 70 if name == "dark" else 180
        pixels = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / name / f"{i:05d}.jpg", quality=90)
    return root


def hand_written_predict(run_dir: Path, files: list[str], batch_size: int) -> float:
    """What a user writes by hand: tf.data decode + resize in parallel, one compiled model call
    per batch (the model holds its own preprocessing). Returns images/s."""
    import keras
    import tensorflow as tf

    model = keras.saving.load_model(run_dir / "checkpoints" / "best.keras", compile=False)

    def decode(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, (32, 32), antialias=True)), 0, 255), tf.uint8)

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.uint8)])
    def probabilities(x):
        return tf.nn.softmax(model(tf.cast(x, tf.float32), training=False))

    t0 = time.perf_counter()  # from the file list on, as nnrun predict's clock: building the pipeline counts
    ds = (tf.data.Dataset.from_tensor_slices(files).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    n = sum(int(probabilities(x).shape[0]) for x in ds)
    return n / (time.perf_counter() - t0)


def predict_child(run_dir: str, folder: str, repeats: int) -> None:
    """nnrun predict and the hand-written loop in this one process, interleaved."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from nnrun.inference.predict import predict

    run, root = Path(run_dir), Path(folder)
    files = sorted(str(f) for f in root.rglob("*.jpg"))
    rates: dict[str, list] = {"nnrun": [], "keras": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            rates["keras"].append(hand_written_predict(run, files, 64))
            summary = predict(run, [root], out=Path(tmp) / f"{r}.csv", batch_size=64, warn=lambda line: None)
            rates["nnrun"].append(summary["predicted"] / summary["seconds"])
    print(json.dumps(rates))


def predict_figures(quick: bool) -> dict:
    """predict_ratio and predict_startup_s on a fresh 2,000-file JPEG folder and a 1-epoch run."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = make_jpeg_folder(tmp / "images")
        config = tmp / "predict.yaml"
        config.write_text(PREDICT_CONFIG.format(root=root, runs=tmp / "runs"))
        nnrun = str(Path(PY).parent / "nnrun")
        trained = subprocess.run([nnrun, "train", str(config), "--quiet"], cwd=ROOT, capture_output=True, text=True)
        if trained.returncode != 0:
            raise SystemExit(f"predict benchmark run failed: {trained.stderr[-2000:]}")
        run = trained.stdout.strip().splitlines()[-1]
        rates = child_json([PY, __file__, "--predict-child", run, str(root), str(2 if quick else 3)])
        ratios = [n / k for n, k in zip(rates["nnrun"], rates["keras"])]
        t0 = time.time()
        out = subprocess.run([nnrun, "predict", run, str(root), "--json", "--out", str(tmp / "startup.csv")],
                             cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"nnrun predict failed: {out.stderr[-2000:]}")
        summary = json.loads(out.stdout.strip().splitlines()[-2])
    return {"predict_ratio": round(statistics.median(ratios), 3), "predict_ratios": [round(r, 3) for r in ratios],
            "predict_images_per_s": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
            "predict_startup_s": round(summary["first_batch_at"] - t0, 2)}


SWEEP_TRIALS = 8


def sweep_figures() -> dict:
    """sweep_overhead_s for a warm search worker and for the process-per-trial runner: the same
    8 one-epoch quickstart trials (random learning rates), one at a time."""
    nnrun = str(Path(PY).parent / "nnrun")
    common = f"base: {QUICKSTART}\nset: {{train.epochs: 1}}\n"
    space = "{optimizer.learning_rate: {loguniform: [1.0e-3, 1.0e-2]}}"
    files = {"warm": f"search: {{sampler: random, trials: {SWEEP_TRIALS}, pruner: none}}\nparams: {space}\n",
             "process": f"random: {{samples: {SWEEP_TRIALS}, seed: 0, params: {space}}}\n"}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, body in files.items():
            path = Path(tmp) / f"{label}.yaml"
            path.write_text(f"name: bench-{label}\n" + common + body)
            t0 = time.perf_counter()
            proc = subprocess.run([nnrun, "sweep", str(path), "--out", str(Path(tmp) / label)], cwd=ROOT,
                                  capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"sweep benchmark ({label}) failed: {proc.stderr[-2000:]}")
            trials = [json.loads(p.read_text()) for p in (Path(tmp) / label).rglob("run.json")]
            mean = statistics.mean(r["wall_time_s"] for r in trials)
            out[label] = {"wall_s": round(wall, 2), "trials": len(trials), "mean_trial_s": round(mean, 2),
                          "overhead_s": round(wall / len(trials) - mean, 2)}
            if label == "warm":  # the worker's own time per trial: its model build and compile included
                rows = [json.loads(line) for line in (Path(tmp) / label / "sweep.jsonl").read_text().splitlines()]
                in_worker = statistics.mean(r["trial_s"] for r in rows)
                out[label].update(mean_trial_in_worker_s=round(in_worker, 2),
                                  overhead_beyond_trials_s=round(wall / len(rows) - in_worker, 2),
                                  prepare_s=round(in_worker - mean, 2))
    imported = tensorflow_import_s()
    out["warm"].update(tensorflow_import_s=imported,
                       floor_s=round(imported / SWEEP_TRIALS + out["warm"]["prepare_s"], 2))
    return {"sweep_overhead_s": {k: v["overhead_s"] for k, v in out.items()}, "sweep": out}


def tensorflow_import_s(repeats: int = 3) -> float:
    """Median time of nnrun's TensorFlow import (Keras and device discovery) in a fresh process."""
    code = ("import time; t = time.perf_counter(); from nnrun.engine import runtime; "
            "runtime.import_tensorflow(); print(time.perf_counter() - t)")
    times = [float(subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout.split()[-1]) for _ in range(repeats)]
    return round(statistics.median(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats (under 5 minutes)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--baseline", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--nnrun-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--predict-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["predict", "sweep", "ceiling"], help="run only this part of the benchmark")
    args = parser.parse_args()
    if args.predict_child:
        return predict_child(args.predict_child[0], args.predict_child[1], int(args.predict_child[2]))
    if args.only == "predict":
        figures = predict_figures(args.quick)
        figures["targets_met"] = {"predict_ratio": figures["predict_ratio"] >= 0.9}
        print(json.dumps(figures))
        return
    if args.only == "ceiling":
        import bench_ceiling

        print(json.dumps(bench_ceiling.figures(args.quick, args.repeats or 3)))
        return
    if args.only == "sweep":
        figures = sweep_figures()
        figures["targets_met"] = {"sweep_overhead_s": figures["sweep_overhead_s"]["warm"] <= 1.0}
        print(json.dumps(figures))
        return
    if args.baseline:
        return baseline(args.baseline)
    if args.nnrun_child:
        return nnrun_child(int(args.nnrun_child[0]), args.nnrun_child[1])

    repeats = args.repeats or (2 if args.quick else 3)
    epochs = 4 if args.quick else 8
    results: dict[str, list] = {"keras": [], "nnrun": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):  # interleaved: keras, nnrun, keras, nnrun, ...
            results["keras"].append(child_json([PY, __file__, "--baseline", str(epochs)]))
            results["nnrun"].append(child_json([PY, __file__, "--nnrun-child", str(epochs), tmp]))
        ig = ig_speedup(args.quick, str(max(Path(tmp).glob("quickstart/*"))))
    keras_ips = statistics.median(throughput(r) for r in results["keras"])
    nnrun_ips = statistics.median(throughput(r) for r in results["nnrun"])
    rss_k = statistics.median(r["peak_rss_mb"] for r in results["keras"])
    rss_n = statistics.median(r["peak_rss_mb"] for r in results["nnrun"])
    tta = [time_to(r) for r in results["nnrun"]]
    tta_k = [time_to(r) for r in results["keras"]]
    pipe = pipeline_rates()
    cli = cli_times(5)
    predicted = predict_figures(args.quick)
    swept = sweep_figures()
    import bench_ceiling  # peaks and mfu; quickstart images/s are this run's own repeats

    ceiling = bench_ceiling.figures(args.quick, quickstart_rates={k: [throughput(r) for r in v]
                                                                  for k, v in results.items()})
    figures = {
        "fit_ratio": round(nnrun_ips / keras_ips, 3),
        "nnrun_images_per_s": round(nnrun_ips, 1),
        "keras_images_per_s": round(keras_ips, 1),
        "ig_speedup": ig.get("speedup") if isinstance(ig, dict) else None,
        "ig": ig,
        "cli_s": cli,
        "pipeline_images_per_s": {k: round(v, 1) for k, v in pipe.items()},
        "pipeline_ratio": {k: round(v / nnrun_ips, 1) for k, v in pipe.items()},
        "time_to_accuracy_s": {"nnrun": tta, "keras": tta_k},
        "peak_rss_mb": {"nnrun": round(rss_n, 1), "keras": round(rss_k, 1)},
        "peak_rss_ratio": round(rss_n / rss_k, 3),
        "epochs": epochs,
        "repeats": repeats,
        "cpu_count": os.cpu_count(),
        **predicted,
        **swept,
        **ceiling,
    }
    targets = {
        "fit_ratio": figures["fit_ratio"] >= 1.0,
        "ig_speedup": bool(figures["ig_speedup"]) and figures["ig_speedup"] >= 10,
        "cli_s": max(cli["help"], cli["validate"]) < 0.5,
        "pipeline_ratio": min(figures["pipeline_ratio"].values()) >= 5,
        "peak_rss_ratio": figures["peak_rss_ratio"] <= 1.1,
        "predict_ratio": figures["predict_ratio"] >= 0.9,
        "sweep_overhead_s": figures["sweep_overhead_s"]["warm"] <= 1.0,
    }
    figures["targets_met"] = targets
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"nnrun benchmark ({epochs} epochs x {repeats} interleaved repeats, {os.cpu_count()} cores)")
    for col in ("figure", "value", "target", "met"):
        table.add_column(col)
    rows = [
        ("fit_ratio", f"{figures['fit_ratio']} ({nnrun_ips:.0f} vs {keras_ips:.0f} img/s)", ">= 1.0", targets["fit_ratio"]),
        ("ig_speedup", str(figures["ig_speedup"]), ">= 10", targets["ig_speedup"]),
        ("cli_s", json.dumps(cli), "< 0.5 s", targets["cli_s"]),
        ("pipeline_ratio", json.dumps(figures["pipeline_ratio"]), ">= 5", targets["pipeline_ratio"]),
        ("time_to_accuracy_s", json.dumps(figures["time_to_accuracy_s"]), "-", "-"),
        ("peak_rss_ratio", f"{figures['peak_rss_ratio']} ({rss_n:.0f} vs {rss_k:.0f} MB)", "<= 1.1", targets["peak_rss_ratio"]),
        ("predict_ratio", f"{figures['predict_ratio']} {figures['predict_ratios']}", ">= 0.9", targets["predict_ratio"]),
        ("predict_startup_s", str(figures["predict_startup_s"]), "-", "-"),
        ("sweep_overhead_s", json.dumps(figures["sweep_overhead_s"]), "warm <= 1 s", targets["sweep_overhead_s"]),
        ("peaks (GFLOP/s)", json.dumps({k: {d: round(v / 1e9, 1) for d, v in p.items()}
                                        for k, p in figures["peaks_flops_per_s"].items()}), "-", "-"),
        ("mfu", json.dumps(figures["mfu"]), "resnet20 fp32 >= 0.3", "-"),
    ]
    for name, value, target, met in rows:
        table.add_row(name, value, target, str(met))
    Console(stderr=True).print(table)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
