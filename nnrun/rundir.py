"""The run directory: unique creation, atomic writes of run.json / config.yaml, status updates,
and reading them back (every layer that uses a finished run reads it through RunDir)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nnrun import __version__, registry
from nnrun.config import RunConfig, config_hash, resolve, to_yaml
from nnrun.config.safe_yaml import read_yaml_file
from nnrun.errors import UsageError

RUN_JSON = "run.json"
CONFIG_YAML = "config.yaml"
METRICS = "metrics.jsonl"
# run.json "status": running until it ends; completed, failed (reason says why), interrupted
# (Ctrl-C / SIGTERM; resumable), pruned (a search trial its pruner stopped, `pruned_at_epoch`).
STATUSES = ("running", "completed", "failed", "interrupted", "pruned")


def file_mode() -> int:
    """The permissions a plain open() would give a new file here (0o644 under umask 022).

    Read from /proc where it exists: os.umask() can only be read by setting it, which races
    with other threads creating files."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w"):
    """Open a temp file beside `path` for writing ("w" text, "wb" bytes); on success it is
    synced and renamed over `path`, so readers never see half a file. It gets the umask's
    permissions like its neighbours (mkstemp alone would leave 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            with contextlib.suppress(OSError):  # a file system without permissions keeps its own
                os.fchmod(fh.fileno(), file_mode())
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write text or bytes to `path` atomically (see `atomic_file`)."""
    with atomic_file(path, "wb" if isinstance(data, bytes) else "w") as fh:
        fh.write(data)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _now_precise() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _timestamp(iso: str | None) -> float | None:
    return dt.datetime.fromisoformat(iso).timestamp() if iso else None


class RunDir:
    """A run directory and its run.json record."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.tensorboard = self.path / "tensorboard"
        self.plots = self.path / "plots"
        self.metrics = self.path / METRICS

    # -- creation -----------------------------------------------------------------------
    @classmethod
    def create(cls, cfg: RunConfig) -> "RunDir":
        """Make a new, never-reused directory runs_root/<name>/<timestamp>-<hash>[-N]."""
        parent = Path(cfg.runtime.runs_root) / cfg.name
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create run root {parent}: {exc.strerror}") from None
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{config_hash(cfg)[:6]}"
        for attempt in range(1, 1000):
            path = parent / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                path.mkdir()  # atomic: exactly one concurrent creator wins each name
            except FileExistsError:
                continue
            except OSError as exc:
                raise UsageError(f"cannot create run directory under {parent}: {exc.strerror}") from None
            return cls(path)
        raise UsageError(f"could not find a free run directory name under {parent}")

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        run = cls(Path(path))
        if not (run.path / CONFIG_YAML).is_file():
            raise UsageError(f"not a run directory (no {CONFIG_YAML}): {path}")
        return run

    # -- records ------------------------------------------------------------------------
    def read_config(self) -> RunConfig:
        """The run's resolved config.yaml. The plugins the run was trained with are not imported
        from run.json (a run directory is data): they must have been given with --plugin, else
        this is a UsageError that names them and the flag."""
        missing = registry.missing_plugins(self.read().get("plugins", []))
        if missing:
            flags = " ".join(f"--plugin {shlex.quote(p)}" for p in missing)
            raise UsageError(f"this run was trained with the plugin{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(missing)}; nnrun never imports code a run directory names: pass {flags} "
                             "if you trust it")
        return resolve(read_yaml_file(self.path / CONFIG_YAML))

    def read(self) -> dict:
        try:
            return json.loads((self.path / RUN_JSON).read_text())
        except (OSError, ValueError):
            return {}

    def write(self, record: dict) -> None:
        atomic_write(self.path / RUN_JSON, json.dumps(record, indent=2, default=str) + "\n")

    def update(self, **fields: Any) -> dict:
        record = self.read()
        record.update(fields)
        self.write(record)
        return record

    def start(self, cfg: RunConfig, argv: list[str]) -> None:
        atomic_write(self.path / CONFIG_YAML, to_yaml(cfg))
        self.write(
            {
                "status": "running",
                "reason": None,
                "name": cfg.name,
                "run_id": self.path.name,
                "argv": argv,
                "seed": cfg.seed,
                "plugins": list(registry.LOADED_PLUGINS),
                "config_hash": config_hash(cfg),
                "versions": {"python": platform.python_version(), "nnrun": __version__},
                "host": platform.node(),
                "pid": os.getpid(),
                "started_at": now_iso(),
                "attempt_started_at": _now_precise(),
                "ended_at": None,
                "wall_time_s": None,
                "epochs_completed": 0,
                "final_metrics": {},
            }
        )

    def resume_attempt(self, argv: list[str], last_progress: float | None) -> None:
        """Mark a resumed run running again. wall_time_s counts the time spent in attempts, not
        the downtime between them: a finished attempt counts until its end, a killed one until
        `last_progress` (POSIX time of its last backup; its later work is redone)."""
        record = self.read()
        if record.get("status") != "running" and record.get("wall_time_s") is not None:
            prior = record["wall_time_s"]
        else:
            start = _timestamp(record.get("attempt_started_at") or record.get("started_at"))
            done = max(0.0, (last_progress or start) - start) if start is not None else 0.0
            prior = record.get("prior_time_s", 0.0) + done
        self.update(status="running", reason=None, pid=os.getpid(), host=platform.node(),
                    resumes=record.get("resumes", []) + [{"argv": argv, "started_at": now_iso()}],
                    prior_time_s=round(prior, 2), attempt_started_at=_now_precise())

    def finish(self, status: str, reason: str | None = None, **fields: Any) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        record = self.read()
        start = _timestamp(record.get("attempt_started_at") or record.get("started_at"))
        wall = None
        if start is not None:
            wall = round(record.get("prior_time_s", 0.0) + time.time() - start, 2)
        self.update(status=status, reason=reason, ended_at=now_iso(), wall_time_s=wall, **fields)

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=float) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics.exists():
            return []
        rows = []
        for line in self.metrics.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a torn last line after a kill
        return rows


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]
