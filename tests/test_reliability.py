"""Reliability: exact resume after kill -9 / SIGTERM / mid-epoch, NaN handling, hostile input,
concurrent runs. These start real `nnrun train` processes and kill them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, TINY, run_cli

pytestmark = pytest.mark.slow

# Tiny, but with every source of randomness a resume must reproduce: data order, mixup,
# curriculum pool, progressive image size, stochastic-depth dropout seeds.
RELIABLE = TINY.replace("num_train: 1024", "num_train: 2048").replace("train: {epochs: 3}", """\
train:
  epochs: 4
  backup_every_steps: 4
  early_stopping: {monitor: val_loss, patience: 50}
  techniques:
    mixup: {alpha: 0.3}
    curriculum: {start: 0.5, full_at_epoch: 3}
    progressive_resizing: {sizes: [8, 16], epochs: [2, 2]}
    stochastic_depth: {rate: 0.2}""")


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("epoch_time_s", "train_time_s")} for r in rows]


def state(run: Path) -> dict:
    with np.load(run / "checkpoints/backup/state.npz") as data:
        return {k: data[k] for k in data.files}


def assert_identical(a: Path, b: Path) -> None:
    assert metrics(a) == metrics(b)
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


def position(run: Path) -> dict | None:
    try:
        with np.load(run / "checkpoints/backup/state.npz") as data:
            return json.loads(str(data["position"]))
    except (OSError, ValueError, KeyError):
        return None


def start_and_stop(config: Path, root: Path, when, sig=signal.SIGKILL, timeout=180):
    """Start `nnrun train`, send `sig` once `when(run_dir)` is true; return (run_dir, process)."""
    before = set(root.glob("*")) if root.exists() else set()
    proc = subprocess.Popen([sys.executable, "-m", "nnrun", "train", str(config)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    run = None
    while time.time() < deadline and proc.poll() is None:
        new = [p for p in root.glob("*") if p not in before] if root.exists() else []
        if new:
            run = new[0]
            if when(run):
                proc.send_signal(sig)
                break
        time.sleep(0.01)
    proc.communicate(timeout=timeout)
    assert run is not None, "the run never started"
    return run, proc


def epochs_logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reliable")
    config = tmp / "reliable.yaml"
    config.write_text(RELIABLE.replace("RUNS", str(tmp / "runs")))
    res = run_cli("train", str(config))
    assert res.returncode == 0, res.stderr
    return config, Path(res.stdout.strip().splitlines()[-1]), tmp / "runs" / "tiny"


@pytest.mark.parametrize("k", [1, 3])
def test_kill_after_epoch_k_then_resume_is_bit_identical(setup, k):
    config, reference, root = setup
    run, proc = start_and_stop(config, root, lambda r: epochs_logged(r) >= k)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # killed: never updated
    res = run_cli("train", "--resume", str(run))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(run)  # continued in place
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert_identical(reference, run)


def test_kill_mid_epoch_resumes_from_the_last_saved_step(setup):
    config, reference, root = setup

    def mid_epoch(run):
        pos = position(run)
        return pos is not None and pos["epoch"] >= 1 and 4 <= pos["step"] <= 16

    run, proc = start_and_stop(config, root, mid_epoch)
    assert proc.returncode == -signal.SIGKILL
    pos = position(run)
    assert pos["step"] > 0  # the backup is mid-epoch, not at an epoch start
    res = run_cli("train", "--resume", str(run))
    assert res.returncode == 0, res.stderr
    assert_identical(reference, run)


def test_sigterm_saves_marks_interrupted_and_resumes_exactly(setup):
    config, reference, root = setup
    run, proc = start_and_stop(config, root, lambda r: epochs_logged(r) >= 1, sig=signal.SIGTERM)
    assert proc.returncode == 143
    assert proc.stderr is not None
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "interrupted"
    assert re.fullmatch(r"SIGTERM at epoch \d+ step \d+", record["reason"])
    assert position(run)["iterations"] == record["interrupted_at"]["iterations"]
    res = run_cli("train", "--resume", str(run))
    assert res.returncode == 0, res.stderr
    assert_identical(reference, run)


def test_sigint_exits_130(tiny_config, tmp_path):
    run, proc = start_and_stop(tiny_config, tmp_path / "runs" / "tiny", lambda r: epochs_logged(r) >= 1,
                               sig=signal.SIGINT)
    assert proc.returncode == 130
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"


def test_resume_refuses_a_changed_config_unless_allowed(setup):
    config, reference, _ = setup
    res = run_cli("train", "--resume", str(reference), "--set", "optimizer.learning_rate=0.5",
                  "--set", "train.epochs=5")
    assert res.returncode == 2
    assert res.stderr.strip() == ("config error: --resume: the config differs from the run's in "
                                  "optimizer.learning_rate, train.epochs; pass --allow-change KEY for each change you mean")
    done = run_cli("train", "--resume", str(reference))
    assert done.returncode == 2 and "run is completed; to train longer" in done.stderr
    allowed_bad = run_cli("train", "--resume", str(reference), "--set", "data.batch_size=100000",
                          "--set", "train.epochs=5", "--allow-change", "data.batch_size",
                          "--allow-change", "train.epochs")
    assert allowed_bad.returncode == 2
    assert allowed_bad.stderr.startswith("config error: data.batch_size: 100000 is larger than the training set")
    assert "100000" not in (reference / "config.yaml").read_text()  # nothing written for a refused change


def test_resume_completed_run_for_more_epochs(setup, tmp_path):
    import shutil

    _, reference, _ = setup
    run = tmp_path / "copy"
    shutil.copytree(reference, run)
    res = run_cli("train", "--resume", str(run), "--set", "train.epochs=5", "--allow-change", "train.epochs")
    assert res.returncode == 0, res.stderr
    assert [r["epoch"] for r in metrics(run)] == [1, 2, 3, 4, 5]
    assert json.loads((run / "run.json").read_text())["config_changes"] == [["train.epochs"]]


def test_run_stopped_after_its_last_backup_resumes_to_the_final_metrics(setup, tmp_path):
    """The on-disk state of a run killed (or interrupted) after the last epoch's backup, before
    its final metrics: --resume trains nothing more and completes it as an uninterrupted run."""
    import shutil

    _, reference, _ = setup
    run = tmp_path / "stopped"
    shutil.copytree(reference, run)
    record = json.loads((run / "run.json").read_text())
    expected = record["final_metrics"]
    record.update(status="interrupted", reason="SIGINT after the last epoch", final_metrics={})
    (run / "run.json").write_text(json.dumps(record))
    (run / "report.html").unlink()
    res = run_cli("train", "--resume", str(run))
    assert res.returncode == 0, res.stderr
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["final_metrics"] == expected
    assert metrics(run) == metrics(reference) and (run / "report.html").is_file()
    res = run_cli("train", "--resume", str(run), "--set", "train.epochs=2", "--allow-change", "train.epochs")
    assert res.returncode == 2 and "beyond train.epochs 2" in res.stderr


def test_non_finite_loss_stops_and_keeps_the_last_good_backup(tiny_config):
    res = run_cli("train", str(tiny_config), "--set", "optimizer={name: sgd, learning_rate: 1e8}")
    assert res.returncode == 1
    line = res.stderr.strip()
    assert re.match(r"run failed: non-finite loss at epoch \d+ step \d+ \(run directory: .+\)$", line), line
    run = Path(re.search(r"run directory: (.+)\)$", line).group(1))
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and record["reason"].startswith("non-finite loss at epoch")
    saved = state(run)
    assert all(np.isfinite(v).all() for k, v in saved.items() if k.startswith("model/"))


def test_non_finite_loss_rollback_recovers(tiny_config):
    res = run_cli("train", str(tiny_config), "--set", "optimizer={name: sgd, learning_rate: 1e8}",
                  "--set", "train.on_nan=rollback", "--set", "train.rollback_lr_factor=1e-10")
    assert res.returncode == 0, res.stderr
    run = Path(res.stdout.strip().splitlines()[-1])
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and len(record["rollbacks"]) >= 1
    assert np.isfinite(record["final_metrics"]["loss"])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.batch_size=4096", "config error: data.batch_size: 4096 is larger than the training set (1024 examples)"),
        ("data.dataset=sequences", "config error: model: "),
        ("runtime.runs_root=/proc/nnrun-cannot-write", "error: cannot create run root /proc/nnrun-cannot-write/tiny"),
        ("train.monitor=val_acc", "config error: train.monitor: unknown metric 'val_acc'; did you mean 'val_accuracy'?"),
        ("train.techniques={curriculum: {difficulty: dataset}}",
         "config error: train.techniques.curriculum.difficulty: this data set supplies no difficulty scores"),
    ],
)
def test_inputs_that_cannot_train_exit_2_before_any_run_dir(tiny_config, tmp_path, override, expected):
    extra = {"data.dataset=sequences": "data.params={}",
             "train.techniques={curriculum: {difficulty: dataset}}": "data={dataset: npz, params: {path: NPZ}}"}
    npz = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, x_train=rng.random((64, 8, 8, 3)), y_train=np.arange(64) % 2,
             x_val=rng.random((16, 8, 8, 3)), y_val=np.arange(16) % 2)
    res = run_cli("train", str(tiny_config), "--set", override,
                  "--set", extra.get(override, "seed=1").replace("NPZ", str(npz)))
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().startswith(expected), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_model_files_are_loaded_in_safe_mode(tmp_path, tiny_config):
    import keras

    run = tmp_path / "evil"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(tiny_config.read_text())
    marker = tmp_path / "pwned"
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, outputs).save(run / "checkpoints" / "best.keras")
    res = run_cli("evaluate", str(run))
    assert res.returncode == 2
    assert res.stderr.startswith("error: refusing to load") and "Lambda" in res.stderr
    assert not marker.exists()


def test_plugins_only_through_explicit_flag(tmp_path, tiny_config):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(
        "from nnrun.registry import register, NoParams\n"
        "@register('schedule', 'my_constant', NoParams)\n"
        "def build(p, base_lr, steps_per_epoch, epochs):\n"
        "    '''A user schedule.'''\n"
        "    return base_lr\n"
    )
    without = run_cli("validate", str(tiny_config), "--set", "optimizer.schedule=my_constant")
    assert without.returncode == 2 and "unknown schedule 'my_constant'" in without.stderr
    with_plugin = run_cli("validate", str(tiny_config), "--set", "optimizer.schedule=my_constant",
                          "--plugin", str(plugin))
    assert with_plugin.returncode == 0, with_plugin.stderr
    trained = run_cli("train", str(tiny_config), "--set", "optimizer.schedule=my_constant", "--set", "train.epochs=1",
                      "--plugin", str(plugin))
    assert trained.returncode == 0, trained.stderr
    run = Path(trained.stdout.strip().splitlines()[-1])
    assert json.loads((run / "run.json").read_text())["plugins"] == [str(plugin.resolve())]
    refused = run_cli("evaluate", str(run), "--json")  # the run's record never imports code
    assert refused.returncode == 2 and f"--plugin {plugin.resolve()}" in refused.stderr
    later = run_cli("evaluate", str(run), "--json", "--plugin", str(plugin))
    assert later.returncode == 0, later.stderr


def test_eight_concurrent_runs_get_distinct_directories(tiny_config, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "nnrun", "train", str(tiny_config), "--set", "train.epochs=1",
                               "--set", "runtime.threads=1"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(8)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [o[1][-3000:] for p, o in zip(procs, outs) if p.returncode]
    dirs = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(dirs) == 8
    for d in dirs:
        assert json.loads((Path(d) / "run.json").read_text())["status"] == "completed"


def test_an_epoch_whose_input_ends_early_fails_the_run_and_is_not_backed_up(tiny_config, monkeypatch):
    """Keras ends an epoch whose input runs out early with a warning only ("Your input ran out of
    data"); nnrun must not record it as a complete epoch: the run fails, naming the shortfall, and
    its backup stays at the last complete position."""
    from nnrun.config import load_config
    from nnrun.engine import pipeline
    from nnrun.engine.train import Output, train
    from nnrun.errors import RunFailed

    original = pipeline.train_dataset

    def short(*args, **kwargs):
        return original(*args, **kwargs).take(5)

    monkeypatch.setattr(pipeline, "train_dataset", short)
    with pytest.raises(RunFailed, match="ended after 5 of 16 batches in epoch 1"):
        train(load_config(tiny_config, ["train.epochs=1"]), ["nnrun", "train"],
              Output(console=None, progress=False, epoch_lines=False))
    (run,) = (Path(str(tiny_config).replace("tiny.yaml", "runs")) / "tiny").iterdir()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and "ended after 5 of 16 batches" in record["reason"]
    assert position(run) == {"epoch": 0, "step": 0, "iterations": 0}


@pytest.mark.parametrize("sets, stop_epoch", [
    (["train.epochs=2"], 2),  # the last epoch
    (["train.epochs=6", "train.early_stopping={monitor: val_loss, patience: 1, min_delta: 100}"], 2),  # early stop
])
def test_signal_after_the_last_training_batch_stops_and_resume_only_finishes(tiny_config, monkeypatch, sets,
                                                                           stop_epoch):
    """SIGINT while the epoch that ends training is validated and logged: the run stops
    (interrupted, 'after the last epoch'), and --resume trains nothing more, early stopping
    included, and writes the final metrics."""
    from nnrun.config import load_config
    from nnrun.engine import callbacks
    from nnrun.engine.train import Output, train

    original = callbacks.MetricsLog.on_epoch_end

    def log_then_signal(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch + 1 == stop_epoch:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(callbacks.MetricsLog, "on_epoch_end", log_then_signal)
    root = Path(str(tiny_config).replace("tiny.yaml", "runs")) / "tiny"
    with pytest.raises(KeyboardInterrupt):
        train(load_config(tiny_config, sets), ["nnrun", "train"], Output(console=None, progress=False, epoch_lines=False))
    monkeypatch.setattr(callbacks.MetricsLog, "on_epoch_end", original)
    (run,) = root.iterdir()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "interrupted" and record["reason"].startswith("SIGINT after the last epoch")
    assert record["final_metrics"] == {} and position(run)["epoch"] == stop_epoch
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == list(range(1, stop_epoch + 1))
    res = run_cli("train", "--resume", str(run))
    assert res.returncode == 0, res.stderr
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and metrics(run) == rows  # nothing trained
    assert record["final_metrics"]["val_accuracy"] == rows[-1]["val_accuracy"]
    assert (run / "report.html").is_file()
