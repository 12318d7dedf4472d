"""`nnrun sweep FILE` (and `--worker`, the same on any other host) for a sweep with a `search:` block.

This process opens the study (creating it, with its budget, if it is new: no TensorFlow, so a
storage problem is one line before anything starts) and supervises `--jobs` worker processes
(default 1), each of which imports TensorFlow once and runs trials until the budget is spent
(nnrun/search/worker.py). The supervisor restarts a worker that dies while the study still
has trials: after a native crash (SIGSEGV, SIGABRT, ...) during a trial, that trial is failed
for good (a crash follows the trial's settings: re-queuing it would crash the next worker
too); after any other death (SIGKILL, the OOM killer) the trial is left to the heartbeat,
which re-queues it. Killing the supervisor kills its workers (Linux: PR_SET_PDEATHSIG). When
the study is done it writes the summary and prints the sweep directory last.
"""

from __future__ import annotations

import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from nnrun.errors import RunFailed, UsageError, raise_terminated
from nnrun.sweep.runner import terminate
from nnrun.sweep.sweep_file import Sweep

POLL_S = 0.1
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}


def worker_argv(sweep: Sweep, program: list[str], out: Path | None, threads: int | None,
                process: bool = False) -> list[str]:
    """The command of one worker: `nnrun sweep FILE --worker` (what a user starts on a host; with
    storage: null, where the study is this host's SQLite file, the same without --worker), or with
    `process` the in-process worker a supervisor starts."""
    from nnrun import registry

    argv = [*program, "sweep", str(sweep.path)]
    argv += ["--worker-process"] if process else ["--worker"] if sweep.search.spec.storage is not None else []
    argv += ["--out", str(out)] if out is not None else []
    argv += ["--threads", str(threads)] if threads else []
    for plugin in registry.LOADED_PLUGINS:
        argv += ["--plugin", plugin]
    return argv


def search_command(sweep: Sweep, *, jobs: int = 1, commands_only: bool = False, fail_fast: bool = False,
                   metric: str | None = None, out: Path | None = None, threads: int | None = None,
                   worker: bool = False, worker_process: bool = False, console=None, say=print,
                   program: list[str] | None = None) -> Path | None:
    """`worker` (--worker) is what a user starts on each host to join one shared study: it may
    create the study (the first one does), and is refused without search.storage, whose SQLite
    file would be a study of this host alone."""
    from nnrun.sweep.runner import cpu_count, detect_gpus, plan_slots

    if worker and sweep.search.spec.storage is None:
        raise UsageError("--worker joins a shared study: set search.storage to a database every worker reaches "
                         "(e.g. storage: {env: NNRUN_STORAGE} with a postgresql:// URL); for workers on this "
                         f"host alone, run `nnrun sweep {sweep.path}` (--jobs N)")
    if fail_fast:
        raise UsageError("--fail-fast does not apply to a search: a failed or pruned trial is part of it "
                         "and the study goes on")
    if threads is not None and jobs > 1:
        raise UsageError("--threads sets the threads of one worker; with --jobs N each worker gets cores / N")
    if worker_process:  # a supervisor's child: train trials in this process until the budget is spent
        from nnrun.search.worker import run_worker

        try:
            run_worker(sweep, threads=threads, say=say)
        except KeyboardInterrupt as exc:  # its supervisor stopped it, and says so
            raise SystemExit(143 if type(exc).__name__ == "Terminated" else 130) from None
        # Done: every result is in the study and every run directory is written. Skip the
        # interpreter's teardown of TensorFlow (about half a second) that the supervisor waits for.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    slots, per_worker = plan_slots(jobs, cpu_count(), detect_gpus()) if jobs > 1 else ([None], threads)
    if commands_only:  # one line per worker: run them here, on other hosts, or through a scheduler
        for _ in slots:
            print(shlex.join(worker_argv(sweep, ["nnrun"], out, per_worker)), flush=True)
        return None
    from nnrun.search.study import Study

    study = Study(sweep.search, sweep.name, sweep.directory, say)  # a missing URL variable: one line here
    from nnrun.engine.hparams import write_experiment

    write_experiment(sweep.directory, sweep.swept, metric or sweep.metric)  # TensorBoard HParams
    try:
        Supervisor(sweep, study, slots, per_worker, say, program or [sys.executable, "-m", "nnrun"]).run()
        return summarise(sweep, study, metric, console, say)
    finally:
        study.close()


def summarise(sweep: Sweep, study, metric: str | None, console, say) -> Path:
    from nnrun.search import report

    info = report.collect(study, metric)
    report.write(sweep.directory, info, sweep.swept)
    if console is not None:
        console.print(report.table(info, sweep.swept))
    say(f"{report.counts_text(info)}; {info['total_epochs']} epochs trained; {report.best_text(info)}; "
        f"report: {sweep.directory / report.REPORT}")
    print(sweep.directory, flush=True)
    if not info["done"]:
        c = info["counts"]
        raise RunFailed(f"the study is not done ({c['running']} trials running, {c['waiting']} waiting) and its "
                        "workers stopped; run the command again to continue it")
    if info["best"] is None:
        raise RunFailed(f"no trial of search {sweep.name} completed; see {sweep.directory / 'sweep.csv'}")
    return sweep.directory


