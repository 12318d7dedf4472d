"""`nnrun runs --filter/--sort` and `nnrun compare` on run directories (no TensorFlow: the runs
are written with the engine's own RunDir, as training would leave them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY, run_cli


def make_run(root: Path, name: str, sets: list[str], final: dict, started: str, status: str = "completed") -> Path:
    from nnrun.config import load_config
    from nnrun.rundir import RunDir

    base = root.parent / "tiny.yaml"
    base.write_text(TINY.replace("RUNS", str(root)))
    cfg = load_config(base, [*sets, f"name={name}"])
    run = RunDir.create(cfg)
    run.start(cfg, ["nnrun", "train", str(base)])
    run.finish(status, final_metrics=final)
    run.update(started_at=started)
    return run.path


@pytest.fixture
def runs(tmp_path):
    """Four runs: two learning rates x two seeds, plus one failed run without metrics."""
    root = tmp_path / "runs"
    made = {
        "a": make_run(root, "lr", ["optimizer.learning_rate=1e-3", "seed=0"],
                      {"val_accuracy": 0.80, "val_loss": 0.50}, "2026-01-01T00:00:01+00:00"),
        "b": make_run(root, "lr", ["optimizer.learning_rate=1e-2", "seed=0"],
                      {"val_accuracy": 0.90, "val_loss": 0.40}, "2026-01-01T00:00:02+00:00"),
        "c": make_run(root, "lr", ["optimizer.learning_rate=1e-3", "seed=1"],
                      {"val_accuracy": 0.70, "val_loss": 0.30}, "2026-01-01T00:00:03+00:00"),
        "d": make_run(root, "wide", ["model.params.stages=[16, 32]", "optimizer.name=sgd"],
                      {}, "2026-01-01T00:00:04+00:00", status="failed"),
    }
    return root, made


def listed(root: Path, *args: str) -> list[str]:
    res = run_cli("runs", str(root), *args, "--json")
    assert res.returncode == 0, res.stderr
    records = json.loads(res.stdout)
    assert all(not k.startswith("_") for r in records for k in r)  # no private caches leak
    return [r["path"] for r in records]


def test_runs_default_order_is_newest_first(runs):
    root, made = runs
    assert listed(root) == [str(made[k]) for k in "dcba"]


@pytest.mark.parametrize(
    "filters, expected",
    [
        (["status=completed"], "cba"),
        (["status=failed"], "d"),
        (["optimizer.learning_rate=0.001"], "ca"),  # a config key, compared as a number
        (["optimizer.learning_rate=1e-3", "seed=1"], "c"),  # every filter must match
        (["model.params.stages=[16, 32]"], "d"),  # YAML values: lists too
        (["optimizer.name=sgd"], "d"),
        (["name=l*"], "cba"),  # wildcards on strings
        (["val_accuracy=0.9"], "b"),  # a final metric
        (["val_accuracy=0.5"], ""),  # a known key that no run matches (an unknown key is an error)
        (["val_accuracy>=0.8"], "ba"),  # comparisons; runs without the metric never match
        (["seed!=0"], "dc"),  # d keeps the base seed 1
    ],
)
def test_runs_filter(runs, filters, expected):
    root, made = runs
    args = [a for f in filters for a in ("--filter", f)]
    assert listed(root, *args) == [str(made[k]) for k in expected]


def test_runs_sort_best_first_and_missing_last(runs):
    root, made = runs
    assert listed(root, "--sort", "val_accuracy") == [str(made[k]) for k in "bacd"]  # higher is better
    assert listed(root, "--sort", "val_loss") == [str(made[k]) for k in "cbad"]  # lower is better
    assert listed(root, "--sort", "val_loss", "--reverse") == [str(made[k]) for k in "abcd"]
    assert listed(root, "--sort", "optimizer.learning_rate", "--filter", "seed=0") == [str(made[k]) for k in "ba"]


def test_runs_table_shows_the_sort_column(runs):
    root, made = runs
    res = run_cli("runs", str(root), "--sort", "optimizer.learning_rate", "--filter", "status=completed")
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if "│" in line]
    assert "optimizer.learning_rate" in res.stdout
    assert [made[k].name in lines[i] for i, k in enumerate("bca")] == [True, True, True]
    assert "0.0100" in lines[0] and "failed" not in res.stdout
    none = run_cli("runs", str(root), "--filter", "status=running")
    assert none.returncode == 0 and "no runs under" in none.stdout and "status=running" in none.stdout
    bad = run_cli("runs", str(root), "--filter", "status")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --filter 'status': expected KEY=VALUE, e.g. status=completed or optimizer.name=adam"


def test_compare_json_lists_only_differing_keys(runs):
    _, made = runs
    res = run_cli("compare", str(made["a"]), str(made["b"]), str(made["d"]), "--json")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["runs"] == [str(made[k]) for k in "abd"]
    assert result["config"] == {
        "model.params.stages": [[8, 16], [8, 16], [16, 32]],
        "name": ["lr", "lr", "wide"],
        "optimizer.learning_rate": [0.001, 0.01, 0.01],
        "optimizer.name": ["adam", "adam", "sgd"],
        "optimizer.params.amsgrad": [False, False, None],  # sgd has other params: absent is null
        "optimizer.params.beta_1": [0.9, 0.9, None],
        "optimizer.params.beta_2": [0.999, 0.999, None],
        "optimizer.params.epsilon": [1e-7, 1e-7, None],
        "optimizer.params.momentum": [None, None, 0.9],
        "optimizer.params.nesterov": [None, None, True],
        "seed": [0, 0, 1],  # TINY's seed
    }
    assert result["metrics"]["status"] == ["completed", "completed", "failed"]
    assert result["metrics"]["val_accuracy"] == [0.8, 0.9, None]


def test_compare_table_and_directory_expansion(runs):
    root, made = runs
    res = run_cli("compare", str(root / "lr"))  # a directory of runs compares them all
    assert res.returncode == 0, res.stderr
    assert "config differences" in res.stdout and "final metrics" in res.stdout
    rows = {line.split("│")[1].strip(): line for line in res.stdout.splitlines() if line.startswith("│")}
    assert set(rows) >= {"optimizer.learning_rate", "seed", "status", "val_accuracy", "val_loss"}
    assert "name" not in rows  # the same in all three
    for run in made.values():
        if run.parent.name == "lr":
            assert run.name in res.stdout
    assert "0.8000" in rows["val_accuracy"] and "0.9000" in rows["val_accuracy"]


def test_compare_needs_two_runs(runs, tmp_path):
    _, made = runs
    res = run_cli("compare", str(made["a"]))
    assert res.returncode == 2 and "at least two runs" in res.stderr
    res = run_cli("compare", str(made["a"]), str(tmp_path / "nope"))
    assert res.returncode == 2 and "not a run directory" in res.stderr


def test_wall_time_of_a_resumed_run_leaves_out_the_downtime(tmp_path):
    import datetime as dt
    import time

    from nnrun.rundir import RunDir

    path = make_run(tmp_path / "runs", "w", [], {}, "2026-01-01T00:00:00+00:00", status="running")
    run = RunDir(path)
    now = time.time()
    iso = dt.datetime.fromtimestamp(now - 1000, dt.timezone.utc).isoformat()
    run.update(status="running", attempt_started_at=iso, wall_time_s=None)  # killed 1000 s ago
    run.resume_attempt(["nnrun", "train", "--resume"], last_progress=now - 1000 + 30)  # last backup after 30 s
    assert run.read()["prior_time_s"] == 30
    run.finish("interrupted", reason="SIGINT")
    assert 30 <= run.read()["wall_time_s"] < 35  # not ~1000
    run.update(attempt_started_at=dt.datetime.fromtimestamp(now - 500, dt.timezone.utc).isoformat())
    wall = run.read()["wall_time_s"]
    run.resume_attempt(["nnrun", "train", "--resume"], last_progress=None)  # a finished attempt counts as logged
    assert run.read()["prior_time_s"] == wall
    run.finish("completed")
    record = run.read()
    assert wall <= record["wall_time_s"] < wall + 5 and len(record["resumes"]) == 2
