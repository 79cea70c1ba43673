"""The network's main story, end to end on one machine (`blacktail demo`).

Deposits on-chain become ledger credits; a developer's training job on handwritten digits
is cut into segments and leased across three providers, one of which cheats: a verifier
catches it, a second verifier referees, the cheater is slashed and jailed and its segment
re-leased; the job completes with a verified model whose accuracy on held-out digits is
measured; an epoch settles on-chain and a provider claims its tokens; the model is listed,
bought and served; finally the log is exported and audited independently, its balances
compared with the gateway's and its on-chain anchor checked. Every step records checks;
the demo succeeds only when every check held.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chain.anchor import check_anchor, read_export
from node.adversaries import cheat
from node.client import GatewayError
from node.datasets import DatasetArrays, build_digits, publish, save_dataset
from node.embedded import Network, Participant, agent_poll_seconds, participants
from node.operator import OPERATOR_KEY_FILE
from node.provider import ProviderAgent
from node.trainer import SegmentRun
from protocol.application import Network as LedgerApp
from protocol.assets import Asset
from protocol.audit import audit_lines
from protocol.fees import FeeSchedule
from protocol.hub import epoch_split, input_digest
from protocol.jobspec import JobSpec, parse_job_spec
from protocol.keys import PrivateKey
from protocol.ledger import RESERVE
from protocol.log import write_export
from protocol.market import purchase_split, sign_download_request
from protocol.storage import sqlite_storage
from verifier.checkpoints import decode_state
from verifier.model import TrainState
from verifier.reexecute import Examples

BLACK = 10**18
USD = 10**6
TRAIN_EXAMPLES = 1437  # the first 80% of the 1,797 digits; the last 360 are held out
JOB_STEPS = 600
SEGMENT_STEPS = 100
PRICE_PER_STEP = 10**15  # 0.001 BLACK
PROVIDER_PRICE = 5 * 10**14
STAKE = 20 * BLACK
wait_seconds_max = 150.0
MODEL_PRICE = 3 * BLACK
MODEL_ROYALTY_BPS = 1000  # 10% of a sale to the providers who trained the model
HUB_REQUEST_PRICE = 10**15
HUB_PLAN_BLACK = 2 * BLACK
HUB_PLAN_USD = 20 * USD
HUB_PLAN_QUOTA = 1000

ROLES = [
    ("dana", "developer"),
    ("mallory", "provider (cheats)"),
    ("paul", "provider"),
    ("petra", "provider"),
    ("vera", "verifier"),
    ("victor", "verifier"),
    ("bob", "buyer"),
]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Story:
    """What happened: the checks, and the facts the report plots."""

    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    balances: list[tuple[str, dict[str, int]]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


class CheatingProvider(ProviderAgent):
    """A provider that commits honestly to its own fake trajectory: every other step of a
    segment is taken with a wrong learning rate (node/adversaries.py)."""

    def _train(
        self, spec: JobSpec, data: Examples, start: TrainState, lease: dict[str, Any]
    ) -> SegmentRun:
        steps = lease["end_step"] - start.step
        # Every state kept: its openings come from its own fake trajectory, which an
        # honest recomputation from checkpoints would not reproduce.
        return cheat(
            spec,
            data,
            start,
            lease["end_step"],
            set(range(0, steps, 2)),
            "wrong-lr",
            checkpoint_every=1,
        )


Progress = Callable[[str], None]


def digits_split() -> tuple[DatasetArrays, np.ndarray, np.ndarray]:
    """The training split as a dataset, and the held-out features and labels."""
    full = build_digits()
    train = DatasetArrays(
        "digits-train",
        f"{full.source} (examples 0..{TRAIN_EXAMPLES - 1})",
        full.classes,
        full.x[:TRAIN_EXAMPLES].copy(),
        full.y[:TRAIN_EXAMPLES].copy(),
    )
    return train, full.x[TRAIN_EXAMPLES:], full.y[TRAIN_EXAMPLES:]


def job_spec(dataset_id: str) -> JobSpec:
    return parse_job_spec(
        {
            "version": "1",
            "model": {"family": "mlp", "input": 64, "hidden": [64, 32], "classes": 10},
            "dataset": {
                "sha256": dataset_id,
                "examples": TRAIN_EXAMPLES,
                "features": 64,
                "classes": 10,
            },
            "optimizer": {
                "name": "adamw",
                "lr": "0.003",
                "beta1": "0.9",
                "beta2": "0.999",
                "eps": "1e-8",
                "weight_decay": "0.01",
            },
            "batch_size": 64,
            "seed": 42,
            "total_steps": JOB_STEPS,
            "segment_steps": SEGMENT_STEPS,
            "verification": {"mode": "exact", "detection_probability": "0.99"},
            "payment": {"currency": "BLACK", "price_per_step_max": PRICE_PER_STEP},
            "deadline": int(time.time()) + 24 * 3600,
        }
    )


def accuracy(state: TrainState, x: np.ndarray, y: np.ndarray) -> float:
    """Share of examples whose largest logit is the label (float64 forward pass)."""
    h = x.astype(np.float64)
    weights, biases = state.params[0::2], state.params[1::2]
    for index, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = h @ w.astype(np.float64).T + b.astype(np.float64)
        if index < len(weights) - 1:
            h = np.maximum(h, 0.0)
    return float(np.mean(np.argmax(h, axis=1) == y))


def wait_until(what: str, condition: Callable[[], bool], seconds: float = wait_seconds_max) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def run_story(
    net: Network,
    accounts: list[Any],
    work_dir: Path,
    say: Progress,
    progress: Callable[[int, int], None],
) -> Story:
    story = Story()
    clock = time.perf_counter()
    people = {p.name: p for p in participants(accounts, ROLES)}
    dana, mallory, paul, petra = (people[n] for n in ("dana", "mallory", "paul", "petra"))
    vera, victor, bob = people["vera"], people["victor"], people["bob"]
    story.facts["participants"] = {p.name: (p.role, p.address) for p in people.values()}

    def snapshot(stage: str) -> None:
        story.balances.append(
            (
                stage,
                {
                    p.name: net.balances(p.address).get("BLACK/available", 0)
                    for p in people.values()
                },
            )
        )

    # 1. Deposits on-chain, credited by the watcher.
    say("deposits on-chain → the watcher credits the ledger")
    deposits = {
        dana: 50 * BLACK,
        mallory: 30 * BLACK,
        paul: 30 * BLACK,
        petra: 30 * BLACK,
        vera: 30 * BLACK,
        victor: 30 * BLACK,
        bob: 10 * BLACK,
    }
    for who, amount in deposits.items():
        net.deposit(who, Asset.BLACK, amount)
    net.deposit(bob, Asset.USD, 100 * USD)
    credited = net.credit_deposits()
    story.check(
        "every deposit credited once",
        len(credited) == len(deposits) + 1,
        f"{len(credited)} credits for {len(deposits) + 1} deposits",
    )
    again = net.credit_deposits()
    story.check("a second watcher pass credits nothing", again == [])
    story.check(
        "ledger balances equal the deposits",
        all(net.balances(w.address).get("BLACK/available") == a for w, a in deposits.items()),
    )
    snapshot("deposits")
    story.seconds["deposits"] = time.perf_counter() - clock

    # 2. The dataset, the participants, the job.
    say("dataset published, providers and verifiers registered, job submitted")
    train, test_x, test_y = digits_split()
    dataset_dir = work_dir / "digits-train"
    save_dataset(train, dataset_dir)
    dataset_id = publish(dataset_dir, net.client)
    providers = {
        mallory: net.provider_agent(mallory, CheatingProvider),
        paul: net.provider_agent(paul),
        petra: net.provider_agent(petra),
    }
    for provider in providers.values():
        provider.register(
            device="cpu (embedded)",
            gpus=1,
            memoryMb=16_000,
            benchmarkGflops=50,
            priceBlack=PROVIDER_PRICE,
            priceUsd=1,
            stake=STAKE,
        )
    verifiers = {who: net.verifier_agent(who) for who in (vera, victor)}
    for verifier in verifiers.values():
        verifier.register(STAKE)
    spec = job_spec(dataset_id)
    submitted = net.command(
        dana.key, "SubmitJob", {"spec": spec.to_json()}, specHash="0x" + spec.digest().hex()
    )
    job_id = submitted["outcome"]["job"]
    story.facts["job"] = job_id
    for who, verifier in verifiers.items():
        net.run_in_background(f"verifier-{who.name}", verifier.run)

    # 3. The cheater takes the first segment and is caught.
    say("mallory leases segment 0 and commits a faked trajectory")
    report = providers[mallory].run_once()
    story.check("the cheater leased and committed a segment", report is not None)
    caught = wait_until(
        "the cheater judged",
        lambda: net.client.get_json(f"/providers/{mallory.address}")["status"] == "jailed",
        60,
    )
    story.check("the cheater is caught, refereed and jailed", caught)
    if report is not None:
        commitment = net.client.get_json(f"/commitments/{report.commitment}")
        story.check(
            "its commitment is judged fraud", commitment["status"] == "fraud", commitment["status"]
        )
        story.facts["fraud_commitment"] = report.commitment
    mallory_stake = net.balances(mallory.address).get("BLACK/stake", 0)
    story.check(
        "the cheater's stake was slashed",
        mallory_stake < STAKE,
        f"stake {mallory_stake / BLACK:g} BLACK of {STAKE / BLACK:g}",
    )
    snapshot("cheater slashed")
    story.seconds["cheater caught"] = time.perf_counter() - clock

    # 4. Honest providers finish the job.
    say("paul and petra train the job, segment by segment; vera and victor verify")
    for who in (paul, petra):
        agent = providers[who]
        net.run_in_background(
            f"provider-{who.name}",
            lambda stop, agent=agent: agent.run(stop, poll_seconds=agent_poll_seconds),  # type: ignore[misc]
        )

    def done() -> bool:
        job = net.client.get_json(f"/jobs/{job_id}")
        progress(job["segments_accepted"], job["segments"])
        return bool(job["status"] == "completed")

    story.check("the job completes", wait_until("the job completes", done))
    job = net.client.get_json(f"/jobs/{job_id}")
    story.segments = net.client.get_json(f"/jobs/{job_id}/segments")["segments"]
    trainers = {s.get("provider") for s in story.segments}
    story.check("no segment was trained by the cheater", mallory.address not in trainers)
    story.check(
        "the cheater's segment was re-leased", job["requeues"] >= 1, f"{job['requeues']} requeue(s)"
    )
    for segment in story.segments:
        commitment = net.client.get_json(f"/commitments/{segment['commitment']}")
        trace = bytes.fromhex(commitment["loss_trace"][2:])
        story.losses += [v for (v,) in struct.iter_unpack(">f", trace)]
    story.verdicts = [r.to_json() for r in net.task_reports]
    final = decode_state(net.client.get_blob(job["checkpoint"]), spec)
    story.facts["accuracy"] = accuracy(final, test_x, test_y)
    story.check(
        "the verified model beats 85% on held-out digits",
        story.facts["accuracy"] > 0.85,
        f"{100 * story.facts['accuracy']:.1f}%",
    )
    snapshot("job completed")
    story.seconds["job"] = time.perf_counter() - clock

    # 5. An epoch settles on-chain and a provider claims.
    say("paul withdraws his earnings: an epoch settles on-chain, paul claims")
    earned = net.balances(paul.address).get("BLACK/available", 0)
    net.command(paul.key, "WithdrawalRequest", asset="BLACK", amount=earned)
    epoch = net.settle()
    story.facts["epoch"] = epoch
    before = net.black.balance_of(paul.address)
    claim = net.claim(paul, Asset.BLACK)
    story.check(
        "paul's claim pays exactly what he withdrew",
        net.black.balance_of(paul.address) - before == earned == claim.amount,
        f"{earned / BLACK:g} BLACK",
    )
    snapshot("settled")
    story.seconds["settlement"] = time.perf_counter() - clock

    # 6. The market and the hub.
    say("dana lists the model with its provenance; bob buys it, downloads it, runs it on the hub")
    story.facts["market"] = market_story(
        net, story, dana, bob, job_id, job["checkpoint"], spec, test_x, test_y
    )
    snapshot("market")
    story.seconds["market"] = time.perf_counter() - clock
    net.shutdown()
    story.facts["gateway_balances"] = {p.name: net.balances(p.address) for p in people.values()}
    return story


def market_story(
    net: Network,
    story: Story,
    creator: Participant,
    buyer: Participant,
    job_id: str,
    artifact: str,
    spec: JobSpec,
    test_x: np.ndarray,
    test_y: np.ndarray,
) -> dict[str, Any]:
    """The developer lists the verified model with its provenance and a royalty to the
    providers who trained it; the buyer buys it (one balanced split), downloads it with a
    signed token (hash checked), subscribes to the hub in USD and runs the model on the
    held-out digits through it; the hub epoch shares the subscription with the creator."""
    before = {
        who: net.balances(who).get("BLACK/available", 0)
        for who in {creator.address, *(s["provider"] for s in story.segments)}
    }
    treasury = net.balances("treasury").get("BLACK/treasury", 0)
    listed = net.command(
        creator.key,
        "ListModel",
        artifact=artifact,
        name="digits-mlp",
        task="classification",
        license="CC-BY-4.0",
        licenseText="",
        description="64 pixels → 10 digits, trained and verified on BlackTail",
        price=MODEL_PRICE,
        asset="BLACK",
        royaltyBps=MODEL_ROYALTY_BPS,
        provenanceJob=job_id,
        hub=True,
        requestPrice=HUB_REQUEST_PRICE,
    )
    listing = listed["outcome"]["listing"]
    shown = net.client.get_json(f"/market/listings/{listing}")
    provenance = shown.get("provenance") or {}
    story.check(
        "the listing shows the job's verification record",
        provenance.get("job") == job_id
        and provenance.get("verified_steps") == spec.total_steps
        and provenance.get("final_checkpoint") == artifact,
        f"{provenance.get('segments')} segments, {provenance.get('verified_steps')} steps, "
        f"{provenance.get('reexecuted_steps')} re-executed",
    )

    # The purchase: creator share, royalty by accepted segments, platform fee.
    net.command(buyer.key, "BuyModel", listing=listing, price=MODEL_PRICE, asset="BLACK")
    split = purchase_split(
        MODEL_PRICE, Asset.BLACK, MODEL_ROYALTY_BPS, provenance["providers"], FeeSchedule()
    )
    expected = dict.fromkeys(before, 0)
    expected[creator.address] += split.creator
    for provider, royalty in split.royalties.items():
        expected[provider] = expected.get(provider, 0) + royalty
    moved = {
        who: net.balances(who).get("BLACK/available", 0) - before.get(who, 0) for who in expected
    }
    fee = net.balances("treasury").get("BLACK/treasury", 0) - treasury
    story.check(
        "the sale splits exactly: creator, royalties, platform fee",
        moved == expected and fee == split.platform,
        f"creator {split.creator / BLACK:g}, royalties {sum(split.royalties.values()) / BLACK:g}, "
        f"fee {split.platform / BLACK:g} BLACK",
    )

    # The download: refused without a grant's token, then fetched with one.
    try:
        net.client.get_blob(artifact)
        public = True
    except GatewayError as error:
        public = error.status != 403
    expiry = int(time.time()) + 60
    token = net.client.post_json(
        f"/market/listings/{listing}/token",
        {
            "buyer": buyer.address,
            "expiry": expiry,
            "signature": sign_download_request(buyer.key, net.chain_id, listing, expiry),
        },
    )
    reply = net.client.request("GET", token["url"])
    digest = "0x" + hashlib.sha256(reply.body).hexdigest()
    story.check(
        "the buyer downloads the model with a token; its hash checks",
        not public and reply.status == 200 and digest == artifact,
        f"{len(reply.body):,} bytes",
    )

    # The hub: a plan, a subscription in USD, the held-out digits run through the model.
    net.command(
        net.operator,
        "SetHubPlan",
        plan="starter",
        priceBlack=HUB_PLAN_BLACK,
        priceUsd=HUB_PLAN_USD,
        periodSeconds=30 * 24 * 3600,
        quota=HUB_PLAN_QUOTA,
        active=True,
    )
    net.command(buyer.key, "Subscribe", plan="starter", asset="USD", price=HUB_PLAN_USD)
    rows = test_x.astype(np.float32).tolist()
    request = net.sign(buyer.key, "HubRequest", listing=listing, inputDigest=input_digest(rows))
    answer = net.client.post_json(
        f"/hub/models/{listing}/predict", {"command": request.to_json(), "inputs": rows}
    )
    hub_accuracy = float(np.mean(np.asarray(answer["predictions"]) == test_y))
    local = accuracy(decode_state(reply.body, spec), test_x, test_y)
    story.check(
        "the hub serves the bought model: its answers score as the model does",
        answer["metering"]["metering"] == "subscription" and abs(hub_accuracy - local) <= 1 / 360,
        f"{100 * hub_accuracy:.1f}% on {len(rows)} held-out digits, "
        f"{answer['metering']['used']}/{answer['metering']['quota']} requests used",
    )

    # The hub epoch: the USD pool to the one creator with requests, less the fee.
    usd_before = net.balances(creator.address).get("USD/available", 0)
    closed = net.command(net.operator, "CloseHubEpoch", epoch=1)
    share = epoch_split(HUB_PLAN_USD, Asset.USD, {creator.address: 1}, FeeSchedule())
    paid = net.balances(creator.address).get("USD/available", 0) - usd_before
    story.check(
        "the hub epoch pays the creator the subscription, less the fee",
        paid == share.creators[creator.address]
        and closed["outcome"]["payouts"] == {"USD": {creator.address: paid}},
        f"{paid / USD:g} USD to {creator.name}, fee {share.platform / USD:g} USD",
    )
    return {
        "listing": listing,
        "price": f"{MODEL_PRICE / BLACK:g} BLACK",
        "royalties": {k: v / BLACK for k, v in split.royalties.items()},
        "hub accuracy": f"{100 * hub_accuracy:.1f}%",
        "hub payout": f"{paid / USD:g} USD",
    }


def ledger_balances(lines: list[bytes]) -> dict[str, dict[str, int]]:
    """Every account's balances folded from the exported postings alone (specs/ledger.md:
    a credit raises a liability bucket, a debit raises the vault's reserve)."""
    balances: dict[str, dict[str, int]] = {}
    for leaf in read_export(lines)[0]:
        if leaf["type"] != "Account.Posted":
            continue
        for account, asset, bucket, side, amount in leaf["data"]["legs"]:
            sign = 1 if (side == "D") == (bucket == RESERVE) else -1
            key = f"{asset}/{bucket}"
            held = balances.setdefault(account, {})
            held[key] = held.get(key, 0) + sign * int(amount)
    return {a: {k: v for k, v in held.items() if v} for a, held in balances.items()}


