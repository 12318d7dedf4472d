"""The Optuna study behind a search sweep: its exact budget, claiming trials, and what happens
to a trial whose worker dies.

Budget. The study is created once (the database's unique study name decides which worker
creates it) and the creator enqueues exactly `trials` WAITING trials (for the grid sampler,
one per grid point, with its values fixed). Workers never create trials: each claims a WAITING
trial with the storage's check-and-set (WAITING -> RUNNING, `SELECT ... FOR UPDATE` on
PostgreSQL/MySQL; on SQLite, which ignores FOR UPDATE, every transaction starts with BEGIN
IMMEDIATE: it takes the database's write lock before it reads), samples its parameters with
the sampler at that moment (so TPE sees every trial finished so far), trains, and tells the
result. When no trial is WAITING or RUNNING,
the budget is spent: however many workers there are, exactly `trials` trials end.

Killed workers. A RUNNING trial records a heartbeat every `heartbeat_interval` seconds (a
thread of its worker). A trial without one for `grace_period` seconds is failed by whichever
worker notices first (Optuna's fail_stale_trials), and re-queued: a new WAITING trial with the
same parameters (`nnrun_replaces` names the trial it replaces), at most `retries` times per
original trial. Re-queued rather than left failed because a killed worker (preemption, the
OOM killer of another process, a lost host) says nothing about the parameters: counting it as
a failure would spend budget on nothing and give the sampler a false bad point. A trial that
keeps killing its workers (e.g. it needs more memory than a host has) ends failed after
`retries` re-queues, so it never blocks the budget. The replaced trial stays in the study as
FAIL and is shown as `requeued`; it does not count towards the budget. A trial whose worker was
stopped (Ctrl-C, SIGTERM: preemption) is re-queued by that worker at once, every time: an
interruption is not counted against `retries`.

Storage URLs and their passwords are storage.py's, samplers and pruners samplers.py's, the
running trial's heartbeat thread heartbeat.py's.
"""

from __future__ import annotations

import os
import platform
import random
import time
import warnings
from pathlib import Path

from nnrun.errors import UsageError, first_line
from nnrun.search.plan import SearchPlan
from nnrun.search.samplers import make_pruner, make_sampler, sampler_seed
from nnrun.search.storage import db_errors, resolve_storage, sqlite_wal

READY = "nnrun_ready"  # study user attr: the creator has enqueued the whole budget
META = "nnrun"  # study user attr: what defined the study (fingerprint, budget, metric, ...)
PARENT_RUN = "nnrun_mlflow_parent"  # study user attr: {run_id, tracking_uri} of the trials' MLflow parent run


