"""The `search:` block of a sweep file and the configs of its trials (no TensorFlow, no Optuna).

    base: quickstart.yaml
    set: {train.epochs: 6}
    search:
      sampler: tpe              # tpe | random | cmaes | grid
      trials: 40                # the budget: trials that end (completed, pruned or failed)
      metric: val_accuracy      # default: the sweep's metric:, else the base's train.monitor
      direction: maximize       # default: from the metric's name (losses, errors, times: minimize)
      pruner: {name: median, warmup_epochs: 2}   # median | hyperband | none
      storage: null             # SQLite file in the sweep directory; a URL; or {env: VAR}
    params:
      optimizer.learning_rate: {loguniform: [1e-4, 1e-2]}
      model.params.stages: {choice: [[8, 16], [16, 32, 64]]}

Every parameter's extreme values (each choice, each bound) are resolved onto the base when the
file is loaded, so a range that can never work is a config error before anything starts; each
sampled trial is resolved and validated again before it trains.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnrun.config import RunConfig
from nnrun.errors import ConfigError
from nnrun.sweep.search_block import SearchSpec
from nnrun.sweep.sweep_file import Sweep, SweepFile, read_sweep_file

# What trials can log per epoch (engine/build.py build_metrics: accuracy, or
# half_margin_accuracy for pairs; plus the loss), with and without val_: this catches typos
# without TensorFlow. A name another data set logs (val_accuracy on pairs) fails each trial at
# its first epoch, naming what the trial logs (search/pruning.py).
LOGGED = ("loss", "accuracy", "half_margin_accuracy")
MAX_GRID = 100_000  # grid sampler points: as many as a study's budget may hold (search.trials)


def _encoded(values: list) -> bool:
    """Whether a choice's values must travel through Optuna as JSON text (it stores only
    None, bools, numbers and strings as categories)."""
    return not all(v is None or isinstance(v, (bool, int, float, str)) for v in values)


@dataclass
class Param:
    """One searched key and its distribution, as Optuna will be asked for it."""

    key: str
    kind: str  # loguniform | uniform | int | choice
    low: float | int | None = None
    high: float | int | None = None
    choices: list | None = None  # the values themselves
    encoded: bool = False  # choices go to Optuna as json.dumps(value)

    def categories(self) -> list:
        return [json.dumps(v) for v in self.choices] if self.encoded else list(self.choices)

    def decode(self, value: Any) -> Any:
        return json.loads(value) if self.encoded and self.kind == "choice" else value

    def extremes(self) -> list:
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def count(self) -> int | None:
        """How many values `points` would list (None for continuous ranges), without listing them."""
        if self.kind == "choice":
            return len(self.choices)
        return int(self.high) - int(self.low) + 1 if self.kind == "int" else None

    def points(self) -> list | None:
        """Every value, for the grid sampler (None for continuous ranges)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        return None

    def describe(self) -> dict:
        return {"choice": self.choices} if self.kind == "choice" else {self.kind: [self.low, self.high]}


def to_param(key: str, dist) -> Param:
    """A sweep-file Distribution (choice / uniform / loguniform / int) -> Param."""
    if dist.choice is not None:
        return Param(key, "choice", choices=list(dist.choice), encoded=_encoded(dist.choice))
    for kind in ("loguniform", "uniform", "int"):
        bounds = getattr(dist, "int_" if kind == "int" else kind)
        if bounds is not None:
            return Param(key, kind, low=bounds[0], high=bounds[1])
    raise ConfigError("no distribution", key)  # the schema guarantees one


@dataclass
class SearchPlan:
    """A validated search: what the study needs and how to build each trial's config."""

    spec: SearchSpec
    params: list[Param]
    raw: dict  # the base config file as loaded (before any --set)
    shared: list[str]  # the sweep's `set:` as --set items
    base_cfg: RunConfig  # base + set:, resolved
    metric: str
    direction: str  # maximize | minimize
    trials: int  # the budget
    fingerprint: str  # what must match for workers to join the same study
    grid: list[dict] | None = None  # sampler grid: every point, in order

    def trial_name(self, number: int) -> str:
        return f"trial-{number:04d}"

    def set_args(self, values: dict, name: str, directory: Path, threads: int | None = None,
                 extra: list[str] = ()) -> list[str]:
        from nnrun.config import set_value

        own = [f"name={name}", f"runtime.runs_root={set_value(str(directory))}"]
        own += [f"runtime.threads={threads}"] if threads else []
        return self.shared + [f"{k}={set_value(v)}" for k, v in values.items()] + own + list(extra)

    def trial_config(self, values: dict, name: str, directory: Path, threads: int | None = None,
                     extra: list[str] = ()):
        """(set_args, resolved config) of one trial; ConfigError if these values do not validate.
        `extra`: --set items of the worker's own (the MLflow parent run)."""
        from nnrun.config.loader import apply_overrides
        from nnrun.config.resolve import resolve

        set_args = self.set_args(values, name, directory, threads, extra)
        return set_args, resolve(apply_overrides(self.raw, set_args))


