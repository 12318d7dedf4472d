"""MLflow tracking from nnrun's own callbacks: one nnrun run is one MLflow run.

Why not mlflow.keras.autolog: it is tested only up to Keras 3.13 and knows nothing of nnrun's
resume (epochs replayed after a kill would be logged twice) or NaN rollback.

The tracking server must never cost the training run:
- the MLflow run is created (or, on --resume, reopened) synchronously, with no HTTP retries
  and a short timeout (MLflow's defaults, 7 retries and 120 s, would stall training), so a
  server that is down costs one failed request;
- every later call runs on one background thread fed by a queue; the first failure stops the
  tracker for the rest of the run, is warned once on stderr and is recorded in run.json as
  `tracking: failed (reason)`;
- close() waits at most `close_timeout_s` for the queue to drain.
Credentials in a URI are masked wherever it is shown (run.json, warnings).

MlflowClient rather than the fluent API: no process-global active run, which a warm search
worker that trains many runs in one process would have to keep straight.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import sys
import threading
import time
from pathlib import Path

from nnrun.config import flatten, set_value
from nnrun.errors import ConfigError
from nnrun.safe_text import mask_credentials, one_line

PARAM_BATCH = 100          # MLflow's log_batch limit for params
METRIC_BATCH = 1000        # ... and for metrics
PARAM_VALUE_LIMIT = 6000   # MLflow's longest param value (MAX_PARAM_VAL_LENGTH)
NOT_METRICS = ("epoch", "step", "split")
ARTIFACTS_DIR = "mlartifacts"  # beside a SQLite store; `nnrun runs` does not take the copies in it for runs
STATUS = {"completed": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}  # anything else: KILLED


def check_installed(cfg) -> None:
    """A config that asks for MLflow on a machine without it stops before a run directory exists."""
    if cfg.tracking.mlflow is not None and importlib.util.find_spec("mlflow") is None:
        raise ConfigError("MLflow is not installed: pip install 'nnrun[mlflow]' (or remove tracking.mlflow)",
                          "tracking.mlflow")


def tracking_uri(uri: str | None, runs_root: str | Path) -> str:
    """The config's URI, else MLFLOW_TRACKING_URI, else a SQLite file beside the runs (MLflow
    3.13+ refuses a plain file store)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(runs_root).resolve() / 'mlflow.db'}"


def experiment_name(experiment: str | None, default: str) -> str:
    return experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or default


def artifact_root(uri: str) -> str | None:
    """For a SQLite store, artifacts go beside the database (MLflow's default is ./mlruns in the
    working directory); a server or a database server chooses its own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / ARTIFACTS_DIR).resolve().as_uri()
    return None


def params_of(config: dict) -> list[tuple[str, str]]:
    """The resolved config as (dotted key, text) params; values cut to MLflow's limit."""
    out = []
    for key, value in flatten(config).items():
        if key.startswith("tracking."):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        out.append((key[:250], text if len(text) <= PARAM_VALUE_LIMIT else text[:PARAM_VALUE_LIMIT - 3] + "..."))
    return out


def epoch_metrics(row: dict) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)}


def short_reason(exc: BaseException, timeout_s: float) -> str:
    """The cause of a failed MLflow call in a few words, not urllib3's nested repr."""
    text = one_line(mask_credentials(f"{exc}"))
    refused = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if refused:
        return f"cannot reach the server: {refused.group(1).strip()}"
    if "timed out" in text.lower():
        return f"the server did not answer within {timeout_s:g} s"
    if re.search(r"Connection aborted|RemoteDisconnected|Connection reset", text):
        return "cannot reach the server: it closed the connection"
    cause = re.search(r"Caused by (\w+)\(", text)
    if cause:
        return f"cannot reach the server: {cause.group(1)}"
    found = re.search(r"(?:Response body|message): '?(.+)", text)
    return f"{type(exc).__name__}: {(found.group(1) if found else text)[:200]}"


