#!/usr/bin/env python3
"""How close training gets to what this machine can do: measured peaks and mfu.

  peaks        FLOP/s of a large tf.matmul (2048^3) and a large 3x3 conv (32x32x32x256 -> 256), in
               float32, and in bfloat16 where the CPU reports AVX512_BF16 or AMX (float16 and
               bfloat16 on a GPU). Best of several ~0.5 s windows, each after a warm-up.
  flops        training FLOPs per image of each benchmarked model: forward FLOPs counted layer by
               layer from the Keras graph at the data set's image size (Conv2D / DepthwiseConv2D /
               Dense: 2 x multiply-adds; BatchNorm, ReLU, adds and pooling are left out, < 2 %),
               and training = 3 x forward (the backward pass computes a gradient for the layer's
               input and one for its weights, each as costly as the forward). TensorFlow's
               profiler (float_ops of the forward graph, every op) is reported beside it as a check.
  models       training images/s after warm-up (epoch 1 traces and compiles, excluded) of
               `nnrun train` and a hand-written Keras `model.fit` of the same model (same data,
               optimizer, schedule, loss, batch size, precision), interleaved repeats:
               quickstart (fp32) and ResNet-20 (configs/resnet20.yaml; fp32 and mixed_bfloat16
               where the CPU has bf16 units).
  mfu          model FLOP/s achieved (images/s x training FLOPs per image) / the measured float32
               matmul peak; `mfu_own_peak` divides by the matmul peak of the run's own precision.

Usage: python scripts/bench_ceiling.py [--quick] [--repeats N]        (one JSON line, last)
       python scripts/bench_ceiling.py --settings [--repeats N]       (ResNet-20 setting effects)
scripts/bench.py --only ceiling runs the same; a full bench.py run includes these figures.
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
CONFIGS = {"quickstart": ROOT / "configs" / "quickstart.yaml", "resnet20": ROOT / "configs" / "resnet20.yaml"}
PY = sys.executable
HERE = Path(__file__).resolve()


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def load_avg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def child_json(cmd: list[str], env: dict | None = None) -> dict:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- peaks ----------------------------------------------------------------------------------
def _rate(fn, flops: float, windows: int = 5, window_s: float = 0.5) -> dict:
    """FLOP/s of `fn()` (returns a scalar tensor): warm-up, then `windows` timed windows."""
    float(fn())
    float(fn())
    rates = []
    for _ in range(windows):
        n, t0 = 0, time.perf_counter()
        while True:
            float(fn())
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= window_s:
                break
        rates.append(n * flops / elapsed)
    return {"peak": max(rates), "median": statistics.median(rates), "min": min(rates)}


def peaks_child() -> None:
    tf = _tf()
    gpu = bool(tf.config.list_physical_devices("GPU"))
    from nnrun.components.techniques.mixed_precision import cpu_has_bf16

    dtypes = ["float32"] + (["float16", "bfloat16"] if gpu else (["bfloat16"] if cpu_has_bf16() else []))
    n = 4096 if gpu else 2048
    b, hw, c = (64, 32, 256) if gpu else (32, 32, 256)
    out = {"device": "gpu" if gpu else "cpu", "matmul": {}, "conv3x3": {},
           "matmul_shape": [n, n, n], "conv_shape": {"input": [b, hw, hw, c], "filter": [3, 3, c, c]}}
    for name in dtypes:
        dt = getattr(tf, name)
        a = tf.cast(tf.random.normal([n, n]), dt)
        w = tf.cast(tf.random.normal([n, n]), dt)
        x = tf.cast(tf.random.normal([b, hw, hw, c]), dt)
        k = tf.cast(tf.random.normal([3, 3, c, c]) * 0.01, dt)
        matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, w)[:1, :1], tf.float32)))
        conv = tf.function(lambda: tf.reduce_sum(tf.cast(
            tf.nn.conv2d(x, k, strides=1, padding="SAME")[:1, :1, :1, :1], tf.float32)))
        out["matmul"][name] = _rate(matmul, 2.0 * n ** 3)
        out["conv3x3"][name] = _rate(conv, 2.0 * b * hw * hw * 9 * c * c)
    print(json.dumps(out))


# -- FLOPs per image --------------------------------------------------------------------------
def count_forward_flops(model, input_shape) -> dict:
    """Forward FLOPs for one image: 2 x multiply-adds of every Conv2D / DepthwiseConv2D / Dense,
    with the shapes each layer sees on an image of `input_shape` (hooks on the layer classes
    record them during one forward pass; the layers themselves are unchanged)."""
    import keras
    import numpy as np

    seen = []
    classes = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    originals = {cls: cls.call for cls in classes}

    def hooked(cls):
        def call(self, inputs, *args, **kwargs):
            out = originals[cls](self, inputs, *args, **kwargs)
            seen.append((self, tuple(inputs.shape), tuple(out.shape)))
            return out
        return call

    for cls in classes:
        cls.call = hooked(cls)
    try:
        model(np.zeros((1, *input_shape), "float32"), training=False)
    finally:
        for cls, call in originals.items():
            cls.call = call
    total, by_kind = 0, {}
    for layer, inp, out in seen:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            macs = int(np.prod(out[1:])) * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            macs = int(np.prod(out[1:])) * kh * kw * inp[-1] // layer.groups
        else:
            macs = int(np.prod(out[1:-1] or (1,))) * inp[-1] * out[-1]
        kind = type(layer).__name__
        by_kind[kind] = by_kind.get(kind, 0) + 2 * macs
        total += 2 * macs
    return {"forward": total, "by_layer_kind": by_kind, "layers_counted": len(seen)}


def profiler_flops(model, input_shape) -> int | None:
    """TensorFlow's profiler: float_ops of the frozen forward graph (every op, BN and adds included)."""
    tf = _tf()
    try:
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
        from tensorflow.python.profiler import model_analyzer, option_builder

        fn = tf.function(lambda x: model(x, training=False))
        frozen = convert_variables_to_constants_v2(fn.get_concrete_function(tf.TensorSpec([1, *input_shape])))
        opts = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
        opts = opts.with_empty_output().build()
        return int(model_analyzer.profile(graph=frozen.graph, options=opts).total_float_ops)
    except Exception:  # noqa: BLE001 - a private API: the check is optional
        return None


