"""A new user's trial (issues #16, #13 item 5): interrupted runs name their directory, files keep
the umask, `runs` refuses typos, names say which rule failed, `--set` indexes lists, configs
from stdin, usage lines, the schedule horizon on a longer resume, composition that drops the
params of a replaced component. Only the interrupt tests train (a few tiny batches)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nnrun.config import load_config
from nnrun.errors import ConfigError
from tests.conftest import ROOT, TINY, run_cli

QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def error_of(fn, *args) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args)
    return str(info.value)


# -- 1. an interrupted `nnrun train` prints its run directory and how to resume -------------

@pytest.mark.slow
@pytest.mark.parametrize("sig, code, what", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                             (signal.SIGINT, 130, "interrupted (Ctrl-C)")])
def test_interrupted_train_prints_the_run_dir_last_and_the_resume_command(tmp_path, sig, code, what):
    config = tmp_path / "long.yaml"
    config.write_text(TINY.replace("RUNS", str(tmp_path / "runs")).replace("num_train: 1024", "num_train: 256")
                      .replace("train: {epochs: 3}", "train: {epochs: 50}"))
    proc = subprocess.Popen([sys.executable, "-m", "nnrun", "train", str(config)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, sent = time.time() + 180, False
    while time.time() < deadline and proc.poll() is None:
        if any(p.stat().st_size for p in (tmp_path / "runs").glob("tiny/*/metrics.jsonl")):
            proc.send_signal(sig)  # after the first epoch: training is under way
            sent = True
            break
        time.sleep(0.02)
    out, err = proc.communicate(timeout=180)
    assert sent, err
    assert proc.returncode == code, err
    (run,) = (tmp_path / "runs" / "tiny").iterdir()
    assert out.strip().splitlines()[-1] == str(run)
    assert err.strip().splitlines()[-1] == f"interrupted: {what}; continue with: nnrun train --resume {shlex.quote(str(run))}"
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"


# -- 2. atomic writes keep the umask's permissions ---------------------------------------

@pytest.fixture
def umask():
    """os.umask, with the test process's own umask restored afterwards."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask, mode):
    from nnrun.rundir import RunDir
    from nnrun.results.report import write_report
    from nnrun.sweep import summary

    umask(mask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(plain.stat().st_mode) == mode  # what a neighbouring file gets
    cfg = load_config(_tiny(tmp_path))
    run = RunDir.create(cfg)
    run.start(cfg, ["nnrun", "train"])
    write_report(run.path)

    class FakeSweep:
        directory, swept = tmp_path / "sweep", []

    summary.write(FakeSweep, [])
    written = [run.path / "run.json", run.path / "config.yaml", run.path / "report.html",
               tmp_path / "sweep" / "sweep.csv", tmp_path / "sweep" / "sweep.jsonl"]
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {p.name: oct(mode) for p in written}
    assert not list(tmp_path.rglob(".*.tmp"))


def test_atomic_file_writes_bytes_with_the_umask(tmp_path, umask):
    from nnrun.rundir import atomic_file, atomic_write

    umask(0o022)
    atomic_write(tmp_path / "bytes.bin", b"\x00\x01")
    with atomic_file(tmp_path / "arrays.npz", "wb") as fh:  # what export's reference.npz can use
        np.savez(fh, a=np.arange(3))
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "broken.txt") as fh:
        fh.write("half")
        raise RuntimeError("the writer fails")
    assert (tmp_path / "bytes.bin").read_bytes() == b"\x00\x01"
    assert np.load(tmp_path / "arrays.npz")["a"].tolist() == [0, 1, 2]
    assert [stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "bytes.bin", tmp_path / "arrays.npz")] == [0o644] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.npz", "bytes.bin"]  # no temp file, no broken.txt


def _tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.replace("RUNS", str(tmp_path / "runs")))
    return path


# -- 3. `nnrun runs`: unknown keys, missing root, numbers as shown, comparisons ------------

@pytest.fixture
def two_runs(tmp_path):
    from tests.test_compare import make_run

    root = tmp_path / "runs"
    a = make_run(root, "a", ["seed=0"], {"val_accuracy": 0.66504, "val_loss": 0.7}, "2026-01-01T00:00:01+00:00")
    b = make_run(root, "b", ["seed=1"], {"val_accuracy": 0.9, "val_loss": 0.2}, "2026-01-01T00:00:02+00:00")
    return root, a, b


