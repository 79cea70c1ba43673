"""The verifier agent against a real gateway (gunicorn on 127.0.0.1), with the provider's
part played here by the trainer: honest segments are accepted and paid, a tampered
trajectory is rejected and the referee agent confirms the fraud, a false rejection is
overturned by the referee agent, the CLI runs a bounded agent, and an agent outlives a
gateway restart."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from node.cli import main
from node.client import SAFETENSORS, GatewayClient, GatewayError
from node.datasets import LoadedDataset, build_synthetic, fetch, publish, save_dataset
from node.trainer import train_segment
from protocol.assets import Asset
from protocol.commands import sign_command
from protocol.compute import ComputeParams
from protocol.fees import settle_segment, slash_split
from protocol.jobspec import JobSpec, parse_job_spec
from protocol.keys import PrivateKey
from protocol.openings import commitment_root, open_steps
from protocol.sampling import sample_indices
from tests.gateway_server import RunningGateway, run_gateway
from verifier.agent import TaskReport, VerifierAgent
from verifier.beacon import LogWitness
from verifier.checkpoints import SEED_CHECKPOINT, blob_digest, decode_state, encode_state
from verifier.errors import InconsistentGateway
from verifier.model import TrainState, initial_state

TINY = Path(__file__).resolve().parents[2] / "specs" / "examples" / "tiny.yaml"
BLACK = 10**18
PRICE = 10**13
_numbers = itertools.count(1)


def key(number: int) -> PrivateKey:
    return PrivateKey.from_bytes(number.to_bytes(32, "big"))


DEVELOPER, PROVIDER, VERIFIER_A, VERIFIER_B = key(0xDE72), key(0x9012), key(0x7A01), key(0x7B01)


@dataclass
class World:
    """A gateway with the tiny dataset published, and what the provider's part needs."""

    gateway: RunningGateway
    client: GatewayClient
    spec: JobSpec
    data: LoadedDataset
    cache: Path


def short_spec() -> JobSpec:
    document = yaml.safe_load(TINY.read_text())
    document["total_steps"], document["segment_steps"] = 20, 10
    return parse_job_spec(document)


def make_world(gateway: RunningGateway, tmp_path: Path) -> World:
    client = gateway.client()
    spec = short_spec()
    if not (tmp_path / "tiny").exists():
        save_dataset(build_synthetic(0, 512, 16, 4), tmp_path / "tiny")
    assert publish(tmp_path / "tiny", client) == "0x" + spec.dataset.sha256.hex()
    data = fetch("0x" + spec.dataset.sha256.hex(), client, tmp_path / "cache")
    return World(gateway, client, spec, data, tmp_path / "cache")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with run_gateway(tmp_path / "gateway", workers=2) as gateway:
        yield make_world(gateway, tmp_path)


def command(
    world: World,
    who: PrivateKey,
    path: str,
    kind: str,
    context: dict[str, Any] | None = None,
    **fields: Any,
) -> Any:
    number = next(_numbers)
    fields.setdefault("clientId", f"t-{number}-{time.time_ns()}")
    fields.setdefault("nonce", time.time_ns() + number)
    fields.setdefault("expiry", int(time.time()) + 600)
    body = sign_command(who, kind, world.gateway.chain_id, fields).to_json()
    if context is not None:
        body["context"] = context
    return world.client.post_json(path, body)


def fund(world: World, *who: PrivateKey) -> None:
    for one in who:
        world.client.post_json(
            "/dev/deposit", {"account": one.address, "asset": "BLACK", "amount": 100 * BLACK}
        )


def balances(world: World, who: str) -> dict[str, int]:
    reply = world.client.get_json(f"/accounts/{who}/balances")
    return {f"{b['asset']}/{b['bucket']}": b["amount"] for b in reply["balances"]}


def agent_for(world: World, who: PrivateKey, reports: list[TaskReport]) -> VerifierAgent:
    client = world.gateway.client()
    return VerifierAgent(
        client,
        who,
        lambda dataset_id: fetch(dataset_id, client, world.cache),
        chain_id=world.gateway.chain_id,
        poll_seconds=0.1,
        transient_errors=(GatewayError, OSError),
        report=reports.append,
    )


def start_job(world: World) -> str:
    """Fund everyone, register the provider and submit the job; the job's id."""
    fund(world, DEVELOPER, PROVIDER)
    command(
        world,
        PROVIDER,
        "/providers",
        "RegisterProvider",
        device="cpu",
        gpus=1,
        memoryMb=16_000,
        benchmarkGflops=10,
        priceBlack=PRICE,
        priceUsd=10,
        stake=20 * BLACK,
    )
    spec = world.spec
    submitted = command(
        world,
        DEVELOPER,
        "/jobs",
        "SubmitJob",
        {"spec": spec.to_json()},
        specHash="0x" + spec.digest().hex(),
    )
    return str(submitted["outcome"]["job"])