def flops_child(config: str) -> None:
    _tf()
    from nnrun.config import load_config
    from nnrun.engine import build

    cfg = load_config(config)
    data = build.build_data(cfg)
    model = build.build_model(cfg, data)
    counted = count_forward_flops(model, data.input_shape)
    counted["profiler_forward"] = profiler_flops(model, data.input_shape)
    counted["train"] = 3 * counted["forward"]
    counted["image_shape"] = list(data.input_shape)
    counted["parameters"] = int(model.count_params())
    print(json.dumps(counted))


# -- training throughput ----------------------------------------------------------------------
def throughput(rows: list[dict], num_train: int) -> float:
    """Training images/s after warm-up (epoch 1, which traces and compiles, is excluded)."""
    rows = rows[1:]
    return num_train * len(rows) / sum(r["train_time_s"] for r in rows)


def nnrun_rate(config: Path, epochs: int, num_train: int, sets: list[str] = (), env: dict | None = None) -> float:
    """`nnrun train` as a user runs it (a fresh process); images/s from its metrics.jsonl."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [PY, "-m", "nnrun", "train", str(config), "--quiet", "--set", f"train.epochs={epochs}",
               "--set", f"data.params.num_train={num_train}", "--set", f"runtime.runs_root={tmp}"]
        for s in sets:
            cmd += ["--set", s]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
        if proc.returncode != 0:
            raise SystemExit(f"nnrun train failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
        run = Path(proc.stdout.strip().splitlines()[-1])
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return throughput([r for r in rows if r.get("split") == "train"], num_train)


def hand_written_fit(config: Path, epochs: int, num_train: int | None = None, precision: str = "float32",
                     jit_compile: bool = False) -> tuple[list[dict], int]:
    """The hand-written Keras loop for a config: the data set's arrays through
    from_tensor_slices().shuffle().batch().prefetch(), the same model builder, AdamW with the
    same warm-up cosine, the config's label-smoothed cross-entropy from logits, `model.fit`.
    Returns per-epoch rows (train_time_s: until validation starts) and the training-set size.
    scripts/bench.py's fit_ratio baseline is this loop too."""
    _tf()
    import keras
    import tensorflow as tf

    from nnrun.components.data.shapes import ShapesParams, build as build_shapes
    from nnrun.components.models.resnet import ResNetParams, build as build_resnet
    from nnrun.config import load_config

    cfg = load_config(config)
    keras.utils.set_random_seed(cfg.seed)
    keras.config.set_dtype_policy(precision)
    data = build_shapes(ShapesParams(**{**cfg.data.params, **({"num_train": num_train} if num_train else {})}))
    train, val = data.splits["train"], data.splits["val"]
    k, bs = data.num_classes, cfg.data.batch_size
    train_ds = (tf.data.Dataset.from_tensor_slices((train.x, tf.one_hot(train.y, k)))
                .shuffle(len(train), seed=cfg.seed).batch(bs).prefetch(tf.data.AUTOTUNE))
    val_ds = tf.data.Dataset.from_tensor_slices((val.x, tf.one_hot(val.y, k))).batch(bs).cache()
    model = build_resnet(ResNetParams(**cfg.model.params), data)
    steps = -(-len(train) // bs)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, steps * epochs - steps, warmup_target=cfg.optimizer.learning_rate,
                                                      warmup_steps=steps)
    smoothing = cfg.loss.params.get("label_smoothing", 0.0)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=cfg.optimizer.weight_decay),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing),
                  metrics=["accuracy"], jit_compile=jit_compile)

    class Timer(keras.callbacks.Callback):
        rows: list = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.train = time.perf_counter(), None

        def on_test_begin(self, logs=None):
            if self.train is None:
                self.train = time.perf_counter() - self.t0

        def on_epoch_end(self, epoch, logs=None):
            self.rows.append({"epoch": epoch + 1, "train_time_s": self.train,
                              "epoch_time_s": time.perf_counter() - self.t0, "val_accuracy": logs["val_accuracy"]})

    timer = Timer()
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[timer], verbose=0)
    return timer.rows, len(train)


