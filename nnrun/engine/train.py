"""`nnrun train`: build everything from the resolved config, run Keras fit, record the run."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from nnrun.config import RunConfig
from nnrun.engine.rundir import RunDir
from nnrun.errors import NNRunError, RunFailed

FINAL_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so training unwinds like Ctrl-C (exit 143)."""


@dataclass
class Output:
    """Where training talks: a rich console (stderr), and how much to say."""

    console: object
    progress: bool  # live progress bars
    epoch_lines: bool  # one plain line per epoch


def _on_sigterm(signum, frame):
    raise Terminated()


def train(cfg: RunConfig, argv: list[str], out: Output) -> RunDir:
    """Create the run directory, train, and leave it completed, failed or interrupted."""
    run = RunDir.create(cfg)
    run.start(cfg, argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        final = _fit(cfg, run, out)
    except Terminated:
        run.finish("interrupted", reason="terminated (SIGTERM)")
        raise
    except KeyboardInterrupt:
        run.finish("interrupted", reason="interrupted (SIGINT)")
        raise
    except NNRunError as exc:
        run.finish("failed", reason=str(exc))
        raise RunFailed(f"{exc} (run directory: {run.path})") from exc
    except Exception as exc:  # noqa: BLE001 - any failure is recorded, then reported in one line
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        run.finish("failed", reason=reason)
        raise RunFailed(f"{reason} (run directory: {run.path})") from exc
    finally:
        signal.signal(signal.SIGTERM, previous)
    run.finish("completed", final_metrics=final)
    return run


def _fit(cfg: RunConfig, run: RunDir, out: Output) -> dict:
    from nnrun.engine import runtime

    strategy = runtime.setup(cfg)
    import keras

    from nnrun.engine import build, callbacks, pipeline, plots

    env = runtime.versions_and_device()
    run.update(versions={**run.read().get("versions", {}), **env["versions"]}, device=env["device"],
               precision=cfg.train.precision, techniques=sorted(cfg.train.techniques))
    data = build.build_data(cfg)
    train_split, val_split = data.split("train"), data.split("val")
    labels = build.label_mode(cfg, data)
    steps = pipeline.steps_per_epoch(len(train_split), cfg.data.batch_size)
    train_ds = pipeline.train_dataset(
        train_split, batch_size=cfg.data.batch_size, seed=cfg.seed, num_classes=data.num_classes,
        label_mode=labels, first_epoch=0, last_epoch=cfg.train.epochs,
    )
    val_ds = pipeline.eval_dataset(
        val_split, batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
        num_classes=data.num_classes, label_mode=labels,
    )
    with strategy.scope():
        model = build.build_model(cfg, data)
        build.compile_model(model, cfg, data)
    run.update(model={"name": cfg.model.name, "parameters": int(model.count_params())})

    run.checkpoints.mkdir(exist_ok=True)
    metrics_log = callbacks.MetricsLog(run, steps)
    cbs = [
        metrics_log,
        keras.callbacks.ModelCheckpoint(run.checkpoints / "best.keras", monitor=cfg.train.monitor,
                                        save_best_only=True, mode="auto"),
        keras.callbacks.ModelCheckpoint(run.checkpoints / "last.keras"),
        keras.callbacks.TensorBoard(log_dir=str(run.tensorboard), write_graph=False),
        keras.callbacks.TerminateOnNaN(),
    ]
    if cfg.train.early_stopping:
        es = cfg.train.early_stopping
        cbs.append(keras.callbacks.EarlyStopping(monitor=es.monitor, patience=es.patience, min_delta=es.min_delta))
    if out.progress:
        cbs.append(callbacks.RichProgress(cfg.train.epochs, steps, out.console))
    elif out.epoch_lines:
        cbs.append(callbacks.EpochLines(cfg.train.epochs))

    model.fit(train_ds, epochs=cfg.train.epochs, steps_per_epoch=steps, validation_data=val_ds,
              callbacks=cbs, verbose=0, shuffle=False)

    history = metrics_log.history
    plots.learning_curves(run.read_metrics(), run.plots / "learning_curves.png", title=cfg.name)
    if not history:
        raise RunFailed("no epoch completed")
    last = history[-1]
    if any(k in last and last[k] != last[k] for k in ("loss", "val_loss")):
        raise RunFailed(f"non-finite loss at epoch {last['epoch']}")
    final = {k: last[k] for k in FINAL_KEYS if k in last}
    monitor = cfg.train.monitor
    if any(monitor in r for r in history):
        pick = max if "acc" in monitor else min
        best = pick(history, key=lambda r: r.get(monitor, float("nan")))
        final[f"best_{monitor}"] = best[monitor]
        final["best_epoch"] = best["epoch"]
    return final
