"""Running a real gateway (gunicorn, several workers) on loopback, as a child process:
for `blacktail demo` and `blacktail up`, and for the tests.

`run_gateway` starts `python -m node.cli gateway serve --bind 127.0.0.1:0` as a child
process in its own process group, reads the URL it prints once it listens, waits (bounded)
until GET /health answers, and stops it (SIGTERM, then SIGKILL to its process group) when
the block ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from node.client import GatewayClient
from node.operator import OPERATOR_KEY_FILE
from protocol.keys import PrivateKey

start_seconds_max = 60.0
stop_seconds_max = 10.0
_URL = re.compile(r"BlackTail gateway listening on (http://127\.0\.0\.1:\d+)")


class GatewayDidNotStart(RuntimeError):
    """The gateway exited, or did not listen or answer /health in time (the log's tail
    is in the message)."""


@dataclass(frozen=True)
class RunningGateway:
    """A gateway serving on loopback, and what a test needs to talk to it."""

    base_url: str
    pid: int
    chain_id: int
    operator: PrivateKey
    data_dir: Path
    log_path: Path

    def client(self, timeout_seconds: float = 30.0) -> GatewayClient:
        return GatewayClient(self.base_url, timeout_seconds)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def run_gateway(
    data_dir: Path,
    *,
    workers: int = 2,
    threads: int = 4,
    dev: bool = True,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[RunningGateway]:
    """A gateway over the SQLite store in `data_dir` (made on first use), for the block."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "gateway.log"
    command = [
        sys.executable,
        "-m",
        "node.cli",
        "gateway",
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--data-dir",
        str(data_dir),
        "--dev" if dev else "--no-dev",
        *extra_args,
    ]
    child_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            command,
            env=child_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group, so that a stuck master and its workers can be killed
            # together without touching anything else.
            start_new_session=True,
        )
    try:
        base_url = _wait_for_url(process, log_path)
        health = _wait_for_health(process, base_url, log_path)
        operator = PrivateKey.load(data_dir / OPERATOR_KEY_FILE)
        assert operator.address == health["operator"], "the key file is not the operator's"
        yield RunningGateway(
            base_url, process.pid, int(str(health["chain_id"])), operator, data_dir, log_path
        )
    finally:
        _stop(process)


def _wait_for_url(process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + start_seconds_max
    while time.monotonic() < deadline:
        match = _URL.search(log_path.read_text(errors="replace"))
        if match:
            return match.group(1)
        if process.poll() is not None:
            raise GatewayDidNotStart(
                f"gateway exited with {process.returncode}:\n{_tail(log_path)}"
            )
        time.sleep(0.05)
    raise GatewayDidNotStart(f"no URL within {start_seconds_max} s:\n{_tail(log_path)}")


def _wait_for_health(
    process: subprocess.Popen[bytes], base_url: str, log_path: Path
) -> dict[str, object]:
    deadline = time.monotonic() + start_seconds_max
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise GatewayDidNotStart(
                f"gateway exited with {process.returncode}:\n{_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=5) as response:
                health: dict[str, object] = json.loads(response.read())
                return health
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    raise GatewayDidNotStart(f"/health did not answer within {start_seconds_max} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # gunicorn's master stops its workers on SIGTERM
    try:
        process.wait(timeout=stop_seconds_max)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=stop_seconds_max)


def _tail(log_path: Path, chars: int = 4000) -> str:
    return log_path.read_text(errors="replace")[-chars:]
