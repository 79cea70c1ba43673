"""A throwaway PostgreSQL cluster for tests: initdb in a temporary directory, started on a
free loopback port, stopped and deleted on exit.

Tests must not leave a server running when they fail, so three things stop it: `stop()`
(the context manager's exit), an `atexit` hook for an interpreter that exits without
reaching it, and a watchdog process for one that dies outright (SIGKILL, a crashed xdist
worker). The watchdog holds the read end of a pipe whose write end only the starting
process has; when that process is gone, for whatever reason, the read returns and the
watchdog kills the postmaster and deletes the directory.

`python -m tests.pg_cluster --check` starts a cluster, runs `SELECT 1` and stops it: CI's
smoke check that the binaries work before the test run relies on them.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

PG_BIN_ENV = "BLACKTAIL_PG_BIN"
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
# initdb refuses to run as root, so a root test run hands the cluster to this user.
CLUSTER_USER = "postgres"
SUPERUSER = "postgres"

start_timeout_seconds = 60
stop_timeout_seconds = 30
initdb_timeout_seconds = 120
connect_timeout_seconds = 10
# After SIGQUIT (immediate shutdown) a postmaster gets this long before SIGKILL.
kill_wait_seconds = 10
# A free port found by binding port 0 can be taken by someone else before the postmaster
# binds it (another xdist worker doing the same thing); a few fresh tries cover that race.
port_attempts_max = 5
log_tail_bytes_max = 4000
database_name_pattern = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class ClusterError(RuntimeError):
    """The throwaway cluster could not be set up, started or reached."""


def find_pg_bin() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: BLACKTAIL_PG_BIN if set, else the
    newest Debian install under /usr/lib/postgresql, else the one on PATH; None if none."""
    override = os.environ.get(PG_BIN_ENV)
    if override:
        # An explicit choice is honoured even when it names nothing, so a run can pretend
        # PostgreSQL is absent (that is how the skip and fail paths get exercised).
        path = Path(override)
        return path if _has_server_binaries(path) else None
    candidates = sorted(DEBIAN_PG_ROOT.glob("*/bin"), key=_major_version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    return next((path for path in candidates if _has_server_binaries(path)), None)


def _has_server_binaries(path: Path) -> bool:
    return all(os.access(path / name, os.X_OK) for name in SERVER_BINARIES)


def _major_version(bin_dir: Path) -> int:
    name = bin_dir.parent.name
    return int(name) if name.isdigit() else -1


@dataclass(frozen=True, slots=True)
class PgServer:
    """A PostgreSQL server reached through a superuser DSN, on which tests create and drop
    their own databases. `throwaway` says whether this run started it (and so chose its
    settings) or was pointed at an existing one."""

    admin_dsn: str
    throwaway: bool = False

    def dsn_for(self, name: str) -> str:
        """The admin DSN with its database swapped for `name` and its query dropped: a
        `?schema=` chosen for the admin database means nothing in a fresh one, and plain
        psycopg rejects it."""
        return urlunsplit(urlsplit(self.admin_dsn)._replace(path=f"/{name}", query=""))

    def connect_admin(self) -> psycopg.Connection[tuple[object, ...]]:
        # psycopg rejects our `schema` option, which only `postgres_storage` understands.
        conninfo = urlunsplit(urlsplit(self.admin_dsn)._replace(query=""))
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=connect_timeout_seconds)

    def create_database(self, name: str) -> str:
        """Create an empty database and return its DSN."""
        _check_database_name(name)
        with self.connect_admin() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any sessions a test left open on it."""
        _check_database_name(name)
        with self.connect_admin() as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _check_database_name(name: str) -> None:
    # Lower-case identifiers only: the name travels unquoted in DSNs and must mean the same
    # database to psycopg, to eventsourcing and to a person reading a log.
    if not database_name_pattern.fullmatch(name):
        raise ValueError(f"database name {name!r} does not match {database_name_pattern.pattern}")


class ThrowawayCluster:
    """A private PostgreSQL cluster in a temporary directory, listening on 127.0.0.1.

    Use it as a context manager, or call `start()` and `stop()`. fsync stays on, so timings
    taken against it include the cost of durable commits.
    """

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir
        self.root: Path | None = None
        self.port: int | None = None
        self.start_seconds: float | None = None
        self._password = secrets.token_hex(16)
        self._owner: tuple[int, int] | None = None
        self._postmaster_pid: int | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._started = False

    def __enter__(self) -> ThrowawayCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "the cluster has not been started"
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        assert self.root is not None, "the cluster has not been started"
        return self.root / "postgres.log"

    @property
    def server(self) -> PgServer:
        assert self._started and self.port is not None, "the cluster is not running"
        return PgServer(
            f"postgresql://{SUPERUSER}:{self._password}@127.0.0.1:{self.port}/postgres",
            throwaway=True,
        )

    def create_database(self, name: str) -> str:
        return self.server.create_database(name)

    def drop_database(self, name: str) -> None:
        self.server.drop_database(name)

    def start(self) -> None:
        """initdb a fresh data directory and start the server; raise ClusterError if either
        fails (with the server log's tail), having cleaned up after itself."""
        assert self.root is None, "a ThrowawayCluster starts once"
        began = time.monotonic()
        bin_dir = self.bin_dir or find_pg_bin()
        if bin_dir is None:
            raise ClusterError(f"no PostgreSQL server binaries found (set {PG_BIN_ENV})")
        self.bin_dir = bin_dir
        self._owner = _cluster_owner()
        self.root = Path(tempfile.mkdtemp(prefix="blacktail-pg-"))
        # Registered before anything can start a server, so every later failure is covered.
        atexit.register(self.stop)
        self._started = True
        try:
            self._watchdog = _start_watchdog(self.root)
            if self._owner is not None:
                os.chown(self.root, *self._owner)
            self._initdb()
            self._start_postmaster()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop the server (fast shutdown, else kill it) and delete the directory; safe to
        call more than once and after a failed start."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.stop)
        assert self.root is not None
        try:
            if (self.data_dir / "postmaster.pid").exists():
                # A failed or hung fast shutdown is not reported here: the kill below
                # covers it, and a stop that raises would hide the test's own failure.
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    self._run(
                        [
                            self._bin("pg_ctl"),
                            "stop",
                            "--pgdata",
                            str(self.data_dir),
                            "--mode",
                            "fast",
                            "--wait",
                            "--timeout",
                            str(stop_timeout_seconds),
                        ],
                        timeout_seconds=stop_timeout_seconds + 10,
                    )
        finally:
            _kill_postmaster(self.data_dir, self._postmaster_pid)
            shutil.rmtree(self.root, ignore_errors=True)
            if self._watchdog is not None:
                # Closing the pipe tells the watchdog its work is done; it finds nothing
                # left to kill or delete and exits.
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.close()
                try:
                    self._watchdog.wait(timeout=kill_wait_seconds)
                except subprocess.TimeoutExpired:
                    self._watchdog.kill()
                    self._watchdog.wait()

    def _initdb(self) -> None:
        assert self.root is not None
        password_file = self.root / "password"
        password_file.write_text(self._password + "\n")
        if self._owner is not None:
            os.chown(password_file, *self._owner)
        try:
            result = self._run(
                [
                    self._bin("initdb"),
                    "--pgdata",
                    str(self.data_dir),
                    "--username",
                    SUPERUSER,
                    "--pwfile",
                    str(password_file),
                    # TCP clients authenticate with the password; the Unix socket lives
                    # in this private directory, so only its owner can reach it.
                    "--auth-host",
                    "scram-sha-256",
                    "--auth-local",
                    "trust",
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C",
                    # Only skips syncing initdb's own files; the running server keeps
                    # fsync on. A crash right after initdb loses a throwaway cluster.
                    "--no-sync",
                    "--no-instructions",
                ],
                timeout_seconds=initdb_timeout_seconds,
            )
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ClusterError(f"initdb failed ({result.returncode}): {result.stderr.strip()}")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            # Stated rather than left to defaults: durability figures measured against
            # this cluster must include durable commits.
            "fsync": "on",
            "synchronous_commit": "on",
            "shared_buffers": "'32MB'",
            # Each Network holds a pool of 5 connections; concurrency tests open several.
            "max_connections": "200",
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# Set by tests/pg_cluster.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _start_postmaster(self) -> None:
        for _ in range(port_attempts_max):
            port = _free_port()
            result = self._run(
                [
                    self._bin("pg_ctl"),
                    "start",
                    "--pgdata",
                    str(self.data_dir),
                    "--log",
                    str(self.log_file),
                    "--options",
                    f"-p {port}",
                    "--wait",
                    "--timeout",
                    str(start_timeout_seconds),
                ],
                timeout_seconds=start_timeout_seconds + 10,
            )
            if result.returncode == 0:
                self.port = port
                self._postmaster_pid = _read_postmaster_pid(self.data_dir)
                return
            # A start that timed out may have left a postmaster behind.
            _kill_postmaster(self.data_dir, None)
            log = self._log_tail()
            if "could not bind" not in log and "already in use" not in log:
                raise ClusterError(
                    f"pg_ctl start failed ({result.returncode}): {result.stderr.strip()}\n{log}"
                )
        raise ClusterError(f"no free port after {port_attempts_max} attempts:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            with self.log_file.open("rb") as log:
                log.seek(max(0, self.log_file.stat().st_size - log_tail_bytes_max))
                return log.read().decode(errors="replace")
        except OSError:
            return "(no server log)"

    def _bin(self, name: str) -> str:
        assert self.bin_dir is not None
        return str(self.bin_dir / name)

    def _run(self, args: list[str], *, timeout_seconds: float) -> subprocess.CompletedProcess[str]:
        assert self.root is not None
        # PG* variables from the caller's shell (PGDATA, PGPORT, ...) would steer pg_ctl
        # towards some other cluster.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        if self._owner is None:
            return subprocess.run(
                args,
                cwd=self.root,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_seconds,
                check=False,
            )
        uid, gid = self._owner
        return subprocess.run(
            args,
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
            user=uid,
            group=gid,
            extra_groups=[],
        )


def _cluster_owner() -> tuple[int, int] | None:
    """The (uid, gid) to run the server as when running as root; None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(CLUSTER_USER)
    except KeyError:
        raise ClusterError(
            f"running as root, which initdb refuses, and there is no {CLUSTER_USER!r} user "
            "to run the cluster as"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _read_postmaster_pid(data_dir: Path) -> int | None:
    try:
        first_line = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
    except OSError:
        return None
    return int(first_line) if first_line.strip().isdigit() else None


def _is_our_postmaster(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a live postmaster for `data_dir`; a stale pid file may name a pid
    that now belongs to something else, which must not be killed."""
    proc = Path("/proc") / str(pid)
    try:
        if " Z " in (proc / "stat").read_text().rsplit(")", 1)[1][:3]:
            return False  # A zombie: dead, waiting for a parent that may never reap it.
        return str(data_dir).encode() in (proc / "cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        # No /proc (not Linux): trust the pid file if the process exists at all.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _kill_postmaster(data_dir: Path, known_pid: int | None) -> None:
    """Immediate shutdown (SIGQUIT) of the postmaster for `data_dir`, then SIGKILL if it
    lingers; its backends notice the postmaster's death and exit by themselves."""
    pids = {pid for pid in (_read_postmaster_pid(data_dir), known_pid) if pid is not None}
    for pid in pids:
        if not _is_our_postmaster(pid, data_dir):
            continue
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + kill_wait_seconds
            while time.monotonic() < deadline and _is_our_postmaster(pid, data_dir):
                time.sleep(0.05)
            if not _is_our_postmaster(pid, data_dir):
                break


def _start_watchdog(root: Path) -> subprocess.Popen[bytes]:
    # A new session, so a Ctrl-C aimed at the test run does not also kill the watchdog
    # before it has cleaned up.
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--watchdog", str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def _watch(root: Path) -> int:
    """Block until the starting process closes the pipe or dies, then make sure the
    cluster under `root` is gone."""
    sys.stdin.buffer.read()
    _kill_postmaster(root / "data", None)
    shutil.rmtree(root, ignore_errors=True)
    return 0


def _check() -> int:
    try:
        with ThrowawayCluster() as cluster, cluster.server.connect_admin() as connection:
            row = connection.execute("SELECT 1, current_setting('server_version')").fetchone()
            assert row is not None and row[0] == 1, f"SELECT 1 returned {row!r}"
            print(
                f"pg_cluster: PostgreSQL {row[1]} from {cluster.bin_dir} answered SELECT 1 "
                f"on 127.0.0.1:{cluster.port}; started in {cluster.start_seconds:.2f} s"
            )
    except (ClusterError, psycopg.Error) as error:
        print(f"pg_cluster: FAILED: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.pg_cluster", description="Throwaway PostgreSQL cluster for tests."
    )
    parser.add_argument(
        "--check", action="store_true", help="start a cluster, run SELECT 1, stop it"
    )
    parser.add_argument("--watchdog", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.watchdog is not None:
        return _watch(args.watchdog)
    if args.check:
        return _check()
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
