"""The PostgreSQL test harness: the throwaway cluster and the per-test database fixtures."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from protocol.application import Network
from protocol.storage import Storage, postgres_storage
from tests.pg_cluster import PgServer, ThrowawayCluster, find_pg_bin

CHAIN_ID = 1337
OPERATOR = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
REPO_ROOT = Path(__file__).resolve().parent.parent
# The crash test's child must start its cluster and report within this long.
child_start_seconds_max = 60


@pytest.mark.postgres
def test_cluster_starts_and_answers_select_one(pg_dsn: str) -> None:
    """A test's database accepts connections and answers a query."""
    with psycopg.connect(pg_dsn, connect_timeout=10) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.postgres
def test_throwaway_cluster_commits_durably(pg_cluster: PgServer) -> None:
    """The throwaway cluster keeps fsync and synchronous_commit on, so timings are honest."""
    if not pg_cluster.throwaway:
        pytest.skip("an existing server's settings are its owner's choice")
    with pg_cluster.connect_admin() as connection:
        fsync = connection.execute("SHOW fsync").fetchone()
        synchronous_commit = connection.execute("SHOW synchronous_commit").fetchone()
    assert (fsync, synchronous_commit) == (("on",), ("on",))


@pytest.mark.postgres
def test_second_network_on_the_same_dsn_sees_the_same_genesis(pg_dsn: str) -> None:
    """A genesis recorded through one Network is read back by another on the same database."""
    first = Network(postgres_storage(pg_dsn))
    try:
        first.initialize(CHAIN_ID, OPERATOR)
    finally:
        first.close()
    second = Network(postgres_storage(pg_dsn))
    try:
        assert (second.chain_id, second.operator) == (CHAIN_ID, OPERATOR)
    finally:
        second.close()


@pytest.mark.postgres
@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_a_fresh_empty_database(pg_dsn: str, run: int) -> None:
    """A table created by one test is absent in the next (run twice to catch sharing)."""
    with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=10) as connection:
        tables = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
        assert tables == []
        connection.execute("CREATE TABLE left_behind (run integer)")
        connection.execute("INSERT INTO left_behind VALUES (%s)", (run,))


@pytest.mark.postgres
def test_dropped_database_no_longer_exists(pg_cluster: PgServer) -> None:
    """drop_database removes the database even while a session is still connected to it."""
    name = f"bt_{uuid.uuid4().hex[:16]}"
    dsn = pg_cluster.create_database(name)
    try:
        lingering = psycopg.connect(dsn, connect_timeout=10)
        try:
            pg_cluster.drop_database(name)
        finally:
            lingering.close()
    finally:
        pg_cluster.drop_database(name)  # Cleanup if the test failed before its own drop.
    with pg_cluster.connect_admin() as connection:
        found = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchall()
    assert found == []


def test_storage_fixture_yields_a_working_empty_store(storage: Storage) -> None:
    """Each store the `storage` fixture yields starts uninitialized and records a genesis."""
    network = Network(storage)
    try:
        assert network.initialize(CHAIN_ID, OPERATOR).chain_id == CHAIN_ID
    finally:
        network.close()


def test_pg_bin_override_pointing_at_nothing_finds_no_binaries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BLACKTAIL_PG_BIN naming a directory without the binaries means no PostgreSQL."""
    monkeypatch.setenv("BLACKTAIL_PG_BIN", "/nonexistent")
    assert find_pg_bin() is None


@pytest.mark.postgres
@pytest.mark.slow
def test_stopped_cluster_leaves_no_process_or_directory(pg_bin: Path) -> None:
    """Leaving the context manager stops the postmaster and deletes the temporary directory."""
    with ThrowawayCluster(pg_bin) as cluster:
        root = cluster.root
        pid = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    assert root is not None and not root.exists()
    assert not _alive(pid)


@pytest.mark.postgres
@pytest.mark.slow
def test_killed_test_process_leaves_no_postgres_behind(pg_bin: Path) -> None:
    """When the process that started a cluster is SIGKILLed, the watchdog stops the server."""
    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from tests.pg_cluster import ThrowawayCluster\n"
        f"cluster = ThrowawayCluster(Path({str(pg_bin)!r}))\n"
        "cluster.start()\n"
        "pid = (cluster.data_dir / 'postmaster.pid').read_text().split()[0]\n"
        "print(pid, cluster.root, flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], child_start_seconds_max)
        assert ready, f"the child did not start its cluster in {child_start_seconds_max} s"
        line = child.stdout.readline()
        assert line, "the child exited before starting its cluster"
        pid_text, root_text = line.split()
        assert _alive(int(pid_text))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (_alive(int(pid_text)) or Path(root_text).exists()):
        time.sleep(0.1)
    assert not _alive(int(pid_text))
    assert not Path(root_text).exists()


def _alive(pid: int) -> bool:
    """Whether `pid` is a running (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"
