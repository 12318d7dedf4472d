"""`nnrun sweep`: validate every trial, then print their commands or run them and summarise."""

from __future__ import annotations

from pathlib import Path

from nnrun.errors import RunFailed
from nnrun.sweep import summary
from nnrun.sweep.runner import Runner, cpu_count, detect_gpus, plan_slots, print_commands
from nnrun.sweep.sweep_file import load_sweep


def sweep_command(sweep_file: Path, *, jobs: int = 1, commands_only: bool = False, fail_fast: bool = False,
                  metric: str | None = None, out: Path | None = None, console=None, say=print,
                  worker: bool = False, threads: int | None = None, worker_process: bool = False) -> Path | None:
    """Returns the sweep directory; RunFailed (exit 1) if any trial did not complete (a search:
    if none completed)."""
    from nnrun.errors import UsageError

    sweep = load_sweep(sweep_file, out)  # ConfigError before anything is created
    if sweep.search is not None:
        from nnrun.search.command import search_command

        return search_command(sweep, jobs=jobs, commands_only=commands_only, fail_fast=fail_fast, metric=metric,
                              out=out, threads=threads, worker=worker, worker_process=worker_process,
                              console=console, say=say)
    if worker or worker_process or threads is not None:
        raise UsageError(f"{'--threads' if threads is not None else '--worker'} is for a sweep with a search: block; "
                         f"{sweep_file} has none")
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