def plan_search(path: Path, spec: SearchSpec, dists: dict, raw: dict, shared: list[str], base_cfg: RunConfig,
                sweep_metric: str | None) -> SearchPlan:
    """Check the search block against the base config (TensorFlow-free); ConfigError if it
    cannot work. Each parameter's every choice and both bounds are resolved onto the base."""
    from nnrun.config.loader import apply_overrides
    from nnrun.config.resolve import resolve
    from nnrun.engine.metrics import higher_is_better
    from nnrun.config import identity, set_value

    where = f"{path}: search"
    if not dists:
        raise ConfigError("params: name at least one key to search, e.g. "
                          "optimizer.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}", str(path))
    params = [to_param(k, d) for k, d in dists.items()]
    for param in params:
        if param.key == "runtime" or param.key.startswith("runtime."):
            raise ConfigError(f"{param.key}: runtime settings are process-wide in a search worker (threads, "
                              "determinism, devices); set them in set: or the base config", f"{path}: params")
        for value in param.extremes():
            try:
                resolve(apply_overrides(raw, shared + [f"{param.key}={set_value(value)}"]))
            except ConfigError as exc:
                raise ConfigError(f"{param.key} = {json.dumps(value)}: {exc}", f"{path}: params") from None
    if sweep_metric and spec.metric and sweep_metric != spec.metric:
        raise ConfigError(f"metric: {sweep_metric!r} and search.metric {spec.metric!r} differ; give one", str(path))
    metric = spec.metric or sweep_metric or base_cfg.train.monitor
    known = list(LOGGED) + [f"val_{m}" for m in LOGGED]
    if metric not in known:
        import difflib

        close = difflib.get_close_matches(metric, known, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"trials log: {', '.join(known)}"
        raise ConfigError(f"unknown metric {metric!r}; {hint}", f"{where}.metric")
    direction = spec.direction or ("maximize" if higher_is_better(metric) else "minimize")
    grid = None
    if spec.sampler == "grid":
        continuous = [p.key for p in params if p.count() is None]
        if continuous:
            raise ConfigError(f"the grid sampler needs choice or int params; {', '.join(continuous)} "
                              "is a continuous range", f"{path}: params")
        size = math.prod(p.count() for p in params)
        if size > MAX_GRID:  # counted before any point is built: int: [0, 1e10] is 10 billion points
            raise ConfigError(f"the grid has {size:,} points; at most {MAX_GRID:,} (narrow the int ranges "
                              "or use tpe / random)", f"{path}: params")
        grid = [dict(zip([p.key for p in params], combo)) for combo in itertools.product(*(p.points() for p in params))]
        if spec.trials is not None and spec.trials != len(grid):
            raise ConfigError(f"the grid has {len(grid)} points; set trials: {len(grid)} or leave it out",
                              f"{where}.trials")
        trials = len(grid)
    else:
        if spec.trials is None:
            raise ConfigError("required: how many trials to run (the study's budget)", f"{where}.trials")
        trials = spec.trials
    if spec.sampler == "cmaes" and not any(p.kind != "choice" for p in params):
        raise ConfigError("cmaes needs at least one numeric param (uniform, loguniform or int); "
                          "use tpe or random for choices only", f"{where}.sampler")
    defining = {
        "params": [[p.key, p.describe()] for p in params],
        "sampler": spec.sampler, "seed": spec.seed, "startup_trials": spec.startup_trials, "trials": trials,
        "metric": metric, "direction": direction, "pruner": spec.pruner.model_dump(), "base": identity(base_cfg),
    }
    fingerprint = hashlib.sha256(json.dumps(defining, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return SearchPlan(spec, params, raw, shared, base_cfg, metric, direction, trials, fingerprint, grid)


def search_sweep(sweep_file: SweepFile) -> Sweep:
    """A sweep file with a `search:` block, planned (its `search` is the SearchPlan)."""
    f = sweep_file
    plan = plan_search(f.path, f.spec.search, f.spec.params, f.raw, f.shared, f.base_cfg, f.spec.metric)
    return Sweep(f.path, f.name, f.base, f.directory, plan.metric, [], list(f.spec.params), plan)


def load_search(path: str | Path, out: str | Path | None = None) -> Sweep:
    """`read_sweep_file`, then `search_sweep`."""
    return search_sweep(read_sweep_file(path, out))
