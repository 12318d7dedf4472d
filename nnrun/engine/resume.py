"""Checks before `nnrun train --resume RUN_DIR`: which config to continue with, and whether
the run can be continued at all. TensorFlow-free."""

from __future__ import annotations

import platform
from pathlib import Path

from nnrun.config import RunConfig, flatten, load_config, to_yaml
from nnrun.engine import train_state
from nnrun.rundir import CONFIG_YAML, RunDir, atomic_write
from nnrun.errors import ConfigError, UsageError
from nnrun.process import alive


def config_changes(old: RunConfig, new: RunConfig) -> list[str]:
    a, b = flatten(old.model_dump(mode="json")), flatten(new.model_dump(mode="json"))
    return sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))


def _with_schedule_epochs(cfg: RunConfig, epochs: int) -> RunConfig:
    schedule = cfg.optimizer.schedule.model_copy(update={"epochs": epochs})
    return cfg.model_copy(update={"optimizer": cfg.optimizer.model_copy(update={"schedule": schedule})})


def keep_schedule_horizon(original: RunConfig, cfg: RunConfig, say=None) -> RunConfig:
    """A resume that changes train.epochs keeps the learning-rate schedule's horizon (pinned
    as optimizer.schedule.epochs, so config.yaml still reruns what ran): the steps already
    trained followed it, and re-stretching it over the new epoch count would make the learning
    rate jump at the resume (from the end of a cosine back to mid-way). An explicit
    optimizer.schedule.epochs wins; `constant` has no horizon. Epochs past a horizon whose
    schedule ends at 0 would change nothing, so that is refused with both ways out."""
    schedule = cfg.optimizer.schedule
    horizon = original.optimizer.schedule.epochs or original.train.epochs
    if schedule.epochs is not None or schedule.name == "constant" or horizon == cfg.train.epochs:
        return cfg
    stretch = f"--set optimizer.schedule.epochs={cfg.train.epochs} --allow-change optimizer.schedule.epochs"
    final = schedule.params.get("min_lr_ratio")
    after = ""
    if final is not None and cfg.train.epochs > horizon:
        extra = f"epochs {horizon + 1}-{cfg.train.epochs}"
        if final == 0:
            raise ConfigError(
                f"{extra} would train at learning rate 0: on a resume {schedule.name} keeps its horizon of "
                f"{horizon} epochs, and it ends at min_lr_ratio 0. Stretch it over {cfg.train.epochs} epochs "
                f"({stretch}) or give it a floor (--set optimizer.schedule.params.min_lr_ratio=0.1 "
                "--allow-change optimizer.schedule.params.min_lr_ratio)", "train.epochs")
        after = f"; {extra} train at its final learning rate {final * cfg.optimizer.learning_rate:g} (min_lr_ratio {final:g})"
    if say is not None:
        say(f"learning-rate schedule {schedule.name} keeps its horizon of {horizon} epochs "
            f"(optimizer.schedule.epochs: {horizon}){after}; to stretch it over {cfg.train.epochs} epochs instead: {stretch}")
    return _with_schedule_epochs(cfg, horizon)


def prepare_resume(run_dir: str | Path, config: Path | None, overrides: list[str],
                   allow_change: list[str], say=None) -> tuple[RunDir, RunConfig, list[str]]:
    """The run, the config to continue with, and the changed keys (written by `record_changes`
    only once the new config has been prepared successfully). `say` gets notes for the user."""
    run = RunDir.open(run_dir)
    run.check_unlocked()  # training takes the lock before it changes anything; refuse early if held
    record = run.read()
    original = run.read_config()
    cfg = original
    changes: list[str] = []
    if config is not None or overrides:
        cfg = load_config(config or run.path / CONFIG_YAML, overrides)
        if cfg.optimizer.schedule.epochs is None and original.optimizer.schedule.epochs is not None:
            cfg = _with_schedule_epochs(cfg, original.optimizer.schedule.epochs)  # pinned by an earlier resume
        changes = config_changes(original, cfg)
        refused = [k for k in changes if not any(k == a or k.startswith(a + ".") for a in allow_change)]
        if refused:
            raise ConfigError(
                f"the config differs from the run's in {', '.join(refused)}; "
                f"pass --allow-change KEY for each change you mean", "--resume"
            )
    status = record.get("status")
    if status == "completed" and "train.epochs" not in changes:
        raise UsageError(
            f"run is completed; to train longer: --resume {run.path} --set train.epochs=N --allow-change train.epochs"
        )
    if status == "running" and record.get("host") == platform.node() and alive(record.get("pid")):
        raise UsageError(f"run is still running (pid {record.get('pid')}): {run.path}")
    if not train_state.exists(run.checkpoints / "backup"):
        raise UsageError(f"run has no backup to resume from (checkpoints/backup/state.npz): {run.path}")
    done = train_state.read_position(run.checkpoints / "backup")
    if done["epoch"] > cfg.train.epochs:  # == epochs: stopped after training; resume finishes the run
        raise UsageError(
            f"the run's backup is at epoch {done['epoch']}, beyond train.epochs {cfg.train.epochs}: {run.path}"
        )
    if "train.epochs" in changes:
        cfg = keep_schedule_horizon(original, cfg, say)
    return run, cfg, changes


def record_changes(run: RunDir, cfg: RunConfig, changes: list[str]) -> None:
    if changes:
        atomic_write(run.path / CONFIG_YAML, to_yaml(cfg))
        run.update(config_changes=run.read().get("config_changes", []) + [changes])
    if cfg.optimizer.schedule.epochs is not None:  # see keep_schedule_horizon
        run.update(lr_schedule_epochs=cfg.optimizer.schedule.epochs)
