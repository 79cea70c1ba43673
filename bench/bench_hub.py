"""GenAI Hub inference through the gateway: requests per second and p50/p99 latency of
`POST /hub/models/<id>/predict` for a small MLP, on gunicorn with two workers on
127.0.0.1, against calling the same model directly in process (the baseline, measured
in the same run).

Every hub request is a signed HubRequest recorded in the ledger (metered against the
caller's subscription, durable in SQLite before the answer) and then a forward pass of
the model, which each worker loaded from its safetensors artifact on first use. The
baseline is the forward pass alone: `HubModel.predict` on the same rows, with the same
single torch thread. Load comes from client processes on the same machine (one
keep-alive connection and one subscriber each), so on a 2-core machine clients and
server share the cores. Commands are signed before timing starts.

Usage: python bench/bench_hub.py [--json] [--requests N] [--direct N] [--clients C]
       [--rows R] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_gateway import free_port, start_gateway, stop_gateway
from bench.bench_ledger import CHAIN_ID
from bench.common import FastSigner, figure, finish, machine, say
from node.artifacts import MlpLayout
from node.hub_models import load_model
from protocol.commands import SignedCommand
from protocol.hub import input_digest
from protocol.keys import PrivateKey
from protocol.market import listing_key

WIDTHS = (64, 256, 256, 10)
BLACK = 10**18
_HEADERS = {"Content-Type": "application/json"}


def mlp(widths: tuple[int, ...] = WIDTHS) -> tuple[bytes, dict[str, np.ndarray[Any, Any]]]:
    """A small MLP as safetensors bytes (and its tensors), seeded."""
    from safetensors.numpy import save

    rng = np.random.default_rng(0)
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    for layer in range(len(widths) - 1):
        fan_in, fan_out = widths[layer], widths[layer + 1]
        scale = np.float32(1 / np.sqrt(fan_in))
        tensors[f"param.{layer}.W"] = (rng.standard_normal((fan_out, fan_in)) * scale).astype(
            np.float32
        )
        tensors[f"param.{layer}.b"] = np.zeros(fan_out, np.float32)
    return save(tensors), tensors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def direct(data: bytes, rows: list[list[float]], calls: int) -> list[float]:
    """Seconds of each in-process call of the model on `rows` (after a warm-up)."""
    model = load_model(data, MlpLayout(WIDTHS), "cpu")
    for _ in range(50):
        model.predict(rows)
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        model.predict(rows)
        seconds.append(time.perf_counter() - started)
    return seconds


def _post(connection: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    connection.request("POST", path, body=body, headers=_HEADERS)
    response = connection.getresponse()
    return response.status, response.read()


def _client(args: tuple[int, str, list[bytes]]) -> list[float]:
    """Send each predict body over one keep-alive connection; each one's seconds."""
    port, path, bodies = args
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    seconds = []
    for body in bodies:
        started = time.perf_counter()
        status, answer = _post(connection, path, body)
        seconds.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"predict answered {status}: {answer[:300]!r}")
    connection.close()
    return seconds


class Setup:
    """Signs the commands that put a model in the hub and subscribe the clients."""

    def __init__(self, port: int, operator: PrivateKey) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.operator = operator
        self.sign = FastSigner()
        self.number = 0

    def command(self, who: PrivateKey, kind: str, **fields: Any) -> SignedCommand:
        self.number += 1
        fields.update(clientId=f"bench-{self.number}", nonce=self.number)
        fields["expiry"] = int(time.time()) + 3600
        return self.sign(who, kind, CHAIN_ID, fields)

    def post(self, path: str, command: SignedCommand) -> Any:
        status, answer = _post(self.connection, path, json.dumps(command.to_json()).encode())
        if status not in (200, 201):
            raise RuntimeError(f"{path} answered {status}: {answer[:300]!r}")
        return json.loads(answer)

    def put_blob(self, data: bytes) -> str:
        digest = "0x" + hashlib.sha256(data).hexdigest()
        headers = {"Content-Type": "application/vnd.safetensors"}
        self.connection.request("PUT", f"/blobs/{digest}", body=data, headers=headers)
        response = self.connection.getresponse()
        response.read()
        if response.status not in (200, 201):
            raise RuntimeError(f"blob upload answered {response.status}")
        return digest


