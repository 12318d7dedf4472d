"""`nnrun sweep` for grid/zip/random/seeds sweeps: print the trials' commands, or run them and
summarise. (A sweep file with a `search:` block goes to nnrun.search; the CLI dispatches.)"""

from __future__ import annotations

from nnrun.errors import RunFailed, UsageError
from nnrun.sweep import summary
from nnrun.sweep.runner import Runner, cpu_count, detect_gpus, plan_slots, print_commands
from nnrun.sweep.sweep_file import Sweep


def sweep_command(sweep: Sweep, *, jobs: int = 1, commands_only: bool = False, fail_fast: bool = False,
                  metric: str | None = None, console=None, say=print, worker: bool = False,
                  threads: int | None = None, worker_process: bool = False):
    """Returns the sweep directory; RunFailed (exit 1) if any trial did not complete."""
    if worker or worker_process or threads is not None:
        raise UsageError(f"{'--threads' if threads is not None else '--worker'} is for a sweep with a search: block; "
                         f"{sweep.path} has none")
    if commands_only:
        _, threads = plan_slots(max(1, min(jobs, len(sweep.trials))), cpu_count(), detect_gpus())
        for line in print_commands(sweep, threads if jobs > 1 else None):
            print(line, flush=True)
        return None
    metric = metric or sweep.metric
    runner = Runner(sweep, jobs, fail_fast, say, on_change=lambda outcomes: summary.write(sweep, outcomes))
    outcomes = runner.run()
    summary.plot(sweep, outcomes, metric)
    if console is not None:
        console.print(summary.table(sweep, outcomes, metric))
    print(sweep.directory, flush=True)
    bad = [o for o in outcomes if o.status != "completed"]
    if bad:
        names = ", ".join(o.trial.name for o in bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise RunFailed(f"{len(bad)} of {len(outcomes)} trials did not complete ({names}); "
                        f"see {sweep.directory / 'sweep.csv'} and {sweep.directory / 'logs'}")
    return sweep.directory
