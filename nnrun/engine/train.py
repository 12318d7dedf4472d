"""`nnrun train`: run Keras fit on what prepare.py built, and record the run.

Order matters: data, techniques and the model are built and checked against each other
*before* a run directory exists (prepare.py), so a config that cannot train exits 2 and
leaves nothing. Training then runs in segments of `fit` (a partial epoch first when resuming
mid-epoch), backing up the full state so a killed, interrupted or NaN-stopped run can
continue exactly.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass

from nnrun.config import RunConfig
from nnrun.engine import hparams
from nnrun.engine.prepare import Prepared, batch_spec, prepare, warmup_loss_scores
from nnrun.engine.signals import SignalGuard
from nnrun.errors import NNRunError, Pruned, RunFailed, Terminated, first_line
from nnrun.rundir import RunDir, atomic_write

FINAL_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def final_of(history: list[dict], monitor: str, higher_is_better: bool) -> dict:
    """final_metrics from epoch rows ({"epoch": N, metric: value, ...}): the last epoch's
    FINAL_KEYS, and best_<monitor> / best_epoch over the epochs with a finite monitor value."""
    import math

    last = history[-1]
    final = {k: last[k] for k in FINAL_KEYS if k in last}
    seen = [r for r in history if isinstance(r.get(monitor), (int, float)) and not math.isnan(r[monitor])]
    if seen:
        best = (max if higher_is_better else min)(seen, key=lambda r: r[monitor])
        final[f"best_{monitor}"] = best[monitor]
        final["best_epoch"] = best["epoch"]
    return final


@dataclass
class Output:
    """Where training talks: a rich console (stderr), and how much to say."""

    console: object
    progress: bool  # live progress bars
    epoch_lines: bool  # one plain line per epoch


def train(cfg: RunConfig, argv: list[str], out: Output, resume: RunDir | None = None,
          changes: list[str] | None = None, extra_callbacks=(), on_finished=None) -> RunDir:
    """Train a new run (or continue `resume`) and leave it completed, failed or interrupted
    (or pruned: an `extra_callbacks` Keras callback may raise errors.Pruned at the end of fit).
    `on_finished(run_dir)` runs when the run completed or was pruned, before its MLflow run is
    closed: the callers pass results.report's, so report.html exists to be uploaded."""
    from nnrun.engine import tracking
    from nnrun.engine.distribute import is_multi_worker

    tracking.check_installed(cfg)

    lr_scale = 1.0
    if resume is not None:  # learning-rate cuts of earlier NaN rollbacks stay in force
        lr_scale = cfg.train.rollback_lr_factor ** len(resume.read().get("rollbacks", []))
    prepared = prepare(cfg, run_dir=resume.path if resume else None, lr_scale=lr_scale)
    _check_workers_agree(prepared, resume)
    prepared.extra_callbacks = tuple(extra_callbacks)
    if resume is None:
        from nnrun.engine.distribute import worker_runs_root

        # Only the chief writes the run; other multi-worker tasks get their own directory.
        root = worker_runs_root(cfg)
        run = RunDir.create(cfg if root == cfg.runtime.runs_root else cfg.model_copy(
            update={"runtime": cfg.runtime.model_copy(update={"runs_root": root})}))
        run.lock()
        run.start(cfg, argv)
        hparams.write_run(run.tensorboard, cfg, run.path.name)  # TensorBoard's HParams dashboard
        if prepared.init is not None:
            run.update(init=prepared.init)
    else:
        from nnrun.engine.resume import record_changes

        run = resume
        run.lock()  # before anything changes: a second --resume of this run stops here, exit 2
        record_changes(run, cfg, changes or [])
        if "train.epochs" in (changes or []):
            run.update(stopped_early_at=None)  # asked to train longer
        state = run.checkpoints / "backup" / "state.npz"
        run.resume_attempt(argv, last_progress=state.stat().st_mtime if state.is_file() else None)
    prepared.ctx.run_dir = run.path
    tracker = None
    try:
        tracker = prepared.tracker = tracking.start_for_run(cfg, run)
        with SignalGuard() as guard:
            try:
                final = _fit(prepared, run, out, guard)
            except KeyboardInterrupt as exc:
                from nnrun.engine import train_state
                from nnrun.engine.callbacks import Interrupted

                backup = run.checkpoints / "backup"
                if isinstance(exc, Interrupted):
                    name, pos = signal.Signals(exc.signum).name, exc.position
                    where = (AFTER_TRAINING if _training_done(run, cfg, pos)
                             else f"at epoch {pos['epoch'] + 1} step {pos['step']}")
                    run.finish("interrupted", reason=f"{name} {where}", interrupted_at=pos)
                    stop = Terminated() if exc.signum == signal.SIGTERM else KeyboardInterrupt()
                    stop.run_dir, stop.resumable = run.path, train_state.exists(backup)  # the CLI tells how to resume
                    raise stop from None
                name = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
                done = train_state.exists(backup) and _training_done(run, cfg, train_state.read_position(backup))
                run.finish("interrupted", reason=f"{name} {AFTER_TRAINING}" if done else name)
                exc.run_dir, exc.resumable = run.path, train_state.exists(backup)
                raise
            except Pruned as exc:  # a search trial stopped by its pruner: not a failure
                run.finish("pruned", reason=str(exc), pruned_at_epoch=exc.epoch, final_metrics=exc.final_metrics)
                exc.run_dir = run.path
                try:  # what a finished run has: learning curves (on_finished writes report.html)
                    from nnrun.engine import plots

                    plots.learning_curves(run.read_metrics(), run.plots / "learning_curves.png", title=cfg.name)
                except Exception:  # noqa: BLE001 - a figure that cannot be drawn must not fail the run
                    pass
                raise
            except NNRunError as exc:
                run.finish("failed", reason=str(exc))
                raise RunFailed(f"{exc} (run directory: {run.path})") from exc
            except Exception as exc:  # noqa: BLE001 - any failure is recorded, then reported in one line
                reason = failure_reason(exc)
                if type(exc).__name__ == "UnavailableError" and is_multi_worker(prepared.strategy):
                    reason = ("another worker stopped or became unreachable; resume every worker with "
                              f"`nnrun train --resume RUN_DIR` ({reason[-160:]})")
                run.finish("failed", reason=reason)
                raise RunFailed(f"{reason} (run directory: {run.path})") from exc
        run.finish("completed", final_metrics=final)
        return run
    finally:
        _ended(run, cfg, tracker, on_finished)
        run.unlock()  # a warm search worker trains many runs in one process


