"""Checks before `nnrun train --resume RUN_DIR`: which config to continue with, and whether
the run can be continued at all. TensorFlow-free."""

from __future__ import annotations

import platform
from pathlib import Path

from nnrun.config import RunConfig, load_config, to_yaml
from nnrun.engine import snapshot
from nnrun.engine.rundir import CONFIG_YAML, RunDir, atomic_write
from nnrun.results.runs import flatten
from nnrun.errors import ConfigError, UsageError
from nnrun.process import alive


def config_changes(old: RunConfig, new: RunConfig) -> list[str]:
    a, b = flatten(old.model_dump(mode="json")), flatten(new.model_dump(mode="json"))
    return sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))


def prepare_resume(run_dir: str | Path, config: Path | None, overrides: list[str],
                   allow_change: list[str]) -> tuple[RunDir, RunConfig, list[str]]:
    """The run, the config to continue with, and the changed keys (written by `record_changes`
    only once the new config has been prepared successfully)."""
    from nnrun.inference.evaluate import load_run_config

    run = RunDir.open(run_dir)
    record = run.read()
    original = load_run_config(run)
    cfg = original
    changes: list[str] = []
    if config is not None or overrides:
        cfg = load_config(config or run.path / CONFIG_YAML, overrides)
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
    if not snapshot.exists(run.checkpoints / "backup"):
        raise UsageError(f"run has no backup to resume from (checkpoints/backup/state.npz): {run.path}")
    done = snapshot.read_position(run.checkpoints / "backup")
    if done["epoch"] > cfg.train.epochs:  # == epochs: stopped after training; resume finishes the run
        raise UsageError(
            f"the run's backup is at epoch {done['epoch']}, beyond train.epochs {cfg.train.epochs}: {run.path}"
        )
    return run, cfg, changes


def record_changes(run: RunDir, cfg: RunConfig, changes: list[str]) -> None:
    if changes:
        atomic_write(run.path / CONFIG_YAML, to_yaml(cfg))
        run.update(config_changes=run.read().get("config_changes", []) + [changes])
