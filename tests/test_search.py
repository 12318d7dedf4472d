"""`nnrun sweep` with a `search:` block (Optuna): the spec (no TensorFlow), a warm worker with
pruning and exact per-trial reproducibility, a crashing trial, and two workers on one
PostgreSQL study, one of them killed mid-trial."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, TINY, run_cli

# Every trial: a tiny ResNet on 16 px shapes, a few seconds of training.
CHEAP = """\
set:
  data.params: {num_train: 1024, num_val: 128, image_size: 16, min_scale: 0.5, max_scale: 0.9}
  train.epochs: 3
"""


def make_search(tmp: Path, body: str, name: str = "search.yaml", cheap: str = CHEAP) -> Path:
    (tmp / "tiny.yaml").write_text(TINY.replace("RUNS", str(tmp / "runs")))
    path = tmp / name
    path.write_text("base: tiny.yaml\n" + cheap + textwrap.dedent(body))
    return path


def jsonl(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "sweep.jsonl").read_text().splitlines()]


def epoch_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in rows if r.get("split") == "train"]


# -- the search block (no TensorFlow, no Optuna) --------------------------------------------

def test_search_block_is_planned_without_tensorflow(tmp_path):
    path = make_search(tmp_path, """\
        name: s
        search: {trials: 5, pruner: {name: median, warmup_epochs: 2}, seed: 3}
        params:
          optimizer.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
          model.params.stages: {choice: [[8, 16], [16, 32, 64]]}
          data.batch_size: {int: [32, 64]}
    """)
    code = ("import sys, json; from nnrun.search.plan import load_search; s = load_search(sys.argv[1]); p = s.search; "
            "print(json.dumps([p.metric, p.direction, p.trials, [x.kind for x in p.params], s.swept, "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'optuna'))]))")
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    metric, direction, trials, kinds, swept, heavy = json.loads(res.stdout)
    assert (metric, direction, trials) == ("val_accuracy", "maximize", 5)
    assert kinds == ["loguniform", "choice", "int"] and swept[0] == "optimizer.learning_rate"
    assert heavy == []

    from nnrun.search.plan import load_search

    plan = load_search(path).search
    set_args, cfg = plan.trial_config({"optimizer.learning_rate": 0.002, "model.params.stages": [8, 16],
                                       "data.batch_size": 40}, "trial-0007", tmp_path / "out", threads=2)
    assert cfg.name == "trial-0007" and cfg.optimizer.learning_rate == 0.002 and cfg.data.batch_size == 40
    assert cfg.runtime.threads == 2 and cfg.runtime.runs_root == str(tmp_path / "out") and cfg.train.epochs == 3
    stages = next(p for p in plan.params if p.key == "model.params.stages")
    assert stages.encoded and stages.decode(stages.categories()[1]) == [16, 32, 64]  # lists travel as JSON


def test_int_ranges_work_in_random_sweeps_too(tmp_path):
    from nnrun.sweep import load_sweep

    path = make_search(tmp_path, "random: {samples: 6, params: {model.params.blocks_per_stage: {int: [1, 3]}, "
                                 "optimizer.learning_rate: {loguniform: [1.0e-3, 1.0e-2]}}}\n")
    values = [t.overrides["model.params.blocks_per_stage"] for t in load_sweep(path).trials]
    assert all(isinstance(v, int) and 1 <= v <= 3 for v in values) and len(set(values)) > 1


@pytest.mark.parametrize("body, message", [
    ("search: {sampler: tpe}\nparams: {optimizer.learning_rate: {uniform: [0.001, 0.01]}}\n",
     "search.trials: required"),
    ("search: {trials: 2}\nparams: {optimizer.learning_rate: {uniform: [-1, 0.01]}}\n",
     "params: optimizer.learning_rate = -1"),
    ("search: {trials: 2}\nparams: {model.params.depth: {int: [1, 3]}}\n", "unknown key 'depth'"),
    ("search: {trials: 2}\nparams: {runtime.deterministic: {choice: [true, false]}}\n",
     "runtime settings are process-wide"),
    ("search: {trials: 2}\ngrid: {seed: [1, 2]}\nparams: {optimizer.learning_rate: {uniform: [0.001, 0.01]}}\n",
     "search: samples its own trials; remove grid"),
    ("params: {optimizer.learning_rate: {uniform: [0.001, 0.01]}}\n", "params: belongs to a search: block"),
    ("search: {trials: 2, metric: val_acc}\nparams: {optimizer.learning_rate: {uniform: [0.001, 0.01]}}\n",
     "unknown metric 'val_acc'; did you mean 'val_accuracy'?"),
    ("search: {trials: 2, pruner: {name: hyperband, warmup_epochs: 2}}\n"
     "params: {optimizer.learning_rate: {uniform: [0.001, 0.01]}}\n", "warmup_epochs does not apply to the hyperband"),
    ("search: {sampler: grid, trials: 3}\nparams: {optimizer.name: {choice: [adam, sgd]}}\n",
     "the grid has 2 points; set trials: 2"),
    ("search: {sampler: grid}\nparams: {optimizer.learning_rate: {uniform: [0.001, 0.01]}}\n",
     "the grid sampler needs choice or int params"),
    ("search: {trials: 2, storage: 'postgresql://me:hunter2@db/optuna'}\n"
     "params: {optimizer.learning_rate: {uniform: [0.001, 0.01]}}\n", "put it in an environment variable"),
    ("search: {trials: 2, storage: 'postgresql://me:hunter2/x@db/optuna'}\n"
     "params: {optimizer.learning_rate: {uniform: [0.001, 0.01]}}\n", "put it in an environment variable"),
    ("search: {trials: 2, storage: {env: NNRUN_TEST_UNSET_VAR}}\n"
     "params: {optimizer.learning_rate: {uniform: [0.001, 0.01]}}\n", "NNRUN_TEST_UNSET_VAR is not set"),
])
def test_bad_search_exits_2_with_one_line_and_creates_nothing(tmp_path, body, message):
    path = make_search(tmp_path, body)
    res = run_cli("sweep", str(path), cwd=tmp_path, env={"NNRUN_TEST_UNSET_VAR": ""})
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert "hunter2" not in res.stderr
    assert not (tmp_path / "runs").exists()


def test_print_commands_prints_worker_commands(tmp_path):
    path = make_search(tmp_path, "search: {trials: 4}\nparams: {optimizer.learning_rate: {uniform: [0.001, 0.01]}}\n")
    res = run_cli("sweep", str(path), "--print-commands", "--jobs", "2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    # storage null: the study is the SQLite file in this host's sweep directory, so the lines are
    # local workers (no --worker, which joins a shared database)
    assert lines == [f"nnrun sweep {path} --threads {threads}"] * 2
    assert not (tmp_path / "runs").exists()
    res = run_cli("sweep", str(path), "--fail-fast", cwd=tmp_path)
    assert res.returncode == 2 and "--fail-fast does not apply to a search" in res.stderr
    shared = make_search(tmp_path, "search: {trials: 4, storage: {env: NNRUN_STORAGE}}\n"
                                   "params: {optimizer.learning_rate: {uniform: [0.001, 0.01]}}\n", name="shared.yaml")
    res = run_cli("sweep", str(shared), "--print-commands", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.split() == ["nnrun", "sweep", str(shared), "--worker"], res.stderr


def test_a_worker_needs_a_shared_storage(tmp_path):
    path = make_search(tmp_path, "search: {trials: 1}\nparams: {optimizer.learning_rate: {uniform: [0.001, 0.01]}}\n",
                       cheap=CHEAP.replace("train.epochs: 3", "train.epochs: 1"))
    res = run_cli("sweep", str(path), "--worker", cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--worker joins a shared study" in lines[0] and "search.storage" in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_storage_urls_never_show_their_password(monkeypatch, tmp_path):
    from nnrun.sweep.search_block import SearchSpec
    from nnrun.search.storage import resolve_storage

    class Plan:
        spec = SearchSpec(trials=1, storage={"env": "NNRUN_TEST_DB"})

    monkeypatch.setenv("NNRUN_TEST_DB", "postgresql://nnrun:s3cr%40t@db.example:5432/optuna?sslmode=require")
    storage = resolve_storage(Plan, tmp_path)
    assert storage.shown == "postgresql://nnrun:***@db.example:5432/optuna?sslmode=require"
    assert storage.scrub(f"could not connect to {storage.url}: password s3cr@t refused") == \
        f"could not connect to {storage.shown}: password *** refused"
    assert storage.scrub("password authentication failed for s3cr%40t") == \
        "password authentication failed for ***"  # as it appears in the URL, percent-encoded
    monkeypatch.setenv("NNRUN_TEST_DB", "postgresql://db/optuna?password=topsecret")
    assert "topsecret" not in resolve_storage(Plan, tmp_path).shown
    Plan.spec = SearchSpec(trials=1)
    assert resolve_storage(Plan, tmp_path).url == f"sqlite:///{(tmp_path / 'study.db').resolve()}"


def _mechanics_sweep(tmp_path, sampler: str):
    from nnrun.search.plan import load_search

    grid = sampler == "grid"
    path = make_search(tmp_path, f"""\
        name: mech
        search: {{sampler: {sampler}, {'' if grid else 'trials: 5, '}heartbeat_interval: 1, grace_period: 1,
                  retries: 1, pruner: {{name: hyperband, min_epochs: 1}}}}
        params:
          optimizer.learning_rate: {{{'choice: [0.001, 0.002, 0.003, 0.004, 0.005]' if grid
                                      else 'loguniform: [1.0e-4, 1.0e-2]'}}}
          train.epochs: {{int: [1, 3]}}
          optimizer.name: {{choice: [adam]}}
    """)
    return load_search(path)


def test_budget_is_exact_and_a_stale_trial_is_requeued_then_given_up(tmp_path):
    """The study mechanics without training: two handles (two workers) claim trials from one
    SQLite study; a trial whose heartbeat stops is re-queued with its values, `retries` times."""
    from optuna.trial import TrialState

    from nnrun.search.study import Study
    from nnrun.search.worker import suggest

    sweep = _mechanics_sweep(tmp_path, "tpe")
    said = []
    a, b = (Study(sweep.search, "mech", sweep.directory, said.append) for _ in range(2))
    a.open()
    b.open()
    assert a.created and not b.created
    first = a.claim()
    values = suggest(first, sweep.search.params)
    # a's worker "dies": no heartbeat after the claim; b notices once the grace period has passed
    time.sleep(2.5)
    b.fail_stale()
    assert said and "re-queued as trial 5" in said[-1], said
    retry = next(t for t in b.trials() if t.user_attrs.get("nnrun_replaces") == first.number)
    assert retry.state == TrialState.WAITING and retry.user_attrs["nnrun_attempt"] == 2
    seen = []
    while (trial := b.claim()) is not None:
        got = suggest(trial, sweep.search.params)
        if trial.number == retry.number:
            assert got == values  # the re-queued trial trains the same values
            time.sleep(2.5)  # ... and its worker dies again: retries (1) spent, it fails for good
            a.fail_stale()
            continue
        seen.append(got["optimizer.learning_rate"])
        b.study.tell(trial, 0.5)
    counts = b.progress()
    assert counts == {"completed": 4, "pruned": 0, "failed": 1, "requeued": 1, "running": 0, "waiting": 0,
                      "done": True}
    assert len(b.trials()) == 6 and len(set(seen)) == 4  # the budget (5) plus the one re-queue
    assert "failed for good after 2 attempts" in said[-1]


def _gate(study, barrier):
    """Make `study`'s storage wait for the other worker between reading a trial's state and
    writing it: two workers that can both read before either writes then both take the trial."""
    import threading

    check = study.rdb.check_trial_is_updatable

    def gated(trial_id, state):
        try:
            barrier.wait()
        except threading.BrokenBarrierError:  # the other worker waits for our transaction: go on
            pass
        return check(trial_id, state)

    study.rdb.check_trial_is_updatable = gated
    return lambda: setattr(study.rdb, "check_trial_is_updatable", check)


def _together(*calls):
    import threading

    results, errors = [None] * len(calls), []

    def run(i, call):
        try:
            results[i] = call()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def test_sqlite_claims_and_stale_failures_are_atomic(tmp_path):
    """SQLite ignores SELECT ... FOR UPDATE: without a transaction around the read and the
    write, two workers claiming (or failing as stale) at the same moment both succeed."""
    import threading

    from optuna.trial import TrialState

    from nnrun.search.study import Study

    sweep = _mechanics_sweep(tmp_path, "random")
    said = []
    a, b = (Study(sweep.search, "mech", sweep.directory, said.append) for _ in range(2))
    a.open()
    b.open()
    barrier = threading.Barrier(2, timeout=2)
    undo = [_gate(s, barrier) for s in (a, b)]
    first, second = _together(a.claim, b.claim)
    assert first.number != second.number
    for u in undo:
        u()
    # both claimed trials' workers "die"; both workers notice at the same moment
    time.sleep(2.5)
    barrier = threading.Barrier(2, timeout=2)
    undo = [_gate(s, barrier) for s in (a, b)]
    _together(a.fail_stale, b.fail_stale)
    for u in undo:
        u()
    trials = a.trials()
    replaced = sorted(t.user_attrs["nnrun_replaces"] for t in trials if "nnrun_replaces" in t.user_attrs)
    assert replaced == sorted([first.number, second.number]), said  # each re-queued once
    assert len([t for t in trials if t.state == TrialState.WAITING]) == 5  # 3 never claimed + 2 re-queued


def test_transient_storage_errors_do_not_stop_a_worker(tmp_path, monkeypatch):
    """Optuna wraps a database error in StorageInternalError: claiming and failing stale trials
    try again rather than crash the worker."""
    import optuna

    from nnrun.search.study import Study

    sweep = _mechanics_sweep(tmp_path, "random")
    study = Study(sweep.search, "mech", sweep.directory, print)
    study.open()

    def flaky(obj, name):
        original, calls = getattr(obj, name), []

        def call(*args, **kwargs):
            calls.append(args)
            if len(calls) == 1:
                raise optuna.exceptions.StorageInternalError("server closed the connection unexpectedly")
            return original(*args, **kwargs)

        monkeypatch.setattr(obj, name, call)
        return calls

    calls = flaky(study.study._storage, "set_trial_state_values")
    trial = study.claim()
    assert trial is not None and len(calls) == 2
    calls = flaky(study.rdb, "_get_stale_trial_ids")
    study.fail_stale()
    assert len(calls) == 1


def _interrupting_worker(tmp_path, monkeypatch, before_stop=lambda: None):
    """A worker on a one-trial study whose trials are stopped by SIGTERM while they train."""
    from nnrun.errors import Terminated
    from nnrun.search.plan import load_search
    from nnrun.search.worker import Worker

    path = make_search(tmp_path, """\
        name: stop
        search: {sampler: random, trials: 1, retries: 1, heartbeat_interval: 1, pruner: none}
        params: {optimizer.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}}
    """)
    said = []
    worker = Worker(load_search(path), say=said.append)
    worker.study.open()

    def train(trial, cfg, set_args):
        before_stop()
        raise Terminated()

    monkeypatch.setattr(worker, "_train", train)
    return worker, said


def test_interrupted_trials_are_requeued_without_spending_retries(tmp_path, monkeypatch):
    """Ctrl-C / SIGTERM says nothing about a trial's values: it is re-queued every time (retries: 1
    counts only workers that died), and its replacement exists before it is failed, so no other
    worker sees an empty queue in between and leaves."""
    from optuna.trial import TrialState

    worker, said = _interrupting_worker(tmp_path, monkeypatch)
    storage = worker.study.study._storage
    set_state = storage.set_trial_state_values
    waiting_when_failed = []

    def spy(trial_id, state, values=None):
        if state == TrialState.FAIL:
            waiting_when_failed.append(len(worker.study.trials(states=(TrialState.WAITING,))))
        return set_state(trial_id, state, values)

    monkeypatch.setattr(storage, "set_trial_state_values", spy)
    for _ in range(3):  # the trial, then its replacements: each stopped while it trains
        trial = worker.study.claim()
        with pytest.raises(KeyboardInterrupt):
            worker.run_trial(trial)
        assert f"trial {trial.number}: worker stopped (SIGTERM); re-queued as trial {trial.number + 1}" in said, said
    trials = worker.study.trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 3 + [TrialState.WAITING]
    assert [t.user_attrs["nnrun_attempt"] for t in trials] == [1, 1, 1, 1]
    assert waiting_when_failed == [1, 1, 1]
    assert worker.study.progress()["requeued"] == 3 and not worker.study.progress()["done"]


def test_an_interrupted_trial_another_worker_requeued_is_not_requeued_twice(tmp_path, monkeypatch):
    """The trial went stale (its heartbeat was late) and another worker failed and re-queued it
    just as this worker was stopped: one replacement, not two."""
    from optuna.trial import TrialState

    from nnrun.search.study import Study

    armed = []
    worker, said = _interrupting_worker(tmp_path, monkeypatch, before_stop=lambda: armed.append(True))
    other = Study(worker.plan, "stop", worker.sweep.directory, said.append)
    other.open()
    trial = worker.study.claim()
    storage = worker.study.study._storage
    get_trial = storage.get_trial

    def raced(trial_id):
        frozen = get_trial(trial_id)  # still RUNNING when this worker reads it ...
        if armed and trial_id == trial._trial_id and frozen.state == TrialState.RUNNING:
            armed.clear()  # ... and failed as stale and re-queued by the other worker just after
            other.rdb.set_trial_state_values(trial_id, TrialState.FAIL)
            other.requeue(other.rdb.get_trial(trial_id), "its worker stopped (no heartbeat for 3 s)")
        return frozen

    monkeypatch.setattr(storage, "get_trial", raced)
    with pytest.raises(KeyboardInterrupt):
        worker.run_trial(trial)
    replacements = [t for t in worker.study.trials() if t.user_attrs.get("nnrun_replaces") == trial.number]
    assert len(replacements) == 1, said


@pytest.mark.parametrize("sampler", ["random", "cmaes", "grid"])
def test_every_sampler_spends_the_budget_exactly(tmp_path, sampler):
    from nnrun.search.study import Study
    from nnrun.search.worker import suggest

    sweep = _mechanics_sweep(tmp_path, sampler)
    workers = [Study(sweep.search, "mech", sweep.directory, print) for _ in range(2)]
    for w in workers:
        w.open()
    drawn, turn = [], 0
    while (trial := workers[turn % 2].claim()) is not None:  # the two workers take turns
        got = suggest(trial, sweep.search.params)
        drawn.append((got["optimizer.learning_rate"], got["train.epochs"]))
        workers[turn % 2].study.tell(trial, got["optimizer.learning_rate"])
        turn += 1
    budget = 15 if sampler == "grid" else 5  # grid: every point, 5 learning rates x 3 epoch counts
    assert len(drawn) == budget == len(set(drawn)) and workers[0].progress()["done"]
    if sampler == "grid":
        assert drawn[:4] == [(0.001, 1), (0.001, 2), (0.001, 3), (0.002, 1)]


WORKER_PROBE = """\
import sys
import tensorflow as tf
from nnrun.search import worker
from nnrun.search.plan import load_search

