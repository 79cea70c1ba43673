"""Several gateways, one store: two gunicorn gateways (two workers each) on one PostgreSQL
database, hit at the same instants with spends from the same accounts, leases of the same
segments, and the same commands sent to both (issue 8, §2)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from node.client import GatewayClient
from node.gateway.config import GatewayConfig
from node.gateway.server import prepare
from node.operator import OPERATOR_KEY_FILE
from protocol.assets import Asset
from protocol.commands import SignedCommand
from protocol.compute import ComputeParams
from protocol.fees import settle_segment
from protocol.keys import PrivateKey
from tests.pg_cluster import PgServer
from tests.protocol.compute_world import small_spec
from tests.stress.commands import Answer, race, resigned, send, signed
from tests.stress.exported_log import AuditedLog, export_and_audit
from tests.stress.gateways import GatewaySite

pytestmark = pytest.mark.postgres

BLACK = 10**18
PRICE = 5 * 10**13
# A 503 (a command that lost too many races) is retried; anything else is an answer.
contention_retries_max = 20
boot_wait_seconds_max = 90.0


def key(number: int) -> PrivateKey:
    return PrivateKey.from_bytes(number.to_bytes(32, "big"))


@dataclass(frozen=True)
class Pair:
    """Two gateways of one network on one PostgreSQL database."""

    urls: tuple[str, str]
    chain_id: int
    sites: tuple[GatewaySite, GatewaySite]
    dsn: str

    def client(self, which: int = 0) -> GatewayClient:
        return GatewayClient(self.urls[which])

    def audit(self, out: Path) -> AuditedLog:
        return export_and_audit(self.sites[0].data_dir, self.dsn, out)


@pytest.fixture(scope="module")
def pair(pg_cluster: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Gateway A (which made the network) and gateway B (A's operator key, its own data
    directory and blobs), both on one fresh database, for this module."""
    name = f"bt_shared_{random.SystemRandom().randrange(16**12):012x}"
    dsn = pg_cluster.create_database(name)
    root = tmp_path_factory.mktemp("shared-store")
    first = GatewaySite(root / "a", dsn=dsn)
    second = GatewaySite(root / "b", dsn=dsn)
    try:
        with first.running() as a:
            first.share_operator_with(second)
            with second.running() as b:
                assert b.chain_id == a.chain_id and b.operator.address == a.operator.address
                yield Pair((a.base_url, b.base_url), a.chain_id, (first, second), dsn)
    finally:
        pg_cluster.drop_database(name)


def deposit(pair: Pair, who: PrivateKey, amount: int) -> None:
    with pair.client() as client:
        client.post_json(
            "/dev/deposit", {"account": who.address, "asset": "BLACK", "amount": amount}
        )


def balances(pair: Pair, which: int, who: str) -> dict[str, int]:
    with pair.client(which) as client:
        reply = client.get_json(f"/accounts/{who}/balances")
    return {f"{b['asset']}/{b['bucket']}": b["amount"] for b in reply["balances"]}


def submit(
    url: str, path: str, command: SignedCommand, context: dict[str, Any] | None = None
) -> Answer:
    """Send until the answer is not a 503 (bounded): a client's retry with the same
    command, which idempotency makes safe."""
    for _ in range(contention_retries_max):
        answer = send(url, path, command, context)
        if answer.status != 503:
            return answer
    raise AssertionError(f"{command.kind} still contended after {contention_retries_max} tries")


SPENDERS = [key(0x5E11 + n) for n in range(3)]
SINKS = [key(0x5111 + n) for n in range(3)]
funded = 1_000
spend = 70
spenders_threads = 6
spends_per_thread = 25


@dataclass(frozen=True)
class Spend:
    """One transfer as its client saw it: the first answer, and any retries' answers."""

    spender: PrivateKey
    sink: PrivateKey
    answer: Answer
    retries: list[Answer]

    @property
    def accepted(self) -> bool:
        return self.answer.status == 201