def two_verifiers(world: World, reports: list[TaskReport]) -> list[VerifierAgent]:
    fund(world, VERIFIER_A, VERIFIER_B)
    agents = [agent_for(world, who, reports) for who in (VERIFIER_A, VERIFIER_B)]
    for agent in agents:
        agent.register(20 * BLACK)
    return agents


def perturbed(state: TrainState) -> TrainState:
    """The state with one weight nudged: no longer what the step before it computes."""
    params = [np.array(p) for p in state.params]
    params[0][0, 0] += np.float32(1e-3)
    return TrainState.create(state.step, state.optimizer, params, state.slots, state.powers)


@dataclass
class Committed:
    lease: dict[str, Any]
    commitment: str
    states: list[TrainState]
    hashes: list[bytes]


def commit_segment(world: World, job: str, *, tamper: bool = False) -> Committed:
    """Lease the job's next segment, train it and commit; with `tamper`, every state
    after the first is perturbed and the hashes recomputed from the perturbed states,
    so the commitment is self-consistent but no transition re-executes to it."""
    spec, client = world.spec, world.client
    lease = command(world, PROVIDER, "/leases", "RequestLease", job=job)["outcome"]
    if lease["start_checkpoint"] == SEED_CHECKPOINT:
        start = initial_state(spec)
    else:
        start = decode_state(client.get_blob(lease["start_checkpoint"]), spec)
    run = train_segment(spec, world.data, start, lease["end_step"], checkpoint_every=1)
    states = [run.checkpoints[step] for step in range(lease["start_step"], lease["end_step"] + 1)]
    if tamper:
        states = [states[0], *(perturbed(state) for state in states[1:])]
    hashes = [state.hash() for state in states]
    end = encode_state(states[-1])
    client.put_blob(blob_digest(end), end, SAFETENSORS)
    committed = command(
        world,
        PROVIDER,
        f"/leases/{lease['lease']}/commitment",
        "Commit",
        lease=lease["lease"],
        startCheckpoint=lease["start_checkpoint"],
        endCheckpoint=blob_digest(end),
        root="0x" + commitment_root(hashes).hex(),
        steps=len(states) - 1,
        lossTrace=run.loss_trace(),
    )
    return Committed(lease, committed["outcome"]["commitment"], states, hashes)


def open_sample(world: World, committed: Committed) -> list[int]:
    """Publish the sampled states and the manifest, and sign OpenSamples; the sample."""
    detail = world.client.get_json(f"/commitments/{committed.commitment}")
    sample: list[int] = detail["sample_indices"]
    blobs: dict[int, str] = {}
    for index in sorted(set(sample) | {i + 1 for i in sample}):
        encoded = encode_state(committed.states[index])
        blobs[index] = blob_digest(encoded)
        world.client.put_blob(blobs[index], encoded, SAFETENSORS)
    manifest = open_steps(committed.hashes, sample, blobs)
    world.client.put_blob(manifest.digest(), manifest.encode())
    command(
        world,
        PROVIDER,
        f"/commitments/{committed.commitment}/openings",
        "OpenSamples",
        commitment=committed.commitment,
        openings=manifest.digest(),
    )
    return sample


def settle(agents: list[VerifierAgent], rounds_max: int = 5) -> int:
    """Run passes of every agent until a round posts nothing; how many were posted."""
    posted = 0
    for _ in range(rounds_max):
        done = sum(agent.run_once() for agent in agents)
        if done == 0:
            return posted
        posted += done
    raise AssertionError(f"agents still posting after {rounds_max} rounds")


def test_honest_segments_are_accepted_and_paid_until_the_job_completes(world: World) -> None:
    """Both segments of an honest job (the second starting from the first's end
    checkpoint) wait while unopened, are then accepted with the gateway's sample fully
    re-executed, and the job completes with the provider and verifiers paid exactly."""
    reports: list[TaskReport] = []
    agents = two_verifiers(world, reports)
    job = start_job(world)
    for segment in range(2):
        committed = commit_segment(world, job)
        assert settle(agents) == 0, "an unopened commitment waits for its openings"
        sample = open_sample(world, committed)
        assert settle(agents) == 1
        report = reports[-1]
        assert (report.kind, report.id, report.outcome) == (
            "verdict",
            committed.commitment,
            "accepted",
        )
        assert (list(report.steps), report.failed_step) == (sample, None)
        assert segment == committed.lease["segment"]
    final = world.client.get_json(f"/jobs/{job}")
    assert (final["status"], final["segments_accepted"], final["escrow"]) == ("completed", 2, 0)
    split = settle_segment(10 * PRICE, Asset.BLACK, ComputeParams().fees)
    assert balances(world, PROVIDER.address)["BLACK/available"] == 80 * BLACK + 2 * split.provider
    earned = sum(
        balances(world, v.address)["BLACK/available"] - 80 * BLACK for v in (VERIFIER_A, VERIFIER_B)
    )
    assert earned == 2 * split.verifier


