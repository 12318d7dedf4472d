"""MLflow tracking against a real `mlflow server` on 127.0.0.1 (SQLite backend in a temp
directory), checked through MlflowClient: what a run logs, a kill -9 and --resume, a server
that dies mid-run, sweep and search parent runs, and the config's refusals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, run_cli

mlflow = pytest.importorskip("mlflow", reason="mlflow is a dev dependency (pip install -e '.[dev]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` in its own process group; up once GET /health answers."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = open(directory / "server.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}",
             "--artifacts-destination", str(directory / "artifacts"), "--workers", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while True:
            assert self.proc.poll() is None, (directory / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "mlflow server did not start in 120 s"
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self.log.close()

    def client(self):
        return mlflow.MlflowClient(tracking_uri=self.uri)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("mlflow"))
    yield s
    s.stop()


def tracked_config(tmp: Path, uri: str | None, epochs: int = 3, extra: str = "") -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "tiny.yaml"
    mlflow_section = "{}" if uri is None else f"{{tracking_uri: '{uri}', experiment: tests}}"
    config.write_text(TINY.replace("RUNS", str(tmp / "runs")).replace("train: {epochs: 3}", f"train: {{epochs: {epochs}}}")
                      + f"tracking: {{mlflow: {mlflow_section}}}\n" + extra)
    return config


def train_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == "train"]


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for info in client.list_artifacts(run_id, path):
        out |= artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return out


@pytest.mark.slow
def test_a_run_logs_params_each_epoch_and_its_artifacts(server, tmp_path):
    res = run_cli("train", str(tracked_config(tmp_path, server.uri)))
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr
    run = Path(res.stdout.strip().splitlines()[-1])
    record = json.loads((run / "run.json").read_text())
    assert record["tracking"] == "ok" and record["mlflow"]["tracking_uri"] == server.uri
    client = server.client()
    found = client.get_run(record["mlflow"]["run_id"])
    assert found.info.status == "FINISHED" and found.info.run_name == run.name
    assert client.get_experiment(found.info.experiment_id).name == "tests"
    params = found.data.params
    assert params["optimizer.learning_rate"] == "0.01" and params["model.params.stages"] == "[8, 16]"
    assert params["data.dataset"] == "shapes" and not any(k.startswith("tracking.") for k in params)
    rows = train_rows(run)
    assert history(client, found.info.run_id, "val_accuracy") == [(r["epoch"], r["val_accuracy"]) for r in rows]
    assert [s for s, _ in history(client, found.info.run_id, "loss")] == [1, 2, 3]
    assert found.data.metrics["final_val_accuracy"] == pytest.approx(record["final_metrics"]["val_accuracy"])
    tags = found.data.tags
    assert tags["nnrun.status"] == "completed" and tags["nnrun.run_dir"] == str(run.resolve())
    assert tags["nnrun.techniques"] == "none" and tags["nnrun.version"]
    assert {"config.yaml", "run.json", "report.html", "plots/learning_curves.png",
            "checkpoints/best.keras"} <= artifacts(client, found.info.run_id)
    # `nnrun runs` lists the MLflow run id, and filters on it
    listed = run_cli("runs", str(tmp_path / "runs"), "--filter", f"mlflow.run_id={found.info.run_id}", "--json")
    assert listed.returncode == 0 and [r["path"] for r in json.loads(listed.stdout)] == [str(run)]


@pytest.mark.slow
def test_kill_9_then_resume_continues_the_same_mlflow_run_with_each_epoch_once(server, tmp_path):
    config = tracked_config(tmp_path, server.uri, epochs=4, extra="")
    root = tmp_path / "runs" / "tiny"
    proc = subprocess.Popen([sys.executable, "-m", "nnrun", "train", str(config)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, run = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        runs = list(root.glob("*")) if root.exists() else []
        if runs and (runs[0] / "metrics.jsonl").exists() and len(train_rows(runs[0])) >= 2:
            run = runs[0]
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.communicate(timeout=60)
    assert run is not None and proc.returncode == -signal.SIGKILL
    run_id = json.loads((run / "run.json").read_text())["mlflow"]["run_id"]
    assert server.client().get_run(run_id).info.status == "RUNNING"  # killed: never ended
    res = run_cli("train", "--resume", str(run))
    assert res.returncode == 0, res.stderr
    record = json.loads((run / "run.json").read_text())
    assert record["mlflow"]["run_id"] == run_id and record["tracking"] == "ok"
    client = server.client()
    assert client.get_run(run_id).info.status == "FINISHED"
    same = client.search_runs([client.get_run(run_id).info.experiment_id],
                              f"tags.`nnrun.run_dir` = '{run.resolve()}'")
    assert [r.info.run_id for r in same] == [run_id]  # no second MLflow run for this run directory
    rows = train_rows(run)
    for key in ("val_accuracy", "loss"):
        assert history(client, run_id, key) == [(r["epoch"], r[key]) for r in rows]  # each epoch once


@pytest.mark.slow
def test_a_server_that_dies_mid_run_costs_the_run_nothing(tmp_path):
    dying = Server(tmp_path / "dying")
    try:
        config = tracked_config(tmp_path, dying.uri, epochs=4)
        root = tmp_path / "runs" / "tiny"
        proc = subprocess.Popen([sys.executable, "-m", "nnrun", "train", str(config)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            runs = list(root.glob("*")) if root.exists() else []
            if runs and (runs[0] / "metrics.jsonl").exists() and train_rows(runs[0]):
                dying.stop()
                break
            time.sleep(0.01)
        out, err = proc.communicate(timeout=300)
    finally:
        dying.stop()
    assert proc.returncode == 0, err
    run = Path(out.strip().splitlines()[-1])
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["epochs_completed"] == 4
    assert record["tracking"].startswith("failed (cannot reach the server"), record["tracking"]
    assert err.count("warning: MLflow tracking") == 1, err
    assert (run / "report.html").is_file()


@pytest.mark.slow
def test_server_down_at_start_and_the_default_sqlite_store(tmp_path):
    """Nothing listens: one warning, the run completes. Without a URI: sqlite:///<runs_root>/mlflow.db,
    artifacts beside it, and `nnrun runs` does not take their copies for runs."""
    down = f"http://127.0.0.1:{free_port()}"
    res = run_cli("train", str(tracked_config(tmp_path / "a", down, epochs=1)))
    assert res.returncode == 0, res.stderr
    record = json.loads((Path(res.stdout.strip().splitlines()[-1]) / "run.json").read_text())
    assert record["status"] == "completed" and record["tracking"].startswith("failed (cannot reach the server")
    assert res.stderr.count("warning: MLflow tracking") == 1

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    res = subprocess.run([sys.executable, "-m", "nnrun", "train", str(tracked_config(tmp_path / "b", None, epochs=1))],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "INFO" not in res.stderr  # MLflow's database-migration lines stay off nnrun's output
    run = Path(res.stdout.strip().splitlines()[-1])
    record = json.loads((run / "run.json").read_text())
    db = tmp_path / "b" / "runs" / "mlflow.db"
    assert record["tracking"] == "ok" and record["mlflow"]["tracking_uri"] == f"sqlite:///{db}"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    found = client.get_run(record["mlflow"]["run_id"])
    assert client.get_experiment(found.info.experiment_id).name == "tiny"
    assert found.info.artifact_uri.startswith((tmp_path / "b" / "runs" / "mlartifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()
    listed = run_cli("runs", str(tmp_path / "b" / "runs"), "--json")
    assert [r["path"] for r in json.loads(listed.stdout)] == [str(run)]


@pytest.mark.slow
def test_sweep_trials_are_children_of_one_parent_run(server, tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY.replace("RUNS", str(tmp_path / "runs")))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(textwrap.dedent(f"""\
        base: tiny.yaml
        name: tracked
        set:
          data.params: {{num_train: 256, num_val: 64, image_size: 16, min_scale: 0.5, max_scale: 0.9}}
          train.epochs: 1
          tracking.mlflow: {{tracking_uri: '{server.uri}'}}
        grid: {{optimizer.learning_rate: [0.01, 0.02]}}
        """))
    res = run_cli("sweep", str(sweep))
    assert res.returncode == 0, res.stderr
    directory = Path(res.stdout.strip().splitlines()[-1])
    parent_id = json.loads((directory / "mlflow_parent.json").read_text())["run_id"]
    client = server.client()
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["nnrun.kind"] == "sweep"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(c.data.params["optimizer.learning_rate"] for c in children) == ["0.01", "0.02"]
    assert client.get_experiment(parent.info.experiment_id).name == "tracked"
    # run again: every trial is done already (tracking does not change a trial's identity)
    again = run_cli("sweep", str(sweep))
    assert again.returncode == 0 and "2 already completed" in again.stderr, again.stderr


def test_a_search_stores_one_parent_run_for_every_worker(server, tmp_path):
    """The study's creator opens the parent run before the study is ready; a worker reads it
    and gives its trials the --set items that make them children (no training here)."""
    from nnrun.search.study import PARENT_RUN, Study
    from nnrun.search.plan import load_search
    from nnrun.search.worker import Worker

    (tmp_path / "tiny.yaml").write_text(TINY.replace("RUNS", str(tmp_path / "runs")))
    path = tmp_path / "search.yaml"
    path.write_text(textwrap.dedent(f"""\
        base: tiny.yaml
        name: searched
        set: {{tracking.mlflow: {{tracking_uri: '{server.uri}'}}}}
        search: {{trials: 2, storage: 'sqlite:///{tmp_path / "study.db"}'}}
        params: {{optimizer.learning_rate: {{loguniform: [1.0e-3, 1.0e-2]}}}}
        """))
    sweep = load_search(path)
    creator = Study(sweep.search, sweep.name, sweep.directory, say=lambda line: None)
    creator.open()
    stored = creator.study.user_attrs[PARENT_RUN]
    parent = server.client().get_run(stored["run_id"])
    assert parent.data.tags["nnrun.kind"] == "search" and parent.info.run_name == "searched"
    worker = Worker(sweep, say=lambda line: None)
    worker.study.open()
    worker._open_parent()
    assert worker.tracking_args == ["tracking.mlflow.experiment=searched",
                                    f"tracking.mlflow.parent_run_id={stored['run_id']}"]
    _, cfg = sweep.search.trial_config({"optimizer.learning_rate": 0.005}, "trial-0000", sweep.directory,
                                       extra=worker.tracking_args)
    assert cfg.tracking.mlflow.parent_run_id == stored["run_id"]


def test_config_refuses_a_password_in_the_tracking_uri(tmp_path, cli):
    config = tmp_path / "c.yaml"
    config.write_text(TINY.replace("RUNS", str(tmp_path / "runs"))
                      + "tracking: {mlflow: {tracking_uri: 'https://me:s3cret@mlflow.example.com'}}\n")
    res = cli("validate", str(config))
    assert res.returncode == 2
    assert "MLFLOW_TRACKING_PASSWORD" in res.stderr and "s3cret" not in res.stderr + res.stdout
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_failed_call_is_reported_by_its_cause():
    from nnrun.engine.tracking import short_reason

    refused = Exception("API request to endpoint /api/2.0/mlflow/runs/create failed with exception "
                        "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: /api "
                        "(Caused by NewConnectionError(\"<urllib3.connection.HTTPConnection object>: Failed to "
                        "establish a new connection: [Errno 111] Connection refused\"))")
    assert short_reason(refused, 10) == "cannot reach the server: Connection refused"
    closed = Exception("... Max retries exceeded with url: /api/2.0/mlflow/runs/log-batch (Caused by "
                       "ProtocolError('Connection aborted.', RemoteDisconnected('Remote end closed connection')))")
    assert short_reason(closed, 10) == "cannot reach the server: it closed the connection"
    assert short_reason(TimeoutError("Read timed out. (read timeout=10)"), 10) == \
        "the server did not answer within 10 s"
    assert "***" in short_reason(ValueError("bad https://u:pw@host/x"), 10)