class Study:
    """One worker's handle on the study: open or create it, claim trials, re-queue stale ones."""

    def __init__(self, plan: SearchPlan, name: str, directory: Path, say=print):
        self.plan, self.name, self.directory, self.say = plan, name, Path(directory), say
        self.storage = resolve_storage(plan, directory)
        self.rdb = None
        self.study = None
        self.created = False

    # -- opening --------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the storage (creating Optuna's tables in a new database); UsageError if it cannot."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        if self.storage.url.startswith("sqlite"):
            Path(self.directory).mkdir(parents=True, exist_ok=True)
            kwargs = {"connect_args": {"timeout": 60}}
        else:
            kwargs = {"pool_pre_ping": True}
        spec = self.plan.spec
        for attempt in range(6):  # workers starting together may race to create the tables
            try:
                self.rdb = optuna.storages.RDBStorage(
                    self.storage.url, engine_kwargs=kwargs, heartbeat_interval=spec.heartbeat_interval,
                    grace_period=spec.grace, heartbeat_stale_trial_callback=self._stale)
                if self.storage.url.startswith("sqlite"):
                    sqlite_wal(self.rdb.engine)
                return
            except Exception as exc:  # noqa: BLE001 - reported in one line, URL masked
                from sqlalchemy.exc import IntegrityError, ProgrammingError

                racing = isinstance(exc, (IntegrityError, ProgrammingError))  # another worker makes the tables
                if attempt == 5 or not racing:
                    extra = "mysql" if self.storage.url.startswith("mysql") else "postgres"
                    hint = (f" (is its driver installed? pip install 'nnrun[{extra}]')"
                            if isinstance(exc, ImportError) else "")
                    raise UsageError(f"cannot open the study storage {self.storage.shown}: "
                                     f"{self.storage.scrub(first_line(exc))}{hint}") from None
                time.sleep(0.3 + random.random())

    def close(self) -> None:
        """Close the storage's connections (SQLite: the last one folds the write-ahead log into
        study.db), so the database is whole even if the process then exits without teardown."""
        if self.rdb is not None:
            self.rdb.engine.dispose()

    def open(self, wait_s: float = 120.0) -> None:
        """Create the study with its budget, or join it; UsageError if the stored study was made
        from another search (a changed sweep file under the same name)."""
        import optuna

        if self.rdb is None:
            self.connect()
        sampler, pruner = make_sampler(self.plan, self.plan.spec.seed), make_pruner(self.plan)
        meta = {"fingerprint": self.plan.fingerprint, "trials": self.plan.trials, "metric": self.plan.metric,
                "direction": self.plan.direction, "sampler": self.plan.spec.sampler,
                "params": {p.key: p.describe() for p in self.plan.params}}
        try:
            self.study = optuna.create_study(study_name=self.name, storage=self.rdb, sampler=sampler, pruner=pruner,
                                             direction=self.plan.direction)
            self.created = True
        except optuna.exceptions.DuplicatedStudyError:
            self.study = optuna.load_study(study_name=self.name, storage=self.rdb, sampler=sampler, pruner=pruner)
        if self.created:
            self.study.set_user_attr(META, meta)
            points = self.plan.grid or [{}] * self.plan.trials
            by_key = {p.key: p for p in self.plan.params}
            for point in points:
                fixed = {k: (by_key[k].categories()[by_key[k].choices.index(v)] if by_key[k].encoded else v)
                         for k, v in point.items()}
                self.study.enqueue_trial(fixed, user_attrs={"nnrun_attempt": 1})
            if self.plan.base_cfg.tracking.mlflow is not None:  # before READY: every worker finds it
                from nnrun.engine import tracking

                parent = tracking.open_parent(self.plan.base_cfg, self.name, "search", None)
                self.study.set_user_attr(PARENT_RUN, parent or {})
            self.study.set_user_attr(READY, True)
            return
        deadline = time.monotonic() + wait_s
        while not self.study.user_attrs.get(READY):
            if META not in self.study.user_attrs and self.study.get_trials(deepcopy=False):
                raise UsageError(f"study {self.name!r} in {self.storage.shown} was not made by nnrun sweep; "
                                 "give the sweep another name:")
            if time.monotonic() > deadline:
                raise UsageError(f"study {self.name!r} in {self.storage.shown} was never made ready (its creator "
                                 "stopped while enqueueing trials?); delete it (optuna delete-study) and start again")
            time.sleep(0.5)
        stored = self.study.user_attrs.get(META) or {}
        if stored.get("fingerprint") != self.plan.fingerprint:
            raise UsageError(
                f"study {self.name!r} in {self.storage.shown} was created from another search "
                f"({self._differences(stored, meta)}); give the sweep another name: or delete the study")

    def finished(self) -> bool:
        """Whether the study exists and its budget is spent (then no worker needs to start);
        joins it (checking it is this search's) if so."""
        import optuna

        if self.rdb is None:
            self.connect()
        try:
            study = optuna.load_study(study_name=self.name, storage=self.rdb)
        except KeyError:
            return False
        if not study.user_attrs.get(READY):
            return False
        self.study = study
        if not self.progress()["done"]:
            return False
        self.open()
        return True

    @staticmethod
    def _differences(stored: dict, meta: dict) -> str:
        keys = [k for k in meta if k != "fingerprint" and stored.get(k) != meta[k]]
        return "differs in " + ", ".join(keys) if keys else "a different base config or sampler settings"

    @property
    def study_id(self) -> int:
        return self.study._study_id

    # -- trials ---------------------------------------------------------------------------
    def trials(self, states=None) -> list:
        return self.study.get_trials(deepcopy=False, states=states)

    def claim(self):
        """Atomically take a WAITING trial (WAITING -> RUNNING); its optuna.Trial, or None."""
        import optuna
        from optuna.trial import TrialState

        storage = self.study._storage  # the study's (cached) storage, as Study.ask uses it
        for frozen in storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.WAITING,)):
            trial_id = frozen._trial_id
            try:  # a heartbeat first: a worker killed right after claiming still leaves a stale trial
                self.rdb.record_heartbeat(trial_id)
            except Exception:  # noqa: BLE001 - another worker raced us to it; the claim decides
                pass
            try:
                if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                    self.study.sampler = make_sampler(self.plan, sampler_seed(self.plan.spec.seed, frozen.number))
                    return optuna.Trial(self.study, trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            except db_errors():  # a database hiccup: try the next (this one stays WAITING)
                time.sleep(0.05 + 0.1 * random.random())
        return None

    def fail_stale(self) -> None:
        """Fail trials whose worker stopped heartbeating (each is then re-queued by _stale)."""
        import optuna

        try:
            optuna.storages.fail_stale_trials(self.study)
        except db_errors():
            pass  # a database hiccup; the next round checks again

    def _stale(self, study, frozen) -> None:
        """Optuna calls this for each trial this worker failed for a missing heartbeat."""
        self.requeue(frozen, f"its worker stopped (no heartbeat for {self.plan.spec.grace} s)", study)

    def requeue(self, frozen, why: str, study=None, counted: bool = True) -> int | None:
        """A new WAITING trial with `frozen`'s parameters; its number (None if not re-queued).
        `counted` (its worker died): at most `retries` times per original trial. An interrupted
        trial (Ctrl-C, SIGTERM: not `counted`) is re-queued every time, keeping its attempt
        number. A trial that has a replacement already (another worker gave it up at the same
        moment) gets no second one. Marks the trial's run directory, when this host can see it
        and it still says running."""
        study = study or self.study
        trials = study.get_trials(deepcopy=False)
        existing = [t.number for t in trials if t.user_attrs.get("nnrun_replaces") == frozen.number]
        if existing:
            self.say(f"trial {frozen.number}: {why}; re-queued already as trial {existing[0]}")
            return existing[0]
        attempt = int(frozen.user_attrs.get("nnrun_attempt", 1))
        number = None
        if not counted or attempt <= self.plan.spec.retries:
            before = {t.number for t in trials}
            study.enqueue_trial(dict(frozen.params), user_attrs={
                "nnrun_attempt": attempt + 1 if counted else attempt, "nnrun_replaces": frozen.number,
                "nnrun_first": frozen.user_attrs.get("nnrun_first", frozen.number)})
            new = [t.number for t in study.get_trials(deepcopy=False) if t.number not in before
                   and t.user_attrs.get("nnrun_replaces") == frozen.number]
            number = new[0] if new else None
            self.say(f"trial {frozen.number}: {why}; re-queued as trial {number}")
        else:
            self.say(f"trial {frozen.number}: {why}; failed for good after {attempt} attempts (retries: "
                     f"{self.plan.spec.retries})")
        self.mark_run_dir(frozen, why + (f"; re-queued as trial {number}" if number is not None else ""))
        return number

    def run_dir_of(self, frozen):
        """The trial's run directory on this host (None if this host cannot see it)."""
        from nnrun.rundir import RunDir

        name = frozen.user_attrs.get("nnrun_name")
        found = sorted((self.directory / name).glob("*/run.json")) if name else []
        return RunDir(found[-1].parent) if found else None

    def mark_run_dir(self, frozen, reason: str) -> None:
        run = self.run_dir_of(frozen)
        if run is not None and run.read().get("status") == "running":
            run.finish("failed", reason=reason)

    def progress(self) -> dict:
        """Counts by outcome; `done` once nothing is WAITING or RUNNING (the budget is spent)."""
        from optuna.trial import TrialState

        trials = self.trials()
        replaced = {t.user_attrs.get("nnrun_replaces") for t in trials} - {None}
        counts = {"completed": 0, "pruned": 0, "failed": 0, "requeued": 0, "running": 0, "waiting": 0}
        for t in trials:
            counts[outcome(t, replaced)] += 1
        counts["done"] = not any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials)
        return counts


def outcome(trial, replaced: set) -> str:
    """completed | pruned | failed | requeued (failed, replaced by a new trial) | running | waiting."""
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL:
        return "requeued" if trial.number in replaced else "failed"
    return {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned", TrialState.RUNNING: "running",
            TrialState.WAITING: "waiting"}[trial.state]


def worker_identity() -> dict:
    return {"host": platform.node(), "pid": os.getpid()}


def worker_of(trial) -> dict:
    """{host, pid} of the worker process that claimed the trial ({} before it said)."""
    return trial.user_attrs.get("nnrun_worker") or {}


def result(trial) -> dict:
    """How the trial's run ended ({} while it runs, or if its worker died)."""
    return trial.user_attrs.get("nnrun_result") or {}
