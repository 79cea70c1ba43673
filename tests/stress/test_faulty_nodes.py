"""Faulty and malicious nodes, with the real provider and verifier agents over HTTP against
a real gunicorn gateway whose protocol clocks run in seconds: a provider that dies half way
through a segment, a provider whose uploads arrive corrupted, a verifier that goes silent,
a verifier that lies, and a gateway killed while the agents work (issue 8, §4).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.client import OCTET_STREAM, GatewayClient, GatewayError
from node.datasets import build_synthetic, load_dataset, read_manifest, save_dataset
from node.trainer import train_segment
from protocol.assets import Asset
from protocol.compute import ComputeParams
from protocol.fees import settle_segment, slash_split
from tests.stress.gateways import kill
from tests.stress.nodes import (
    FUNDS,
    PRICE,
    STAKE,
    Network,
    key,
    network,
    running,
    tiny_spec,
    wait_seconds_max,
)
from verifier.agent import TaskReport, VerifierAgent
from verifier.model import initial_state
from verifier.reexecute import reexecute_step

PARAMS = ComputeParams()
SEGMENT = settle_segment(10 * PRICE, Asset.BLACK, PARAMS.fees)
DEVELOPER = key(0xDE78)
AVAILABLE = FUNDS - STAKE  # what a provider or verifier has left to spend after staking


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny job's dataset on disk, and the kernels compiled in this process: training
    and re-execution each compile on first use (seconds), which must not happen while a
    four-second lease is running."""
    directory = tmp_path_factory.mktemp("tiny-dataset")
    save_dataset(build_synthetic(0, 512, 16, 4), directory)
    spec = tiny_spec(2, 2)
    dataset_id, _ = read_manifest(directory)
    data = load_dataset(directory, dataset_id)
    run = train_segment(spec, data, initial_state(spec), 1, checkpoint_every=1)
    reexecute_step(spec, data, run.checkpoints[0])
    return directory


@pytest.fixture
def net(tmp_path: Path, dataset_dir: Path) -> Iterator[Network]:
    with network(tmp_path, dataset_dir) as started:
        yield started


class ProviderDied(Exception):
    """What the dying provider's training loop raises: the process is gone from here on."""


def test_a_provider_that_dies_mid_segment_is_replaced_from_the_last_accepted_checkpoint(
    net: Network, tmp_path: Path
) -> None:
    """A provider that stops half way through its second segment (no more heartbeats, no
    commit) loses the lease when it lapses; another provider leases the segment from the
    first segment's accepted end checkpoint and finishes the job; each is paid for exactly
    the segment it delivered, and the log audits clean."""
    reports: list[TaskReport] = []
    verifier = net.verifier(key(0x7078), reports)

    def die_at_step_15(step: int, loss: float) -> None:
        if step == 15:
            raise ProviderDied(step)

    first, second = key(0x9078), key(0x9079)
    dying = net.provider(first, progress=die_at_step_15)
    spare = net.provider(second)
    job = net.submit(DEVELOPER, tiny_spec(20, 10))
    with running([verifier]):
        report = dying.run_once()
        assert report is not None and report.segment == 0
        net.wait_for("segment 0 accepted", lambda: net.job(job)["segments_accepted"] == 1)
        with pytest.raises(ProviderDied):
            dying.run_once()
        abandoned = net.job(job)
        assert (abandoned["segment_state"], abandoned["current_segment"]) == ("leased", 1)
        # The spare finds nothing to lease until the lapsed lease is swept back to the
        # queue; then it takes the segment.
        deadline = time.monotonic() + wait_seconds_max
        while (replacement := spare.run_once()) is None:
            assert time.monotonic() < deadline, "the abandoned segment was never re-leased"
            time.sleep(0.2)
        assert replacement.segment == 1
        net.wait_for("the job completed", lambda: net.job(job)["status"] == "completed")

    first_commitment = net.get(f"/commitments/{report.commitment}")
    lease = net.get(f"/leases/{replacement.lease}")
    assert lease["provider"] == second.address and lease["start_step"] == 10
    assert lease["start_checkpoint"] == first_commitment["end_checkpoint"]
    leases = net.get("/leases", {"job": job})["items"]
    assert sorted((x["segment"], x["provider"], x["state"]) for x in leases) == sorted(
        [
            (0, first.address, "committed"),
            (1, first.address, "expired"),
            (1, second.address, "committed"),
        ]
    )
    assert net.get(f"/providers/{first.address}")["leases_lost"] == 1
    final = net.job(job)
    assert (final["escrow"], final["paid"]) == (0, 2 * SEGMENT.total)
    for who in (first, second):
        assert net.balances(who.address)["BLACK/available"] == AVAILABLE + SEGMENT.provider
    assert net.balances(verifier.address)["BLACK/available"] == AVAILABLE + 2 * SEGMENT.verifier
    assert net.balances(DEVELOPER.address)["BLACK/available"] == FUNDS - 2 * SEGMENT.total
    net.audit(tmp_path / "export.jsonl")