def keras_child(spec: str) -> None:
    s = json.loads(spec)
    rows, n = hand_written_fit(Path(s["config"]), s["epochs"], s["num_train"], s.get("precision", "float32"),
                               s.get("jit_compile", False))
    print(json.dumps({"images_per_s": throughput(rows, n)}))


def keras_rate(config: Path, epochs: int, num_train: int, precision: str = "float32", env: dict | None = None) -> float:
    spec = json.dumps({"config": str(config), "epochs": epochs, "num_train": num_train, "precision": precision})
    return child_json([PY, str(HERE), "--keras-child", spec], env)["images_per_s"]


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "runs": [round(v, 1) for v in values]}


# -- figures ----------------------------------------------------------------------------------
def measure_peaks() -> dict:
    return child_json([PY, str(HERE), "--peaks-child"])


def measure_flops() -> dict:
    return {name: child_json([PY, str(HERE), "--flops-child", str(path)]) for name, path in CONFIGS.items()}


def figures(quick: bool, repeats: int | None = None, quickstart_rates: dict | None = None) -> dict:
    """Peaks, FLOPs per image, images/s (nnrun and Keras) and mfu. `quickstart_rates`
    ({"nnrun": [...], "keras": [...]} images/s) reuses bench.py's own quickstart repeats."""
    repeats = repeats or 3
    load_before = load_avg()
    peaks = measure_peaks()
    flops = measure_flops()
    bf16 = "bfloat16" in peaks["matmul"]
    # ResNet-20: 20 batches of 128 per epoch in --quick (epoch 1 is warm-up), 40 otherwise.
    r20 = {"epochs": 3 if quick else 4, "num_train": 2560 if quick else 5120}
    variants = [("resnet20", "float32")] + ([("resnet20", "mixed_bfloat16")] if bf16 else [])
    if quickstart_rates is None:
        variants.insert(0, ("quickstart", "float32"))
    rates: dict[tuple, dict] = {v: {"nnrun": [], "keras": []} for v in variants}
    qs = {"epochs": 3, "num_train": 3000}
    for _ in range(repeats):  # interleaved: every variant's keras, nnrun, then the next repeat
        for name, precision in variants:
            run = qs if name == "quickstart" else r20
            sets = [] if precision == "float32" else [f"train.precision={precision}"]
            rates[(name, precision)]["keras"].append(keras_rate(CONFIGS[name], run["epochs"], run["num_train"], precision))
            rates[(name, precision)]["nnrun"].append(nnrun_rate(CONFIGS[name], run["epochs"], run["num_train"], sets))
    if quickstart_rates is not None:
        rates[("quickstart", "float32")] = quickstart_rates
    fp32_peak = peaks["matmul"]["float32"]["peak"]
    models = {}
    for (name, precision), runs in rates.items():
        train_flops = flops[name]["train"]
        own_peak = peaks["matmul"]["bfloat16" if "bfloat16" in precision else "float32"]["peak"]
        entry = {}
        for runner in ("nnrun", "keras"):
            ips = statistics.median(runs[runner])
            entry[runner] = {"images_per_s": spread(runs[runner]),
                             "model_flops_per_s": round(ips * train_flops),
                             "mfu": round(ips * train_flops / fp32_peak, 4),
                             "mfu_own_peak": round(ips * train_flops / own_peak, 4)}
        ratios = [n / k for n, k in zip(runs["nnrun"], runs["keras"])]
        entry["nnrun_over_keras"] = {"median": round(statistics.median(ratios), 3),
                                     "min": round(min(ratios), 3), "max": round(max(ratios), 3)}
        models[f"{name}_{'fp32' if precision == 'float32' else 'bf16'}"] = entry
    return {
        "peaks_flops_per_s": {kind: {dt: round(v["peak"]) for dt, v in peaks[kind].items()}
                              for kind in ("matmul", "conv3x3")},
        "peaks_detail": peaks,
        "train_flops_per_image": {name: f["train"] for name, f in flops.items()},
        "flops_detail": flops,
        "flops_note": "training = 3 x forward; forward = 2 x multiply-adds of Conv2D/Dense layers",
        "mfu": {m: {"nnrun": e["nnrun"]["mfu"], "keras": e["keras"]["mfu"]} for m, e in models.items()},
        "models": models,
        "ceiling_runs": {"repeats": repeats, "resnet20": r20, "quickstart": "bench.py's repeats" if quickstart_rates
                         else qs},
        "load_avg_1min": {"before": load_before, "after": load_avg()},
    }


