"""`nnrun sweep`: spec expansion and validation (no TensorFlow), then real sweeps of tiny trials."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, TINY, run_cli

# Shared by every trial of the sweeps below: the cheapest valid training (about 2 s plus the
# TensorFlow import per trial).
CHEAP = """\
set:
  data.params: {num_train: 128, num_val: 32, image_size: 8, min_scale: 0.5, max_scale: 0.9}
  model.params.stages: [4]
  train.epochs: 1
"""


def make_sweep(tmp: Path, body: str, extra_set: str = "") -> Path:
    """tmp/tiny.yaml (the TINY config) and tmp/sweep.yaml over it; `extra_set` adds shared overrides."""
    (tmp / "tiny.yaml").write_text(TINY.replace("RUNS", str(tmp / "runs")))
    path = tmp / "sweep.yaml"
    path.write_text("base: tiny.yaml\n" + CHEAP + extra_set + textwrap.dedent(body))
    return path


def jsonl(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "sweep.jsonl").read_text().splitlines()]


def run_dirs(directory: Path) -> list[Path]:
    return sorted(p.parent for p in directory.rglob("run.json"))


# -- spec (no TensorFlow) ----------------------------------------------------------------------

def test_grid_zip_random_and_seeds_multiply(tmp_path):
    from nnrun.config import load_config
    from nnrun.config.schema import NAME_PATTERN
    from nnrun.sweep import load_sweep

    path = make_sweep(tmp_path, """\
        grid: {optimizer.learning_rate: [0.01, 0.02], model.params.stages: [[4], [8, 16]]}
        zip: {data.batch_size: [32, 64], optimizer.name: [adam, sgd]}
        random:
          samples: 3
          seed: 7
          params:
            optimizer.weight_decay: {loguniform: [1.0e-5, 1.0e-3]}
            loss.params.label_smoothing: {uniform: [0, 0.2]}
            model.params.block: {choice: [basic, bottleneck]}
        seeds: [0, 1]
    """, extra_set="  loss: {name: crossentropy}\n")
    sweep = load_sweep(path)
    assert len(sweep.trials) == 2 * 2 * 2 * 3 * 2
    assert sweep.swept == ["optimizer.learning_rate", "model.params.stages", "data.batch_size", "optimizer.name",
                           "optimizer.weight_decay", "loss.params.label_smoothing", "model.params.block", "seed"]
    assert sweep.directory == tmp_path / "runs" / "sweeps" / "sweep"
    names = [t.name for t in sweep.trials]
    assert len(set(names)) == len(names) and all(re.match(NAME_PATTERN, n) for n in names)
    assert names[0].startswith("learning_rate-0.01_stages-4_batch_size-32_optimizer-adam")
    assert max(len(n) for n in names) <= 64
    # the grid is a full product, zip pairs its lists, seeds repeat each configuration
    combos = {(t.overrides["optimizer.learning_rate"], tuple(t.overrides["model.params.stages"])) for t in sweep.trials}
    assert combos == {(0.01, (4,)), (0.02, (4,)), (0.01, (8, 16)), (0.02, (8, 16))}
    assert {(t.overrides["data.batch_size"], t.overrides["optimizer.name"]) for t in sweep.trials} == {
        (32, "adam"), (64, "sgd")}
    samples = {(t.overrides["optimizer.weight_decay"], t.overrides["loss.params.label_smoothing"]) for t in sweep.trials}
    assert len(samples) == 3
    for wd, ls in samples:
        assert 1e-5 <= wd <= 1e-3 and 0 <= ls <= 0.2
    # each trial's resolved config is what `nnrun train BASE --set ...` resolves
    trial = sweep.trials[5]
    cfg = load_config(sweep.base, trial.set_args)
    assert cfg == trial.config
    assert cfg.name == trial.name and cfg.runtime.runs_root == str(sweep.directory)
    assert cfg.optimizer.learning_rate == trial.overrides["optimizer.learning_rate"]
    assert cfg.seed == trial.overrides["seed"] and cfg.train.epochs == 1
    # the same seed draws the same random trials; another seed draws others
    assert [t.overrides for t in load_sweep(path).trials] == [t.overrides for t in sweep.trials]
    path.write_text(path.read_text().replace("seed: 7", "seed: 8"))
    assert {t.overrides["optimizer.weight_decay"] for t in load_sweep(path).trials} != {wd for wd, _ in samples}


def test_loguniform_samples_spread_over_decades(tmp_path):
    from nnrun.sweep import load_sweep

    path = make_sweep(tmp_path, """\
        random: {samples: 200, seed: 0, params: {optimizer.learning_rate: {loguniform: [1.0e-5, 1.0e-1]}}}
    """)
    values = [t.overrides["optimizer.learning_rate"] for t in load_sweep(path).trials]
    assert min(values) >= 1e-5 and max(values) <= 1e-1
    decades = [sum(10.0**d <= v < 10.0 ** (d + 1) for v in values) for d in range(-5, -1)]
    assert all(25 <= n <= 75 for n in decades), decades  # ~50 per decade, not bunched near 0.1


@pytest.mark.parametrize("value", [0.001, 1e-05, 3, [8, 16], "adam", "yes", "1e-3", "", True, None, {"a": [1, 2]}])
def test_set_values_round_trip_through_the_config_loader(value):
    from nnrun.config.loader import apply_overrides
    from nnrun.config import set_value

    assert apply_overrides({}, [f"x={set_value(value)}"])["x"] == value


@pytest.mark.parametrize(
    "body, message",
    [
        ("zip: {optimizer.learning_rate: [0.1, 0.2], seed: [1]}\n", "zip: lists must have equal lengths"),
        ("grid: {optimizer.learning_rate: [0.01, -1]}\n",
         "trial learning_rate--1: optimizer.learning_rate: expected a value > 0, got -1"),
        ("grid: {model.params.depth: [1, 2]}\n", "trial depth-1: model.params.depth: unknown key 'depth'"),
        ("random: {samples: 3, params: {optimizer.name: {choice: [adam, sgd]}}}\n", "cannot draw 3 distinct samples"),
        ("grid: {name: [a, b]}\n", "grid: name is set by the sweep itself"),
        ("gird: {seed: [1, 2]}\n", "unknown key 'gird'; did you mean 'grid'?"),
        ("grid: {seed: [1, 2]}\nseeds: [3]\n", "seed appears in both grid and seeds"),
        ("random: {samples: 2, params: {optimizer.learning_rate: {loguniform: [0, 1]}}}\n", "loguniform needs low > 0"),
        ("grid: {optimizer.learning_rate: []}\n", "optimizer.learning_rate: needs at least one value"),
    ],
)
def test_bad_sweep_exits_2_with_one_line_and_creates_nothing(tmp_path, body, message):
    path = make_sweep(tmp_path, body)
    res = run_cli("sweep", str(path), cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: ") and message in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_print_commands_are_train_commands_for_every_trial(tmp_path):
    from nnrun.config import load_config
    from nnrun.sweep import load_sweep

    path = make_sweep(tmp_path, "grid: {optimizer.learning_rate: [0.01, 0.02]}\nseeds: [0, 1, 2]\n")
    res = run_cli("sweep", str(path), "--print-commands", "--jobs", "2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    sweep = load_sweep(path)
    assert len(lines) == 6 and not (tmp_path / "runs").exists()
    for line, trial in zip(lines, sweep.trials):
        argv = shlex.split(line)
        assert argv[:3] == ["nnrun", "train", str(sweep.base)]
        sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        assert f"name={trial.name}" in sets and f"runtime.threads={max(1, len(os.sched_getaffinity(0)) // 2)}" in sets
        assert load_config(argv[2], sets).model_copy(update={"runtime": trial.config.runtime}) == trial.config


def test_slots_threads_and_gpu_environment(monkeypatch):
    from nnrun.sweep.runner import detect_gpus, plan_slots, trial_env

    assert plan_slots(4, 8, []) == ([None] * 4, 2)
    assert plan_slots(3, 2, []) == ([None] * 3, 1)
    assert plan_slots(4, 8, ["0", "3"]) == (["0", "3"], 4)  # one trial per GPU
    env = trial_env(2, "3")
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")
    assert detect_gpus() == ["0", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert detect_gpus() == []


# -- real sweeps (each trial is a TensorFlow process) ------------------------------------------

@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    path = make_sweep(tmp, """\
        name: grid
        grid: {optimizer.learning_rate: [0.01, 0.02], model.params.stages: [[4], [6]]}
        seeds: [0, 1]
    """)
    res = run_cli("sweep", str(path), "--jobs", "2", cwd=tmp)
    return path, tmp / "runs" / "sweeps" / "grid", res


@pytest.mark.slow
def test_grid_with_seeds_runs_8_trials_two_at_a_time(grid_sweep):
    _, directory, res = grid_sweep
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(directory)
    assert "8 to run, 2 at a time" in res.stderr
    rows = jsonl(directory)
    assert len(rows) == 8 and {r["status"] for r in rows} == {"completed"} and {r["action"] for r in rows} == {"ran"}
    runs = run_dirs(directory)
    assert len(runs) == 8 and {r.parent.name for r in runs} == {r["trial"] for r in rows}
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    for row in rows:
        run = Path(row["run_dir"])
        record = json.loads((run / "run.json").read_text())
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert record["status"] == "completed" and record["final_metrics"] == row["final_metrics"]
        assert config["runtime"]["threads"] == threads and config["runtime"]["runs_root"] == str(directory)
        assert config["optimizer"]["learning_rate"] == row["overrides"]["optimizer.learning_rate"]
        assert config["model"]["params"]["stages"] == row["overrides"]["model.params.stages"]
        assert config["seed"] == row["overrides"]["seed"]
        assert (run / "report.html").is_file()
    # two trials overlap in time (--jobs 2)
    spans = sorted((json.loads((r / "run.json").read_text())["started_at"],
                    json.loads((r / "run.json").read_text())["ended_at"]) for r in runs)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))
    with open(directory / "sweep.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 8 and {"trial", "optimizer.learning_rate", "model.params.stages", "seed", "status",
                                "val_accuracy", "wall_time_s", "run_dir"} <= set(table[0])
    assert (directory / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the final table is sorted by the metric (train.monitor: val_accuracy), best first
    shown = [line.split("│")[1].strip() for line in res.stdout.splitlines() if line.startswith("│")]
    best = sorted(rows, key=lambda r: -r["final_metrics"]["val_accuracy"])
    assert [r["final_metrics"]["val_accuracy"] for r in rows if r["trial"] == shown[0]] == [
        best[0]["final_metrics"]["val_accuracy"]]


@pytest.mark.slow
def test_rerun_skips_all_completed_trials(grid_sweep):
    path, directory, first = grid_sweep
    assert first.returncode == 0, first.stderr
    res = run_cli("sweep", str(path), "--jobs", "2", cwd=path.parent)
    assert res.returncode == 0, res.stderr
    assert "8 already completed, 0 to run" in res.stderr
    assert len(run_dirs(directory)) == 8
    assert {r["action"] for r in jsonl(directory)} == {"skipped"}
    assert res.stdout.count("completed (skipped)") == 8


@pytest.mark.slow
def test_runs_filter_sort_and_compare_on_sweep_runs(grid_sweep):
    _, directory, first = grid_sweep
    assert first.returncode == 0, first.stderr
    res = run_cli("runs", str(directory), "--filter", "seed=1", "--filter", "optimizer.learning_rate=1e-2",
                  "--sort", "val_loss", "--json")
    assert res.returncode == 0, res.stderr
    records = json.loads(res.stdout)
    assert len(records) == 2 and {Path(r["path"]).parent.name for r in records} == {
        "learning_rate-0.01_stages-4_seed-1", "learning_rate-0.01_stages-6_seed-1"}
    losses = [r["final_metrics"]["val_loss"] for r in records]
    assert losses == sorted(losses)
    pair = [r["path"] for r in records]
    res = run_cli("compare", *pair, "--json")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert set(result["config"]) == {"name", "model.params.stages"}
    assert result["config"]["model.params.stages"] in ([[4], [6]], [[6], [4]])
    assert result["metrics"]["val_loss"] == losses


@pytest.mark.slow
def test_failing_trial_is_reported_with_exit_1_and_retried_on_rerun(tmp_path):
    # lr 1e30 validates (any lr > 0 is a valid config) but the loss blows up in the first batch
    path = make_sweep(tmp_path, "name: fail\nzip: {optimizer.learning_rate: [0.01, 1.0e+30, 0.02]}\n",
                      extra_set="  optimizer.name: sgd\n")
    directory = tmp_path / "runs" / "sweeps" / "fail"
    res = run_cli("sweep", str(path), "--jobs", "3", cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(directory)
    assert "run failed: 1 of 3 trials did not complete (learning_rate-1e30)" in res.stderr
    rows = {r["trial"]: r for r in jsonl(directory)}
    assert rows["learning_rate-1e30"]["status"] == "failed"
    assert "non-finite loss" in rows["learning_rate-1e30"]["reason"]
    assert rows["learning_rate-0.01"]["status"] == rows["learning_rate-0.02"]["status"] == "completed"
    # re-running keeps the completed trials and retries the failed one (in a new run directory)
    again = run_cli("sweep", str(path), cwd=tmp_path)
    assert again.returncode == 1
    assert "2 already completed, 1 to run" in again.stderr
    rows = {r["trial"]: r for r in jsonl(directory)}
    assert rows["learning_rate-1e30"]["action"] == "ran" and rows["learning_rate-0.01"]["action"] == "skipped"
    assert len(list((directory / "learning_rate-1e30").glob("*/run.json"))) == 2


@pytest.mark.slow
def test_fail_fast_stops_at_the_first_failure(tmp_path):
    path = make_sweep(tmp_path, "name: ff\nzip: {optimizer.learning_rate: [1.0e+30, 0.01, 0.02]}\n",
                      extra_set="  optimizer.name: sgd\n")
    res = run_cli("sweep", str(path), "--fail-fast", cwd=tmp_path)
    assert res.returncode == 1
    directory = tmp_path / "runs" / "sweeps" / "ff"
    statuses = [(r["status"], r["action"]) for r in jsonl(directory)]
    assert statuses == [("failed", "ran"), ("not run", "not started"), ("not run", "not started")]
    assert len(run_dirs(directory)) == 1


@pytest.mark.slow
def test_printed_commands_run_by_the_shell_make_the_same_runs(tmp_path):
    path = make_sweep(tmp_path, "name: printed\nzip: {optimizer.learning_rate: [0.01, 0.02]}\n")
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    printed = run_cli("sweep", str(path), "--print-commands", "--jobs", "2", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    # as documented: one command per line, two at a time through xargs
    shell = subprocess.run(["xargs", "-d", "\n", "-n", "1", "-P", "2", "sh", "-c"], input=printed.stdout,
                           cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert shell.returncode == 0, shell.stderr
    directory = tmp_path / "runs" / "sweeps" / "printed"
    assert len(run_dirs(directory)) == 2
    # the sweep recognises them as its own trials: nothing left to run
    res = run_cli("sweep", str(path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "2 already completed, 0 to run" in res.stderr
    assert [r["action"] for r in jsonl(directory)] == ["skipped", "skipped"]


@pytest.mark.slow
def test_shell_for_loop_script_works_as_documented(tmp_path):
    config = make_sweep(tmp_path, "").parent / "tiny.yaml"
    res = subprocess.run(
        ["sh", str(ROOT / "scripts" / "sweep_shell.sh"), str(config), "--set", "train.epochs=1",
         "--set", "data.params.num_train=128", "--set", "data.params.image_size=8", "--set", "model.params.stages=[4]"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NNRUN": str(Path(sys.executable).parent / "nnrun"), "LRS": "0.01 0.02", "SEEDS": "3",
             "ROOT": str(tmp_path / "shell-sweep")},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    runs = run_dirs(tmp_path / "shell-sweep")
    assert len(runs) == 2
    configs = [yaml.safe_load((r / "config.yaml").read_text()) for r in runs]
    assert sorted(c["optimizer"]["learning_rate"] for c in configs) == [0.01, 0.02]
    assert {c["seed"] for c in configs} == {3}
    assert all(str(r) in res.stdout for r in runs)


def test_sweep_plugins_reach_validation_and_every_trial(tmp_path):
    plugin = tmp_path / "sched_plugin.py"
    plugin.write_text(
        "from nnrun.registry import register, NoParams\n"
        "@register('schedule', 'flat', NoParams)\n"
        "def build(p, base_lr, steps_per_epoch, epochs):\n"
        "    '''A user schedule.'''\n"
        "    return base_lr\n"
    )
    path = make_sweep(tmp_path, "grid: {optimizer.schedule: [flat, constant]}\n")
    without = run_cli("sweep", str(path), "--print-commands", cwd=tmp_path)
    assert without.returncode == 2 and "unknown schedule 'flat'" in without.stderr
    res = run_cli("sweep", str(path), "--print-commands", "--plugin", str(plugin), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all(shlex.split(line)[3:5] == ["--plugin", str(plugin.resolve())] for line in lines)