def _prepare_summary() -> None:
    """Import what the summary needs while the workers start (the supervisor is idle until they end)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import optuna.importance  # noqa: F401


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when its supervisor dies (Linux), so killing a
    worker command kills the trial it runs (whose heartbeat then stops)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Supervisor:
    def __init__(self, sweep: Sweep, study, slots: list, threads: int | None, say, program: list[str]):
        self.sweep, self.study, self.slots, self.threads, self.say = sweep, study, slots, threads, say
        self.argv = worker_argv(sweep, program, sweep.directory, threads, process=True)
        self.logs = sweep.directory / "logs" if len(slots) > 1 else None
        self.restarts_left = 2 * sweep.search.trials + 3

    def _start(self, i: int):
        from nnrun.sweep.runner import trial_env

        out = None
        if self.logs is not None:  # several workers: one log each; one worker talks on our stderr
            self.logs.mkdir(parents=True, exist_ok=True)
            out = open(self.logs / f"worker-{i}.log", "a", encoding="utf-8")  # noqa: SIM115 - closed in run
            out.write(f"\n== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(self.argv)}\n")
            out.flush()
        env = trial_env(self.threads, self.slots[i]) if self.threads else None
        proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out or sys.stderr,
                                stderr=subprocess.STDOUT if out else None, env=env, start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        return proc, out

    def run(self) -> None:
        running: dict[int, tuple] = {}
        previous = signal.signal(signal.SIGTERM, raise_terminated)
        error = None
        try:
            for i in range(len(self.slots)):  # first: their TensorFlow import overlaps what follows
                running[i] = self._start(i)
            try:
                # The workers connect once TensorFlow is imported, seconds from now: a storage
                # problem found here stops them before they could report it a second time.
                self.study.connect()
                if self.study.finished():
                    self.say(f"search {self.sweep.name}: the study's budget is spent already; nothing to run")
                    terminate([proc for proc, _ in running.values()], grace=5)
                    for _, out in running.values():
                        if out is not None:
                            out.close()
                    running.clear()
                else:
                    self.study.open()  # create the study with its budget (the workers wait for it), or join it
            except BaseException:
                terminate([proc for proc, _ in running.values()], grace=5)
                raise
            _prepare_summary()
            if self.logs is not None:
                self.say(f"search {self.sweep.name}: {len(self.slots)} workers, {self.threads} CPU threads each; "
                         f"logs in {self.logs}")
            while running:
                time.sleep(POLL_S)
                for i, (proc, out) in list(running.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    del running[i]
                    if out is not None:
                        out.close()
                    if code == 0:  # the study is done
                        continue
                    if code == 2:  # a config or usage error: every restart would say the same
                        error = self._last_line(i) or f"worker {i} exited 2"
                        continue
                    if not self._handle_death(proc.pid, code):
                        continue
                    running[i] = self._start(i)
        except KeyboardInterrupt:
            self.say("interrupted: stopping the workers (their running trials are re-queued)")
            terminate([proc for proc, _ in running.values()])
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
            for _, out in running.values():
                if out is not None:
                    out.close()
        if error is not None:
            if self.logs is None:
                raise SystemExit(2)  # the worker said why on our stderr, in one line
            raise UsageError(error.split(": ", 1)[1] if error.startswith(("config error: ", "error: ")) else error)

    def _handle_death(self, pid: int, code: int) -> bool:
        """A worker died with the study unfinished: fail its trial if it crashed; restart it?"""
        name = signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else f"exit {code}"
        if code < 0 and -code in CRASH_SIGNALS:
            for number in self.fail_trials_of(pid, f"the worker process crashed ({name}) while training it; not "
                                                   "re-queued (a crash follows the trial's settings)"):
                self.say(f"trial {number}: its worker crashed ({name}); the trial is failed, the worker restarted")
        elif code in (130, 143) or code in (-signal.SIGINT, -signal.SIGTERM):
            self.say(f"a worker was stopped ({name}); its trial is re-queued")
            return False
        elif code > 0:
            self.say(f"a worker stopped ({name}); a trial it was running is re-queued once its heartbeat is "
                     f"{self.sweep.search.spec.grace} s old")
        else:
            self.say(f"a worker died ({name}); its trial is re-queued once its heartbeat is "
                     f"{self.sweep.search.spec.grace} s old")
        if self.study.progress()["done"] or self.restarts_left <= 0:
            return False
        self.restarts_left -= 1
        return True

    def fail_trials_of(self, pid: int, reason: str) -> list[int]:
        """Fail the RUNNING trials a dead worker process of this host held (their run directories too)."""
        import optuna
        from optuna.trial import TrialState

        from nnrun.search.study import worker_of
        from nnrun.search.worker import result_of

        failed = []
        for t in self.study.trials(states=(TrialState.RUNNING,)):
            if worker_of(t) != {"host": platform.node(), "pid": pid}:
                continue
            run = self.study.run_dir_of(t)
            try:
                self.study.rdb.set_trial_user_attr(t._trial_id, "nnrun_result", result_of(run, reason, "crashed"))
                self.study.study.tell(t.number, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker had failed it already (a stale heartbeat)
            self.study.mark_run_dir(t, reason)
            failed.append(t.number)
        return failed

    def _last_line(self, i: int) -> str | None:
        if self.logs is None:
            return None  # its lines went to our stderr
        lines = [line for line in (self.logs / f"worker-{i}.log").read_text(errors="replace").splitlines()
                 if line.strip()]
        return lines[-1] if lines else None