def test_runs_refuses_unknown_sort_and_filter_keys(two_runs):
    root, _, _ = two_runs
    sort = run_cli("runs", str(root), "--sort", "val_acc")
    assert sort.returncode == 2
    assert sort.stderr.strip() == "error: --sort: unknown key 'val_acc'; did you mean 'val_accuracy'?"
    typo = run_cli("runs", str(root), "--filter", "stauts=completed")
    assert typo.returncode == 2
    assert typo.stderr.strip() == "error: --filter: unknown key 'stauts'; did you mean 'status'?"
    config_key = run_cli("runs", str(root), "--filter", "optimizer.learning_rat=0.01")
    assert config_key.returncode == 2 and "did you mean 'optimizer.learning_rate'?" in config_key.stderr
    missing = run_cli("runs", str(root / "nonexistent"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: no such directory: {root / 'nonexistent'}"
    assert missing.stdout == ""


def test_runs_filters_numbers_at_the_shown_precision_and_with_comparisons(two_runs):
    root, a, b = two_runs

    def listed(*filters: str) -> list[str]:
        res = run_cli("runs", str(root), *(x for f in filters for x in ("--filter", f)), "--json")
        assert res.returncode == 0, res.stderr
        return [r["path"] for r in json.loads(res.stdout)]

    table = run_cli("runs", str(root))
    assert "0.6650" in table.stdout  # what the user sees ...
    assert listed("val_accuracy=0.665") == [str(a)]  # ... is what they can filter on
    assert listed("val_accuracy=0.6650", "seed=0") == [str(a)]
    assert listed("val_accuracy>=0.9") == [str(b)]
    assert listed("val_accuracy>0.665") == [str(b)]
    assert listed("val_accuracy<=0.665") == [str(a)]
    assert listed("val_loss<0.5") == [str(b)]
    assert listed("val_accuracy!=0.665") == [str(b)]
    assert listed("name!=a") == [str(b)]
    assert listed("optimizer.learning_rate>=1e-2") == [str(b), str(a)]
    bad = run_cli("runs", str(root), "--filter", "val_accuracy>high")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --filter 'val_accuracy>high': > compares numbers, got 'high'"


# -- 4. names say which rule they break ---------------------------------------------------

def test_name_errors_say_which_rule_failed(tmp_path):
    from nnrun.sweep.sweep_file import load_spec

    path = _tiny(tmp_path)
    long = "x" * 70
    assert error_of(load_config, path, [f"name={long}"]) == \
        "name: 'xxxxxxxxxxxxxxxxxxxxx...' is not allowed: it is 70 characters; the limit is 64"
    assert error_of(load_config, path, ["name=café"]) == \
        "name: 'café' is not allowed: 'é' is not an ASCII letter, digit, '.', '_' or '-'"
    assert error_of(load_config, path, ["name=-x"]) == \
        "name: '-x' is not allowed: a name starts with a letter or digit, not '-'"
    assert "(names are never paths)" in error_of(load_config, path, ["name=a/b"])
    load_config(path, ["name=" + "x" * 64])  # the limit itself is fine
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: café\nbase: tiny.yaml\ngrid: {seed: [0, 1]}\n")
    assert "'é' is not an ASCII letter" in error_of(load_spec, sweep)


# -- 5. --set indexes lists -----------------------------------------------------------------

def test_set_indexes_into_lists():
    cfg = load_config(QUICKSTART, ["model.params.stages.1=8"])
    assert cfg.model.params["stages"] == [16, 8, 64]
    assert load_config(QUICKSTART, ["model.params.stages=[1, 2]", "model.params.stages.0=4"]).model.params["stages"] == [4, 2]
    assert error_of(load_config, QUICKSTART, ["model.params.stages.3=8"]) == \
        "--set 'model.params.stages.3=8': model.params.stages has 3 entries (indexes 0-2); 3 is out of range"
    assert "model.params.stages is a list; index it with a number" in error_of(
        load_config, QUICKSTART, ["model.params.stages.first=8"])
    assert "model.params.stem is not a list in the config" in error_of(load_config, QUICKSTART, ["model.params.stem.0=x"])


def test_set_indexes_a_list_that_only_has_its_default(write_yaml):
    path = write_yaml(QUICKSTART.read_text().replace("params: {stages: [16, 32, 64], blocks_per_stage: 1}", "params: {}"))
    assert load_config(path, ["model.params.stages.0=4"]).model.params["stages"] == [4, 32, 64]  # resnet's default


# -- 6. configs from stdin ------------------------------------------------------------------

def test_validate_and_train_read_the_config_from_stdin(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY.replace("RUNS", str(tmp_path / "runs")))
    child = "base: tiny.yaml\nname: from-stdin\n"  # relative to the current directory
    res = subprocess.run([sys.executable, "-m", "nnrun", "validate", "-", "--print"], input=child, cwd=tmp_path,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("name: from-stdin\n") and "image_size: 16" in res.stdout
    bad = subprocess.run([sys.executable, "-m", "nnrun", "train", "-"], input=child + "train: {epochz: 1}\n",
                         cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert bad.returncode == 2
    assert bad.stderr.strip() == "config error: train.epochz: unknown key 'epochz'; did you mean 'epochs'?"
    assert not (tmp_path / "runs").exists()


# -- 7. "(and 1 more)" says what the other error is -----------------------------------------

def test_two_errors_are_both_named():
    message = error_of(load_config, QUICKSTART, ["train.epochs=0", "train.max_rollbacks=-1"])
    assert message == ("train.epochs: expected a value > 0, got 0 "
                       "(and train.max_rollbacks: expected a value >= 0, got -1)")
    three = error_of(load_config, QUICKSTART, ["train.epochs=0", "train.max_rollbacks=-1", "seed=-1"])
    assert three.endswith("(and 2 more)")


# -- 8. usage lines name positional arguments in capitals ----------------------------------

@pytest.mark.parametrize("command, usage", [
    ("explain", "nnrun explain [OPTIONS] RUN_DIR"), ("evaluate", "nnrun evaluate [OPTIONS] RUN_DIR"),
    ("export", "nnrun export [OPTIONS] RUN_DIR"), ("report", "nnrun report [OPTIONS] RUN_DIR"),
    ("train", "nnrun train [OPTIONS] [CONFIG]"), ("validate", "nnrun validate [OPTIONS] CONFIG"),
    ("runs", "nnrun runs [OPTIONS] [ROOT]"), ("sweep", "nnrun sweep [OPTIONS] SWEEP_FILE"),
    ("compare", "nnrun compare [OPTIONS] RUN_DIR..."), ("components", "nnrun components [OPTIONS] [KIND]"),
])
def test_usage_lines_show_metavars(command, usage):
    from typer.testing import CliRunner

    from nnrun.cli import app

    res = CliRunner().invoke(app, [command, "--help"], prog_name="nnrun")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == f"Usage: {usage}"


def test_every_command_usage_line_is_free_of_braces():
    """Commands added later need @app.command(cls=Command) and metavar= on their arguments."""
    import typer
    from typer.testing import CliRunner

    from nnrun.cli import app

    names = sorted(typer.main.get_command(app).commands)
    assert {"train", "runs", "explain"} <= set(names)
    for name in names:
        usage = CliRunner().invoke(app, [name, "--help"], prog_name="nnrun").output.splitlines()[0]
        assert usage.startswith(f"Usage: nnrun {name} [OPTIONS]") and "{" not in usage and "...." not in usage, usage
        arguments = [word.strip("[].") for word in usage.split()[4:]]
        assert all(arg == arg.upper() for arg in arguments), usage


# -- 9. training a finished run longer keeps the learning-rate schedule's horizon ------------

def _finished_run(tmp_path: Path, schedule: str):
    from nnrun.rundir import RunDir

    cfg = load_config(_tiny(tmp_path), [f"optimizer.schedule={schedule}", "train.epochs=2"])
    run = RunDir.create(cfg)
    run.start(cfg, ["nnrun", "train"])
    run.finish("completed", final_metrics={"val_accuracy": 0.5})
    (run.checkpoints / "backup").mkdir(parents=True)
    np.savez(run.checkpoints / "backup" / "state.npz", position=np.array(json.dumps({"epoch": 2, "step": 0})))
    return run


def test_longer_resume_keeps_the_schedule_horizon(tmp_path):
    from nnrun.engine.build import build_optimizer
    from nnrun.engine.resume import prepare_resume, record_changes

    run = _finished_run(tmp_path, "{name: cosine, params: {min_lr_ratio: 0.1}}")
    notes: list[str] = []
    _, cfg, changes = prepare_resume(run.path, None, ["train.epochs=4"], ["train.epochs"], say=notes.append)
    assert changes == ["train.epochs"]
    assert cfg.optimizer.schedule.epochs == 2 and cfg.train.epochs == 4
    assert notes == ["learning-rate schedule cosine keeps its horizon of 2 epochs (optimizer.schedule.epochs: 2); "
                     "epochs 3-4 train at its final learning rate 0.001 (min_lr_ratio 0.1); to stretch it over 4 "
                     "epochs instead: --set optimizer.schedule.epochs=4 --allow-change optimizer.schedule.epochs"]
    steps = 1024 // 64
    schedule = build_optimizer(cfg, 1024)._learning_rate  # the LearningRateSchedule, read at given steps
    at = {e: float(schedule(e * steps)) for e in (0, 2, 3, 4)}
    assert at[0] == pytest.approx(0.01) and at[2] == at[3] == at[4] == pytest.approx(0.001)  # no jump back up
    record_changes(run, cfg, changes)
    assert run.read()["lr_schedule_epochs"] == 2
    assert "epochs: 2" in (run.path / "config.yaml").read_text()
    # a later resume from the rewritten config keeps the pin without being asked to allow it
    run.update(status="completed")
    np.savez(run.checkpoints / "backup" / "state.npz", position=np.array(json.dumps({"epoch": 4, "step": 0})))
    _, again, changes = prepare_resume(run.path, _tiny(tmp_path), ["optimizer.schedule={name: cosine, params: {min_lr_ratio: 0.1}}",
                                                                   "train.epochs=6"], ["train.epochs"])
    assert changes == ["train.epochs"] and again.optimizer.schedule.epochs == 2
    # asked for explicitly: the schedule stretches over the new epoch count
    _, stretched, _ = prepare_resume(run.path, None, ["train.epochs=6", "optimizer.schedule.epochs=6"],
                                     ["train.epochs", "optimizer.schedule.epochs"])
    assert stretched.optimizer.schedule.epochs == 6
    assert float(build_optimizer(stretched, 1024)._learning_rate(3 * steps)) == pytest.approx(
        0.001 + 0.009 * 0.5 * (1 + np.cos(np.pi * 3 / 6)), rel=1e-5)


def test_longer_resume_refuses_epochs_at_learning_rate_zero(tmp_path):
    from nnrun.engine.resume import prepare_resume

    run = _finished_run(tmp_path, "warmup_cosine")  # min_lr_ratio 0: ends at learning rate 0
    message = error_of(prepare_resume, run.path, None, ["train.epochs=4"], ["train.epochs"])
    assert message == (
        "train.epochs: epochs 3-4 would train at learning rate 0: on a resume warmup_cosine keeps its horizon of "
        "2 epochs, and it ends at min_lr_ratio 0. Stretch it over 4 epochs (--set optimizer.schedule.epochs=4 "
        "--allow-change optimizer.schedule.epochs) or give it a floor (--set optimizer.schedule.params.min_lr_ratio=0.1 "
        "--allow-change optimizer.schedule.params.min_lr_ratio)")
    _, floor, _ = prepare_resume(run.path, None, ["train.epochs=4", "optimizer.schedule.params.min_lr_ratio=0.1"],
                                 ["train.epochs", "optimizer.schedule.params.min_lr_ratio"])
    assert floor.optimizer.schedule.epochs == 2


def test_constant_schedule_is_not_pinned(tmp_path):
    from nnrun.engine.resume import prepare_resume

    run = _finished_run(tmp_path, "constant")
    notes: list[str] = []
    _, cfg, _ = prepare_resume(run.path, None, ["train.epochs=4"], ["train.epochs"], say=notes.append)
    assert cfg.optimizer.schedule.epochs is None and notes == []


# -- 10. a replaced component does not inherit the old one's params -----------------------

def test_base_that_changes_a_component_drops_its_params(tmp_path, write_yaml):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((8, 4, 4, 3), "uint8"), y_train=np.arange(8) % 2,
             x_val=np.zeros((4, 4, 4, 3), "uint8"), y_val=np.arange(4) % 2)
    path = write_yaml(f"""\
        base: {QUICKSTART}
        data: {{dataset: npz, params: {{path: d.npz}}}}
        loss: {{name: focal}}
        optimizer: {{schedule: {{name: cosine}}}}
        model: {{params: {{blocks_per_stage: 2}}}}
        """)
    cfg = load_config(path)
    assert cfg.data.dataset == "npz" and cfg.data.params["path"] == "d.npz" and cfg.data.batch_size == 64
    assert "num_train" not in cfg.data.params
    assert cfg.loss.name == "focal" and cfg.loss.params["label_smoothing"] == 0.0  # not the base's 0.05
    assert cfg.optimizer.schedule.name == "cosine" and "warmup_epochs" not in cfg.optimizer.schedule.params
    assert cfg.model.params["stages"] == [16, 32, 64] and cfg.model.params["blocks_per_stage"] == 2  # same name: merged


def test_set_that_changes_a_component_drops_its_params():
    cfg = load_config(QUICKSTART, ["model.name=transformer"])
    assert cfg.model.name == "transformer" and "stages" not in cfg.model.params
    kept = load_config(QUICKSTART, ["model.params.dim=32", "model.name=transformer", "model.params.num_layers=1"])
    assert kept.model.params["dim"] == 32 and kept.model.params["num_layers"] == 1  # written for the new one
    same = load_config(QUICKSTART, ["model.name=resnet"])
    assert same.model.params["stages"] == [16, 32, 64]
    assert load_config(QUICKSTART, ["optimizer.schedule.name=cosine"]).optimizer.schedule.params == {"min_lr_ratio": 0.0}


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`nnrun schema | head -n 1`: the reader closes the pipe; nnrun stops with the SIGPIPE status
    (141) and no "internal error" line or traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "nnrun", "schema"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # the schema (about 75 KB) is larger than a pipe's buffer
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert first.startswith(b"{") and err == ""