def test_concurrent_spends_through_two_gateways_never_overdraw(
    pair: Pair, seed: int, tmp_path: Path
) -> None:
    """Six clients spending from three shared accounts through both gateways at once
    (ten times the funds there are) get exactly as many transfers accepted as the funds
    cover, no account goes below zero, a retry of an accepted transfer (the same command,
    or re-signed) sent to the other gateway answers 200 with the first result, both
    gateways serve the same balances, and the log audits clean."""
    for spender in SPENDERS:
        deposit(pair, spender, funded)
    rng = random.Random(seed)
    plans = [
        [
            (rng.choice(SPENDERS), rng.choice(SINKS), rng.randrange(2))
            for _ in range(spends_per_thread)
        ]
        for _ in range(spenders_threads)
    ]
    spends = [
        spend for thread in race([_spender(pair, plan) for plan in plans]) for spend in thread
    ]
    statuses = Counter((s.answer.status, s.answer.slug) for s in spends)
    assert set(statuses) <= {(201, ""), (409, "insufficient-funds")}, statuses
    retries = [(s.answer, again) for s in spends for again in s.retries]
    assert retries, "no accepted transfer was retried"
    for first, again in retries:
        assert (again.status, again.body) == (200, first.body)
    accepted = Counter(s.spender.address for s in spends if s.accepted)
    received = Counter(s.sink.address for s in spends if s.accepted)
    for spender in SPENDERS:
        left = funded - spend * accepted[spender.address]
        assert left >= 0, f"{spender.address} overdrawn by {-left}"
        assert left < spend, f"{spender.address} kept {left} although its transfers were refused"
        for which in (0, 1):
            assert balances(pair, which, spender.address).get("BLACK/available", 0) == left
    for sink in SINKS:
        for which in (0, 1):
            assert balances(pair, which, sink.address).get("BLACK/available", 0) == (
                spend * received[sink.address]
            )
    audited = pair.audit(tmp_path / "export.jsonl")
    for s in spends:
        if s.accepted:
            assert audited.receipt_counts[(s.spender.address, s.answer.body["client_id"])] == 1


def _spender(
    pair: Pair, plan: list[tuple[PrivateKey, PrivateKey, int]]
) -> Callable[[], list[Spend]]:
    """A client sending `plan`'s transfers one after another, each to the gateway it
    names, and every third accepted one again (as sent, then re-signed) to the other."""

    def run() -> list[Spend]:
        spends = []
        for number, (spender, sink, which) in enumerate(plan):
            command = signed(
                spender,
                "Transfer",
                pair.chain_id,
                to=sink.address,
                asset="BLACK",
                amount=spend,
                memo="",
            )
            answer = submit(pair.urls[which], "/commands", command)
            retries: list[Answer] = []
            if answer.status == 201 and number % 3 == 0:
                other = pair.urls[1 - which]
                retries.append(submit(other, "/commands", command))
                retries.append(submit(other, "/commands", resigned(spender, command)))
            spends.append(Spend(spender, sink, answer, retries))
        return spends

    return run


DEVELOPER, VERIFIER = key(0xDE75), key(0x7075)
PROVIDERS = [key(0x9075 + n) for n in range(4)]


def both(pair: Pair, path: str, command: SignedCommand) -> list[Callable[[], Answer]]:
    """The same signed command, to each gateway."""
    return [lambda url=url: submit(url, path, command) for url in pair.urls]


