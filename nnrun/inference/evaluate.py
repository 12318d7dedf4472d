"""`nnrun evaluate`: reload a run's checkpoint and config, score a split, log the result."""

from __future__ import annotations

from pathlib import Path

from nnrun.config import resolve
from nnrun.config.loader import read_yaml_file
from nnrun.engine.rundir import CONFIG_YAML, RunDir
from nnrun.errors import UsageError, first_line


def load_run_config(run: RunDir):
    """The run's resolved config, after loading the plugins it was trained with."""
    from nnrun import registry

    for plugin in run.read().get("plugins", []):
        registry.load_plugin(plugin)
    return resolve(read_yaml_file(run.path / CONFIG_YAML))


def load_checkpoint(run: RunDir, which: str = "best"):
    """Load checkpoints/<which>.keras with safe_mode (no arbitrary code from model files)."""
    path = run.checkpoints / f"{which}.keras"
    if not path.is_file():
        raise UsageError(f"run has no checkpoint {path.relative_to(run.path)}: {run.path}")
    import keras

    from nnrun.layers import load_all

    load_all()  # registers nnrun's custom layers so safe_mode can rebuild them
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as exc:  # e.g. a Lambda layer: safe_mode refuses to deserialise code
        raise UsageError(f"refusing to load {path}: {first_line(exc)}") from None


def evaluate(run_dir: str | Path, split: str = "val", checkpoint: str = "best") -> dict:
    run = RunDir.open(run_dir)
    cfg = load_run_config(run)
    from nnrun.engine import build, pipeline, runtime

    runtime.setup(cfg)
    data = build.build_data(cfg)
    part = data.split(split)
    model = load_checkpoint(run, checkpoint)
    model.compile(loss=build.build_loss(cfg), metrics=build.build_metrics(cfg, data))
    labels = build.label_mode(cfg, data)
    # the techniques' eval transforms (e.g. progressive resizing's eval_size), as in training
    techniques = build.build_techniques(cfg, build.technique_context(cfg, data))
    ds = pipeline.eval_dataset(part, batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
                               num_classes=data.num_classes, label_mode=labels, techniques=techniques)
    scores = model.evaluate(ds, verbose=0, return_dict=True)
    scores = {k: float(v) for k, v in scores.items()}
    run.append_metrics({"split": split, "checkpoint": checkpoint, "examples": len(part), **scores})
    return scores
