"""Where the event store lives: an SQLite file in a data directory, or PostgreSQL by DSN.

Configuration comes from explicit arguments first, then `BLACKTAIL_*` environment
variables, and is parsed strictly: a bad value names the variable and the value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from protocol.errors import InvalidInput

DEFAULT_DATA_DIR = Path(".blacktail")
LEDGER_FILE = "ledger.sqlite"


@dataclass(frozen=True, slots=True)
class Storage:
    """The eventsourcing environment for one store."""

    env: dict[str, str]
    description: str

    @property
    def is_postgres(self) -> bool:
        return self.env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"

    def existing(self) -> Storage:
        """The same store, opened without creating its tables: for processes started after
        another made them. Several processes issuing PostgreSQL's CREATE ... IF NOT EXISTS
        at one instant can fail with "tuple concurrently updated"."""
        return Storage({**self.env, "CREATE_TABLE": "no"}, self.description)


def sqlite_storage(data_dir: Path) -> Storage:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LEDGER_FILE
    return Storage(
        {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(path),
            # Writers wait for each other instead of failing at once; a gateway with
            # several workers shares one file.
            "SQLITE_LOCK_TIMEOUT": "30",
        },
        f"sqlite:{path}",
    )


def postgres_storage(dsn: str, *, pool_size: int = 5) -> Storage:
    """Parse a `postgresql://user:password@host:port/dbname?schema=S` DSN."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or not parts.path[1:]:
        raise InvalidInput(
            f"BLACKTAIL_DB: {dsn!r} is not postgresql://user:password@host:port/dbname",
            field="BLACKTAIL_DB",
        )
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": unquote(parts.path[1:]),
        "POSTGRES_HOST": parts.hostname,
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_CONNECT_TIMEOUT": "10",
        "POSTGRES_LOCK_TIMEOUT": "10",
    }
    for item in filter(None, parts.query.split("&")):
        key, _, value = item.partition("=")
        if key != "schema" or not value.isidentifier():
            raise InvalidInput(
                f"BLACKTAIL_DB: unsupported DSN option {item!r}", field="BLACKTAIL_DB"
            )
        env["POSTGRES_SCHEMA"] = value
    safe = f"postgresql://{env['POSTGRES_USER']}@{parts.hostname}:{env['POSTGRES_PORT']}/{env['POSTGRES_DBNAME']}"
    return Storage(env, safe)


def memory_storage() -> Storage:
    return Storage({"PERSISTENCE_MODULE": "eventsourcing.popo"}, "memory")


def resolve_storage(data_dir: Path | None = None, dsn: str | None = None) -> Storage:
    """Explicit DSN, else BLACKTAIL_DB, else the SQLite file in the data directory
    (explicit, else BLACKTAIL_DATA_DIR, else ./.blacktail)."""
    dsn = dsn or os.environ.get("BLACKTAIL_DB") or None
    if dsn:
        return postgres_storage(dsn)
    if data_dir is None:
        data_dir = Path(os.environ.get("BLACKTAIL_DATA_DIR") or DEFAULT_DATA_DIR)
    return sqlite_storage(data_dir)
