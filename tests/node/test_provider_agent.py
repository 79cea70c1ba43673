"""The provider agent against a real gateway (gunicorn on 127.0.0.1): it leases, trains,
commits and opens every sampled transition so that a verifier's re-execution agrees."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from node.client import GatewayClient
from node.datasets import build_synthetic, fetch, publish, save_dataset
from node.provider import ProviderAgent
from protocol.commands import sign_command
from protocol.jobspec import JobSpec, parse_job_spec
from protocol.keys import PrivateKey
from protocol.openings import parse_manifest
from protocol.sampling import sample_indices
from tests.gateway_server import RunningGateway, run_gateway
from verifier.checkpoints import decode_state
from verifier.reexecute import compare_exact, reexecute_step

TINY = Path(__file__).resolve().parents[2] / "specs" / "examples" / "tiny.yaml"
BLACK = 10**18


def key(number: int) -> PrivateKey:
    return PrivateKey.from_bytes(number.to_bytes(32, "big"))


DEVELOPER, PROVIDER, VERIFIER = key(0xDE71), key(0x9011), key(0x7011)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with run_gateway(tmp_path_factory.mktemp("provider-gw"), workers=2) as running:
        yield running


def command(
    gw: RunningGateway,
    client: GatewayClient,
    who: PrivateKey,
    path: str,
    kind: str,
    context: dict[str, Any] | None = None,
    **fields: Any,
) -> Any:
    fields.setdefault("clientId", f"t-{time.time_ns()}")
    fields.setdefault("nonce", time.time_ns())
    fields.setdefault("expiry", int(time.time()) + 600)
    body = sign_command(who, kind, gw.chain_id, fields).to_json()
    if context is not None:
        body["context"] = context
    return client.post_json(path, body)


def short_spec() -> JobSpec:
    document = yaml.safe_load(TINY.read_text())
    document["total_steps"], document["segment_steps"] = 20, 10
    return parse_job_spec(document)


def verify_like_a_verifier(
    client: GatewayClient, spec: JobSpec, data: Any, commitment: str
) -> list[int]:
    """Check a commitment's openings the way a verifier does; return the sample."""
    detail = client.get_json(f"/commitments/{commitment}")
    root = bytes.fromhex(detail["root"][2:])
    sample = sample_indices(
        root,
        bytes.fromhex(detail["beacon"][2:]),
        VERIFIER.address,
        detail["steps"],
        detail["samples"],
    )
    assert sample == detail["sample_indices"]
    manifest = parse_manifest(
        client.get_blob(detail["openings"]),
        digest=detail["openings"],
        root=root,
        steps=detail["steps"],
    )
    assert [o.step for o in manifest.openings] == sample
    for opening in manifest.openings:
        state = decode_state(client.get_blob(opening.state), spec)
        assert state.hash() == opening.state_hash
        assert state.step == detail["start_step"] + opening.step
        assert compare_exact(reexecute_step(spec, data, state), opening.next_state_hash).ok
    end = decode_state(client.get_blob(detail["end_checkpoint"]), spec)
    assert end.hash() == manifest.end_state_hash
    return sample


def registered_agent(
    gateway: RunningGateway,
    client: GatewayClient,
    who: PrivateKey,
    cache: Path,
    progress: Callable[[int, float], None] | None = None,
) -> ProviderAgent:
    """A provider agent for `who` (funded beforehand), registered with 20 BLACK staked."""
    agent = ProviderAgent(
        client,
        who,
        lambda dataset_id: fetch(dataset_id, client, cache),
        chain_id=gateway.chain_id,
        checkpoint_every=4,
        progress=progress,
    )
    agent.register(
        device="cpu",
        gpus=1,
        memoryMb=16_000,
        benchmarkGflops=10,
        priceBlack=10**13,
        priceUsd=10,
        stake=20 * BLACK,
    )
    return agent


def submit(gateway: RunningGateway, client: GatewayClient, who: PrivateKey, spec: JobSpec) -> str:
    """Submit `spec` as `who`'s job; its id."""
    result = command(
        gateway,
        client,
        who,
        "/jobs",
        "SubmitJob",
        {"spec": spec.to_json()},
        specHash="0x" + spec.digest().hex(),
    )
    return str(result["outcome"]["job"])