def probe(self):  # where the worker would start claiming trials
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        print("configurable")
    except RuntimeError:
        print("initialised")
    return self.study

worker.Worker._loop = probe
worker.Worker(load_search(sys.argv[1])).run()
"""


def test_a_worker_leaves_the_runtime_to_its_trials(tmp_path):
    """Nothing a warm worker does before its first trial initialises TensorFlow's runtime, which
    would make the trials' runtime.threads and runtime.cpu_devices silently ineffective."""
    path = make_search(tmp_path, "name: probe\nsearch: {trials: 1}\n"
                                 "params: {optimizer.learning_rate: {uniform: [0.001, 0.01]}}\n")
    res = subprocess.run([sys.executable, "-c", WORKER_PROBE, str(path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[-1] == "configurable"


GRAPH_PROBE = """\
import gc, sys
import keras
from tensorflow.python.framework.func_graph import FuncGraph
from nnrun.search import worker
from nnrun.search.plan import load_search

clear = keras.backend.clear_session

def counting_clear(*args, **kwargs):  # called before each trial: what the earlier trials left alive
    clear(*args, **kwargs)
    print(sum(isinstance(o, FuncGraph) for o in gc.get_objects()), flush=True)

keras.backend.clear_session = counting_clear
worker.Worker(load_search(sys.argv[1]), say=lambda line: print(line, file=sys.stderr)).run()
gc.collect()
print(sum(isinstance(o, FuncGraph) for o in gc.get_objects()), flush=True)
"""


@pytest.mark.slow
def test_a_warm_worker_does_not_keep_its_finished_trials_graphs(tmp_path):
    """TensorFlow's gradient registry keeps every traced train step of a process alive
    (tensorflow#97697); a worker that runs many trials must not grow by a traced model per trial."""
    path = make_search(tmp_path, "name: graphs\nsearch: {trials: 4, sampler: random, pruner: none}\n"
                                 "params: {optimizer.learning_rate: {loguniform: [0.001, 0.01]}}\n",
                       cheap=CHEAP.replace("train.epochs: 3", "train.epochs: 1"))
    res = subprocess.run([sys.executable, "-c", GRAPH_PROBE, str(path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    live = [int(n) for n in res.stdout.split()]  # before trials 0..3, then after the last
    assert len(live) == 5
    # Without the release each finished trial leaves its traced graph: [0, 1, 2, 3, 4].
    assert live[-1] <= live[1], live


# -- one warm worker: pruning, the summary, and exact reproducibility ---------------------------

@pytest.fixture(scope="module")
def warm_search(tmp_path_factory):
    """Three grid trials in one worker process. Trial 0 (lr 1e-5) and trial 1 (lr 0.01)
    complete; trial 2 (lr 2e-5) is pruned at epoch 2: its val_loss stays near the untrained
    value while the median of the completed trials has dropped."""
    tmp = tmp_path_factory.mktemp("warm")
    path = make_search(tmp, """\
        name: warm
        search:
          sampler: grid
          metric: val_loss
          pruner: {name: median, warmup_epochs: 1, startup_trials: 1}
        params:
          optimizer.learning_rate: {choice: [1.0e-5, 0.01, 2.0e-5]}
    """)
    t0 = time.monotonic()
    res = run_cli("sweep", str(path), cwd=tmp)
    return path, tmp / "runs" / "sweeps" / "warm", res, time.monotonic() - t0


@pytest.mark.slow
def test_warm_worker_prunes_and_summarises(warm_search, tmp_path):
    path, directory, res, _ = warm_search
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(directory)
    rows = {r["trial"]: r for r in jsonl(directory)}
    assert [rows[i]["status"] for i in range(3)] == ["completed", "completed", "pruned"], res.stderr
    assert [rows[i]["params"]["optimizer.learning_rate"] for i in range(3)] == [1e-5, 0.01, 2e-5]
    # one worker process ran all three: one TensorFlow import
    pids = {json.loads((Path(r["run_dir"]) / "run.json").read_text())["pid"] for r in rows.values()}
    assert len(pids) == 1
    pruned = json.loads((Path(rows[2]["run_dir"]) / "run.json").read_text())
    assert pruned["status"] == "pruned" and pruned["pruned_at_epoch"] == 2 and pruned["epochs_completed"] == 2
    assert pruned["reason"].startswith("pruned at epoch 2 (val_loss ")
    assert set(pruned["final_metrics"]) >= {"val_loss", "val_accuracy", "best_val_accuracy"}
    assert (Path(rows[2]["run_dir"]) / "report.html").is_file()
    assert (Path(rows[2]["run_dir"]) / "plots" / "learning_curves.png").is_file()
    assert len(epoch_rows(rows[2]["run_dir"])) == 2 and len(epoch_rows(rows[1]["run_dir"])) == 3
    info = json.loads((directory / "search.json").read_text())
    assert info["counts"] == {"completed": 2, "pruned": 1, "failed": 0, "requeued": 0, "running": 0, "waiting": 0}
    assert info["total_epochs"] == 3 + 3 + 2 and info["best"]["trial"] == 1 and info["direction"] == "minimize"
    assert info["best"]["value"] == rows[1]["final_metrics"]["val_loss"]
    for figure in ("history.png",):
        assert (directory / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (directory / "report.html").read_text()
    assert "Best trial" in report and 'alt="history"' in report and "trial-0002" not in report
    assert "2/3" not in res.stdout and "3/3 trials ended (2 completed, 1 pruned)" in res.stdout
    # the printed table: best first, the pruned trial after the completed ones
    shown = [line.split("│")[1].strip() for line in res.stdout.splitlines() if line.startswith("│")]
    assert shown == ["1 *", "0", "2"]
    # `nnrun runs` and `nnrun compare` read the trials as any runs
    listed = run_cli("runs", str(directory), "--filter", "status=pruned", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [Path(r["path"]).parent.name for r in json.loads(listed.stdout)] == ["trial-0002"]
    compared = run_cli("compare", str(directory), "--json")
    assert compared.returncode == 0, compared.stderr
    result = json.loads(compared.stdout)
    assert result["config"]["optimizer.learning_rate"] == [1e-5, 0.01, 2e-5]
    assert result["metrics"]["status"] == ["completed", "completed", "pruned"]
    # the sweep exits without interpreter teardown, after closing the study: study.db alone is whole
    assert not (directory / "study.db-wal").exists()
    alone = tmp_path / "copied.db"
    shutil.copy(directory / "study.db", alone)
    import optuna

    copied = optuna.load_study(study_name="warm", storage=f"sqlite:///{alone}")
    assert sorted(t.state.name for t in copied.trials) == ["COMPLETE", "COMPLETE", "PRUNED"]
    # a finished study: running it again trains nothing and prints the same summary
    again = run_cli("sweep", str(path), cwd=path.parent)
    assert again.returncode == 0, again.stderr
    assert "3/3 trials ended" in again.stdout and "budget is spent already; nothing to run" in again.stderr


@pytest.mark.slow
def test_a_warm_trial_reruns_bit_identically_with_nnrun_train(warm_search, tmp_path):
    _, directory, res, _ = warm_search
    assert res.returncode == 0, res.stderr
    trial = Path(next(r for r in jsonl(directory) if r["trial"] == 1)["run_dir"])  # after trial 0, same process
    rerun = run_cli("train", str(trial / "config.yaml"), "--set", f"runtime.runs_root={tmp_path}", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    fresh = Path(rerun.stdout.strip().splitlines()[-1])
    assert epoch_rows(fresh) == epoch_rows(trial)  # every metric, every epoch: bit-identical
    assert json.loads((fresh / "run.json").read_text())["final_metrics"] == \
        json.loads((trial / "run.json").read_text())["final_metrics"]


CRASH_PLUGIN = """\
import os, signal
from nnrun.registry import register, NoParams

@register("schedule", "segfault", NoParams)
def build(p, base_lr, steps_per_epoch, epochs):
    '''A schedule that crashes the process natively (a stand-in for a TensorFlow crash).'''
    os.kill(os.getpid(), signal.SIGSEGV)
"""


@pytest.mark.slow
def test_a_trial_that_crashes_its_worker_fails_alone(tmp_path):
    plugin = tmp_path / "crash_plugin.py"
    plugin.write_text(CRASH_PLUGIN)
    path = make_search(tmp_path, """\
        name: crash
        search: {sampler: grid, pruner: none}
        params: {optimizer.schedule: {choice: [segfault, constant]}}
    """, cheap=CHEAP.replace("train.epochs: 3", "train.epochs: 1"))
    res = run_cli("sweep", str(path), "--plugin", str(plugin), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "trial 0: its worker crashed (SIGSEGV); the trial is failed, the worker restarted" in res.stderr
    rows = {r["trial"]: r for r in jsonl(tmp_path / "runs" / "sweeps" / "crash")}
    assert rows[0]["status"] == "failed" and "crashed (SIGSEGV)" in rows[0]["reason"]
    assert rows[1]["status"] == "completed" and len(rows) == 2  # not re-queued
    assert rows[0]["run_dir"] is None  # it crashed while its optimizer was built, before a run directory


# -- two workers on one PostgreSQL study --------------------------------------------------------

def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 with a password-protected user; yields its URL.
    initdb refuses to run as root, so as root the server runs as the `postgres` (or `nobody`) user."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'nnrun[postgres]')")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        import pwd

        runuser = shutil.which("runuser")
        users = [u for u in ("postgres", "nobody") if _has_user(u)]
        if not runuser or not users:
            pytest.skip("running as root without runuser or an unprivileged user for initdb")
        owner = pwd.getpwnam(users[0])
        prefix = [runuser, "-u", users[0], "--"]
    base = Path(tempfile.mkdtemp(prefix="nnrun-pg-"))
    password = "pw-" + os.urandom(8).hex()
    (base / "pwfile").write_text(password + "\n")
    if owner is not None:
        for p in (base, base / "pwfile"):
            os.chown(p, owner.pw_uid, owner.pw_gid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = base / "data"

    def run(*argv):
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120)

    init = run(initdb, "-D", str(data), "-U", "nnrun", "--pwfile", str(base / "pwfile"), "--auth=scram-sha-256",
               "-E", "UTF8", "--no-sync", "--locale=C")
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr[-2000:]}")
    started = run(pg_ctl, "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60", "-o",
                  f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50", "start")
    try:
        if started.returncode != 0:
            pytest.fail(f"pg_ctl start failed: {started.stderr[-2000:]} {(base / 'server.log').read_text()[-2000:]}")
        with psycopg.connect(host="127.0.0.1", port=port, user="nnrun", password=password, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE optuna")
        yield {"url": f"postgresql://nnrun:{password}@127.0.0.1:{port}/optuna", "password": password}
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _parent_pid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state != "Z"


@pytest.mark.slow
def test_two_workers_share_a_postgres_study_and_survive_a_killed_worker(postgres, tmp_path):
    import optuna
    from optuna.trial import TrialState

    path = make_search(tmp_path, """\
        name: pg
        search:
          sampler: random
          trials: 6
          pruner: none
          storage: {env: NNRUN_TEST_STORAGE}
          heartbeat_interval: 1
          grace_period: 3
        params:
          optimizer.learning_rate: {loguniform: [1.0e-3, 3.0e-2]}
          optimizer.params.beta_1: {uniform: [0.8, 0.95]}
    """, cheap=CHEAP.replace("train.epochs: 3", "train.epochs: 2").replace("num_train: 1024", "num_train: 512"))
    env = {**os.environ, "NNRUN_TEST_STORAGE": postgres["url"]}
    procs, outs = {}, {}
    for name in ("a", "b"):
        outs[name] = (open(tmp_path / f"{name}.out", "w"), open(tmp_path / f"{name}.err", "w"))
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "nnrun", "sweep", str(path), "--worker", "--out", str(tmp_path / name)],
            cwd=tmp_path, env=env, stdout=outs[name][0], stderr=outs[name][1])
    storage = optuna.storages.RDBStorage(postgres["url"])
    try:
        # wait until worker a is training a trial, then SIGKILL it (its worker process dies with it)
        victim, deadline = None, time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.3)
            for name in ("a", "b"):
                assert procs[name].poll() is None, (tmp_path / f"{name}.err").read_text()
            try:
                study = optuna.load_study(study_name="pg", storage=storage)
            except KeyError:
                continue
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                pid = (t.user_attrs.get("nnrun_worker") or {}).get("pid")
                if pid and _parent_pid(pid) == procs["a"].pid and t.intermediate_values:  # an epoch done
                    victim = (t.number, pid)
        assert victim is not None, "worker a never ran a trial"
        procs["a"].kill()
        procs["a"].wait()
        for _ in range(50):
            if not _alive(victim[1]):
                break
            time.sleep(0.1)
        assert not _alive(victim[1]), "the killed worker's trial process survived it"
        assert procs["b"].wait(timeout=240) == 0, (tmp_path / "b.err").read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        for out, err in outs.values():
            out.close()
            err.close()
    study = optuna.load_study(study_name="pg", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    requeued = [t for t in trials if t.user_attrs.get("nnrun_replaces") is not None]
    assert [t.user_attrs["nnrun_replaces"] for t in requeued] == [victim[0]]
    assert requeued[0].params == next(t for t in trials if t.number == victim[0]).params  # same values again
    counted = [t for t in trials if t.number != victim[0]]
    assert len(counted) == 6 and all(t.state == TrialState.COMPLETE for t in counted)  # the budget, exactly
    killed = next(t for t in trials if t.number == victim[0])
    assert killed.state == TrialState.FAIL
    distinct = {t.params["optimizer.learning_rate"] for t in counted}
    assert len(distinct) == 6  # every counted trial sampled its own values (the re-queued one repeats)
    # b's summary: 6 ended, 1 re-queued; printed last line is b's sweep directory
    out_b = (tmp_path / "b.out").read_text()
    assert out_b.strip().splitlines()[-1] == str(tmp_path / "b")
    info = json.loads((tmp_path / "b" / "search.json").read_text())
    assert info["counts"]["completed"] == 6 and info["counts"]["requeued"] == 1 and info["done"]
    assert "***" in info["storage"] and postgres["password"] not in info["storage"]
    # the password is nowhere: logs, run.json, config.yaml, reports, summaries
    secret = postgres["password"].encode()
    for file in [*tmp_path.rglob("*")]:
        if file.is_file():
            assert secret not in file.read_bytes(), file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_optuna_dashboard_reads_the_finished_study(warm_search):
    """The real optuna-dashboard, on 127.0.0.1 against the study's SQLite file: its HTTP API
    lists the study and gives back each trial's state, parameters and per-epoch values."""
    import urllib.request

    _, directory, res, _ = warm_search
    assert res.returncode == 0, res.stderr
    dashboard = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert dashboard, "optuna-dashboard is a dev dependency (pip install -e '.[dev]')"
    port = _free_port()
    server = subprocess.Popen([dashboard, f"sqlite:///{directory / 'study.db'}", "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.loads(r.read())["study_summaries"]
            except OSError:
                assert server.poll() is None, "optuna-dashboard exited"
                time.sleep(0.5)
        assert studies is not None, "optuna-dashboard did not answer within 60 s"
        (study,) = [s for s in studies if s["study_name"] == "warm"]
        assert study["directions"] == ["minimize"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}?after=0",
                                    timeout=30) as r:
            trials = sorted(json.loads(r.read())["trials"], key=lambda t: t["number"])
        assert [t["state"] for t in trials] == ["Complete", "Complete", "Pruned"]
        rates = [float(p["param_external_value"]) for t in trials for p in t["params"]
                 if p["name"] == "optimizer.learning_rate"]
        assert rates == [1e-5, 0.01, 2e-5]
        assert [len(t["intermediate_values"]) for t in trials] == [3, 3, 2]  # one value per epoch
    finally:
        server.terminate()
        server.wait(timeout=30)