def hub_bodies(
    setup: Setup, data: bytes, rows: list[list[float]], clients: int, requests: int
) -> tuple[str, list[list[bytes]]]:
    """List the model for the hub, subscribe one key per client; each client's bodies."""
    creator = PrivateKey.from_bytes((0xC0DE).to_bytes(32, "big"))
    subscribers = [PrivateKey.from_bytes((0x5B00 + i).to_bytes(32, "big")) for i in range(clients)]
    for i, who in enumerate(subscribers):
        deposit = setup.command(
            setup.operator,
            "Deposit",
            account=who.address,
            asset="BLACK",
            amount=BLACK,
            chainRef=f"{CHAIN_ID}:0x{i + 1:064x}:0",
        )
        setup.post("/commands", deposit)
    artifact = setup.put_blob(data)
    listing = listing_key(artifact)
    listed = setup.command(
        creator,
        "ListModel",
        artifact=artifact,
        name="bench-mlp",
        task="classification",
        license="MIT",
        licenseText="",
        description="",
        price=0,
        asset="BLACK",
        royaltyBps=0,
        provenanceJob="",
        hub=True,
        requestPrice=0,
    )
    setup.post("/market/listings", listed)
    plan = setup.command(
        setup.operator,
        "SetHubPlan",
        plan="bench",
        priceBlack=BLACK,
        priceUsd=0,
        periodSeconds=30 * 24 * 3600,
        quota=requests + 1000,
        active=True,
    )
    setup.post("/hub/plans", plan)
    for who in subscribers:
        setup.post(
            "/hub/subscriptions",
            setup.command(who, "Subscribe", plan="bench", asset="BLACK", price=BLACK),
        )
    digest = input_digest(rows)
    bodies: list[list[bytes]] = [[] for _ in subscribers]
    for i in range(requests):
        who = subscribers[i % clients]
        command = setup.command(who, "HubRequest", listing=listing, inputDigest=digest)
        bodies[i % clients].append(
            json.dumps({"command": command.to_json(), "inputs": rows}).encode()
        )
    return listing, bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--direct", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1, help="Rows of inputs per request.")
    parser.add_argument("--quick", action="store_true", help="400 requests, 2000 direct calls.")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.direct = 400, 2000
    say(f"machine: {machine()}")
    data, _ = mlp()
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((args.rows, WIDTHS[0])).astype(np.float32).tolist()
    say(f"model: MLP {'-'.join(map(str, WIDTHS))}, {args.rows} row(s) per request")

    baseline = direct(data, rows, args.direct)
    base_rate = len(baseline) / sum(baseline)
    base_p50, base_p99 = percentile(baseline, 0.50), percentile(baseline, 0.99)
    say(
        f"in process: {base_rate:,.0f} calls/s, p50 {base_p50 * 1e3:.3f} ms, "
        f"p99 {base_p99 * 1e3:.3f} ms"
    )

    with tempfile.TemporaryDirectory(prefix="bench-hub-") as data_dir:
        operator = PrivateKey.generate()
        operator.save(Path(data_dir) / "operator.pem")
        port = free_port()
        process = start_gateway(Path(data_dir), port, args.workers)
        try:
            setup = Setup(port, operator)
            listing, bodies = hub_bodies(setup, data, rows, args.clients, args.requests)
            path = f"/hub/models/{listing}/predict"
            # Each worker loads the model on its first request: warm them up, untimed, one
            # connection per request so that every worker takes some.
            for body in hub_bodies_warmup(setup, listing, rows, args.workers * 8):
                _client((port, path, [body]))
            shares = [(port, path, share) for share in bodies]
            with multiprocessing.Pool(args.clients) as pool:
                started = time.perf_counter()
                latencies = [s for share in pool.map(_client, shares) for s in share]
                seconds = time.perf_counter() - started
        finally:
            stop_gateway(process)
    rate = len(latencies) / seconds
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    baseline_name = "the model called in process"
    figure(
        f"hub predict through gunicorn ({args.workers} workers, {args.clients} clients)",
        rate,
        "requests/s",
        baseline=baseline_name,
        ratio=rate / base_rate,
    )
    figure("hub predict p50 latency", p50 * 1e3, "ms", baseline=baseline_name, ratio=p50 / base_p50)
    figure("hub predict p99 latency", p99 * 1e3, "ms", baseline=baseline_name, ratio=p99 / base_p99)
    figure("in-process model call", base_rate, "calls/s")
    figure("in-process model call p50 latency", base_p50 * 1e3, "ms")
    figure("in-process model call p99 latency", base_p99 * 1e3, "ms")
    finish()


def hub_bodies_warmup(
    setup: Setup, listing: str, rows: list[list[float]], count: int
) -> list[bytes]:
    """Requests of a separate subscriber, to load the model in every worker before timing."""
    who = PrivateKey.from_bytes((0x5BFF).to_bytes(32, "big"))
    setup.post(
        "/commands",
        setup.command(
            setup.operator,
            "Deposit",
            account=who.address,
            asset="BLACK",
            amount=BLACK,
            chainRef=f"{CHAIN_ID}:0x{0xFFFF:064x}:0",
        ),
    )
    setup.post(
        "/hub/subscriptions",
        setup.command(who, "Subscribe", plan="bench", asset="BLACK", price=BLACK),
    )
    digest = input_digest(rows)
    return [
        json.dumps(
            {
                "command": setup.command(
                    who, "HubRequest", listing=listing, inputDigest=digest
                ).to_json(),
                "inputs": rows,
            }
        ).encode()
        for _ in range(count)
    ]


if __name__ == "__main__":
    main()