def accept(
    gateway: RunningGateway, client: GatewayClient, spec: JobSpec, data: Any, commitment: str
) -> None:
    """Check the commitment's openings as a verifier does, then post VERIFIER's acceptance."""
    sample = verify_like_a_verifier(client, spec, data, commitment)
    command(
        gateway,
        client,
        VERIFIER,
        f"/commitments/{commitment}/verdict",
        "PostVerdict",
        commitment=commitment,
        accepted=True,
        samples=sample,
        failedStep=0,
        reason="",
    )


def test_provider_agent_trains_commits_and_opens_until_the_job_completes(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """Two segments leased and trained by the agent, each opened so that re-execution of
    every sampled step matches, are accepted and paid; the second starts from the first's
    end checkpoint; the job completes."""
    client = gateway.client()
    built = build_synthetic(0, 512, 16, 4)
    save_dataset(built, tmp_path / "tiny")
    spec = short_spec()
    assert publish(tmp_path / "tiny", client) == "0x" + spec.dataset.sha256.hex()
    for who in (DEVELOPER, PROVIDER, VERIFIER):
        client.post_json(
            "/dev/deposit", {"account": who.address, "asset": "BLACK", "amount": 100 * BLACK}
        )
    command(gateway, client, VERIFIER, "/verifiers", "RegisterVerifier", stake=20 * BLACK)
    data = fetch("0x" + spec.dataset.sha256.hex(), client, tmp_path / "cache")
    steps: list[int] = []
    agent = registered_agent(
        gateway, client, PROVIDER, tmp_path / "cache", lambda step, loss: steps.append(step)
    )
    job = submit(gateway, client, DEVELOPER, spec)

    for segment in range(2):
        report = agent.run_once()
        assert report is not None and (report.job, report.segment) == (job, segment)
        accept(gateway, client, spec, data, report.commitment)
    assert steps == list(range(1, 21))
    final = client.get_json(f"/jobs/{job}")
    assert (final["status"], final["segments_accepted"], final["escrow"]) == ("completed", 2, 0)
    assert agent.run_once() is None


class FailingOnce(GatewayClient):
    """A client whose first read of a commitment finds the gateway gone (the connection
    refused), as when the gateway dies right after answering a Commit."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.failed: str | None = None

    def get_json(self, path: str, params: Any = None) -> Any:
        if path.startswith("/commitments/") and self.failed is None:
            self.failed = path.removeprefix("/commitments/")
            raise ConnectionRefusedError(111, "Connection refused")
        return super().get_json(path, params)


def test_a_commitment_whose_opening_failed_is_opened_on_the_next_pass(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """The gateway fails between the agent's Commit and its openings: the pass raises
    (an outage, which `run` waits out), the commitment stays unopened, and the next pass
    opens that same commitment rather than leasing more work; it is then accepted."""
    client = FailingOnce(gateway.base_url)
    built = build_synthetic(0, 512, 16, 4)
    save_dataset(built, tmp_path / "tiny")
    spec = short_spec()
    publish(tmp_path / "tiny", client)
    provider, developer = key(0x9012), key(0xDE72)
    for who in (developer, provider, VERIFIER):
        client.post_json(
            "/dev/deposit", {"account": who.address, "asset": "BLACK", "amount": 100 * BLACK}
        )
    if not client.get_json("/verifiers", {"limit": 10})["items"]:  # alone, without the test above
        command(gateway, client, VERIFIER, "/verifiers", "RegisterVerifier", stake=20 * BLACK)
    data = fetch("0x" + spec.dataset.sha256.hex(), client, tmp_path / "cache")
    agent = registered_agent(gateway, client, provider, tmp_path / "cache")
    job = submit(gateway, client, developer, spec)
    with pytest.raises(ConnectionRefusedError):
        agent.run_once()
    segments = client.get_json(f"/jobs/{job}/segments")["segments"]
    assert [s["state"] for s in segments] == ["committed", "waiting"]
    assert client.failed is not None
    pending = client.get_json(f"/commitments/{client.failed}")
    assert pending["openings"] is None and pending["segment"] == 0

    report = agent.run_once()
    assert report is not None and report.segment == 0
    assert report.commitment == client.failed
    accept(gateway, client, spec, data, report.commitment)
    assert client.get_json(f"/jobs/{job}")["segments_accepted"] == 1
