"""tf.distribute: TF_CONFIG and chief rules, mirrored over two logical CPUs, two real workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nnrun.config import load_config
from nnrun.engine import distribute
from nnrun.errors import ConfigError
from tests.conftest import ROOT, TINY, run_cli


def _tf_config(kind: str, index: int, cluster: dict) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


@pytest.mark.parametrize("kind, index, cluster, chief", [
    ("worker", 0, {"worker": ["a:1", "b:1"]}, True),
    ("worker", 1, {"worker": ["a:1", "b:1"]}, False),
    ("worker", 0, {"chief": ["c:1"], "worker": ["a:1"]}, False),
    ("chief", 0, {"chief": ["c:1"], "worker": ["a:1"]}, True),
])
def test_chief_is_the_chief_task_or_worker_zero(monkeypatch, kind, index, cluster, chief):
    monkeypatch.setenv("TF_CONFIG", _tf_config(kind, index, cluster))
    assert distribute.is_chief() is chief


def test_without_tf_config_the_process_is_chief(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief() and distribute.tf_config() == {}


def test_bad_tf_config_is_a_config_error(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid JSON"):
        distribute.is_chief()
    monkeypatch.setenv("TF_CONFIG", '{"task": {}}')
    with pytest.raises(ConfigError, match="'cluster' and 'task'"):
        distribute.is_chief()


def test_non_chief_workers_write_elsewhere(monkeypatch, tiny_config, tmp_path):
    cfg = load_config(tiny_config, [])
    monkeypatch.setenv("TF_CONFIG", _tf_config("worker", 0, {"worker": ["a:1", "b:1"]}))
    assert distribute.worker_runs_root(cfg) == cfg.runtime.runs_root
    monkeypatch.setenv("TF_CONFIG", _tf_config("worker", 1, {"worker": ["a:1", "b:1"]}))
    monkeypatch.setenv("NNRUN_WORKER_DIR", str(tmp_path / "w1"))
    assert distribute.worker_runs_root(cfg) == str(tmp_path / "w1")
    monkeypatch.delenv("NNRUN_WORKER_DIR")
    scratch = distribute.worker_runs_root(cfg)
    assert scratch != cfg.runtime.runs_root and "worker1" in scratch and os.path.isdir(scratch)
    os.rmdir(scratch)


def test_linear_lr_scaling_multiplies_by_replicas(tiny_config):
    class FakeStrategy:
        num_replicas_in_sync = 4

    assert distribute.lr_factor(load_config(tiny_config, []), FakeStrategy()) == 1.0
    linear = load_config(tiny_config, ["runtime.lr_scaling=linear"])
    assert distribute.lr_factor(linear, FakeStrategy()) == 4.0


def test_unknown_strategy_is_rejected_by_validate(tiny_config):
    res = run_cli("validate", str(tiny_config), "--set", "runtime.strategy=horovod")
    assert res.returncode == 2 and "runtime.strategy" in res.stderr


# --- training (each in its own process: logical devices and collectives are per process) ----

SMALL = ["data.params.num_train=256", "data.params.num_val=64", "data.batch_size=32", "train.epochs=2"]


def _model_arrays(run: Path) -> list[np.ndarray]:
    with np.load(run / "checkpoints" / "backup" / "state.npz") as state:
        return [state[k] for k in sorted(state.files) if k.startswith("model/")]


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("RUNS", str(tmp_path / "runs")))
    sets = SMALL + ["runtime.strategy=mirrored", "runtime.cpu_devices=2"]
    res = run_cli("train", str(config), *(a for s in sets for a in ("--set", s)), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    record = json.loads((Path(res.stdout.strip().splitlines()[-1]) / "run.json").read_text())
    assert record["status"] == "completed"
    dist = record["device"]["distribution"]
    assert (dist["strategy"], dist["class"]) == ("mirrored", "MirroredStrategy") and dist["replicas"] == 2
    assert len(dist["devices"]) == 2 and all("CPU" in d.upper() for d in dist["devices"])
    assert np.isfinite(record["final_metrics"]["loss"])


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(tmp_path: Path, tag: str, args: list[str], cluster: dict, worker_args=None):
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": _tf_config("worker", index, cluster),
               "NNRUN_WORKER_DIR": str(tmp_path / f"{tag}{index}")}
        procs.append(subprocess.Popen([sys.executable, "-m", "nnrun", *(worker_args[index] if worker_args else args)],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _finish(procs) -> list[tuple[int, str, str]]:
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


@pytest.mark.slow
def test_two_workers_train_to_identical_weights_and_only_the_chief_writes(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("RUNS", str(tmp_path / "runs")))
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    sets = [a for s in SMALL + ["runtime.strategy=multi_worker"] for a in ("--set", s)]
    outs = _finish(_start_workers(tmp_path, "worker", ["train", str(config), *sets], cluster))
    for code, _, err in outs:
        assert code == 0, err
    chief_run, other_run = (Path(out.strip().splitlines()[-1]) for _, out, _ in outs)
    # Only the chief wrote under runs_root; worker 1 used its own directory.
    assert chief_run.parent.parent == tmp_path / "runs"
    assert [p for p in (tmp_path / "runs" / "tiny").iterdir()] == [chief_run]
    assert other_run.is_relative_to(tmp_path / "worker1") and not (tmp_path / "worker0").exists()
    record = json.loads((chief_run / "run.json").read_text())
    assert record["status"] == "completed"
    dist = record["device"]["distribution"]
    assert dist["strategy"] == "multi_worker" and dist["replicas"] == 2
    assert dist["task"] == {"type": "worker", "index": 0, "chief": True, "workers": 2}
    # Synchronous training: both workers end with the same weights, and training moved them.
    chief, other = _model_arrays(chief_run), _model_arrays(other_run)
    assert len(chief) == len(other) > 0
    for a, b in zip(chief, other):
        np.testing.assert_array_equal(a, b)
    rows = [json.loads(line) for line in (chief_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r.get("split") == "train"] == [1, 2]


@pytest.mark.slow
def test_two_workers_stop_on_sigterm_and_resume_exactly(tmp_path):
    """A SIGTERM to one worker (a preempted pod) stops the job; resuming every worker from its
    own epoch-end backup gives the weights and metrics of an uninterrupted run. Workers whose
    backups are at different epochs refuse to start, before changing anything."""
    import shutil

    from tests.test_reliability import metrics, position

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("RUNS", str(tmp_path / "runs")))
    args = ["train", str(config), "--set", "runtime.strategy=multi_worker"]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    ref = _finish(_start_workers(tmp_path, "ref", args, cluster))
    assert [r[0] for r in ref] == [0, 0], ref[0][2][-2000:]
    reference = Path(ref[0][1].strip().splitlines()[-1])

    procs = _start_workers(tmp_path, "cut", args, cluster)
    runs, older, deadline = [], tmp_path / "older-backup", time.time() + 240
    while time.time() < deadline and all(p.poll() is None for p in procs):
        runs = [r for r in (tmp_path / "runs" / "tiny").glob("*") if r != reference] + \
            (sorted((tmp_path / "cut1").glob("*/*")) if (tmp_path / "cut1").exists() else [])
        epochs = [(position(r) or {}).get("epoch", 0) for r in runs] if len(runs) == 2 else [0]
        if min(epochs) >= 1 and not older.exists():
            shutil.copytree(runs[1] / "checkpoints" / "backup", older)
        if min(epochs) >= 2:
            procs[1].send_signal(signal.SIGTERM)
            break
        time.sleep(0.01)
    cut = _finish(procs)
    assert [r[0] for r in cut] == [1, 143], [r[2][-1500:] for r in cut]
    assert "SIGTERM at epoch 3 step 0" in json.loads((runs[1] / "run.json").read_text())["reason"]
    chief = json.loads((runs[0] / "run.json").read_text())  # its peer went away
    assert chief["status"] == "failed" and "another worker stopped" in chief["reason"]
    assert position(runs[0]) == position(runs[1]) and position(runs[0])["epoch"] == 2

    newer = tmp_path / "newer-backup"
    shutil.copytree(runs[1] / "checkpoints" / "backup", newer)
    shutil.rmtree(runs[1] / "checkpoints" / "backup")
    shutil.copytree(older, runs[1] / "checkpoints" / "backup")
    before = [((r / "metrics.jsonl").read_text(), (r / "run.json").read_text()) for r in runs]
    resume = [["train", "--resume", str(r)] for r in runs]
    mismatched = _finish(_start_workers(tmp_path, "cut", [], cluster, resume))
    assert [r[0] for r in mismatched] == [1, 1]
    assert all("the workers start from different backups" in r[2] for r in mismatched)
    assert [((r / "metrics.jsonl").read_text(), (r / "run.json").read_text()) for r in runs] == before

    shutil.rmtree(runs[1] / "checkpoints" / "backup")
    shutil.copytree(newer, runs[1] / "checkpoints" / "backup")
    resumed = _finish(_start_workers(tmp_path, "cut", [], cluster, resume))
    assert [r[0] for r in resumed] == [0, 0], [r[2][-1500:] for r in resumed]
    assert json.loads((runs[0] / "run.json").read_text())["status"] == "completed"
    assert metrics(runs[0]) == metrics(reference)
    for a, b, c in zip(_model_arrays(reference), _model_arrays(runs[0]), _model_arrays(runs[1])):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(b, c)
