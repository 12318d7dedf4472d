"""`nnrun evaluate`: reload a run's checkpoint and config, score a split, log the result, and
write where the model fails on it (RUN_DIR/diagnostics/<split>.*: confusion matrix, per-class
precision / recall / F1, calibration)."""

from __future__ import annotations

from pathlib import Path

from nnrun.inference.open_run import open_run
from nnrun.rundir import RunDir


def evaluate(run_dir: str | Path, split: str = "val", checkpoint: str = "best") -> dict:
    """Keras metrics of the checkpoint on `split` through the validation pipeline (raw inputs, the
    techniques' eval transforms); pair runs also get `<split>_pair_accuracy` at the run's threshold."""
    opened = open_run(run_dir, checkpoint)
    run, cfg = opened.run, opened.cfg
    from nnrun.engine import build, pipeline

    opened.setup_runtime()
    data = build.build_data(cfg)
    part = data.split(split)
    model = opened.load_model()
    model.compile(loss=build.build_loss(cfg), metrics=build.build_metrics(cfg, data))
    labels = build.label_mode(cfg, data)
    techniques = opened.eval_techniques(len(data.split("train")))
    batch_size = cfg.data.eval_batch_size or cfg.data.batch_size
    ds = pipeline.eval_dataset(part, batch_size=batch_size, num_classes=data.num_classes, label_mode=labels,
                               techniques=techniques)
    scores = model.evaluate(ds, verbose=0, return_dict=True)
    scores = {k: float(v) for k, v in scores.items()}
    if data.task == "pairs":
        scores.update(_pair_scores(run, model, data, split, batch_size))
    else:  # macro F1, calibration error; the confusion matrix and figures in diagnostics/<split>.*
        from nnrun.engine.metrics import diagnose_split, probabilities

        probs = probabilities(model.predict(ds, verbose=0))
        names = data.class_names or [str(c) for c in range(data.num_classes)]
        scores.update(diagnose_split(probs, part, names, split, run))
    weights = {"weights": "ema"} if "ema" in cfg.train.techniques else {}  # what the checkpoint holds
    run.append_metrics({"split": split, "checkpoint": checkpoint, "examples": len(part), **weights, **scores})
    return scores


def _pair_scores(run: RunDir, model, data, split: str, batch_size: int) -> dict:
    """The siamese run's headline metric on `split`: pair accuracy at the threshold training chose
    on the training pairs (recorded in run.json; chosen again on train if it is missing)."""
    from nnrun.engine.metrics import best_threshold, pair_accuracy, pair_distances

    threshold = (run.read().get("final_metrics") or {}).get("pair_threshold")
    if threshold is None:
        train = data.split("train")
        threshold, _ = best_threshold(pair_distances(model, train, batch_size), train.y)
    part = data.split(split)
    return {f"{split}_pair_accuracy": pair_accuracy(pair_distances(model, part, batch_size), part.y, threshold),
            "pair_threshold": float(threshold)}