def _ended(run: RunDir, cfg: RunConfig, tracker, on_finished) -> None:
    """However the run ended: its report (completed or pruned), then its MLflow run."""
    from nnrun.engine import tracking

    if on_finished is not None and run.read().get("status") in ("completed", "pruned"):
        on_finished(run.path)
    tracking.finish_for_run(tracker, cfg, run)


AFTER_TRAINING = "after the last epoch (--resume writes the final metrics)"


def failure_reason(exc: BaseException) -> str:
    """One line for run.json and stderr. A failed tf.debugging.Assert inside the input pipeline
    (e.g. image_folder's "cannot decode FILE: reason") reaches fit as "Graph execution error:";
    its own message is what the user needs."""
    import re

    found = re.search(r"assertion failed: \[(.+?)\]", str(exc))
    return found.group(1) if found else f"{type(exc).__name__}: {first_line(exc)}"


def _training_done(run: RunDir, cfg: RunConfig, position: dict) -> bool:
    """Whether a backup at `position` ends the training: the last epoch, or where early stopping stopped."""
    return position["epoch"] >= cfg.train.epochs or run.read().get("stopped_early_at") == position["epoch"]


def _check_workers_agree(prepared: Prepared, resume: RunDir | None) -> None:
    """Under multi_worker: every worker starts from the same backup, checked before any run
    directory is created or changed."""
    from nnrun.engine import train_state
    from nnrun.engine.distribute import check_same_position

    backup = resume.checkpoints / "backup" if resume is not None else None
    check_same_position(prepared.strategy,
                        train_state.read_position(backup) if backup and train_state.exists(backup) else None)


