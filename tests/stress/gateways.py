"""Gateways that stress tests start, kill and start again: on a fixed loopback port (so a
client or agent holding the URL reconnects to the restarted one), on SQLite or on a
PostgreSQL DSN, several of them sharing one operator key and one store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from node.operator import OPERATOR_KEY_FILE
from tests.gateway_server import RunningGateway, run_gateway

# How long a SIGKILLed gateway's processes get to disappear before the test gives up.
kill_seconds_max = 10.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class GatewaySite:
    """Where one gateway lives across its restarts: its data directory (operator key,
    blobs, and the SQLite store unless `dsn` names a PostgreSQL one), its port, and the
    environment it starts with."""

    data_dir: Path
    dsn: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 2
    port: int = field(default_factory=free_port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store_args(self) -> list[str]:
        return [] if self.dsn is None else ["--db", self.dsn]

    @contextlib.contextmanager
    def running(self) -> Iterator[RunningGateway]:
        """The gateway, started on this site's port and store, for the block (stopped
        gently at its end unless `kill` came first)."""
        with run_gateway(
            self.data_dir,
            workers=self.workers,
            extra_args=["--bind", f"127.0.0.1:{self.port}", *self.store_args],
            env=self.env,
        ) as gateway:
            assert gateway.base_url == self.base_url, gateway.base_url
            yield gateway

    def share_operator_with(self, other: GatewaySite) -> None:
        """Give `other` this site's operator key (several gateways, one network)."""
        other.data_dir.mkdir(parents=True, exist_ok=True)
        target = other.data_dir / OPERATOR_KEY_FILE
        shutil.copyfile(self.data_dir / OPERATOR_KEY_FILE, target)
        os.chmod(target, 0o600)


def kill(gateway: RunningGateway) -> None:
    """SIGKILL the gateway's whole process group (master and workers) and wait until none
    of them runs: a crash, with no chance to finish a request or close a file."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(gateway.pid, signal.SIGKILL)
    deadline = time.monotonic() + kill_seconds_max
    while time.monotonic() < deadline:
        # The master is our child: reap it here (the context manager's poll copes), and
        # look for any member of its group that is not yet a zombie.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(gateway.pid, os.WNOHANG)
        if not _live_members(gateway.pid):
            return
        time.sleep(0.02)
    raise AssertionError(f"gateway group {gateway.pid} outlived SIGKILL for {kill_seconds_max} s")


def _live_members(group: int) -> list[int]:
    """Pids of the processes in `group` that still run (zombies hold no files or ports)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone while we looked
        # After the command name: state, ppid, pgrp.
        if int(fields[2]) == group and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live