def test_racing_providers_lease_each_segment_once_and_are_paid_once(
    pair: Pair, tmp_path: Path
) -> None:
    """Four providers asking both gateways at the same instant for the same segment get
    exactly one lease among them (the winner's copy on the other gateway answers 200 with
    the same lease, every other request 409); commits and verdicts sent to both gateways
    at once are recorded once; at no point of the log does a job hold two open leases; the
    job completes with each segment paid exactly once, and the log audits clean."""
    for who in (DEVELOPER, VERIFIER, *PROVIDERS):
        deposit(pair, who, 100 * BLACK)
    for provider in PROVIDERS:
        registered = submit(
            pair.urls[0],
            "/providers",
            signed(
                provider,
                "RegisterProvider",
                pair.chain_id,
                device="cpu",
                gpus=1,
                memoryMb=16_000,
                benchmarkGflops=50,
                priceBlack=PRICE,
                priceUsd=50,
                stake=20 * BLACK,
            ),
        )
        assert registered.status == 201, registered.body
    verifier = signed(VERIFIER, "RegisterVerifier", pair.chain_id, stake=20 * BLACK)
    assert submit(pair.urls[1], "/verifiers", verifier).status == 201
    spec = small_spec(total_steps=8, segment_steps=2)
    submitted = submit(
        pair.urls[0],
        "/jobs",
        signed(DEVELOPER, "SubmitJob", pair.chain_id, specHash="0x" + spec.digest().hex()),
        {"spec": spec.to_json()},
    )
    assert submitted.status == 201, submitted.body
    job = submitted.body["outcome"]["job"]

    winners: list[str] = []
    for segment in range(len(spec.segments())):
        requests = {p.address: signed(p, "RequestLease", pair.chain_id, job=job) for p in PROVIDERS}
        calls = [call for c in requests.values() for call in both(pair, "/leases", c)]
        answers = race(calls)
        by_provider = {address: answers[2 * i : 2 * i + 2] for i, address in enumerate(requests)}
        granted = [a for a, copies in by_provider.items() if any(x.status < 400 for x in copies)]
        assert len(granted) == 1, {a: [x.status for x in xs] for a, xs in by_provider.items()}
        (winner,) = granted
        first, second = sorted(by_provider[winner], key=lambda x: x.status)
        assert (first.status, second.status) == (200, 201)
        assert first.body == second.body
        for address, copies in by_provider.items():
            if address != winner:
                assert [(x.status, x.slug) for x in copies] == [(409, "invalid-transition")] * 2
        lease = second.body["outcome"]
        assert lease["segment"] == segment and lease["verifier"] == VERIFIER.address
        winners.append(winner)
        provider = next(p for p in PROVIDERS if p.address == winner)
        _commit_and_accept(pair, provider, lease)

    with pair.client(1) as client:
        final = client.get_json(f"/jobs/{job}")
        assert (final["status"], final["escrow"]) == ("completed", 0)
        segments = client.get_json(f"/jobs/{job}/segments")["segments"]
        leases = client.get_json("/leases", {"job": job})["items"]
    assert [s["provider"] for s in segments] == winners
    assert sorted((x["segment"], x["provider"], x["state"]) for x in leases) == [
        (n, w, "committed") for n, w in enumerate(winners)
    ]
    split = settle_segment(2 * PRICE, Asset.BLACK, ComputeParams().fees)
    won = Counter(winners)
    for provider in PROVIDERS:
        assert balances(pair, 0, provider.address)["BLACK/available"] == (
            80 * BLACK + won[provider.address] * split.provider
        )
    assert balances(pair, 1, VERIFIER.address)["BLACK/available"] == (
        80 * BLACK + len(winners) * split.verifier
    )
    assert balances(pair, 0, DEVELOPER.address)["BLACK/available"] == (
        100 * BLACK - len(winners) * split.total
    )
    audited = pair.audit(tmp_path / "export.jsonl")
    _assert_one_open_lease_per_job(audited)


def _commit_and_accept(pair: Pair, provider: PrivateKey, lease: dict[str, Any]) -> None:
    """Commit the lease's segment and have the verifier accept it, the commit and the
    verdict each sent to both gateways at once: one 201 and one 200 with the same body."""
    steps = lease["end_step"] - lease["start_step"]
    commit = signed(
        provider,
        "Commit",
        pair.chain_id,
        lease=lease["lease"],
        startCheckpoint=lease["start_checkpoint"],
        endCheckpoint="0x" + f"{lease['end_step']:064x}",
        root="0x" + "cd" * 32,
        steps=steps,
        lossTrace="0x" + "3f800000" * steps,
    )
    committed = _once(race(both(pair, f"/leases/{lease['lease']}/commitment", commit)))
    commitment = committed["outcome"]["commitment"]
    opened = signed(
        provider, "OpenSamples", pair.chain_id, commitment=commitment, openings="0x" + "0e" * 32
    )
    assert submit(pair.urls[0], f"/commitments/{commitment}/openings", opened).status == 201
    with pair.client(1) as client:
        detail = client.get_json(f"/commitments/{commitment}")
    verdict = signed(
        VERIFIER,
        "PostVerdict",
        pair.chain_id,
        commitment=commitment,
        accepted=True,
        samples=detail["sample_indices"],
        failedStep=0,
        reason="",
    )
    _once(race(both(pair, f"/commitments/{commitment}/verdict", verdict)))