def test_tampered_trajectory_is_rejected_and_the_referee_confirms_fraud(world: World) -> None:
    """A self-consistent commitment to perturbed states is rejected at the first sampled
    step; the other verifier, as referee, re-executes that step and confirms fraud: the
    provider is slashed and jailed, the accuser paid its bounty, the segment requeued."""
    reports: list[TaskReport] = []
    agents = two_verifiers(world, reports)
    job = start_job(world)
    committed = commit_segment(world, job, tamper=True)
    sample = open_sample(world, committed)
    accuser = committed.lease["verifier"]
    assert settle(agents) == 2
    verdict, ruling = reports
    assert (verdict.kind, verdict.outcome, verdict.failed_step) == (
        "verdict",
        "rejected",
        sample[0],
    )
    assert verdict.reason.startswith(f"step {sample[0]}: re-executed, it does not reach")
    assert (ruling.kind, ruling.outcome, ruling.failed_step) == ("ruling", "fraud", sample[0])
    assert ruling.steps == (sample[0],)
    detail = world.client.get_json(f"/commitments/{committed.commitment}")
    dispute = world.client.get_json(f"/disputes/{detail['dispute']}")
    assert (detail["status"], dispute["status"], dispute["step"]) == ("fraud", "fraud", sample[0])
    assert dispute["referee"] != accuser and dispute["referee"] in (
        VERIFIER_A.address,
        VERIFIER_B.address,
    )
    slashed = 20 * BLACK * ComputeParams().fraud_slash_bps // 10_000
    assert balances(world, PROVIDER.address)["BLACK/stake"] == 20 * BLACK - slashed
    bounty = slash_split(slashed, ComputeParams().bounty_bps).bounty
    assert balances(world, accuser)["BLACK/available"] == 80 * BLACK + bounty
    assert world.client.get_json(f"/providers/{PROVIDER.address}")["status"] == "jailed"
    assert world.client.get_json(f"/jobs/{job}")["segment_state"] == "queued"


def test_a_false_rejection_is_overturned_by_the_referee_agent(world: World) -> None:
    """A verifier that rejects an honest commitment (a signed PostVerdict naming a
    sampled step) is overruled by the referee agent, which re-executes the step and
    clears it: the accuser is slashed, the provider paid its bounty and the segment."""
    reports: list[TaskReport] = []
    agents = two_verifiers(world, reports)
    job = start_job(world)
    committed = commit_segment(world, job)
    sample = open_sample(world, committed)
    liar = next(v for v in (VERIFIER_A, VERIFIER_B) if v.address == committed.lease["verifier"])
    command(
        world,
        liar,
        f"/commitments/{committed.commitment}/verdict",
        "PostVerdict",
        commitment=committed.commitment,
        accepted=False,
        samples=sample,
        failedStep=sample[-1],
        reason="made up",
    )
    assert settle(agents) == 1
    (ruling,) = reports
    assert (ruling.kind, ruling.outcome, ruling.steps) == ("ruling", "cleared", (sample[-1],))
    detail = world.client.get_json(f"/commitments/{committed.commitment}")
    assert detail["status"] == "accepted"
    assert world.client.get_json(f"/disputes/{detail['dispute']}")["status"] == "cleared"
    slashed = 20 * BLACK * ComputeParams().false_accusation_slash_bps // 10_000
    assert balances(world, liar.address)["BLACK/stake"] == 20 * BLACK - slashed
    bounty = slash_split(slashed, ComputeParams().bounty_bps).bounty
    split = settle_segment(10 * PRICE, Asset.BLACK, ComputeParams().fees)
    assert (
        balances(world, PROVIDER.address)["BLACK/available"] == 80 * BLACK + bounty + split.provider
    )


