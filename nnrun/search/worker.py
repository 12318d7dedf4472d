"""A search worker: one process, TensorFlow imported once, trials run one after another.

Each trial starts from fresh Keras state (`keras.backend.clear_session`), and `nnrun train`'s
own setup then sets the trial's seeds, op determinism and dtype policy, so a trial trains
exactly as `nnrun train` on its run directory's config.yaml would in a fresh process (tested:
bit-identical metrics). What a process can set only once is the same for every trial of a
worker: TensorFlow's thread pools (runtime.threads: the base config's, or --threads), devices
and the distribution strategy; `runtime.*` keys cannot be searched. The worker itself creates no
TensorFlow object before its first trial, whose `nnrun train` setup applies them: after the
runtime has started, TensorFlow ignores thread and device settings.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import signal
import time

from nnrun.errors import ConfigError, NNRunError, Pruned, first_line, raise_terminated
from nnrun.search.heartbeat import Heartbeat
from nnrun.search.study import PARENT_RUN, Study, worker_identity
from nnrun.sweep.sweep_file import Sweep

IDLE_POLL_S = 2.0


@contextlib.contextmanager
def reused_data():
    """Within a worker, trials whose data settings (data.dataset, data.params) match reuse the
    built in-memory data set instead of generating or decoding it again (0.3-0.9 s per
    quickstart trial). The data set is read-only to training, so this changes no number (the
    bit-identical rerun test covers it); streamed data sets are built per trial."""
    from nnrun.engine import build

    original, cache = build.build_data, {}

    def build_data(cfg):
        key = json.dumps([cfg.data.dataset, cfg.data.params], sort_keys=True, default=str)
        if key not in cache:
            bundle = original(cfg)
            if any(split.x is None and split.held is None for split in bundle.splits.values()):
                return bundle
            cache.clear()  # one data set at a time
            cache[key] = bundle
        return cache[key]

    build.build_data = build_data  # prepare() calls build.build_data(cfg) at run time
    try:
        yield
    finally:
        build.build_data = original


@contextlib.contextmanager
def released_gradient_registrations():
    """Drop what TensorFlow registered for a trial's graphs once the trial is over.

    In graph mode every tf.custom_gradient call (Keras' all-reduce of the gradients, in each
    traced train step) registers a gradient function in a global registry that TensorFlow never
    prunes, and that function holds the trial's whole traced graph (tensorflow#97697): about
    29,000 objects and 20-30 MB per quickstart trial, for as long as the worker runs. The entries
    a trial registered serve only that trial's graphs, which nothing uses afterwards."""
    try:
        from tensorflow.python.framework import ops

        registry = ops._gradient_registry._registry
    except (ImportError, AttributeError):  # a TensorFlow without that registry: nothing to drop
        yield
        return
    before = set(registry)
    try:
        yield
    finally:
        for key in [k for k in registry if k not in before and k.startswith("CustomGradient-")]:
            del registry[key]


def suggest(trial, params) -> dict:
    """Ask the trial for every searched value (fixed ones for grid points and re-queued trials)."""
    values = {}
    for p in params:
        if p.kind == "choice":
            value = p.decode(trial.suggest_categorical(p.key, p.categories()))
        elif p.kind == "int":
            value = trial.suggest_int(p.key, int(p.low), int(p.high))
        else:
            value = trial.suggest_float(p.key, float(p.low), float(p.high), log=p.kind == "loguniform")
        values[p.key] = value
    return values


def _short(values: dict) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v:.4g}" if isinstance(v, float) else f"{k.rsplit('.', 1)[-1]}="
                     f"{json.dumps(v) if not isinstance(v, str) else v}" for k, v in values.items())


