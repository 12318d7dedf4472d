"""The run directory: unique creation, atomic writes of run.json / config.yaml, status updates,
and reading them back (every layer that uses a finished run reads it through RunDir)."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
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
from nnrun.safe_text import mask_credentials

RUN_JSON = "run.json"
LOCK = ".nnrun.lock"  # flock'ed by the process that trains the run (RunDir.lock)
CONFIG_YAML = "config.yaml"
METRICS = "metrics.jsonl"
# run.json "status": running until it ends; completed, failed (reason says why), interrupted
# (Ctrl-C / SIGTERM; resumable), pruned (a search trial its pruner stopped, `pruned_at_epoch`).
STATUSES = ("running", "completed", "failed", "interrupted", "pruned")
MAX_RECORD_BYTES = 64 * 1024 * 1024  # run.json, metrics.jsonl, a plot: far above any real one


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


def write_new_file(directory: Path, stem: str, suffix: str, data: str) -> Path:
    """Write `data` to directory/<stem><suffix>, or <stem>-2<suffix>, -3, ... where taken, and
    return the path. The name is claimed atomically: a finished temp file is hard-linked to it,
    which never replaces a file, so two writers in the same second get two whole files."""
    directory = Path(directory)
    staged = directory / f".{stem}.{os.getpid()}.{time.monotonic_ns()}{suffix}"
    atomic_write(staged, data)
    try:
        for n in range(1, 10_000):
            path = directory / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
            try:
                os.link(staged, path)
                return path
            except FileExistsError:
                continue
        raise UsageError(f"no free file name for {stem}{suffix} in {directory}")
    finally:
        staged.unlink(missing_ok=True)


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
        self._lock_fd: int | None = None
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

    def lock(self) -> None:
        """Hold an exclusive lock (fcntl.flock on .nnrun.lock) for as long as this process trains
        the run: a second `train --resume` of it is a UsageError, not two processes writing one
        run. The kernel releases it when the process ends, however it ends."""
        import fcntl

        if self._lock_fd is not None:
            return
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"run is in use: another nnrun process is training or resuming it: {self.path}") from None
        self._lock_fd = fd

    def check_unlocked(self) -> None:
        """UsageError now if another process holds the lock (an early answer for --resume, before
        the model is built; train() takes the lock itself before it changes anything)."""
        held = self._lock_fd is not None
        self.lock()
        if not held:
            self.unlock()

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

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
        """run.json, or {} when it is missing or unreadable (see `read_json`)."""
        record = read_json(self.path / RUN_JSON, self.path)
        return record if isinstance(record, dict) else {}

    def read_file(self, relative: str | Path, limit: int = MAX_RECORD_BYTES) -> bytes:
        """The bytes of a file inside the run directory (for the report): UsageError if it, or a
        folder on the way to it, is a symbolic link (a run directory from elsewhere must not make
        nnrun read, and embed, files outside it), or if it is larger than `limit`."""
        return read_inside(self.path, self.path / relative, limit)

    def own_dir(self, relative: str | Path) -> Path:
        """A folder inside the run directory that a command writes into (predictions/, exported/,
        explain/<method>/; it may not exist yet); UsageError if it or a folder on the way is a
        symbolic link (writes would land outside the run)."""
        path = self.path / relative
        _no_links(self.path, path, include_last=True)
        return path

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
        reason = None if reason is None else mask_credentials(reason)  # an error may quote a storage URL
        self.update(status=status, reason=reason, ended_at=now_iso(), wall_time_s=wall, **fields)

    def append_metrics(self, row: dict) -> None:
        """One row at the end of metrics.jsonl; never through a symbolic link (UsageError)."""
        try:
            fd = os.open(self.metrics, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, file_mode())
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UsageError(f"{self.metrics} is a symbolic link; nnrun does not write through links in a "
                                 "run directory") from None
            raise
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=float) + "\n")

    def read_metrics(self) -> list[dict]:
        """metrics.jsonl's rows ([] when missing, unreadable or a symbolic link)."""
        try:
            text = read_inside(self.path, self.metrics, MAX_RECORD_BYTES).decode("utf-8", errors="replace")
        except (OSError, UsageError):
            return []
        rows = []
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                continue  # a torn last line after a kill
            if isinstance(row, dict):
                rows.append(row)
        return rows


# -- reading files of a run directory that may come from elsewhere ---------------------------

def _no_links(root: Path, path: Path, include_last: bool = False) -> None:
    """UsageError if a folder between `root` and `path` (and `path` itself with include_last)
    is a symbolic link. `root` itself may be one: that is where the user pointed."""
    parts = Path(path).relative_to(root).parts
    here = Path(root)
    for part in parts if include_last else parts[:-1]:
        here = here / part
        if here.is_symlink():
            raise UsageError(f"{here} is a symbolic link; nnrun does not follow links inside a run directory")


def read_inside(root: Path, path: Path, limit: int) -> bytes:
    """The bytes of `path`, a file below `root`, read without following a symbolic link at any
    step below root (UsageError), and at most `limit` bytes (UsageError if larger)."""
    _no_links(root, path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{path} is a symbolic link; nnrun does not follow links inside a run directory") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{path} is larger than {limit // (1024 * 1024)} MiB")
    return data


def read_json(path: Path, root: Path | None = None) -> Any:
    """A JSON file of a run directory (run.json, a manifest), or None when it is missing, a
    symbolic link, larger than MAX_RECORD_BYTES, nested too deep for the parser, or not JSON."""
    try:
        return json.loads(read_inside(Path(root or Path(path).parent), Path(path), MAX_RECORD_BYTES))
    except (OSError, UsageError, ValueError, RecursionError):
        return None


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]