def test_cli_registers_and_runs_a_bounded_verifier(world: World, tmp_path: Path) -> None:
    """`blacktail verifier register` stakes a key; `verifier run --max-tasks 1 --json`
    accepts the honest segment assigned to it and prints the summary."""
    key_path = tmp_path / "verifier.pem"
    VERIFIER_A.save(key_path)
    fund(world, VERIFIER_A)
    url = world.gateway.base_url

    def cli(*args: str) -> Any:
        result = CliRunner().invoke(
            main, ["verifier", args[0], "--gateway", url, "--key", str(key_path), *args[1:]]
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert cli("register", "--stake", "20", "--json")["signer"] == VERIFIER_A.address
    job = start_job(world)
    sample = open_sample(world, commit_segment(world, job))
    summary = cli(
        "run",
        "--device",
        "cpu",
        "--cache-dir",
        str(world.cache),
        "--poll-seconds",
        "0.1",
        "--max-tasks",
        "1",
        "--json",
    )
    assert (summary["verifier"], summary["posted"], summary["accepted"]) == (
        VERIFIER_A.address,
        1,
        1,
    )
    assert summary["steps_checked"] == len(sample)


class ForgingGateway:
    """A gateway client that serves every commitment with another beacon and the sample
    that beacon selects, as a gateway choosing samples after the fact would."""

    def __init__(self, client: GatewayClient) -> None:
        self.client = client

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        answer = self.client.get_json(path, params)
        if path.startswith("/commitments/"):
            forged = bytes(32 - len(b"forged")) + b"forged"
            answer["beacon"] = "0x" + forged.hex()
            answer["sample_indices"] = sample_indices(
                bytes.fromhex(answer["root"][2:]),
                forged,
                answer["verifier"],
                answer["steps"],
                answer["samples"],
            )
        return answer

    def post_json(self, path: str, body: Any) -> Any:
        return self.client.post_json(path, body)

    def get_blob(self, digest: str) -> bytes:
        return self.client.get_blob(digest)

    def blob_size(self, digest: str) -> int | None:
        return self.client.blob_size(digest)


def test_a_beacon_the_signed_log_does_not_prove_is_refused(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The witness proves the served beacon from the operator's signed log and refuses
    another beacon, another root or another operator; an agent behind a gateway that
    forges the beacon (and the sample it selects) posts nothing, and an honest pass
    afterwards accepts."""
    reports: list[TaskReport] = []
    fund(world, VERIFIER_A)
    honest = agent_for(world, VERIFIER_A, reports)
    honest.register(20 * BLACK)
    committed = commit_segment(world, start_job(world))
    open_sample(world, committed)
    detail = world.client.get_json(f"/commitments/{committed.commitment}")
    root, beacon = bytes.fromhex(detail["root"][2:]), bytes.fromhex(detail["beacon"][2:])
    chain_id = world.gateway.chain_id
    witness = LogWitness(world.client, operator=world.gateway.operator.address, chain_id=chain_id)
    witness.check(committed.commitment, root, beacon)
    other = bytes(reversed(beacon))
    for commitment_root_, beacon_ in ((root, other), (other, beacon)):
        with pytest.raises(InconsistentGateway):
            witness.check(committed.commitment, commitment_root_, beacon_)
    stranger = LogWitness(world.client, operator=VERIFIER_B.address, chain_id=chain_id)
    with pytest.raises(InconsistentGateway):
        stranger.check(committed.commitment, root, beacon)

    fooled = VerifierAgent(
        ForgingGateway(world.gateway.client()),
        VERIFIER_A,
        lambda dataset_id: fetch(dataset_id, world.client, world.cache),
        chain_id=chain_id,
        transient_errors=(GatewayError, OSError),
        report=reports.append,
    )
    assert (fooled.run_once(), fooled.summary.errors, reports) == (0, 1, [])
    assert "is not the signed log's" in caplog.text
    assert world.client.get_json(f"/commitments/{committed.commitment}")["status"] == "pending"
    assert honest.run_once() == 1
    assert [r.outcome for r in reports] == ["accepted"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_agent_keeps_going_across_a_gateway_restart(tmp_path: Path) -> None:
    """An agent running while its gateway is down logs the errors and retries; once the
    gateway is back (same port, same store) it posts the verdict it owes."""
    port = free_port()
    bind = ["--bind", f"127.0.0.1:{port}"]
    with run_gateway(tmp_path / "gateway", extra_args=bind) as gateway:
        world = make_world(gateway, tmp_path)
        fund(world, VERIFIER_A)
        reports: list[TaskReport] = []
        agent = agent_for(world, VERIFIER_A, reports)
        agent.register(20 * BLACK)
        committed = commit_segment(world, start_job(world))
        open_sample(world, committed)
        world.client.close()
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), kwargs={"max_tasks": 1})
    runner.start()
    try:
        time.sleep(0.5)
        assert not reports and agent.summary.errors >= 1
        with run_gateway(tmp_path / "gateway", extra_args=bind):
            runner.join(timeout=60)
            assert not runner.is_alive()
    finally:
        stop.set()
        runner.join(timeout=10)
    assert [(r.id, r.outcome) for r in reports] == [(committed.commitment, "accepted")]