class Worker:
    def __init__(self, sweep: Sweep, threads: int | None = None, say=print, verbose: bool = False):
        self.sweep, self.plan, self.threads, self.say, self.verbose = sweep, sweep.search, threads, say, verbose
        self.study = Study(self.plan, sweep.name, sweep.directory, say)
        self.parent: dict | None = None  # the MLflow parent run, with tracking.mlflow
        self.tracking_args: list[str] = []  # --set items that make trials children of it

    def run(self) -> Study:
        """Pull trials until the study's budget is spent; returns the study (for the summary)."""
        from nnrun.engine import runtime

        runtime.import_tensorflow()  # first: the supervisor checks the storage meanwhile
        self.study.connect()
        # The metric was checked when the sweep file was loaded (search/plan.py plan_search); a
        # metric this data set does not log (val_accuracy of a pairs data set) fails the first
        # trial's first epoch (pruning.PruningReporter). Not checked here with Keras metrics:
        # creating one starts TensorFlow's runtime before the trials' runtime.threads apply.
        with reused_data():
            # What exists now (TensorFlow, Keras, Optuna) lives as long as the worker:
            # keep it out of the garbage collector's passes, so clearing Keras state between
            # trials collects only what the trials made (0.3 s -> a few ms per trial).
            gc.collect()
            gc.freeze()
            self.study.open()
            self._open_parent()
            study = self._loop()
        if self.parent is not None:  # the budget is spent (the last worker to stop ends it last)
            from nnrun.engine import tracking

            tracking.close_parent(self.plan.base_cfg, self.parent, "FINISHED")
        return study

    def _open_parent(self) -> None:
        """With tracking.mlflow, the trials are children of the MLflow parent run that the
        study's creator stored in its user attributes (search/study.py), on every machine."""
        from nnrun.engine import tracking

        cfg = self.plan.base_cfg
        if cfg.tracking.mlflow is None:
            return
        self.parent = self.study.study.user_attrs.get(PARENT_RUN) or None
        self.tracking_args = tracking.child_set_args(cfg, self.sweep.name, self.parent)

    def _loop(self) -> Study:
        counts = self.study.progress()
        self.say(f"search {self.sweep.name}: study in {self.study.storage.shown} "
                 f"({'created' if self.study.created else 'joined'}), budget {self.plan.trials} trials, "
                 f"{counts['completed'] + counts['pruned'] + counts['failed']} ended, {counts['waiting']} waiting, "
                 f"{counts['running']} running elsewhere")
        previous = signal.signal(signal.SIGTERM, raise_terminated) if _main_thread() else None
        try:
            waiting_said = False
            while True:
                self.study.fail_stale()
                trial = self.study.claim()
                if trial is not None:
                    waiting_said = False
                    self.run_trial(trial)
                    continue
                if self.study.progress()["done"]:
                    break
                if not waiting_said:
                    self.say("no trial left to claim; waiting for the running ones (a stopped worker's "
                             f"trial is re-queued after {self.plan.spec.grace} s without a heartbeat)")
                    waiting_said = True
                time.sleep(min(IDLE_POLL_S, self.plan.spec.heartbeat_interval))
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return self.study

    def run_trial(self, trial) -> None:
        """Train one claimed trial and tell the study how it ended; never raises for a trial's
        own failure (Ctrl-C / SIGTERM re-queue the trial and stop the worker)."""
        from optuna.trial import TrialState

        number, name = trial.number, self.plan.trial_name(trial.number)
        with Heartbeat(self.study.rdb, trial._trial_id, self.plan.spec.heartbeat_interval):
            started = time.monotonic()
            try:
                trial.set_user_attr("nnrun_name", name)
                trial.set_user_attr("nnrun_worker", worker_identity())
                values = suggest(trial, self.plan.params)
                self.say(f"trial {number} started: {_short(values)}")
                try:
                    set_args, cfg = self.plan.trial_config(values, name, self.sweep.directory, self.threads,
                                                           self.tracking_args)
                except ConfigError as exc:
                    self._tell(trial, TrialState.FAIL, None, {"status": "invalid", "reason": f"invalid config: {exc}"})
                    return
                state, value, result = self._train(trial, cfg, set_args)
                result["seconds"] = round(time.monotonic() - started, 2)
                self._tell(trial, state, value, result)
            except KeyboardInterrupt as exc:  # nnrun train's Terminated, or ours between its steps
                what = "SIGTERM" if type(exc).__name__ == "Terminated" else "Ctrl-C"
                self._give_back(trial, f"worker stopped ({what})")
                raise

    def _give_back(self, trial, why: str) -> None:
        """Re-queue the trial this worker was stopped in (not counted against `retries`). Its
        replacement is enqueued before it is failed: a worker polling the study between the two
        writes would otherwise see nothing waiting or running and leave. If another worker failed
        it meanwhile (its heartbeat was late), that one re-queues it: requeue() then finds that
        replacement and adds none, and whichever replacement exists first stands."""
        from optuna.trial import TrialState

        frozen = self.study.study._storage.get_trial(trial._trial_id)
        if frozen.state != TrialState.RUNNING:  # told already, or given up by another worker
            return
        self.study.requeue(frozen, why, counted=False)
        self._tell(trial, TrialState.FAIL, None, {"status": "interrupted", "reason": why}, quiet=True)

    def _train(self, trial, cfg, set_args: list[str]) -> tuple:
        """Run the trial through `nnrun train` in this process; (state, value, user attrs)."""
        import keras
        from optuna.trial import TrialState

        from nnrun.rundir import RunDir
        from nnrun.engine.train import Output, train
        from nnrun.engine.metrics import higher_is_better
        from nnrun.results.report import report_finished_run
        from nnrun.search.pruning import PruningReporter

        keras.backend.clear_session()  # fresh Keras state; train's setup sets seeds, determinism, dtype policy
        reporter = PruningReporter(trial, self.plan.metric, cfg.train.epochs, cfg.train.monitor,
                                   higher_is_better(cfg.train.monitor), self.plan.spec.grace)
        argv = ["nnrun", "train", str(self.sweep.base)] + [a for item in set_args for a in ("--set", item)]
        from rich.console import Console

        out = Output(console=Console(stderr=True), progress=False, epoch_lines=self.verbose)
        try:
            with released_gradient_registrations():
                run = train(cfg, argv, out, extra_callbacks=[reporter], on_finished=report_finished_run)
        except Pruned as exc:  # train has drawn its learning curves and written the report
            run = RunDir(exc.run_dir)
            return TrialState.PRUNED, None, result_of(run, str(exc))
        except KeyboardInterrupt:
            raise
        except NNRunError as exc:  # failed (NaN, a model that does not fit the data, ...)
            return TrialState.FAIL, None, result_of(self.study.run_dir_of(trial), str(exc), "failed")
        except Exception as exc:  # noqa: BLE001 - a trial's crash never stops the study
            return TrialState.FAIL, None, result_of(self.study.run_dir_of(trial), f"{type(exc).__name__}: "
                                                    f"{first_line(exc)}", "failed")
        value = reporter.last_value
        if value is None or math.isnan(value):  # no epoch, or NaN
            return TrialState.FAIL, None, result_of(run, f"{self.plan.metric} is {value}", "failed")
        return TrialState.COMPLETE, value, result_of(run, None)

    def _tell(self, trial, state, value, result: dict, quiet: bool = False) -> bool:
        """Record how the trial ended; False if the study had given it up already."""
        import optuna
        from optuna.trial import TrialState

        if result.get("reason"):
            result["reason"] = self.study.storage.scrub(result["reason"])
        try:
            trial.set_user_attr("nnrun_result", result)
            self.study.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            if not quiet:
                self.say(f"trial {trial.number}: the study had given it up (no heartbeat for "
                         f"{self.plan.spec.grace} s) and re-queued it; this result is not counted")
            return False
        if quiet:
            return True
        metric = self.plan.metric
        if state == TrialState.COMPLETE:
            self.say(f"trial {trial.number} completed: {metric} {value:.4f} ({result.get('epochs')} epochs, "
                     f"{result.get('seconds')} s)")
        elif state == TrialState.PRUNED:
            self.say(f"trial {trial.number} {result.get('reason')} ({result.get('seconds')} s)")
        else:
            self.say(f"trial {trial.number} failed: {result.get('reason')}")
        return True


def result_of(run, reason: str | None, status: str | None = None) -> dict:
    """How a trial's run ended, as stored in the study (so every host's summary has it)."""
    record = run.read() if run is not None else {}
    return {"status": status or record.get("status"), "reason": reason,
            "run_dir": str(run.path) if run is not None else None, "epochs": record.get("epochs_completed", 0),
            "wall_time_s": record.get("wall_time_s"),
            "final_metrics": {k: v for k, v in (record.get("final_metrics") or {}).items()
                              if isinstance(v, (int, float, str, bool)) or v is None}}


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def run_worker(sweep: Sweep, threads: int | None = None, say=print, verbose: bool = False) -> Study:
    return Worker(sweep, threads, say, verbose).run()
