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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nnrun.config import RunConfig
from nnrun.errors import ConfigError

# What trials can log per epoch (engine/build.py build_metrics: accuracy, or
# half_margin_accuracy for pairs; plus the loss), with and without val_: this catches typos
# without TensorFlow. A name another data set logs (val_accuracy on pairs) fails each trial at
# its first epoch, naming what the trial logs (search/pruning.py).
LOGGED = ("loss", "accuracy", "half_margin_accuracy")
# scheme://user:password@host (when SQLAlchemy cannot parse the URL), or ?password=...: a
# password written in the sweep file would travel with it
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@?#]*:[^/@?#]*@")
_QUERY_PASSWORD = re.compile(r"[?&][^=&]*pass[^=&]*=", re.I)


def _has_password(url: str) -> bool:
    """Whether the URL holds a password, as SQLAlchemy reads it (`postgresql://u:pa/ss@h/db`
    has the password `pa/ss`)."""
    from sqlalchemy.engine import make_url

    try:
        in_url = bool(make_url(url).password)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy parses (ArgumentError, ValueError, ...)
        in_url = bool(_URL_PASSWORD.match(url))
    return in_url or bool(_QUERY_PASSWORD.search(url))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrunerSpec(_Strict):
    name: Literal["median", "hyperband", "none"] = Field("median", description="median | hyperband | none")
    warmup_epochs: int = Field(1, ge=0, description="median: never prune a trial in its first N epochs")
    startup_trials: int = Field(5, ge=0, description="median: prune only once N trials have completed")
    min_epochs: int = Field(1, ge=1, description="hyperband: epochs every trial gets (min_resource)")
    reduction_factor: int = Field(3, ge=2, description="hyperband: keep 1/N of the trials at each rung")

    @model_validator(mode="after")
    def _applies(self):
        own = {"median": {"warmup_epochs", "startup_trials"}, "hyperband": {"min_epochs", "reduction_factor"},
               "none": set()}[self.name]
        wrong = sorted(self.model_fields_set - own - {"name"})
        if wrong:
            raise ValueError(f"{', '.join(wrong)} does not apply to the {self.name} pruner"
                             + (f" (it takes {', '.join(sorted(own))})" if own else ""))
        return self


class StorageEnv(_Strict):
    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="environment variable holding the URL")


class SearchSpec(_Strict):
    sampler: Literal["tpe", "random", "cmaes", "grid"] = Field("tpe", description="tpe | random | cmaes | grid")
    trials: int | None = Field(None, ge=1, le=100_000, description="trials that end (default for grid: all points)")
    metric: str | None = Field(None, min_length=1, description="per-epoch metric to optimise and prune on")
    direction: Literal["maximize", "minimize"] | None = Field(None, description="default: from the metric")
    pruner: PrunerSpec = Field(default_factory=PrunerSpec, description="median | hyperband | none, or a mapping")
    storage: str | StorageEnv | None = Field(None, description="SQLAlchemy URL, {env: VAR}, or null (SQLite)")
    seed: int = Field(0, ge=0, description="sampler seed (trial N samples with a seed from (seed, N))")
    startup_trials: int | None = Field(None, ge=0, description="tpe/cmaes: random trials before the model "
                                                                "(default 10 for tpe, 1 for cmaes)")
    retries: int = Field(2, ge=0, le=100, description="re-queue a trial whose worker died, at most N times")
    heartbeat_interval: int = Field(10, ge=1, le=3600, description="seconds between a running trial's heartbeats")
    grace_period: int | None = Field(None, ge=1, description="seconds without a heartbeat before a trial is "
                                                             "given up (default 3 x heartbeat_interval)")

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner_name(cls, value):
        return {"name": value} if isinstance(value, str) else value

    @field_validator("storage")
    @classmethod
    def _no_password(cls, value):
        if isinstance(value, str) and _has_password(value):
            # Not echoed: the value is the secret.
            raise ValueError("a URL with a password would be copied with the sweep file; put it in an "
                             "environment variable and write storage: {env: NNRUN_STORAGE}")
        if isinstance(value, str) and "://" not in value:
            raise ValueError(f"expected a SQLAlchemy URL like postgresql://user@host/db or sqlite:///study.db, "
                             f"got {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self):
        if self.grace_period is not None and self.grace_period < self.heartbeat_interval:
            raise ValueError(f"grace_period ({self.grace_period}) must be >= heartbeat_interval "
                             f"({self.heartbeat_interval})")
        return self

    @property
    def grace(self) -> int:
        return self.grace_period or 3 * self.heartbeat_interval


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

    def set_args(self, values: dict, name: str, directory: Path, threads: int | None = None) -> list[str]:
        from nnrun.config import set_value

        own = [f"name={name}", f"runtime.runs_root={set_value(str(directory))}"]
        own += [f"runtime.threads={threads}"] if threads else []
        return self.shared + [f"{k}={set_value(v)}" for k, v in values.items()] + own

    def trial_config(self, values: dict, name: str, directory: Path, threads: int | None = None):
        """(set_args, resolved config) of one trial; ConfigError if these values do not validate."""
        from nnrun.config.loader import apply_overrides
        from nnrun.config.resolve import resolve

        set_args = self.set_args(values, name, directory, threads)
        return set_args, resolve(apply_overrides(self.raw, set_args))


def plan_search(path: Path, spec: SearchSpec, dists: dict, raw: dict, shared: list[str], base_cfg: RunConfig,
                sweep_metric: str | None) -> SearchPlan:
    """Check the search block against the base config (TensorFlow-free); ConfigError if it
    cannot work. Each parameter's every choice and both bounds are resolved onto the base."""
    from nnrun.config.loader import apply_overrides
    from nnrun.config.resolve import resolve
    from nnrun.results.runs import higher_is_better
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
        continuous = [p.key for p in params if p.points() is None]
        if continuous:
            raise ConfigError(f"the grid sampler needs choice or int params; {', '.join(continuous)} "
                              "is a continuous range", f"{path}: params")
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
