"""Sweep files: parse, expand into trials, and validate every trial's config (no TensorFlow).

A sweep file names a base config and how to vary it:

    name: lr-width                 # sweep directory <runs_root>/sweeps/<name> (default: file stem)
    base: quickstart.yaml          # the config every trial starts from (relative to this file)
    set: {train.epochs: 4}         # overrides shared by every trial
    grid: {optimizer.learning_rate: [1e-3, 3e-3], model.params.stages: [[8, 16], [16, 32]]}
    zip: {data.batch_size: [32, 64], optimizer.weight_decay: [0, 1e-4]}     # parallel lists
    random: {samples: 4, seed: 0, params: {optimizer.learning_rate: {loguniform: [1e-4, 1e-2]}}}
    seeds: [0, 1]                  # repeats (the run's `seed`)
    metric: val_accuracy           # what the summary table sorts by

or, instead of grid/zip/random/seeds, a `search:` block with `params:` (its schema is in
search_block.py; nnrun/search plans and runs it: Optuna samples the trials while the study runs).

Trials are the cartesian product of the grid, the zip rows, the random samples and the seeds
(each block that is absent counts as one empty row). Every trial is an ordinary `nnrun train
BASE --set ...` command; the sweep adds `name` (from the trial's overrides),
`runtime.runs_root` (the sweep directory) and, when it runs them, `runtime.threads`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nnrun.config import RunConfig, identity, set_value
from nnrun.config.loader import _KEY, apply_overrides, load_raw
from nnrun.config.safe_yaml import read_yaml_file
from nnrun.config.messages import raise_validation
from nnrun.config.resolve import resolve
from nnrun.config.schema import NAME_PATTERN, check_name, name_problem
from nnrun.errors import ConfigError
from nnrun.sweep.search_block import SearchSpec

# Keys the sweep itself sets on every trial.
RESERVED = ("name", "runtime.runs_root", "runtime.threads")
MAX_TRIALS = 10_000  # trials of one grid/zip/random/seeds sweep (each is resolved when the file loads)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Distribution(_Strict):
    """Exactly one of choice / uniform / loguniform / int."""

    choice: list[Any] | None = Field(None, min_length=1, description="pick one value uniformly")
    uniform: tuple[float, float] | None = Field(None, description="[low, high]")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high], low > 0; uniform in log space")
    int_: tuple[int, int] | None = Field(None, alias="int", description="[low, high], integers, both included")

    @model_validator(mode="after")
    def _one(self):
        given = [k for k in ("choice", "uniform", "loguniform", "int_") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of choice: [...], uniform: [low, high], loguniform: [low, high], "
                             "int: [low, high]")
        if self.int_ is not None and not self.int_[0] < self.int_[1]:
            raise ValueError(f"low must be < high, got [{self.int_[0]}, {self.int_[1]}]")
        bounds = self.uniform or self.loguniform
        if bounds is not None:
            if not bounds[0] < bounds[1]:
                raise ValueError(f"low must be < high, got [{bounds[0]}, {bounds[1]}]")
            if self.loguniform is not None and bounds[0] <= 0:
                raise ValueError(f"loguniform needs low > 0, got {bounds[0]}")
        return self

    def sample(self, rng) -> Any:
        if self.choice is not None:
            return self.choice[int(rng.integers(len(self.choice)))]
        if self.int_ is not None:
            return int(rng.integers(self.int_[0], self.int_[1] + 1))
        low, high = self.uniform or self.loguniform
        value = rng.uniform(low, high) if self.uniform else math.exp(rng.uniform(math.log(low), math.log(high)))
        return float(f"{value:.4g}")  # 4 significant digits: readable names and --set values


class RandomSpec(_Strict):
    samples: int = Field(gt=0, le=10_000, description="number of random configurations")
    seed: int = Field(0, ge=0, description="sampling seed (the same seed gives the same trials)")
    params: dict[str, Distribution] = Field(min_length=1, description="dotted key -> distribution")


class SweepSpec(_Strict):
    name: str | None = Field(None, pattern=NAME_PATTERN, description="sweep name (default: the file's stem)")
    base: str = Field(description="base config file, relative to the sweep file")
    set_: dict[str, Any] = Field(default_factory=dict, alias="set", description="overrides for every trial")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="cartesian product of key: [values]")
    zip_: dict[str, list[Any]] = Field(default_factory=dict, alias="zip", description="parallel lists")
    random: RandomSpec | None = Field(None, description="random search")
    seeds: list[int] | None = Field(None, min_length=1, description="repeat every trial with these seeds")
    metric: str | None = Field(None, description="metric the summary sorts by (default: base train.monitor)")
    search: SearchSpec | None = Field(None, description="Optuna search (with params:) instead of grid/zip/random")
    params: dict[str, Distribution] = Field(default_factory=dict, description="search: dotted key -> distribution")

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value):
        return check_name(value)

    @field_validator("grid", "zip_")
    @classmethod
    def _non_empty(cls, value: dict) -> dict:
        for key, values in value.items():
            if not values:
                raise ValueError(f"{key}: needs at least one value")
        return value

    @model_validator(mode="after")
    def _check(self):
        lengths = {len(v) for v in self.zip_.values()}
        if len(lengths) > 1:
            raise ValueError("zip: lists must have equal lengths, got " +
                             ", ".join(f"{k}: {len(v)}" for k, v in self.zip_.items()))
        if self.seeds is not None and (len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0):
            raise ValueError("seeds: must be distinct integers >= 0")
        if self.search is not None:
            blocks = [k for k, v in (("grid", self.grid), ("zip", self.zip_), ("random", self.random),
                                     ("seeds", self.seeds)) if v]
            if blocks:
                raise ValueError(f"search: samples its own trials; remove {', '.join(blocks)} "
                                 "(fixed values go in set:)")
        elif self.params:
            raise ValueError("params: belongs to a search: block (random: has its own params)")
        return self


@dataclass
class Trial:
    name: str
    overrides: dict[str, Any]  # the swept values of this trial, dotted key -> value
    set_args: list[str]  # every --set KEY=VALUE, in order (shared, swept, then name and runs_root)
    config: RunConfig
    identity: str  # hash of the resolved config without where/how it runs (runs_root, threads)


@dataclass
class Sweep:
    path: Path
    name: str
    base: Path
    directory: Path
    metric: str
    trials: list[Trial]
    swept: list[str] = field(default_factory=list)  # swept keys, in order
    search: Any = None  # a search: sweep's SearchPlan (nnrun.search.plan; its trials are sampled as it runs)


@dataclass
class SweepFile:
    """A sweep file, read and checked: its schema, and the base config with `set:` applied.
    `expand` makes the trials of grid/zip/random/seeds; nnrun.search.plan plans a `search:`."""

    path: Path
    spec: SweepSpec
    name: str
    base: Path  # the base config file
    directory: Path  # the sweep directory
    raw: dict  # the base config file as loaded (before any --set)
    shared: list[str]  # the sweep's `set:` as --set items
    base_cfg: RunConfig  # base + set:, resolved


def _name_part(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "x".join(_name_part(v) for v in value)
    if isinstance(value, dict):
        return "-".join(f"{k}-{_name_part(v)}" for k, v in value.items())
    return str(value)


def _key_part(key: str) -> str:
    """The informative end of a dotted key: `learning_rate`, or `optimizer` for `optimizer.name`."""
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def _short_hash(overrides: dict) -> str:
    return hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:6]


def trial_names(rows: list[dict], fallback: str) -> list[str]:
    """Run names from overrides: `learning_rate-0.001_stages-8x16_seed-0` (valid run names,
    unique within the sweep; a short hash is appended when a name is too long or collides)."""
    names = []
    for row in rows:
        text = "_".join(f"{_key_part(k)}-{_name_part(v)}" for k, v in row.items()) or fallback
        text = re.sub(r"[^A-Za-z0-9._-]+", "", text).strip("._-") or "trial"
        if len(text) > 64:
            text = f"{text[:57].rstrip('._-')}-{_short_hash(row)}"
        names.append(text if text[0].isalnum() else f"t{text}"[:64])
    counts = {n: names.count(n) for n in names}
    return [f"{n[:57]}-{_short_hash(row)}" if counts[n] > 1 else n for n, row in zip(names, rows)]


def _check_key(key: str, where: str) -> None:
    if not _KEY.match(key):
        raise ConfigError(f"bad key {key!r}; use dotted config keys like optimizer.learning_rate", where)
    if key in RESERVED:
        raise ConfigError(f"{key} is set by the sweep itself (use --out for the sweep directory)", where)


def _rows(spec: SweepSpec) -> list[dict]:
    import numpy as np

    sizes = [math.prod(len(v) for v in spec.grid.values()) if spec.grid else 1,
             len(next(iter(spec.zip_.values()))) if spec.zip_ else 1,
             spec.random.samples if spec.random else 1, len(spec.seeds) if spec.seeds else 1]
    if math.prod(sizes) > MAX_TRIALS:  # counted before any trial is built
        raise ConfigError(f"the sweep has {math.prod(sizes):,} trials (grid x zip x random x seeds = "
                          f"{' x '.join(str(n) for n in sizes)}); at most {MAX_TRIALS:,} (use a search: block "
                          "to sample a large space)", "grid")
    blocks = []
    if spec.grid:
        keys = list(spec.grid)
        blocks.append([dict(zip(keys, combo)) for combo in itertools.product(*spec.grid.values())])
    if spec.zip_:
        keys = list(spec.zip_)
        blocks.append([dict(zip(keys, values)) for values in zip(*spec.zip_.values())])
    if spec.random:
        rng = np.random.default_rng(spec.random.seed)
        drawn: list[dict] = []
        for _ in range(100 * spec.random.samples):  # distinct samples: a repeat would be a wasted trial
            row = {k: d.sample(rng) for k, d in spec.random.params.items()}
            if row not in drawn:
                drawn.append(row)
            if len(drawn) == spec.random.samples:
                break
        else:
            raise ConfigError(f"cannot draw {spec.random.samples} distinct samples (found {len(drawn)})", "random")
        blocks.append(drawn)
    if spec.seeds:
        blocks.append([{"seed": s} for s in spec.seeds])
    return [dict(itertools.chain.from_iterable(r.items() for r in combo)) for combo in itertools.product(*blocks)]


def load_spec(path: Path) -> SweepSpec:
    raw = read_yaml_file(path)
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as exc:
        try:
            raise_validation(exc, SweepSpec)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None


def read_sweep_file(path: str | Path, out: str | Path | None = None) -> SweepFile:
    """Parse a sweep file and resolve its base with `set:`; ConfigError (nothing created) if any
    part of it is invalid."""
    path = Path(path)
    spec = load_spec(path)
    seen: dict[str, str] = {}
    for block, keys in (("set", spec.set_), ("grid", spec.grid), ("zip", spec.zip_),
                        ("random.params", spec.random.params if spec.random else {}), ("params", spec.params),
                        ("seeds", {"seed": None} if spec.seeds else {})):
        for key in keys:
            _check_key(key, f"{path}: {block}")
            if key in seen and seen[key] != "set":  # swept values override shared `set:` ones
                raise ConfigError(f"{key} appears in both {seen[key]} and {block}", str(path))
            seen[key] = block
    base = Path(spec.base) if Path(spec.base).is_absolute() else path.parent / spec.base
    raw = load_raw(base)
    shared = [f"{k}={set_value(v)}" for k, v in spec.set_.items()]
    try:
        base_cfg = resolve(apply_overrides(raw, shared))
    except ConfigError as exc:
        raise ConfigError(f"{path}: base with set: {exc}") from None
    name = spec.name or path.stem
    problem = name_problem(name)
    if problem:
        raise ConfigError(f"{path}: the sweep name from the file name: {problem}; add name: to the file")
    directory = Path(out) if out else Path(base_cfg.runtime.runs_root) / "sweeps" / name
    return SweepFile(path, spec, name, base, directory, raw, shared, base_cfg)


def expand(sweep_file: SweepFile) -> Sweep:
    """The trials of a grid/zip/random/seeds sweep, each config resolved; ConfigError if any fails."""
    f = sweep_file
    if f.spec.search is not None:
        raise ConfigError(f"{f.path}: a search: block samples its trials as the study runs (nnrun.search.plan)")
    rows = _rows(f.spec)
    trials, seen_names = [], set()
    for row, trial_name in zip(rows, trial_names(rows, f.base_cfg.name)):
        own = [f"name={trial_name}", f"runtime.runs_root={set_value(str(f.directory))}"]
        set_args = f.shared + [f"{k}={set_value(v)}" for k, v in row.items()] + own
        try:
            cfg = resolve(apply_overrides(f.raw, set_args))
        except ConfigError as exc:
            raise ConfigError(f"{f.path}: trial {trial_name}: {exc}") from None
        if trial_name in seen_names:
            raise ConfigError(f"{f.path}: trial {trial_name} appears twice (a repeated value?)")
        seen_names.add(trial_name)
        trials.append(Trial(trial_name, row, set_args, cfg, identity(cfg)))
    swept = list(dict.fromkeys(k for row in rows for k in row))
    return Sweep(f.path, f.name, f.base, f.directory, f.spec.metric or f.base_cfg.train.monitor, trials, swept)


def load_sweep(path: str | Path, out: str | Path | None = None) -> Sweep:
    """A grid/zip/random/seeds sweep file and its trials (`read_sweep_file`, then `expand`)."""
    return expand(read_sweep_file(path, out))