# -- setting effects (README "Performance") ---------------------------------------------------
SETTINGS = {
    "default": ([], {}),
    "threads=1": (["runtime.threads=1"], {}),
    "intra=2,inter=1": ([], {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"}),
    "steps_per_execution=4": (["train.steps_per_execution=4"], {}),  # divides the 20 (40) batches of an epoch
    "jit_compile": (["train.jit_compile=true"], {}),
    "onednn_off": ([], {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "deterministic=false": (["runtime.deterministic=false"], {}),
    "mixed_bfloat16": (["train.precision=mixed_bfloat16"], {}),
}


def settings(repeats: int, names: list[str] | None, quick: bool) -> dict:
    run = {"epochs": 3, "num_train": 2560} if quick else {"epochs": 4, "num_train": 5120}
    names = names or list(SETTINGS)
    runs: dict[str, list] = {n: [] for n in names}
    loads = []
    for _ in range(repeats):
        for name in names:  # interleaved
            sets, env = SETTINGS[name]
            loads.append(load_avg())
            runs[name].append(nnrun_rate(CONFIGS["resnet20"], run["epochs"], run["num_train"], sets, env))
            print(f"{name}: {runs[name][-1]:.1f} img/s (load {loads[-1]})", file=sys.stderr, flush=True)
    base = statistics.median(runs[names[0]])
    return {"settings": {n: {**spread(v), "vs_first": round(statistics.median(v) / base, 3)} for n, v in runs.items()},
            "run": run, "repeats": repeats, "load_avg_1min": {"min": min(loads), "max": max(loads)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--settings", nargs="*", metavar="NAME", help=f"measure settings on ResNet-20: {', '.join(SETTINGS)}")
    parser.add_argument("--peaks-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--flops-child", help=argparse.SUPPRESS)
    parser.add_argument("--keras-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peaks_child:
        return peaks_child()
    if args.flops_child:
        return flops_child(args.flops_child)
    if args.keras_child:
        return keras_child(args.keras_child)
    if args.settings is not None:
        print(json.dumps(settings(args.repeats or 3, args.settings or None, args.quick)))
        return
    print(json.dumps(figures(args.quick, args.repeats or 3)))


if __name__ == "__main__":
    main()
