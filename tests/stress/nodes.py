"""A small compute network for tests of faulty nodes: a gunicorn gateway whose protocol
clocks run in seconds (leases lapse, verdicts go overdue, unopened commitments are punished
within a test), the tiny dataset published on it, and the real provider and verifier agents
(node/provider.py, verifier/agent.py) talking to it over HTTP, each on its own connection.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from node.client import GatewayClient, GatewayError
from node.datasets import fetch, publish
from node.provider import ProviderAgent
from node.trainer import Progress
from protocol.jobspec import JobSpec, parse_job_spec
from protocol.keys import PrivateKey
from tests.gateway_server import REPO_ROOT, RunningGateway
from tests.stress.commands import signed
from tests.stress.exported_log import AuditedLog, export_and_audit
from tests.stress.gateways import GatewaySite
from verifier.agent import TaskReport, VerifierAgent

TINY = REPO_ROOT / "specs" / "examples" / "tiny.yaml"
BLACK = 10**18
PRICE = 10**13
STAKE = 20 * BLACK
FUNDS = 100 * BLACK
# The protocol's clocks, shortened so that what lapses lapses within a test. A lease is
# renewed by heartbeats every third of it, so an honest provider keeps its lease; an
# honest provider opens its sample and an honest verifier judges within a second.
CLOCKS = {
    "BLACKTAIL_LEASE_SECONDS": "4",
    "BLACKTAIL_OPENING_SECONDS": "5",
    "BLACKTAIL_VERDICT_SECONDS": "8",
    "BLACKTAIL_DISPUTE_SECONDS": "30",
    "BLACKTAIL_SWEEP_SECONDS": "1",
    "BLACKTAIL_SWEEP_GRACE_SECONDS": "1",
}
agent_poll_seconds = 0.2
wait_seconds_max = 90.0
join_seconds_max = 30.0


def key(number: int) -> PrivateKey:
    return PrivateKey.from_bytes(number.to_bytes(32, "big"))


def tiny_spec(total_steps: int, segment_steps: int) -> JobSpec:
    """The tiny example job (specs/examples/tiny.yaml), cut to `total_steps`."""
    document = yaml.safe_load(TINY.read_text())
    document["total_steps"], document["segment_steps"] = total_steps, segment_steps
    return parse_job_spec(document)


@dataclass
class Network:
    """One gateway and what tests of its agents need."""

    site: GatewaySite
    gateway: RunningGateway
    dataset_dir: Path
    cache_dir: Path

    @property
    def chain_id(self) -> int:
        return self.gateway.chain_id

    def client(self) -> GatewayClient:
        """A client of its own: one connection, for one thread."""
        return GatewayClient(self.site.base_url)

    def command(
        self,
        who: PrivateKey,
        path: str,
        kind: str,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Any:
        body = signed(who, kind, self.chain_id, **fields).to_json()
        if context is not None:
            body["context"] = context
        with self.client() as client:
            return client.post_json(path, body)

    def fund(self, *who: PrivateKey) -> None:
        with self.client() as client:
            for one in who:
                client.post_json(
                    "/dev/deposit", {"account": one.address, "asset": "BLACK", "amount": FUNDS}
                )

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        with self.client() as client:
            return client.get_json(path, params)

    def balances(self, who: str) -> dict[str, int]:
        reply = self.get(f"/accounts/{who}/balances")
        return {f"{b['asset']}/{b['bucket']}": b["amount"] for b in reply["balances"]}

    def submit(self, developer: PrivateKey, spec: JobSpec) -> str:
        self.fund(developer)
        outcome = self.command(
            developer,
            "/jobs",
            "SubmitJob",
            {"spec": spec.to_json()},
            specHash="0x" + spec.digest().hex(),
        )["outcome"]
        return str(outcome["job"])

    def provider(
        self,
        who: PrivateKey,
        *,
        client: GatewayClient | None = None,
        progress: Progress | None = None,
    ) -> ProviderAgent:
        """A funded, registered provider agent (CPU, the tiny job's price, 20 BLACK staked)."""
        self.fund(who)
        client = client or self.client()
        agent = ProviderAgent(
            client,
            who,
            lambda dataset_id: fetch(dataset_id, client, self.cache_dir),
            chain_id=self.chain_id,
            checkpoint_every=4,
            progress=progress,
        )
        agent.register(
            device="cpu",
            gpus=1,
            memoryMb=16_000,
            benchmarkGflops=10,
            priceBlack=PRICE,
            priceUsd=10,
            stake=STAKE,
        )
        return agent

    def verifier(
        self,
        who: PrivateKey,
        reports: list[TaskReport],
        agent_class: type[VerifierAgent] = VerifierAgent,
    ) -> VerifierAgent:
        """A funded verifier agent with 20 BLACK staked, appending what it posts to
        `reports`."""
        self.fund(who)
        client = self.client()
        agent = agent_class(
            client,
            who,
            lambda dataset_id: fetch(dataset_id, client, self.cache_dir),
            chain_id=self.chain_id,
            poll_seconds=agent_poll_seconds,
            transient_errors=(GatewayError, OSError),
            report=reports.append,
        )
        agent.register(STAKE)
        return agent

    def audit(self, out: Path) -> AuditedLog:
        return export_and_audit(self.site.data_dir, self.site.dsn, out)

    def wait_for(
        self, what: str, ready: Callable[[], bool], seconds: float = wait_seconds_max
    ) -> None:
        """Poll `ready` until it holds; fail naming `what` after `seconds`."""
        deadline = time.monotonic() + seconds
        while not ready():
            assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
            time.sleep(0.1)

    def job(self, job: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.get(f"/jobs/{job}")
        return answer


@contextlib.contextmanager
def network(
    root: Path, dataset_dir: Path, clocks: dict[str, str] | None = None
) -> Iterator[Network]:
    """A gateway with the protocol clocks of CLOCKS (updated by `clocks`) on an SQLite store
    under `root`, with the dataset in `dataset_dir` published on it."""
    site = GatewaySite(root / "gateway", env={**CLOCKS, **(clocks or {})})
    with site.running() as gateway, GatewayClient(site.base_url) as client:
        publish(dataset_dir, client)
        yield Network(site, gateway, dataset_dir, root / "cache")


@contextlib.contextmanager
def running(agents: Sequence[ProviderAgent | VerifierAgent]) -> Iterator[threading.Event]:
    """Each agent's `run` loop on a thread of its own for the block; stopped and joined
    (bounded) at its end. An agent that dies of an unexpected error fails the test."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def work(agent: ProviderAgent | VerifierAgent) -> None:
        try:
            if isinstance(agent, ProviderAgent):
                agent.run(stop, poll_seconds=agent_poll_seconds)
            else:
                agent.run(stop)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(agent,), daemon=True) for agent in agents]
    for thread in threads:
        thread.start()
    try:
        yield stop
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=join_seconds_max)
    assert not any(thread.is_alive() for thread in threads), "an agent did not stop"
    assert not errors, f"an agent died: {errors[0]!r}"