def audit_story(data_dir: Path, story: Story, deployment: Any, distributor: Any) -> None:
    """With the gateway stopped: export the log from the store, audit it independently,
    compare every balance with the gateway's answers and check the on-chain anchor."""
    ledger = LedgerApp(sqlite_storage(data_dir))
    export = data_dir / "events.jsonl"
    try:
        with export.open("wb") as handle:
            write_export(ledger, PrivateKey.load(data_dir / OPERATOR_KEY_FILE), handle)
    finally:
        ledger.close()
    lines = export.read_bytes().splitlines()
    report = audit_lines(lines, workers=0)
    story.check(
        "the exported log passes the independent audit",
        report.ok,
        f"{report.events} events, {report.signatures_checked} signatures"
        + ("" if report.ok else f": {report.error}"),
    )
    story.facts["audit"] = report.to_json()
    replayed = ledger_balances(lines)
    served = story.facts["gateway_balances"]
    mismatched = [
        name
        for name, (_, address) in story.facts["participants"].items()
        if replayed.get(address, {}) != {k: v for k, v in served[name].items() if v}
    ]
    story.check(
        "every participant's balances replay from the log as the gateway reported them",
        not mismatched,
        ", ".join(mismatched),
    )
    anchor = check_anchor(lines, distributor, deployment)
    story.check(
        "the on-chain anchor matches the log",
        anchor.ok and bool(anchor.epochs),
        f"epochs {anchor.epochs}" + ("" if anchor.ok else f": {anchor.errors[0]}"),
    )
