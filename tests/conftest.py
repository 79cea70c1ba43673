"""Shared fixtures: a PostgreSQL server per test session, a fresh database per test, and
`storage`, which runs a test once against SQLite and once against PostgreSQL.

PostgreSQL comes from BLACKTAIL_TEST_DSN (a superuser DSN of an existing server, on which
each test gets its own database) or else from a throwaway cluster started with the local
server binaries. Without either, PostgreSQL tests are skipped, unless
BLACKTAIL_REQUIRE_POSTGRES=1 (as CI sets), where they fail: a CI machine that lost its
PostgreSQL must not pass by skipping half the suite.

Under pytest-xdist every worker is its own process with its own session, so each starts
its own cluster on its own free port; nothing is shared between workers.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
from hypothesis import settings

from protocol.storage import Storage, postgres_storage, sqlite_storage
from tests.chain.hardhat_fixture import node_toolchain_required
from tests.pg_cluster import PG_BIN_ENV, ClusterError, PgServer, ThrowawayCluster, find_pg_bin

TEST_DSN_ENV = "BLACKTAIL_TEST_DSN"
REQUIRE_POSTGRES_ENV = "BLACKTAIL_REQUIRE_POSTGRES"
HYPOTHESIS_PROFILE_ENV = "HYPOTHESIS_PROFILE"

# A failing property prints the blob that reproduces it; no deadline, because shared CI
# machines stall for reasons that have nothing to do with the code under test.
settings.register_profile("ci", deadline=None, print_blob=True, derandomize=False, max_examples=100)
settings.load_profile(os.environ.get(HYPOTHESIS_PROFILE_ENV) or "ci")


def _require_postgres() -> bool:
    value = os.environ.get(REQUIRE_POSTGRES_ENV, "")
    if value not in ("", "0", "1"):
        raise pytest.UsageError(f"{REQUIRE_POSTGRES_ENV}: expected 0 or 1, got {value!r}")
    return value == "1"


def pytest_configure(config: pytest.Config) -> None:
    # Parsed up front so a mistyped value stops the run instead of surfacing only on a
    # machine where PostgreSQL (or node) happens to be missing.
    _require_postgres()
    node_toolchain_required()


def _unavailable(reason: str) -> NoReturn:
    if _require_postgres():
        pytest.fail(f"{reason} ({REQUIRE_POSTGRES_ENV}=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_bin() -> Path:
    """The directory of the local PostgreSQL server binaries (initdb, pg_ctl, postgres)."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        where = (
            f"{PG_BIN_ENV}={os.environ[PG_BIN_ENV]!r} has no initdb/pg_ctl/postgres"
            if os.environ.get(PG_BIN_ENV)
            else "no initdb/pg_ctl/postgres under /usr/lib/postgresql/*/bin or on PATH"
        )
        _unavailable(f"PostgreSQL unavailable: {where}; install postgresql or set {TEST_DSN_ENV}")
    return bin_dir


@pytest.fixture(scope="session")
def pg_cluster(request: pytest.FixtureRequest) -> Iterator[PgServer]:
    """A PostgreSQL server for this session (per xdist worker), on which `create_database`
    and `drop_database` work: the one named by BLACKTAIL_TEST_DSN, or a throwaway cluster."""
    dsn = os.environ.get(TEST_DSN_ENV)
    if dsn:
        server = PgServer(dsn)
        try:
            server.connect_admin().close()
        except psycopg.Error as error:
            unreachable = str(error)
        else:
            unreachable = ""
        if unreachable:
            # An explicitly named server that cannot be reached is a broken setup, not an
            # absent PostgreSQL: fail rather than skip.
            pytest.fail(f"{TEST_DSN_ENV}: cannot connect: {unreachable}", pytrace=False)
        yield server
        return
    bin_dir: Path = request.getfixturevalue("pg_bin")
    cluster = ThrowawayCluster(bin_dir)
    try:
        cluster.start()
    except ClusterError as error:
        failure = str(error)
    else:
        failure = ""
    if failure:
        # The binaries are there but do not work: that is worth seeing, never a skip.
        pytest.fail(f"throwaway PostgreSQL cluster did not start: {failure}", pytrace=False)
    try:
        yield cluster.server
    finally:
        cluster.stop()


@pytest.fixture
def pg_dsn(pg_cluster: PgServer) -> Iterator[str]:
    """The DSN of a fresh, empty database that only this test uses; dropped afterwards."""
    name = f"bt_{uuid.uuid4().hex[:16]}"
    dsn = pg_cluster.create_database(name)
    yield dsn
    try:
        pg_cluster.drop_database(name)
    except psycopg.Error as error:
        # Best effort: a leftover database costs disk in a throwaway cluster, not
        # correctness, since every test gets a new name.
        warnings.warn(f"could not drop test database {name}: {error}", stacklevel=1)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """A fresh, empty store: an SQLite file in `tmp_path`, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return sqlite_storage(tmp_path / "data")
    # Looked up only for this parameter, so SQLite runs never start a PostgreSQL cluster.
    dsn: str = request.getfixturevalue("pg_dsn")
    return postgres_storage(dsn)
