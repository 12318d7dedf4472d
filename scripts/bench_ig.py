"""Batched integrated gradients vs the seed's loop (one eager gradient call per step).

Usage: python scripts/bench_ig.py [RUN_DIR] [--images 16] [--steps 64] [--batch-size 256]

Both explain the same images for the same target (the predicted class's softmax probability)
from a black baseline; the seed's loop keeps its own quadrature (mean over linspace), the
batched version uses Gauss-Legendre. Prints wall times, the speedup and completeness for both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def seed_loop(tf, model, x, target, steps):
    """The seed's algorithm, with the target fixed to one class: a Python loop of eager
    gradient calls, one interpolated image per call, averaged over linspace(0, 1, steps)."""
    baseline = tf.zeros_like(x)
    grads = []
    for alpha in tf.linspace(0.0, 1.0, steps):
        interp = baseline + alpha * (x - baseline)
        with tf.GradientTape() as tape:
            tape.watch(interp)
            score = tf.nn.softmax(model(interp[None], training=False))[0, target]
        grads.append(tape.gradient(score, interp))
    return ((x - baseline) * tf.reduce_mean(tf.stack(grads), axis=0)).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="run directory (default: newest under runs/quickstart)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="8 images instead of --images")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line, last")
    args = parser.parse_args()
    if args.quick:
        args.images = 8
    run_path = args.run or str(max(Path("runs/quickstart").glob("*/checkpoints/best.keras")).parents[1])

    from nnrun.engine import runtime
    from nnrun.engine.build import build_data
    from nnrun.inference.open_run import open_run
    from nnrun.explain.base import gradient_fn, outputs_of, scores_of
    from nnrun.explain.integrated_gradients import IGParams, completeness_error, integrated_gradients, quadrature

    opened = open_run(run_path)
    cfg = opened.cfg
    tf = runtime.import_tensorflow()
    runtime.setup(cfg)
    model = opened.load_model()
    x = build_data(cfg).split("val").head(args.images)[0].astype(np.float32)
    targets = outputs_of(model, x, 64).argmax(axis=1).astype(np.int32)
    baseline = np.zeros_like(x)
    f_x = scores_of(model, x, targets, "probability", 64)
    f_b = scores_of(model, baseline, targets, "probability", 64)

    seed_loop(tf, model, tf.constant(x[0]), int(targets[0]), 2)  # warm-up (first-call costs)
    start = time.perf_counter()
    looped = np.stack([seed_loop(tf, model, tf.constant(x[i]), int(targets[i]), args.steps) for i in range(len(x))])
    loop_s = time.perf_counter() - start

    defaults = IGParams(steps=args.steps)  # the rule `nnrun explain` uses
    nodes, weights = quadrature(args.steps, defaults.quadrature, defaults.panels)
    grad = gradient_fn(model, "probability")
    start = time.perf_counter()
    integrated_gradients(grad, x[:1], baseline[:1], targets[:1], nodes, weights, args.batch_size)  # trace
    trace_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = integrated_gradients(grad, x, baseline, targets, nodes, weights, args.batch_size)
    batched_s = time.perf_counter() - start

    loop_err = completeness_error(looped, f_x, f_b)
    batched_err = completeness_error(batched, f_x, f_b)
    print(f"run: {opened.run.path}")
    print(f"{len(x)} images x {args.steps} steps, {x.shape[1]}x{x.shape[2]} px, batch size {args.batch_size}")
    print(f"seed loop (1 gradient call per step, linspace mean): {loop_s:8.2f} s   "
          f"completeness error max {np.nanmax(loop_err):.4f} mean {np.nanmean(loop_err):.4f}")
    print(f"batched (chunks, {defaults.panels}-panel Gauss-Legendre):           {batched_s:8.2f} s   "
          f"completeness error max {np.nanmax(batched_err):.4f} mean {np.nanmean(batched_err):.4f}"
          f"   (+{trace_s:.2f} s one-off tracing)")
    print(f"speedup: {loop_s / batched_s:.1f}x ({loop_s / (batched_s + trace_s):.1f}x counting tracing)")
    if args.json:
        print(json.dumps({
            "speedup": round(loop_s / batched_s, 1), "speedup_with_tracing": round(loop_s / (batched_s + trace_s), 1),
            "images": len(x), "steps": args.steps, "loop_s": round(loop_s, 3), "batched_s": round(batched_s, 3),
            "loop_completeness_max": float(np.nanmax(loop_err)),
            "batched_completeness_max": float(np.nanmax(batched_err)),
        }))


if __name__ == "__main__":
    main()