def client(uri: str, timeout_s: float = 10.0):
    """An MlflowClient that fails fast, and keeps MLflow's INFO lines (database migrations)
    off nnrun's stderr; the user's own MLFLOW_* settings win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout_s)))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow_client, name: str, uri: str) -> str:
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return mlflow_client.create_experiment(name, artifact_location=artifact_root(uri))


def warn(what: str, reason: str) -> None:
    print(f"warning: {what}: {reason}", file=sys.stderr, flush=True)


class MlflowTracker:
    """One nnrun run as one MLflow run. `start` before fit, `log_epoch` per epoch row,
    `close` after report.html exists."""

    def __init__(self, uri: str, experiment: str, run_name: str, tags: dict[str, str],
                 parent_run_id: str | None = None, timeout_s: float = 10.0, close_timeout_s: float = 60.0):
        self.uri, self.experiment, self.run_name = uri, experiment, run_name
        self.tags, self.parent_run_id = dict(tags), parent_run_id
        self.timeout_s, self.close_timeout_s = timeout_s, close_timeout_s
        self.run_id: str | None = None
        self.failed: str | None = None
        self.logged_epochs: set[int] = set()
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def record(self) -> dict:
        """What run.json holds of the tracking."""
        return {"tracking": f"failed ({self.failed})" if self.failed else "ok",
                "mlflow": {"run_id": self.run_id, "tracking_uri": mask_credentials(self.uri),
                           "experiment": self.experiment}}

    def _fail(self, exc: BaseException) -> None:
        if self.failed is None:
            self.failed = short_reason(exc, self.timeout_s)
            warn(f"MLflow tracking at {mask_credentials(self.uri)} stopped, training goes on", self.failed)

    def start(self, config: dict, run_id: str | None = None) -> None:
        """Create the MLflow run (or reopen `run_id` on --resume) and log the params it lacks."""
        try:
            mlflow_client = client(self.uri, self.timeout_s)
            from mlflow.entities import Param, RunTag

            if run_id is not None:
                mlflow_client.update_run(run_id, "RUNNING")
                self.run_id = run_id
                have = set(mlflow_client.get_run(run_id).data.params)
                self.logged_epochs = {m.step for m in mlflow_client.get_metric_history(run_id, "loss")}
                mlflow_client.log_batch(run_id, tags=[RunTag(k, v) for k, v in self.tags.items()])
            else:
                tags = dict(self.tags)
                if self.parent_run_id:
                    tags["mlflow.parentRunId"] = self.parent_run_id
                self.run_id = mlflow_client.create_run(experiment_id(mlflow_client, self.experiment, self.uri),
                                                       run_name=self.run_name, tags=tags).info.run_id
                have = set()
            params = [Param(k, v) for k, v in params_of(config) if k not in have]
            for i in range(0, len(params), PARAM_BATCH):
                mlflow_client.log_batch(self.run_id, params=params[i:i + PARAM_BATCH])
        except Exception as exc:  # noqa: BLE001 - tracking never fails the run
            self._fail(exc)
            return
        self._thread = threading.Thread(target=self._work, args=(mlflow_client,), daemon=True, name="nnrun-mlflow")
        self._thread.start()

    def log_epoch(self, row: dict) -> None:
        """Queue one metrics.jsonl row; an epoch already on the server (a replay after a kill) is skipped."""
        epoch = int(row["epoch"])
        if self.failed or self._thread is None or epoch in self.logged_epochs:
            return
        self.logged_epochs.add(epoch)
        self._queue.put(("epoch", epoch, epoch_metrics(row)))

    def close(self, status: str, final_metrics: dict, files: list[tuple[Path, str]], tags: dict[str, str],
              timeout_s: float | None = None) -> dict:
        """Final metrics, tags, artifacts ((file, artifact dir) pairs) and the run's end; returns
        what run.json records."""
        if self._thread is not None and not self.failed:
            self._queue.put(("close", status, final_metrics, files, tags))
            self._queue.put(None)
            wait = self.close_timeout_s if timeout_s is None else timeout_s
            self._thread.join(wait)
            if self._thread.is_alive():
                self._fail(TimeoutError(f"timed out: nothing was sent for {wait:g} s at the end of the run"))
        return self.record()

    def _work(self, mlflow_client) -> None:
        from mlflow.entities import Metric, RunTag

        while True:
            item = self._queue.get()
            if item is None or self.failed:
                return
            try:
                now = int(time.time() * 1000)
                if item[0] == "epoch":
                    _, epoch, values = item
                    metrics = [Metric(k, v, now, epoch) for k, v in values.items()]
                    for i in range(0, len(metrics), METRIC_BATCH):
                        mlflow_client.log_batch(self.run_id, metrics=metrics[i:i + METRIC_BATCH])
                    continue
                _, status, final, files, tags = item
                mlflow_client.log_batch(self.run_id, metrics=[Metric(k, v, now, 0) for k, v in
                                                              _final_metrics(final).items()],
                                        tags=[RunTag(k, str(v)) for k, v in tags.items()])
                for path, directory in files:
                    if path.is_file():
                        mlflow_client.log_artifact(self.run_id, str(path), directory or None)
                mlflow_client.set_terminated(self.run_id, STATUS.get(status, "KILLED"))
            except Exception as exc:  # noqa: BLE001 - tracking never fails the run
                self._fail(exc)
                return


def _final_metrics(final: dict) -> dict[str, float]:
    """final_metrics as MLflow metrics: numbers as `final_<key>`, nested per-class values flattened."""
    out = {}
    for key, value in flatten(final).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out["final_" + re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", key)[:240]] = float(value)
    return out


# -- a run directory's MLflow run ---------------------------------------------------------

def start_for_run(cfg, run) -> MlflowTracker | None:
    """Open the MLflow run of `run` (a new one, or on --resume the one run.json names, if the
    tracking URI is still the same) and record it in run.json; None without tracking.mlflow,
    and on the other workers of a multi_worker run."""
    from nnrun import __version__

    from nnrun.engine.distribute import is_chief

    ml = cfg.tracking.mlflow
    if ml is None or not is_chief():  # multi_worker: the chief's run is the run
        return None
    uri = tracking_uri(ml.tracking_uri, cfg.runtime.runs_root)
    tags = {"nnrun.run_dir": str(run.path.resolve()), "nnrun.version": __version__,
            "nnrun.techniques": ",".join(cfg.train.techniques) or "none", "nnrun.status": "running", **ml.tags}
    tracker = MlflowTracker(uri, experiment_name(ml.experiment, cfg.name), ml.run_name or run.path.name, tags,
                            ml.parent_run_id)
    before = run.read().get("mlflow") or {}
    same_server = before.get("tracking_uri") == mask_credentials(uri)
    tracker.start(cfg.model_dump(mode="json"), before.get("run_id") if same_server else None)
    run.update(**tracker.record())
    return tracker


def artifacts_of(run, log_checkpoint: bool) -> list[tuple[Path, str]]:
    """(file, artifact directory): config.yaml, run.json, report.html, the plots, the
    diagnostics and (unless switched off) the best checkpoint."""
    files = [(run.path / name, "") for name in ("config.yaml", "run.json", "report.html")]
    files += [(p, "plots") for p in sorted(run.plots.glob("*.png"))]
    files += [(p, "diagnostics") for p in sorted((run.path / "diagnostics").glob("*.json"))]
    if log_checkpoint:
        files.append((run.checkpoints / "best.keras", "checkpoints"))
    return files


def finish_for_run(tracker: MlflowTracker | None, cfg, run) -> None:
    """End the MLflow run as the nnrun run ended, after report.html exists; an interrupted run
    waits only briefly (the user asked it to stop)."""
    if tracker is None:
        return
    record = run.read()
    status = record.get("status") or "failed"
    tags = {"nnrun.status": status}
    if record.get("reason"):
        tags["nnrun.reason"] = str(record["reason"])[:5000]
    tracker.close(status, record.get("final_metrics") or {}, artifacts_of(run, cfg.tracking.mlflow.log_checkpoint),
                  tags, timeout_s=10.0 if status == "interrupted" else None)
    run.update(**tracker.record())


# -- parent runs for sweeps and searches ------------------------------------------------------

def open_parent(cfg, name: str, kind: str, stored: dict | None) -> dict | None:
    """The MLflow run that a sweep's or search's trials are children of, as {run_id,
    tracking_uri (masked)}: `stored` reopened if it is on the same server (a sweep run again),
    else a new one. None, with one warning, if the server cannot be reached: the trials then
    log as runs of their own."""
    ml = cfg.tracking.mlflow
    uri = tracking_uri(ml.tracking_uri, cfg.runtime.runs_root)
    try:
        mlflow_client = client(uri)
        if stored and stored.get("tracking_uri") == mask_credentials(uri) and stored.get("run_id"):
            mlflow_client.update_run(stored["run_id"], "RUNNING")
            return stored
        run = mlflow_client.create_run(experiment_id(mlflow_client, experiment_name(ml.experiment, name), uri),
                                       run_name=name, tags={"nnrun.kind": kind, **ml.tags})
        return {"run_id": run.info.run_id, "tracking_uri": mask_credentials(uri)}
    except Exception as exc:  # noqa: BLE001 - tracking never stops a sweep
        warn(f"MLflow parent run for {kind} {name} not opened at {mask_credentials(uri)}; trials log on their own",
             short_reason(exc, 10.0))
        return None


def close_parent(cfg, parent: dict | None, status: str) -> None:
    """End the parent run: FINISHED, FAILED or KILLED."""
    if parent is None:
        return
    try:
        client(tracking_uri(cfg.tracking.mlflow.tracking_uri, cfg.runtime.runs_root)).set_terminated(
            parent["run_id"], status)
    except Exception as exc:  # noqa: BLE001 - tracking never fails a sweep
        warn(f"MLflow parent run {parent['run_id']} not closed", short_reason(exc, 10.0))


def child_set_args(cfg, name: str, parent: dict | None) -> list[str]:
    """--set items that make a trial a child of the parent run, in the sweep's experiment."""
    if cfg.tracking.mlflow is None:
        return []
    ml = cfg.tracking.mlflow
    items = [] if ml.experiment else [f"tracking.mlflow.experiment={set_value(experiment_name(None, name))}"]
    return items + ([f"tracking.mlflow.parent_run_id={parent['run_id']}"] if parent else [])