def _once(answers: list[Answer]) -> Any:
    """The result of a command sent twice at once: one 201 and one 200, the same body."""
    first, second = sorted(answers, key=lambda a: a.status)
    assert (first.status, second.status) == (200, 201), [a.body for a in answers]
    assert first.body == second.body
    return second.body


def _assert_one_open_lease_per_job(audited: AuditedLog) -> None:
    """Walk the log: a lease opens at Lease.Granted and closes at Lease.Closed; no job may
    ever hold two open leases at once."""
    open_by_job: dict[str, set[str]] = {}
    job_of: dict[str, str] = {}
    for leaf in audited.leaves:
        if leaf["type"] == "Lease.Granted":
            job = leaf["data"]["job"]
            job_of[leaf["id"]] = job
            held = open_by_job.setdefault(job, set())
            assert not held, f"job {job} leased again while {held} is open (leaf {leaf['index']})"
            held.add(leaf["id"])
        elif leaf["type"] == "Lease.Closed":
            open_by_job[job_of[leaf["id"]]].discard(leaf["id"])


def test_gateways_started_at_once_on_a_fresh_store_all_come_up(
    pg_cluster: PgServer, tmp_path: Path
) -> None:
    """Two gateways of three workers each, started at the same instant on one fresh
    database, all come up and stay up: only each master creates the tables (retrying
    PostgreSQL's "tuple concurrently updated" when the other does it at the same instant);
    workers open them without DDL. (A worker that failed to boot used to take its whole
    gateway down with it.)"""
    name = f"bt_boot_{random.SystemRandom().randrange(16**12):012x}"
    dsn = pg_cluster.create_database(name)
    operator = PrivateKey.generate()
    sites = [GatewaySite(tmp_path / f"g{n}", dsn=dsn, workers=3) for n in range(2)]
    for site in sites:
        site.data_dir.mkdir(parents=True)
        operator.save(site.data_dir / OPERATOR_KEY_FILE)
    started: list[str] = []
    errors: list[BaseException] = []
    release = threading.Event()

    def run(site: GatewaySite) -> None:
        try:
            with site.running() as gateway:
                started.append(gateway.base_url)
                release.wait(boot_wait_seconds_max)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(site,), daemon=True) for site in sites]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + boot_wait_seconds_max
        while len(started) + len(errors) < len(sites):
            assert time.monotonic() < deadline, "the gateways did not start"
            time.sleep(0.1)
        assert not errors, errors
        time.sleep(2)  # any worker still booting has had its chance to fail
        for url in started:
            with GatewayClient(url) as client:
                for _ in range(6):  # keep-alive off: requests spread over the workers
                    assert client.get_json("/health")["operator"] == operator.address
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=30)
        pg_cluster.drop_database(name)


def test_masters_preparing_one_fresh_store_at_once_all_succeed(
    pg_cluster: PgServer, tmp_path: Path
) -> None:
    """Four gateway masters' `prepare` (tables, genesis) on one fresh database at the same
    instant all succeed with the same network: the ones that lose PostgreSQL's races over
    CREATE ... IF NOT EXISTS or the genesis write try again and find it made."""
    name = f"bt_prep_{random.SystemRandom().randrange(16**12):012x}"
    dsn = pg_cluster.create_database(name)
    operator = PrivateKey.generate()
    configs = []
    for n in range(4):
        data_dir = tmp_path / f"m{n}"
        data_dir.mkdir()
        operator.save(data_dir / OPERATOR_KEY_FILE)
        configs.append(GatewayConfig.resolve(data_dir=data_dir, dsn=dsn, environ={}))
    answers: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(configs))

    def run(config: GatewayConfig) -> None:
        start.wait()
        try:
            answers.append(prepare(config))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(config,)) for config in configs]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        assert answers == [(configs[0].chain_id, operator.address)] * len(configs)
    finally:
        pg_cluster.drop_database(name)
