"""The commands: each parses its arguments, calls one function of the package below, and
prints the result (tables.py draws the tables). The last stdout line of a command that makes
something is its path, for shell loops.

Imports stay light at module level: TensorFlow is only imported inside the commands that
train or load models, so `--help`, `validate`, `components` and `schema` answer at once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from nnrun.cli.app import Command, _state, app, handled, stderr, stdout
from nnrun.cli.tables import component_tables, confusion_tables, metrics_table, runs_table
from nnrun.rundir import read_json
from nnrun.safe_text import for_console


# -- train / validate ---------------------------------------------------------------------

SET_HELP = "Override a config value: KEY.PATH=VALUE (YAML-typed). Repeatable."


PLUGIN_HELP = ("Python file or module that registers extra components: the only way code reaches nnrun "
               "(a run directory's recorded plugins are never imported; pass them again). Repeatable.")


def _load_plugins(plugins: list[str]) -> None:
    from nnrun import registry

    for plugin in plugins:
        registry.load_plugin(plugin)


@app.command(cls=Command)
@handled
def train(
    config: Optional[Path] = typer.Argument(None, metavar="CONFIG",
                                            help="YAML config file, - for stdin (optional with --resume)."),
    set_: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run directory from its last backup."),
    allow_change: list[str] = typer.Option([], "--allow-change", help="With --resume: accept a change of this key."),
    plugin: list[str] = typer.Option([], "--plugin", help=PLUGIN_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the run directory."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Progress even when stdout is not a terminal."),
):
    """Train from CONFIG (or --resume RUN_DIR); the last line printed is the run directory."""
    from nnrun.config import load_config
    from nnrun.rundir import command_line
    from nnrun.engine.train import Output, train as run_training
    from nnrun.errors import UsageError
    from nnrun.results.report import report_finished_run

    _load_plugins(plugin)
    run, changes = None, []
    if resume is not None:
        from nnrun.engine.resume import prepare_resume

        run, cfg, changes = prepare_resume(resume, config, set_, allow_change,
                                           say=lambda line: stderr.print(for_console(line), highlight=False, soft_wrap=True))
    elif config is None:
        raise UsageError("train needs a CONFIG file (or --resume RUN_DIR)")
    else:
        cfg = load_config(config, set_)
    interactive = stdout.is_terminal and not quiet
    out = Output(console=stderr, progress=interactive and stderr.is_terminal, epoch_lines=verbose and not quiet)
    if interactive and not stderr.is_terminal:
        out.epoch_lines = True
    run = run_training(cfg, command_line(), out, resume=run, changes=changes, on_finished=report_finished_run)
    if interactive or verbose:
        record = run.read()
        stdout.print(metrics_table(f"{cfg.name}: {record.get('status')} in {record.get('wall_time_s')} s",
                                   record.get("final_metrics", {})))
    print(run.path, flush=True)


@app.command(cls=Command)
@handled
def validate(
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML config file, - for stdin."),
    set_: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    print_config: bool = typer.Option(False, "--print", help="Print the resolved config (all defaults filled)."),
    plugin: list[str] = typer.Option([], "--plugin", help=PLUGIN_HELP),
):
    """Check CONFIG fully (schema, components, parameters) without importing TensorFlow."""
    from nnrun.config import load_config, to_yaml

    _load_plugins(plugin)
    cfg = load_config(config, set_)
    if print_config:
        print(to_yaml(cfg), end="")
    else:
        source = "<stdin>" if str(config) == "-" else config
        print(f"ok: {source} (model {cfg.model.name}, dataset {cfg.data.dataset}, {cfg.train.epochs} epochs)")


# -- components / schema ------------------------------------------------------------------

@app.command(cls=Command)
@handled
def components(
    kind: Optional[str] = typer.Argument(None, metavar="KIND", help="Only this kind: dataset, model, loss, optimizer, schedule, technique, explainer, layer."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """List every registered component with its parameters, types, defaults and doc."""
    from nnrun import registry
    from nnrun.errors import UsageError

    if kind is not None and kind not in registry.KINDS:
        raise UsageError(registry.unknown_message("component kind", kind, list(registry.KINDS)))
    rows = [comp.describe() for comp in registry.components(kind)]
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        stdout.print(f"no {kind} components are registered yet")
        return
    for table in component_tables(rows):
        stdout.print(table)
        stdout.print()


@app.command(cls=Command)
@handled
def schema():
    """Print the config's JSON Schema (for editor completion and validation)."""
    from nnrun.config.json_schema import json_schema

    print(json.dumps(json_schema(), indent=2))


