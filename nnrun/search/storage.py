"""Where a study lives: the storage URL (the search block's, an environment variable's, or a
SQLite file in the sweep directory), its passwords kept out of everything written or printed,
and the SQLite settings that make local workers safe.

Passwords. The storage URL comes from the sweep file only without a password; one with a
password is read from an environment variable (`storage: {env: NNRUN_STORAGE}`) and shown
everywhere with the password masked (`postgresql://nnrun:***@db/optuna`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from nnrun.errors import ConfigError
from nnrun.search.plan import SearchPlan
from nnrun.sweep.search_block import StorageEnv

STORAGE_FILE = "study.db"


@dataclass
class Storage:
    url: str  # the real URL: never written anywhere
    shown: str  # the URL with any password masked
    secrets: list[str] = field(default_factory=list)

    def scrub(self, text: str) -> str:
        """`text` with every secret of the URL masked (error messages may quote the URL), as
        written and as percent-encoded in the URL."""
        from urllib.parse import quote

        text = str(text).replace(self.url, self.shown)
        for secret in self.secrets:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
        return text


def resolve_storage(plan: SearchPlan, directory: Path) -> Storage:
    """The study's storage: `storage:` of the search block, the URL in its environment
    variable, or a SQLite file in the sweep directory. ConfigError names the problem without
    ever quoting a URL that may hold a password."""
    spec = plan.spec.storage
    if spec is None:
        url = f"sqlite:///{(Path(directory) / STORAGE_FILE).resolve()}"
        return Storage(url, url)
    if isinstance(spec, StorageEnv):
        url = os.environ.get(spec.env)
        if not url:
            raise ConfigError(f"the environment variable {spec.env} is not set (it should hold the study's "
                              "database URL, e.g. postgresql://user:password@host/db)", "search.storage")
        source = f"${spec.env}"
    else:
        url, source = spec, "search.storage"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(f"{source} is not a database URL (expected e.g. postgresql://user@host/db)",
                          "search.storage") from None
    secrets = [parsed.password] if parsed.password else []
    query = dict(parsed.query)
    for key, value in query.items():
        if "pass" in key.lower():
            secrets += [value] if isinstance(value, str) else list(value)
            query[key] = "***"
    shown = parsed.set(query=query).render_as_string(hide_password=True)
    return Storage(url, shown, [s for s in secrets if s])


def sqlite_wal(engine) -> None:
    """SQLite in write-ahead-log mode with normal syncing: a trial's few writes commit in
    milliseconds instead of an fsync each. (Like any SQLite file, keep it off network file
    systems; use PostgreSQL across hosts.)

    And real transactions: Optuna's check-and-sets (claiming a WAITING trial, failing a stale
    one) read the trial `FOR UPDATE`, which SQLite ignores, and Python's sqlite3 runs that read
    outside any transaction, so two workers could both read WAITING and both claim the trial.
    As SQLAlchemy documents for pysqlite, the driver's own BEGIN handling is switched off and
    every transaction starts with BEGIN IMMEDIATE: it takes the database's write lock before its
    first read, so the transactions of all local workers run one after another (each a few
    milliseconds; a waiting one retries for the connection's 60 s timeout)."""
    from sqlalchemy import event

    def on_connect(connection, record):
        connection.isolation_level = None  # no implicit BEGIN (nor COMMIT before DDL) from sqlite3
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    def on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    engine.dispose()  # connections opened while creating the tables get both too


def db_errors() -> tuple:
    """A database hiccup (a lock timeout, a dropped connection): raised by SQLAlchemy, or by
    Optuna, which wraps what fails inside its sessions in StorageInternalError."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import DBAPIError

    return DBAPIError, StorageInternalError  # DBAPIError includes OperationalError
