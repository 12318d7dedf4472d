"""Everything a run needs before its directory exists: data, techniques and model, built from
the resolved config and checked against each other, so a config that cannot train is a
ConfigError (exit 2) that leaves nothing behind."""

from __future__ import annotations

from dataclasses import dataclass

from nnrun.config import RunConfig
from nnrun.errors import ConfigError, first_line


@dataclass
class Prepared:
    cfg: RunConfig
    data: object
    model: object
    labels: str
    steps: int
    techniques: list
    ctx: object
    strategy: object
    init: dict | None = None  # what model.init_from loaded (run.json "init")
    extra_callbacks: tuple = ()  # appended after nnrun's own (a search trial's pruning reporter)
    tracker: object = None  # engine.tracking.MlflowTracker, with tracking.mlflow


def prepare(cfg: RunConfig, run_dir=None, lr_scale: float = 1.0) -> Prepared:
    """Build data, techniques and model and check they fit together (ConfigError if not)."""
    from nnrun.engine import runtime

    strategy = runtime.setup(cfg)
    if cfg.train.gradient_accumulation_steps and strategy.num_replicas_in_sync > 1:
        raise ConfigError(f"does not work across {strategy.num_replicas_in_sync} replicas (Keras' accumulation step "
                          "fails under tf.distribute); raise data.batch_size instead: it is split over the replicas",
                          "train.gradient_accumulation_steps")
    from nnrun.engine import build, train_state

    data = build.build_data(cfg)
    train_split = data.split("train")
    if len(train_split) == 0 or len(data.split("val")) == 0:
        raise ConfigError("the data set has an empty train or val split", "data")
    if cfg.data.batch_size > len(train_split):
        raise ConfigError(
            f"{cfg.data.batch_size} is larger than the training set ({len(train_split)} examples)", "data.batch_size"
        )
    ctx = build.technique_context(cfg, data, run_dir)
    labels, steps = ctx.label_mode, ctx.steps_per_epoch
    _check_steps_per_execution(cfg.train.steps_per_execution, steps)
    techniques = build.build_techniques(cfg, ctx)
    for technique in techniques:
        technique.check(data)
    if data.train_size and not any(t.crops_stored_images for t in techniques):
        raise ConfigError(f"keeps images at {data.input_shape[0]} px for a cropping technique to make "
                          f"{data.train_size} px training images from; add train.techniques.random_resized_crop "
                          "(or remove storage_size)", "data.params.storage_size")
    _check_monitors(cfg, data)
    with strategy.scope():
        try:
            model = build.build_model(cfg, data, techniques)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{cfg.model.name} cannot be built for data set {cfg.data.dataset!r} "
                              f"(inputs {tuple(data.input_shape)}): {first_line(exc)}", "model") from None
        init = None
        if cfg.model.init_from and run_dir is None:  # a resumed run restores its own backup instead
            from nnrun.engine.init_from import initialise

            init = initialise(model, cfg.model.init_from, cfg.model.init_checkpoint, data.class_names)
        build.compile_model(model, cfg, data, lr_scale, techniques)
        try:
            train_state.build_for_restore(model, batch_spec(cfg, data, labels, techniques))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"model {cfg.model.name!r} does not fit data set {cfg.data.dataset!r}: "
                              f"{first_line(exc)}", "model") from None
    return Prepared(cfg, data, model, labels, steps, techniques, ctx, strategy, init)


def _check_steps_per_execution(per_call: int, steps: int) -> None:
    """Keras' fit runs whole calls of steps_per_execution batches from one iterator over all
    epochs: when that does not divide an epoch's batches, each epoch's last call takes batches
    of the next epoch, so epochs (and resume positions) drift and the input runs out before the
    last epoch ends. Refuse it before anything is created."""
    if steps % per_call:
        divisors = [str(d) for d in range(1, steps + 1) if steps % d == 0]
        raise ConfigError(f"{per_call} does not divide the {steps} batches of an epoch (each call would run into "
                          f"the next epoch's batches); use one of {', '.join(divisors)}", "train.steps_per_execution")


def _check_monitors(cfg: RunConfig, data) -> None:
    """train.monitor, early_stopping.monitor and the plateau schedule's monitor must name a
    metric this run logs."""
    import difflib

    from nnrun.engine import build

    names = ["loss"] + [m.name for m in build.build_metrics(cfg, data)]
    valid = names + [f"val_{n}" for n in names]
    checks = [("train.monitor", cfg.train.monitor)]
    if cfg.train.early_stopping:
        checks.append(("train.early_stopping.monitor", cfg.train.early_stopping.monitor))
    if cfg.optimizer.schedule.name == "plateau":
        checks.append(("optimizer.schedule.params.monitor", cfg.optimizer.schedule.params["monitor"]))
    for path, monitor in checks:
        if monitor not in valid:
            close = difflib.get_close_matches(monitor, valid, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else f"this run logs: {', '.join(valid)}"
            raise ConfigError(f"unknown metric {monitor!r}; {hint}", path)


def warmup_loss_scores(p: Prepared, epochs: int):
    """Per-example training loss of a fresh model trained `epochs` epochs without techniques
    (curriculum difficulty "loss"): scored once per run."""
    import keras
    import numpy as np

    from nnrun.engine import build, pipeline

    split = p.data.split("train")
    with p.strategy.scope():
        model = build.build_model(p.cfg, p.data)
        build.compile_model(model, p.cfg, p.data)
    ds = pipeline.train_dataset(split, batch_size=p.cfg.data.batch_size, seed=p.cfg.seed + 1,
                                num_classes=p.data.num_classes, label_mode=p.labels, first_epoch=0, last_epoch=epochs)
    model.fit(ds, epochs=epochs, steps_per_epoch=p.steps, verbose=0, shuffle=False)
    plain = pipeline.eval_dataset(split, batch_size=p.cfg.data.batch_size, num_classes=p.data.num_classes,
                                  label_mode=p.labels)
    logits = model.predict(plain, verbose=0)
    targets = np.concatenate([y for _, y in plain.as_numpy_iterator()])
    loss = keras.losses.get(p.model.loss) if isinstance(p.model.loss, str) else p.model.loss
    per_example = loss.__class__(**{**loss.get_config(), "reduction": None})
    return np.asarray(per_example(targets, logits))


def batch_spec(cfg: RunConfig, data, labels: str, techniques):
    """The structure, shapes and dtypes of a training batch (techniques applied), from the
    pipeline's element_spec: enough to build the model's optimizer and metrics, without
    running the pipeline for a batch (0.1-0.2 s per run)."""
    from nnrun.engine import pipeline

    return pipeline.train_dataset(
        data.split("train"), batch_size=cfg.data.batch_size, seed=cfg.seed, num_classes=data.num_classes,
        label_mode=labels, first_epoch=0, last_epoch=1, techniques=techniques).element_spec