class CorruptingClient(GatewayClient):
    """A provider's connection that corrupts every blob after the first on its way: one
    byte flipped, under the digest of the intact bytes."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.uploads = 0
        self.corrupted: list[str] = []

    def put_blob(self, digest: str, data: bytes | Path, media_type: str = OCTET_STREAM) -> Any:
        self.uploads += 1
        if self.uploads > 1 and isinstance(data, bytes):
            self.corrupted.append(digest)
            data = data[:-1] + bytes([data[-1] ^ 0x01])
        return super().put_blob(digest, data, media_type)


def test_a_provider_whose_uploads_are_corrupt_stores_nothing_and_is_punished(
    net: Network, tmp_path: Path
) -> None:
    """A provider whose sampled states arrive corrupted has each upload refused
    (digest-mismatch, nothing stored), so it cannot open its commitment; past the opening
    deadline the sweep punishes it as fraud (slashed, jailed, bounty to the verifier it
    kept waiting, segment requeued unpaid) and an honest provider finishes the job."""
    reports: list[TaskReport] = []
    verifier = net.verifier(key(0x7080), reports)
    corrupt_key, honest_key = key(0x9080), key(0x9081)
    corrupting = CorruptingClient(net.site.base_url)
    corrupt = net.provider(corrupt_key, client=corrupting)
    honest = net.provider(honest_key)
    job = net.submit(DEVELOPER, tiny_spec(10, 10))
    with running([verifier]):
        with pytest.raises(GatewayError) as refused:
            corrupt.run_once()
        assert refused.value.status == 400 and refused.value.type.endswith("/digest-mismatch")
        (digest,) = corrupting.corrupted
        with net.client() as client:
            assert client.blob_size(digest) is None
        commitment = net.job(job)["commitment"]
        net.wait_for(
            "the unopened commitment punished",
            lambda: net.get(f"/commitments/{commitment}")["status"] == "fraud",
        )
        assert net.job(job)["segment_state"] == "queued"
        assert honest.run_once() is not None
        net.wait_for("the job completed", lambda: net.job(job)["status"] == "completed")

    slashed = STAKE * PARAMS.fraud_slash_bps // 10_000
    bounty = slash_split(slashed, PARAMS.bounty_bps).bounty
    punished = net.get(f"/providers/{corrupt_key.address}")
    assert punished["status"] == "jailed"
    assert net.balances(corrupt_key.address) == {
        "BLACK/available": AVAILABLE,
        "BLACK/stake": STAKE - slashed,
    }
    assert net.balances(verifier.address)["BLACK/available"] == (
        AVAILABLE + bounty + SEGMENT.verifier
    )
    assert net.balances(honest_key.address)["BLACK/available"] == AVAILABLE + SEGMENT.provider
    assert net.balances(DEVELOPER.address)["BLACK/available"] == FUNDS - SEGMENT.total
    assert [r.outcome for r in reports] == ["accepted"]
    net.audit(tmp_path / "export.jsonl")


def test_a_silent_verifier_loses_its_task_to_one_that_answers(net: Network, tmp_path: Path) -> None:
    """A verifier assigned a commitment that never answers is replaced once its verdict
    is overdue: the sweep hands the task to another verifier, whose agent judges it and
    is paid the fee; the silent one earns nothing, and the log audits clean."""
    silent_reports: list[TaskReport] = []
    silent = net.verifier(key(0x7082), silent_reports)  # registered, never run
    provider = net.provider(key(0x9082))
    job = net.submit(DEVELOPER, tiny_spec(10, 10))
    report = provider.run_once()
    assert report is not None
    # Only the silent verifier was registered when the lease was granted.
    assert net.get(f"/commitments/{report.commitment}")["verifier"] == silent.address
    reports: list[TaskReport] = []
    answering = net.verifier(key(0x7083), reports)
    with running([answering]):
        net.wait_for("the job completed", lambda: net.job(job)["status"] == "completed")
    judged = net.get(f"/commitments/{report.commitment}")
    assert (judged["status"], judged["verifier"]) == ("accepted", answering.address)
    assert [(r.id, r.outcome) for r in reports] == [(report.commitment, "accepted")]
    assert net.balances(answering.address)["BLACK/available"] == AVAILABLE + SEGMENT.verifier
    assert net.balances(silent.address) == {"BLACK/available": AVAILABLE, "BLACK/stake": STAKE}
    audited = net.audit(tmp_path / "export.jsonl")
    assert [leaf["type"] for leaf in audited.leaves].count("Commitment.VerifierReassigned") == 1


class LyingVerifier(VerifierAgent):
    """Judges like an honest agent, then signs the opposite: every acceptance it would
    post becomes a rejection naming the first sampled step."""

    def command(self, path: str, kind: str, **fields: Any) -> dict[str, Any]:
        if kind == "PostVerdict" and fields["accepted"]:
            fields |= {"accepted": False, "failedStep": fields["samples"][0], "reason": "lie"}
        return super().command(path, kind, **fields)


def test_a_lying_verifier_is_refereed_and_slashed(net: Network, tmp_path: Path) -> None:
    """A verifier agent that rejects an honest segment is overruled by the referee agent,
    which re-executes the accused step and clears it: the liar loses its share of stake,
    the provider gets the bounty and its payment, the referee the verifier fee."""
    liar_reports: list[TaskReport] = []
    liar = net.verifier(key(0x7084), liar_reports, LyingVerifier)
    provider = net.provider(key(0x9084))
    job = net.submit(DEVELOPER, tiny_spec(10, 10))
    report = provider.run_once()
    assert report is not None
    referee_reports: list[TaskReport] = []
    referee = net.verifier(key(0x7085), referee_reports)
    with running([liar, referee]):
        net.wait_for("the job completed", lambda: net.job(job)["status"] == "completed")
    # The liar's own report says what it found; what it signed was the opposite.
    assert [(r.kind, r.outcome) for r in liar_reports] == [("verdict", "accepted")]
    assert [(r.kind, r.outcome) for r in referee_reports] == [("ruling", "cleared")]
    detail = net.get(f"/commitments/{report.commitment}")
    assert detail["status"] == "accepted"
    assert net.get(f"/disputes/{detail['dispute']}")["status"] == "cleared"
    slashed = STAKE * PARAMS.false_accusation_slash_bps // 10_000
    bounty = slash_split(slashed, PARAMS.bounty_bps).bounty
    assert net.balances(liar.address) == {
        "BLACK/available": AVAILABLE,
        "BLACK/stake": STAKE - slashed,
    }
    assert net.balances(provider.key.address)["BLACK/available"] == (
        AVAILABLE + bounty + SEGMENT.provider
    )
    assert net.balances(referee.address)["BLACK/available"] == AVAILABLE + SEGMENT.verifier
    net.audit(tmp_path / "export.jsonl")


@pytest.fixture
def patient_net(tmp_path: Path, dataset_dir: Path) -> Iterator[Network]:
    """A network whose opening and verdict windows outlast a gateway restart on a loaded
    machine (with CLOCKS' 5 s, a commitment recorded just before the kill could lapse
    while the gateway was down, and its honest provider be jailed for it). Leases stay
    short, so a lease that lapses in the outage is re-leased quickly."""
    with network(
        tmp_path,
        dataset_dir,
        clocks={"BLACKTAIL_OPENING_SECONDS": "60", "BLACKTAIL_VERDICT_SECONDS": "60"},
    ) as started:
        yield started


def test_agents_reconnect_after_the_gateway_is_killed_and_the_job_completes(
    patient_net: Network, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With a provider agent and a verifier agent running, the gateway is killed (SIGKILL)
    after the first segment and started again on the same port and store: both agents
    ride out the outage, reconnect, and the three-segment job completes with every
    segment paid exactly once."""
    net = patient_net
    reports: list[TaskReport] = []
    verifier = net.verifier(key(0x7086), reports)
    provider = net.provider(key(0x9086))
    job = net.submit(DEVELOPER, tiny_spec(30, 10))
    with running([provider, verifier]):
        net.wait_for("segment 0 accepted", lambda: net.job(job)["segments_accepted"] >= 1)
        kill(net.gateway)
        net.wait_for("both agents saw the outage", lambda: verifier.summary.errors >= 1, 30)
        with net.site.running():
            net.wait_for("the job completed", lambda: net.job(job)["status"] == "completed")
            final = net.job(job)
            balances = {
                who: net.balances(who)["BLACK/available"]
                for who in (provider.key.address, verifier.address, DEVELOPER.address)
            }
            net.audit(tmp_path / "export.jsonl")
    assert (final["segments_accepted"], final["escrow"], final["paid"]) == (3, 0, 3 * SEGMENT.total)
    assert balances == {
        provider.key.address: AVAILABLE + 3 * SEGMENT.provider,
        verifier.address: AVAILABLE + 3 * SEGMENT.verifier,
        DEVELOPER.address: FUNDS - 3 * SEGMENT.total,
    }
    assert sorted({r.id for r in reports}) == sorted(r.id for r in reports)  # once each
    assert "gateway error, retrying" in caplog.text  # the provider's side of the outage


def test_an_answer_cut_off_by_a_dying_gateway_is_an_error_agents_retry() -> None:
    """An answer that breaks off after its headers (the gateway killed while it wrote)
    raises a ConnectionError, an OSError, which both agents treat as an outage to wait
    out, not http.client's IncompleteRead, which would kill them."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def answer_half() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"tasks')

        thread = threading.Thread(target=answer_half, daemon=True)
        thread.start()
        with (
            GatewayClient(f"http://127.0.0.1:{port}", 10) as client,
            pytest.raises(ConnectionError),
        ):
            client.get_json("/tasks")
        thread.join(timeout=10)
