"""Signed writes and reads per second through the gateway: gunicorn on 127.0.0.1 with two
workers, against the raw ledger (the same signed commands applied in process) measured in
the same run.

Writes are signed ledger transfers, each durable (committed to SQLite) before its 201:
one per request (`POST /commands`), and a batch of 100 per request
(`POST /commands/batch`, one transaction per batch). Reads are `GET
/accounts/<address>/balances`. Load comes from client processes on the same machine, one
keep-alive connection each, so the figures include the clients' own CPU: on a 2-core
machine client and server share the cores. Commands are signed before timing starts.

Usage: python bench/bench_gateway.py [--json] [--transfers N] [--reads N] [--clients C]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_ledger import CHAIN_ID, run_domain, workload
from bench.common import figure, finish, machine, say
from protocol.storage import sqlite_storage

BATCH = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gateway(data_dir: Path, port: int, workers: int = 2) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-c",
        "from node.cli import main; main()",
        "gateway",
        "serve",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--data-dir",
        str(data_dir),
        "--chain-id",
        str(CHAIN_ID),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    stop_gateway(process)
    raise RuntimeError("the gateway did not answer /health within 60 s")


def stop_gateway(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _client(args: tuple[int, str, str, list[bytes]]) -> int:
    """Send each body over one keep-alive connection; return how many were accepted."""
    port, method, path, bodies = args
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    accepted = 0
    for body in bodies:
        if method == "GET":
            connection.request("GET", body.decode())
        else:
            connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status in (200, 201):
            accepted += 1
    connection.close()
    return accepted


def drive(port: int, method: str, path: str, bodies: list[bytes], clients: int) -> float:
    """Seconds for `clients` processes to send `bodies` (split evenly); all must succeed."""
    shares = [(port, method, path, bodies[i::clients]) for i in range(clients)]
    with multiprocessing.Pool(clients) as pool:
        started = time.perf_counter()
        accepted = sum(pool.map(_client, shares))
        seconds = time.perf_counter() - started
    if accepted != len(bodies):
        raise RuntimeError(f"only {accepted} of {len(bodies)} requests succeeded")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--transfers", type=int, default=6000)
    parser.add_argument("--reads", type=int, default=12000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    say(f"machine: {machine()}")
    operator, funding, commands = workload(2 * args.transfers)
    single, batched = commands[: args.transfers], commands[args.transfers :]

    with tempfile.TemporaryDirectory(prefix="bench-raw-") as raw_dir:
        raw_single = run_domain(sqlite_storage(Path(raw_dir) / "a"), operator, funding, single, 1)
        raw_batched = run_domain(
            sqlite_storage(Path(raw_dir) / "b"), operator, funding, batched, BATCH
        )
    raw_single_rate = len(single) / raw_single
    raw_batched_rate = len(batched) / raw_batched
    say(
        f"raw ledger in process: {raw_single_rate:,.0f}/s single, {raw_batched_rate:,.0f}/s batched"
    )

    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as data_dir:
        operator.save(Path(data_dir) / "operator.pem")
        port = free_port()
        process = start_gateway(Path(data_dir), port, args.workers)
        try:
            fund = json.dumps({"commands": [c.to_json() for c in funding]}).encode()
            drive(port, "POST", "/commands/batch", [fund], 1)
            bodies = [json.dumps(c.to_json()).encode() for c in single]
            seconds = drive(port, "POST", "/commands", bodies, args.clients)
            rate = len(bodies) / seconds
            figure(
                "gateway signed writes, one per request",
                rate,
                "commands/s",
                baseline="raw ledger, one per transaction",
                ratio=rate / raw_single_rate,
            )
            batches = [
                json.dumps({"commands": [c.to_json() for c in batched[i : i + BATCH]]}).encode()
                for i in range(0, len(batched), BATCH)
            ]
            seconds = drive(port, "POST", "/commands/batch", batches, args.clients)
            rate = len(batched) / seconds
            figure(
                f"gateway signed writes, {BATCH} per request",
                rate,
                "commands/s",
                baseline=f"raw ledger, {BATCH} per transaction",
                ratio=rate / raw_batched_rate,
            )
            addresses = sorted({c.signer for c in single})
            paths = [
                f"/accounts/{addresses[i % len(addresses)]}/balances".encode()
                for i in range(args.reads)
            ]
            seconds = drive(port, "GET", "", paths, args.clients)
            rate = len(paths) / seconds
            figure(
                "gateway balance reads",
                rate,
                "requests/s",
                baseline="raw ledger writes, one per transaction",
                ratio=rate / raw_single_rate,
            )
        finally:
            stop_gateway(process)
    finish()


if __name__ == "__main__":
    main()