# -- evaluate / runs ----------------------------------------------------------------------

@app.command(cls=Command)
@handled
def evaluate(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run directory."),
    split: str = typer.Option("val", help="Split to score: val, test or train."),
    checkpoint: str = typer.Option("best", help="Checkpoint: best or last."),
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON."),
    plugin: list[str] = typer.Option([], "--plugin", help=PLUGIN_HELP),
):
    """Score a run's checkpoint on a split; the result is appended to metrics.jsonl."""
    from nnrun.inference.evaluate import evaluate as run_evaluate

    _load_plugins(plugin)
    scores = run_evaluate(run_dir, split, checkpoint)
    if as_json:
        print(json.dumps(scores))
        return
    stdout.print(metrics_table(f"{run_dir} [{split}, {checkpoint}]", scores))
    summary = read_json(Path(run_dir) / "diagnostics" / f"{split}.json", Path(run_dir))
    if isinstance(summary, dict):
        for table in confusion_tables(summary):
            stdout.print(table)


@app.command(cls=Command)
@handled
def runs(
    root: Path = typer.Argument(Path("runs"), metavar="ROOT", help="Runs root to scan."),
    filters: list[str] = typer.Option([], "--filter", "-f", help="KEY=VALUE (or KEY!=, >=, <=, >, < VALUE): a final metric, run.json field (status) or dotted config key (optimizer.name); numbers compare as shown (4 decimals); repeatable, all must match."),
    sort: Optional[str] = typer.Option(None, "--sort", help="Best first by this metric or key (lowest first for losses, errors, times)."),
    reverse: bool = typer.Option(False, "--reverse", help="Reverse the --sort order."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Table of runs under ROOT: status, epochs, final metrics, wall time."""
    from nnrun.results.runs import find_runs, public

    records = find_runs(root, filters, sort, reverse)
    if as_json:
        print(json.dumps([public(r) for r in records], indent=2, default=str))
        return
    if not records:
        stdout.print(for_console(f"no runs under {root}" + (f" match {' '.join(filters)}" if filters else "")))
        return
    stdout.print(runs_table(records, root, sort))


# -- explain ------------------------------------------------------------------------------

@app.command(cls=Command)
@handled
def explain(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run directory."),
    method: str = typer.Option("gradcam", "--method", "-m",
                               help="gradcam, gradcam++, integrated-gradients, smoothgrad or gradient."),
    num_images: int = typer.Option(16, "--num-images", "-n", min=1, help="Explain the first N images of the split."),
    split: str = typer.Option("val", help="Split: val, test or train."),
    target: str = typer.Option("predicted", help="Class to explain: predicted, true or a class index."),
    layer: Optional[str] = typer.Option(None, help="Conv layer for Grad-CAM ('name' or 'submodel/name'); default the last 4-D layer."),
    steps: Optional[int] = typer.Option(None, help="Integrated-gradients steps (default 64)."),
    baseline: Optional[str] = typer.Option(None, help="Integrated-gradients baseline: black, blur, uniform or a number."),
    samples: Optional[int] = typer.Option(None, help="SmoothGrad noisy samples per image (default 16)."),
    noise: Optional[float] = typer.Option(None, help="SmoothGrad noise std as a fraction of the image range (default 0.15)."),
    base: Optional[str] = typer.Option(None, help="SmoothGrad base explainer (default gradient)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Model inputs per gradient call."),
    output: Optional[Path] = typer.Option(None, help="Output directory (default RUN_DIR/explain/<method>)."),
    sanity_check: bool = typer.Option(False, "--sanity-check", help="Also run the weight-randomisation test."),
    checkpoint: str = typer.Option("best", help="Checkpoint: best or last."),
    plugin: list[str] = typer.Option([], "--plugin", help=PLUGIN_HELP),
):
    """Heatmaps for a run's images (Grad-CAM, IG, ...); the last line printed is the output directory."""
    from nnrun.explain.command import explain as run_explain

    _load_plugins(plugin)
    manifest = run_explain(run_dir, method, layer=layer, num_images=num_images, split=split, target=target,
                           steps=steps, batch_size=batch_size, output=output, baseline=baseline, samples=samples,
                           noise=noise, base=base, sanity_check=sanity_check, checkpoint=checkpoint)
    figures = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in manifest["summary"].items())
    print(f"{method}: {manifest['num_images']} images, {figures}", flush=True)
    print(manifest["output"], flush=True)


# -- predict ------------------------------------------------------------------------------

@app.command(cls=Command)
@handled
def predict(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run directory."),
    inputs: list[Path] = typer.Argument(..., metavar="INPUT",
                                        help="Image files, folders (searched recursively) or one .npz (array x)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="CSV file to write (default RUN_DIR/predictions/<timestamp>.csv)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", "-k", min=1, help="Classes listed per input (default 5, at most the class count)."),
    checkpoint: str = typer.Option("best", help="Checkpoint: best or last."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Inputs per model call (default the run's eval batch size)."),
    tta: str = typer.Option("none", "--tta", help="Test-time augmentation: none, or flip (average with the mirror image)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON before the CSV path."),
    plugin: list[str] = typer.Option([], "--plugin", help=PLUGIN_HELP),
):
    """Predict classes for new inputs with the run's model; the last line printed is the CSV path."""
    from nnrun.inference.predict import predict as run_predict

    _load_plugins(plugin)
    bar = None
    if stderr.is_terminal:
        from rich.progress import Progress

        bar = Progress(console=stderr, transient=True)
        bar.start()
        task = bar.add_task("predict", total=None)
    try:
        summary = run_predict(
            run_dir, inputs, out=out, top_k=top_k, checkpoint=checkpoint, batch_size=batch_size, tta=tta,
            warn=lambda line: stderr.print(for_console(line), highlight=False, soft_wrap=True),
            progress=(lambda done, total: bar.update(task, completed=done, total=total)) if bar else None)
    finally:
        if bar is not None:
            bar.stop()
    if as_json:
        print(json.dumps(summary), flush=True)
    else:
        skipped = f", {summary['skipped']} skipped" if summary["skipped"] else ""
        stderr.print(f"{summary['predicted']} predicted{skipped} in {summary['seconds']:.1f} s", highlight=False)
        if summary["accuracy"] is not None:
            print(f"accuracy {summary['accuracy']:.4f} on {summary['labelled']} inputs of known class", flush=True)
    print(summary["path"], flush=True)


# -- lr-find / ablate -----------------------------------------------------------------------

@app.command("lr-find", cls=Command)
@handled
def lr_find(
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML config file, - for stdin."),
    set_: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    start: float = typer.Option(1e-7, "--start", help="First learning rate of the sweep."),
    end: float = typer.Option(10.0, "--end", help="Last learning rate of the sweep."),
    steps: int = typer.Option(100, "--steps", min=10, help="Batches in the sweep (it stops early when the loss diverges)."),
    plugin: list[str] = typer.Option([], "--plugin", help=PLUGIN_HELP),
):
    """Learning-rate range test on CONFIG's data and model; the last line printed is its directory."""
    from nnrun.config import load_config
    from nnrun.engine.lr_find import lr_find as run_lr_find

    _load_plugins(plugin)
    cfg = load_config(config, set_)
    result = run_lr_find(cfg, start=start, end=end, steps=steps)
    print(f"suggested learning rate {result['suggested_lr']:.3g}: {result['rule']} "
          f"(minimum loss at {result['min_loss_lr']:.3g}, / 10: {result['min_loss_lr_div_10']:.3g}; "
          f"{result['steps_run']} steps)", flush=True)
    print(result["directory"], flush=True)


@app.command(cls=Command)
@handled
def ablate(
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML config file with train.techniques."),
    seeds: int = typer.Option(3, "--seeds", "-n", min=2, help="Seeds per variant (the same seeds for every variant)."),
    set_: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Warm workers run in parallel."),
    out: Optional[Path] = typer.Option(None, "--out", help="Sweep directory (default RUNS_ROOT/sweeps/NAME-ablation)."),
    plugin: list[str] = typer.Option([], "--plugin", help=PLUGIN_HELP),
):
    """Train CONFIG and CONFIG without each of its techniques over paired seeds; the last line printed is the sweep directory."""
    from nnrun.search.ablation import ablate as run_ablate

    _load_plugins(plugin)
    directory = run_ablate(config, set_, seeds, jobs=jobs, out=out, console=stdout,
                           say=lambda line: stderr.print(for_console(line), highlight=False, soft_wrap=True))
    print(directory, flush=True)
    _exit_quickly()


# -- sweep / compare / export / report ---------------------------------------------------

@app.command(cls=Command)
@handled
def sweep(
    sweep_file: Path = typer.Argument(..., metavar="SWEEP_FILE", help="Sweep YAML: base config plus grid / zip / random / seeds, or a search: block."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Trials (search: workers) run in parallel (CPU threads are shared; one per GPU)."),
    commands: bool = typer.Option(False, "--print-commands", help="Print one `nnrun train` line per trial (search: one worker command per --jobs) instead of running."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop the sweep at the first failed trial."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Sort the summary by this final metric (default: the sweep's metric:, else train.monitor)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Sweep directory (default RUNS_ROOT/sweeps/NAME)."),
    plugin: list[str] = typer.Option([], "--plugin", help=PLUGIN_HELP),
    worker: bool = typer.Option(False, "--worker", help="Search: join the study named by search.storage and pull trials until its budget is spent (one per host, or --jobs N here)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Search worker: TensorFlow CPU threads for its trials (runtime.threads)."),
    worker_process: bool = typer.Option(False, "--worker-process", hidden=True),  # a search supervisor's child
):
    """Run every trial of a sweep (skipping completed ones), or a search; the last line printed is the sweep directory."""
    from nnrun.sweep.sweep_file import expand, read_sweep_file

    _load_plugins(plugin)
    parsed = read_sweep_file(sweep_file, out)  # ConfigError before anything is created
    options = dict(jobs=jobs, commands_only=commands, fail_fast=fail_fast, metric=metric, console=stdout,
                   say=lambda line: stderr.print(for_console(line), highlight=False, soft_wrap=True),
                   worker=worker, threads=threads, worker_process=worker_process)
    if parsed.spec.search is not None:
        from nnrun.search.command import search_command
        from nnrun.search.plan import search_sweep

        search_command(search_sweep(parsed), out=out, **options)
    else:
        from nnrun.sweep.command import sweep_command

        sweep_command(expand(parsed), **options)
    _exit_quickly()


def _exit_quickly() -> None:
    """After a sweep, search or ablation: every result is written and closed (atomic files, the
    study's database disposed), so skip the interpreter's teardown of matplotlib, Optuna and
    SQLAlchemy (0.3-0.5 s). Only in a process of its own (not typer's CliRunner in a test)."""
    if _state["console_entry"]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@app.command(cls=Command)
@handled
def compare(
    run_dirs: list[Path] = typer.Argument(..., metavar="RUN_DIR", help="Run directories (a directory of runs, e.g. a sweep, adds them all)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Config keys that differ between runs, and their final metrics."""
    from nnrun.results.compare import compare as run_compare, tables

    result = run_compare(run_dirs)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    for table in tables(result):
        stdout.print(table)


@app.command(cls=Command)
@handled
def export(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run directory."),
    fmt: str = typer.Option("keras", "--format", help="keras (.keras file), saved_model (TF SavedModel), onnx (model.onnx; pip install 'nnrun[onnx]') or litert (model.tflite; pip install 'nnrun[litert]')."),
    checkpoint: str = typer.Option("best", help="Checkpoint: best or last."),
    plugin: list[str] = typer.Option([], "--plugin", help=PLUGIN_HELP),
):
    """Write the model, reload it and check its outputs; the last line printed is the export path."""
    from nnrun.inference.export import export as run_export

    _load_plugins(plugin)
    result = run_export(run_dir, fmt, checkpoint)
    stderr.print(f"{fmt}: outputs match on {result['checked_inputs']} stored raw inputs "
                 f"(max |diff| {result['max_abs_diff']:.3g})", highlight=False)
    print(result["path"], flush=True)


@app.command(cls=Command)
@handled
def report(run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run directory.")):
    """Write RUN_DIR/report.html: config, metrics, curves, explain grids, in one offline file."""
    from nnrun.results.report import write_report

    print(write_report(run_dir), flush=True)


