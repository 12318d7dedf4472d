"""The schema of a sweep file's `search:` block (an Optuna study; nnrun/search runs it).

It lives with the sweep file's schema, which holds it, so that reading any sweep file needs
nothing from the search package; `nnrun sweep` hands a file with this block to nnrun.search.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nnrun.safe_text import mask_credentials

# [scheme://]user:password@host (when SQLAlchemy cannot parse the URL, also without a scheme),
# or ?password=...: a password written in the sweep file would travel with it
_URL_PASSWORD = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://)?[^/@?#]*:[^/@?#]*@")
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
                             f"got {mask_credentials(repr(value))}")
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
