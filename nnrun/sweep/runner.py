"""Run a sweep's trials as separate `nnrun train` processes, a few at a time.

Separate processes (not threads in one TensorFlow process) because TF's thread pools, seeds,
determinism and dtype policy are process-wide; a crashed or killed trial cannot take the
others down; and each trial is exactly the command `--print-commands` shows.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nnrun.config import identity, resolve
from nnrun.config.safe_yaml import read_yaml_file
from nnrun.rundir import CONFIG_YAML, RunDir
from nnrun.results.runs import find_runs
from nnrun.errors import ConfigError, raise_terminated
from nnrun.sweep.sweep_file import Sweep, Trial

POLL_S = 0.2
TERMINATE_GRACE_S = 60


@dataclass
class Outcome:
    """What became of one trial in this invocation."""

    trial: Trial
    status: str = "not run"  # completed | failed | interrupted | not run
    action: str = "not started"  # ran | skipped (already completed) | not started
    run_dir: str | None = None
    final_metrics: dict = field(default_factory=dict)
    wall_time_s: float | None = None
    reason: str | None = None
    returncode: int | None = None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def detect_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, else those nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def plan_slots(jobs: int, cpus: int, gpus: list[str]) -> tuple[list[str | None], int]:
    """Parallel slots (each a GPU id, or None on CPU) and the CPU threads each trial may use.

    One trial per GPU; on CPU, `jobs` trials share the cores evenly."""
    slots: list[str | None] = list(gpus[:jobs]) if gpus else [None] * jobs
    return slots, max(1, cpus // len(slots))


def trial_env(threads: int, gpu: str | None) -> dict[str, str]:
    env = dict(os.environ)
    # runtime.threads sizes TensorFlow's pools; these cap the OpenMP / oneDNN pools as well.
    env.update(OMP_NUM_THREADS=str(threads), TF_NUM_INTRAOP_THREADS=str(threads),
               TF_NUM_INTEROP_THREADS=str(min(2, threads)))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def train_argv(sweep: Sweep, trial: Trial, program: list[str], threads: int | None = None,
               extra: list[str] = ()) -> list[str]:
    from nnrun import registry

    argv = [*program, "train", str(sweep.base)]
    for plugin in registry.LOADED_PLUGINS:  # trials need the sweep's --plugin components too
        argv += ["--plugin", plugin]
    for item in trial.set_args + ([f"runtime.threads={threads}"] if threads else []) + list(extra):
        argv += ["--set", item]
    return argv


def print_commands(sweep: Sweep, threads: int | None = None) -> list[str]:
    """One shell line per trial: `nnrun train BASE --set ...` (the same runs as `nnrun sweep`)."""
    return [shlex.join(train_argv(sweep, t, ["nnrun"], threads)) for t in sweep.trials]


def completed_runs(directory: Path) -> dict[str, dict]:
    """identity -> newest completed run record under the sweep directory."""
    found: dict[str, dict] = {}
    if not directory.is_dir():
        return found
    for record in find_runs(directory):  # newest first
        if record.get("status") != "completed":
            continue
        try:
            key = identity(resolve(read_yaml_file(Path(record["path"]) / CONFIG_YAML)))
        except ConfigError:
            continue  # a run whose config no longer validates is not one of these trials
        found.setdefault(key, record)
    return found


def _from_record(outcome: Outcome, record: dict) -> None:
    outcome.status = record.get("status") or "failed"
    outcome.run_dir = record.get("path") or outcome.run_dir
    outcome.final_metrics = record.get("final_metrics") or {}
    outcome.wall_time_s = record.get("wall_time_s")
    outcome.reason = record.get("reason")


PARENT_RUN = "mlflow_parent.json"  # {run_id, tracking_uri}: the sweep's MLflow parent run
_RUN_DIR_RE = re.compile(r"\(run directory: (.+)\)\s*$")


def _run_dir_from(output: str) -> Path | None:
    """The run directory a `nnrun train` printed: its last stdout line, or the failure message."""
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        match = _RUN_DIR_RE.search(line)
        candidate = Path(match.group(1) if match else line)
        if line and (candidate / "run.json").is_file():
            return candidate
    return None


@dataclass
class _Running:
    trial: Trial
    proc: subprocess.Popen
    slot: str | None
    log: Path
    out: object  # the log file the process writes to
    offset: int
    started: float


class Runner:
    """Launch pending trials into free slots, collect outcomes, stop on request."""

    def __init__(self, sweep: Sweep, jobs: int, fail_fast: bool, say: Callable[[str], None],
                 on_change: Callable[[list[Outcome]], None] = lambda outcomes: None,
                 program: list[str] | None = None, gpus: list[str] | None = None):
        self.sweep, self.jobs, self.fail_fast, self.say, self.on_change = sweep, jobs, fail_fast, say, on_change
        self.program = program or [sys.executable, "-m", "nnrun"]
        self.gpus = detect_gpus() if gpus is None else gpus
        self.slots: list[str | None] = []
        self.threads = 1
        self.outcomes = {t.name: Outcome(t) for t in sweep.trials}
        self.logs = sweep.directory / "logs"
        self.parent: dict | None = None  # the MLflow parent run of the trials (tracking.mlflow)

    def run(self) -> list[Outcome]:
        self.sweep.directory.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        from nnrun.engine.hparams import write_experiment

        write_experiment(self.sweep.directory, self.sweep.swept, self.sweep.metric)  # TensorBoard HParams
        done = completed_runs(self.sweep.directory)
        queue = deque()
        for trial in self.sweep.trials:
            if trial.identity in done:
                outcome = self.outcomes[trial.name]
                _from_record(outcome, done[trial.identity])
                outcome.action = "skipped"
            else:
                queue.append(trial)
        # Threads per trial for the trials that will actually run side by side.
        self.slots, self.threads = plan_slots(max(1, min(self.jobs, len(queue))), cpu_count(), self.gpus)
        total = len(self.sweep.trials)
        self.say(f"sweep {self.sweep.name}: {total} trials, {total - len(queue)} already completed, "
                 f"{len(queue)} to run, {len(self.slots)} at a time, {self.threads} CPU threads each"
                 + (f", GPUs {','.join(self.slots)}" if self.slots[0] is not None else ""))
        self.on_change(self.ordered())
        running: list[_Running] = []
        free = list(self.slots)
        previous = signal.signal(signal.SIGTERM, raise_terminated)  # stop like Ctrl-C (exit 143)
        stopping = False
        ended = "KILLED"
        if queue:
            self._open_parent()
        try:
            while running or (queue and not stopping):
                while queue and free and not stopping:
                    running.append(self._start(queue.popleft(), free.pop(0)))
                time.sleep(POLL_S)
                for job in [j for j in running if j.proc.poll() is not None]:
                    running.remove(job)
                    free.append(job.slot)
                    outcome = self._finish(job)
                    self.on_change(self.ordered())
                    if outcome.status != "completed" and self.fail_fast and not stopping:
                        stopping = True
                        self.say("--fail-fast: stopping the sweep")
                        self._terminate(running)
            ended = "FINISHED" if all(o.status == "completed" for o in self.ordered()) else "FAILED"
        except KeyboardInterrupt:
            self.say("interrupted: terminating running trials")
            self._terminate(running)
            for job in running:
                self._finish(job)
            self.on_change(self.ordered())
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
            if self.parent is not None:
                from nnrun.engine import tracking

                tracking.close_parent(self.sweep.trials[0].config, self.parent, ended)
        return self.ordered()

    def _open_parent(self) -> None:
        """With tracking.mlflow, one MLflow parent run for the sweep, kept in the sweep directory
        so that running the sweep again adds its trials under the same parent."""
        from nnrun.engine import tracking
        from nnrun.rundir import atomic_write

        cfg = self.sweep.trials[0].config
        if cfg.tracking.mlflow is None:
            return
        stored_at = self.sweep.directory / PARENT_RUN
        try:
            stored = json.loads(stored_at.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        self.parent = tracking.open_parent(cfg, self.sweep.name, "sweep", stored if isinstance(stored, dict) else None)
        if self.parent is not None and self.parent != stored:
            atomic_write(stored_at, json.dumps(self.parent) + "\n")

    def ordered(self) -> list[Outcome]:
        return [self.outcomes[t.name] for t in self.sweep.trials]

    def _start(self, trial: Trial, slot: str | None) -> _Running:
        from nnrun.engine import tracking

        argv = train_argv(self.sweep, trial, self.program, self.threads,
                          tracking.child_set_args(trial.config, self.sweep.name, self.parent))
        log = self.logs / f"{trial.name}.log"
        out = open(log, "a", encoding="utf-8")  # noqa: SIM115 - closed in _finish
        out.write(f"\n== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(argv)}\n")
        out.flush()
        offset = out.tell()  # before the child shares this file offset
        # New session: a Ctrl-C reaches the sweep only, which then stops its trials in order.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=trial_env(self.threads, slot), start_new_session=True)
        self.outcomes[trial.name].action = "ran"
        self.say(f"started {trial.name}" + (f" on GPU {slot}" if slot is not None else ""))
        return _Running(trial, proc, slot, log, out, offset, time.monotonic())

    def _finish(self, job: _Running) -> Outcome:
        code = job.proc.wait()
        job.out.close()
        with open(job.log, encoding="utf-8", errors="replace") as fh:
            fh.seek(job.offset)
            output = fh.read()
        outcome = self.outcomes[job.trial.name]
        outcome.returncode = code
        run_dir = _run_dir_from(output)
        if run_dir is not None:
            outcome.run_dir = str(run_dir)
            _from_record(outcome, {**RunDir(run_dir).read(), "path": str(run_dir)})
        else:
            lines = [line for line in output.strip().splitlines() if line.strip()]
            outcome.status = "interrupted" if code in (130, 143, -signal.SIGTERM, -signal.SIGINT) else "failed"
            outcome.reason = lines[-1] if lines else f"exit code {code}"
            outcome.wall_time_s = round(time.monotonic() - job.started, 2)
        if code != 0 and outcome.status == "completed":
            outcome.status, outcome.reason = "failed", f"exit code {code}"
        shown = f"{self.sweep.metric}={outcome.final_metrics[self.sweep.metric]:.4f}" \
            if isinstance(outcome.final_metrics.get(self.sweep.metric), (int, float)) else (outcome.reason or "")
        self.say(f"{outcome.status} {job.trial.name} in {outcome.wall_time_s} s: {shown}"
                 + ("" if outcome.status == "completed" else f" (log: {job.log})"))
        return outcome

    def _terminate(self, running: list[_Running]) -> None:
        """SIGTERM each trial (it records itself as interrupted), then wait; kill stragglers."""
        terminate([job.proc for job in running])


def terminate(procs: list[subprocess.Popen], grace: float = TERMINATE_GRACE_S) -> None:
    """SIGTERM each process still running, wait up to `grace` seconds for all, kill stragglers."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