def _truncate_metrics(run: RunDir, epochs_done: int) -> list[dict]:
    """Drop epoch rows logged after the backup we resume from (they will be logged again)."""
    rows = run.read_metrics()
    kept = [r for r in rows if r.get("split") != "train" or r.get("epoch", 0) <= epochs_done]
    if run.metrics.exists():
        atomic_write(run.metrics, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def _fit(p: Prepared, run: RunDir, out: Output, guard: SignalGuard) -> dict:
    from nnrun.components.techniques.mixed_precision import auto_precision, effective_precision
    from nnrun.engine import build, runtime, train_state

    cfg = p.cfg
    env = runtime.versions_and_device()
    run.update(
        versions={**run.read().get("versions", {}), **env["versions"]}, device=env["device"],
        precision=effective_precision(cfg.train), dtype_policy=p.model.dtype_policy.name,
        **({"precision_auto": auto_precision()[1]} if cfg.train.precision == "auto" else {}),
        techniques={t_name: t.record() for t_name, t in p.ctx.techniques.items()},
        model={"name": cfg.model.name, "parameters": int(p.model.count_params())},
        batch={"size": cfg.data.batch_size, "gradient_accumulation_steps": cfg.train.gradient_accumulation_steps or 1,
               "effective": cfg.data.batch_size * (cfg.train.gradient_accumulation_steps or 1)},
        data=p.data.describe(),
    )
    backup_dir = run.checkpoints / "backup"
    rollbacks = list(run.read().get("rollbacks", []))
    lr_scale = cfg.train.rollback_lr_factor ** len(rollbacks)
    while True:
        try:
            return _fit_segments(p, run, out, guard, backup_dir)
        except Exception as exc:
            from nnrun.engine.callbacks import NonFiniteLoss

            if not isinstance(exc, NonFiniteLoss):
                raise
            if cfg.train.on_nan != "rollback" or len(rollbacks) >= cfg.train.max_rollbacks:
                raise RunFailed(str(exc)) from None
            lr_scale *= cfg.train.rollback_lr_factor
            rollbacks.append({"epoch": exc.epoch, "step": exc.step, "lr_scale": lr_scale})
            run.update(rollbacks=rollbacks)
            with p.strategy.scope():
                p.model.optimizer = None
                for technique in p.techniques:  # the optimizer is built for every variable of the
                    technique.before_segment(p.model, cfg.train.epochs)  # last phase (e.g. unfrozen)
                build.compile_model(p.model, cfg, p.data, lr_scale, p.techniques)
                train_state.build_for_restore(p.model, batch_spec(cfg, p.data, p.labels, p.techniques))


def _split_at(segments: list[tuple], boundaries: list[int]) -> list[tuple]:
    """Split (first, last, skip) fit segments at phase-boundary epochs (e.g. finetune's unfreezing)."""
    out = []
    for first, last, skip in segments:
        for b in boundaries:
            if first < b < last:
                out.append((first, b, skip))
                first, skip = b, 0
        out.append((first, last, skip))
    return out


def _fit_segments(p: Prepared, run: RunDir, out: Output, guard: SignalGuard, backup_dir) -> dict:
    import keras

    from nnrun.engine import build, callbacks, pipeline, plots, train_state
    from nnrun.engine.distribute import callbacks as strategy_callbacks, is_multi_worker
    from nnrun.engine.metrics import higher_is_better

    cfg, model = p.cfg, p.model
    epochs, steps = cfg.train.epochs, p.steps
    start = {"epoch": 0, "step": 0}
    if train_state.exists(backup_dir):
        start = train_state.restore(model, backup_dir, groups=("model", "optimizer"))
    trained = _training_done(run, cfg, start)  # stopped after training: only the final metrics are left
    history = _truncate_metrics(run, start["epoch"])
    if start["epoch"] > epochs:
        raise RunFailed(f"nothing to do: the backup is at epoch {start['epoch']} of {epochs}")
    for technique in p.techniques:
        technique.prepare(p.ctx, p.data, lambda epochs: warmup_loss_scores(p, epochs))

    run.checkpoints.mkdir(exist_ok=True)
    train_history = [r for r in history if r.get("split") == "train"]
    monitor = cfg.train.monitor
    mode = "max" if higher_is_better(monitor) else "min"
    seen = [r[monitor] for r in train_history if monitor in r]
    best_so_far = (max(seen) if mode == "max" else min(seen)) if seen else None
    metrics_log = callbacks.MetricsLog(run, steps, history=train_history, techniques=p.techniques)
    backup = callbacks.Backup(backup_dir, steps, cfg.train.backup_every_steps, guard,
                              save_on_signal=not is_multi_worker(p.strategy))

    common = [
        *strategy_callbacks(p.strategy, model),  # first: later callbacks save what it synchronises
        callbacks.EvalWeights(p.techniques),  # validation and checkpoints see e.g. the EMA weights
        metrics_log,
        *([callbacks.TrackEpochs(p.tracker, metrics_log)] if p.tracker is not None else []),
        callbacks.AtomicCheckpoint(run.checkpoints / "best.keras", monitor=monitor, save_best_only=True,
                                   mode=mode, initial_value_threshold=best_so_far),
        callbacks.AtomicCheckpoint(run.checkpoints / "last.keras"),
        callbacks.TrainWeights(p.techniques),  # training (and the backup) continue from the raw weights
        keras.callbacks.TensorBoard(log_dir=str(run.tensorboard), write_graph=False),
    ]
    early = None
    if cfg.train.early_stopping:
        es = cfg.train.early_stopping
        early = callbacks.ResumableEarlyStopping(metrics_log.history, monitor=es.monitor, patience=es.patience,
                                                 min_delta=es.min_delta)
        common.append(early)
    schedule = build.schedule_of(model.optimizer)
    if hasattr(schedule, "epoch_end"):  # plateau: reduce on this epoch's metrics, then back the state up
        schedule.set_direction(higher_is_better(schedule.monitor))
        common.append(callbacks.ScheduleEpochEnd(schedule))
    common.append(backup)  # last: an epoch is backed up only after it is logged and checkpointed
    if out.progress:
        common.append(callbacks.RichProgress(epochs, steps, out.console))
    elif out.epoch_lines:
        common.append(callbacks.EpochLines(epochs))
    common.extend(p.extra_callbacks)  # after the epoch is logged, checkpointed and backed up

    val_ds = pipeline.eval_dataset(
        p.data.split("val"), batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
        num_classes=p.data.num_classes, label_mode=p.labels, techniques=p.techniques,
    )
    segments = []
    if start["step"]:
        segments.append((start["epoch"], start["epoch"] + 1, start["step"]))  # finish the broken epoch
        start_full = start["epoch"] + 1
    else:
        start_full = start["epoch"]
    if start_full < epochs and not trained:
        segments.append((start_full, epochs, 0))
    segments = _split_at(segments, sorted({b for t in p.techniques for b in t.phase_boundaries()}))
    guard.in_fit = True
    try:
        for first, last, skip in segments:
            if any([t.before_segment(model, first) for t in p.techniques]):
                model.train_function = None  # a traced train step keeps the trainable set it saw
            train_ds = pipeline.train_dataset(
                p.data.split("train"), batch_size=cfg.data.batch_size, seed=cfg.seed,
                num_classes=p.data.num_classes, label_mode=p.labels, first_epoch=first, last_epoch=last,
                skip_steps=skip, techniques=p.techniques,
            )
            backup.begin_segment(first, skip)
            extra = [callbacks.RestoreMetrics(backup_dir)] if skip else []
            model.fit(train_ds, initial_epoch=first, epochs=last, steps_per_epoch=steps - skip if skip else steps,
                      validation_data=val_ds, callbacks=extra + common, verbose=0, shuffle=False)
            if early is not None and early.stopped_epoch:
                run.update(stopped_early_at=backup.saved["epoch"])  # a resume must not train past it
                break
    finally:
        guard.in_fit = False
    if guard.requested:  # arrived during the last validation: training is backed up, stop before finishing
        raise callbacks.Interrupted(guard.requested, backup.saved)

    plots.learning_curves(run.read_metrics(), run.plots / "learning_curves.png", title=cfg.name)
    history = metrics_log.history
    if not history:
        raise RunFailed("no epoch completed")
    final = final_of(history, monitor, mode == "max")
    from nnrun.engine.metrics import final_metrics  # per-class recall / balanced acc, or pair accuracy

    for technique in p.techniques:  # the weights the checkpoints hold (e.g. the EMA)
        technique.use_eval_weights(model)
    try:
        final.update(final_metrics(model, p.data, cfg, val_ds, run=run))
    finally:
        for technique in p.techniques:
            technique.use_train_weights(model)
    return final
