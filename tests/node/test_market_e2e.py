"""DMarket and the GenAI Hub end to end over HTTP, against a real gunicorn gateway (two
workers) on 127.0.0.1: a model trained by a job on the network (real provider and
verifier agents, the tiny spec) is listed with its provenance, bought, downloaded with a
token (hash checked) and served by the hub, metered against a quota (429 past it) or paid
per request; an epoch shares the subscriptions exactly; the exported log audits clean.
Bad requests get problem bodies and change neither the log nor any balance."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from safetensors.numpy import save

from node.cli import main
from node.client import OCTET_STREAM, SAFETENSORS, GatewayClient, GatewayError
from node.datasets import build_synthetic, fetch, publish, save_dataset
from node.provider import ProviderAgent
from protocol.assets import Asset
from protocol.audit import audit_lines
from protocol.commands import sign_command
from protocol.fees import FeeSchedule
from protocol.hub import epoch_split, input_digest
from protocol.jobspec import JobSpec, parse_job_spec
from protocol.keys import PrivateKey
from protocol.log import export_line
from protocol.market import (
    download_token_seconds,
    issue_download_token,
    purchase_split,
    sign_download_request,
)
from tests.gateway_server import RunningGateway, run_gateway
from tests.protocol.test_market import listing_fields
from verifier.agent import VerifierAgent
from verifier.checkpoints import decode_state

TINY = Path(__file__).resolve().parents[2] / "specs" / "examples" / "tiny.yaml"
BLACK = 10**18
PRICE_PER_STEP = 10**13
ARTIFACT_BYTES_MAX = 64 * 1024
_numbers = itertools.count(1)


def key(number: int) -> PrivateKey:
    return PrivateKey.from_bytes(number.to_bytes(32, "big"))


DEVELOPER, TRAINER_A, TRAINER_B, VERIFIER = key(0xDE73), key(0x9021), key(0x9022), key(0x7021)
BUYER, SUBSCRIBER, CALLER, STRANGER = key(0xB71), key(0x5B71), key(0xCA71), key(0x5757)


@dataclass
class Market:
    """The running gateway and the model a job trained on it."""

    gateway: RunningGateway
    client: GatewayClient
    spec: JobSpec
    job: str
    artifact: str
    # The artifact's bytes, fetched before it is listed (then the blob route refuses it).
    artifact_bytes: bytes
    keys: Path


def command(market: Market, who: PrivateKey, path: str, kind: str, **fields: Any) -> Any:
    return market.client.post_json(path, signed(market.gateway, who, kind, **fields))


def signed(gateway: RunningGateway, who: PrivateKey, kind: str, **fields: Any) -> dict[str, Any]:
    number = next(_numbers)
    fields.setdefault("clientId", f"m-{number}-{time.time_ns()}")
    fields.setdefault("nonce", time.time_ns() + number)
    fields.setdefault("expiry", int(time.time()) + 600)
    return sign_command(who, kind, gateway.chain_id, fields).to_json()


def fund(client: GatewayClient, who: PrivateKey, amount: int, asset: str = "BLACK") -> None:
    client.post_json("/dev/deposit", {"account": who.address, "asset": asset, "amount": amount})


def balances(client: GatewayClient, who: str) -> dict[str, int]:
    reply = client.get_json(f"/accounts/{who}/balances")
    return {f"{b['asset']}/{b['bucket']}": b["amount"] for b in reply["balances"]}


def black(client: GatewayClient, who: str, bucket: str = "available") -> int:
    return balances(client, who).get(f"BLACK/{bucket}", 0)


def log_size(client: GatewayClient) -> int:
    return int(client.get_json("/tree-head")["size"])


def train_a_model(
    gateway: RunningGateway, client: GatewayClient, data_dir: Path
) -> tuple[JobSpec, str]:
    """A tiny job trained by two provider agents (one segment each) and verified by a
    verifier agent; the job id once it completes."""
    document = yaml.safe_load(TINY.read_text())
    document["total_steps"], document["segment_steps"] = 20, 10
    spec = parse_job_spec(document)
    save_dataset(build_synthetic(0, 512, 16, 4), data_dir / "tiny")
    assert publish(data_dir / "tiny", client) == "0x" + spec.dataset.sha256.hex()
    for who in (DEVELOPER, TRAINER_A, TRAINER_B, VERIFIER):
        fund(client, who, 100 * BLACK)

    def fetch_dataset(dataset_id: str) -> Any:
        return fetch(dataset_id, client, data_dir / "cache")

    trainers = [
        ProviderAgent(client, who, fetch_dataset, chain_id=gateway.chain_id, checkpoint_every=5)
        for who in (TRAINER_A, TRAINER_B)
    ]
    for trainer in trainers:
        trainer.register(
            device="cpu",
            gpus=1,
            memoryMb=16_000,
            benchmarkGflops=10,
            priceBlack=PRICE_PER_STEP,
            priceUsd=10,
            stake=20 * BLACK,
        )
    verifier = VerifierAgent(
        client,
        VERIFIER,
        fetch_dataset,
        chain_id=gateway.chain_id,
        poll_seconds=0.1,
        transient_errors=(GatewayError, OSError),
    )
    verifier.register(20 * BLACK)
    job = client.post_json(
        "/jobs",
        {
            **signed(gateway, DEVELOPER, "SubmitJob", specHash="0x" + spec.digest().hex()),
            "context": {"spec": spec.to_json()},
        },
    )["outcome"]["job"]
    for trainer in trainers:
        report = trainer.run_once()
        assert report is not None and report.job == job
        assert verifier.run_once() == 1
    final = client.get_json(f"/jobs/{job}")
    assert (final["status"], final["segments_accepted"]) == ("completed", 2)
    return spec, job


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    root = tmp_path_factory.mktemp("market-e2e")
    env = {"BLACKTAIL_ARTIFACT_BYTES_MAX": str(ARTIFACT_BYTES_MAX)}
    with run_gateway(root / "gateway", workers=2, env=env) as gateway:
        client = gateway.client()
        spec, job = train_a_model(gateway, client, root)
        artifact = client.get_json(f"/jobs/{job}")["checkpoint"]
        keys = root / "keys"
        keys.mkdir()
        for who in (BUYER, SUBSCRIBER, CALLER, STRANGER):
            who.save(keys / f"{who.address}.pem")
        yield Market(gateway, client, spec, job, artifact, client.get_blob(artifact), keys)


def cli(market: Market, *args: str, who: PrivateKey | None = None) -> Any:
    """Run `blacktail <args> --gateway URL [--key PEM] --json`; its JSON answer."""
    extra = ["--gateway", market.gateway.base_url, "--json"]
    if who is not None:
        extra += ["--key", str(market.keys / f"{who.address}.pem")]
    result = CliRunner().invoke(main, [*args, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def export(client: GatewayClient) -> list[bytes]:
    lines: list[bytes] = []
    cursor: str | None = "0"
    while cursor is not None:
        page = client.get_json("/events", {"cursor": cursor, "limit": 500})
        lines += [export_line(item["leaf"])[0] for item in page["items"]]
        cursor = page["next_cursor"]
    return lines


def forward(market: Market, rows: list[list[float]]) -> np.ndarray[Any, Any]:
    """The listed model run in numpy, from the checkpoint's parameters."""
    state = decode_state(market.artifact_bytes, market.spec)
    x = np.asarray(rows, dtype=np.float32)
    weights = state.params
    for layer in range(0, len(weights), 2):
        x = x @ weights[layer].T + weights[layer + 1]
        if layer + 2 < len(weights):
            x = np.maximum(x, 0)
    return x


def test_a_trained_model_is_listed_bought_downloaded_and_served_by_the_hub(
    market: Market, tmp_path: Path
) -> None:
    """The job's final checkpoint is listed with its verification record and a royalty;
    a purchase through the CLI splits the price exactly; the buyer downloads it with a
    token (the public blob route refuses it) and its hash checks; a subscriber's hub
    requests run the model and are metered until the quota answers 429; a caller without
    a subscription pays per request; the epoch shares the pool exactly; the log audits."""
    client, gateway = market.client, market.gateway
    price = 5 * BLACK + 3
    listed = command(
        market,
        DEVELOPER,
        "/market/listings",
        "ListModel",
        artifact=market.artifact,
        name="tiny-mlp",
        task="classification",
        license="CC-BY-4.0",
        licenseText="",
        description="16 features, 4 classes",
        price=price,
        asset="BLACK",
        royaltyBps=1000,
        provenanceJob=market.job,
        hub=True,
        requestPrice=10**15,
    )
    listing = listed["outcome"]["listing"]
    found = client.get_json(f"/market/listings/{listing}")
    provenance = found["provenance"]
    assert provenance["job"] == market.job and provenance["final_checkpoint"] == market.artifact
    assert (provenance["segments"], provenance["verified_steps"]) == (2, 20)
    assert provenance["providers"] == {TRAINER_A.address: 1, TRAINER_B.address: 1}
    assert provenance["verdicts"] == {"accepted": 2, "cleared_on_dispute": 0}
    detail = client.get_json(f"/market/listings/{listing}/provenance")
    assert [s["provider"] for s in detail["segments"]] == [TRAINER_A.address, TRAINER_B.address]
    assert all(
        s["verdict"]["accepted"] and s["verifier"] == VERIFIER.address for s in detail["segments"]
    )
    assert (
        sum(s["reexecuted_steps"] for s in detail["segments"]) == provenance["reexecuted_steps"] > 0
    )
    listed_items = cli(market, "market", "list")["items"]
    assert [i["id"] for i in listed_items if i["id"] == listing] == [listing]
    table = CliRunner().invoke(main, ["market", "list", "--gateway", gateway.base_url])
    assert table.exit_code == 0 and listing in table.output and "(hub)" in table.output
    shown = CliRunner().invoke(main, ["market", "show", listing, "--gateway", gateway.base_url])
    assert shown.exit_code == 0 and "2 segments, 20 steps" in shown.output

    # Buy through the CLI: one posting set, split exactly.
    fund(client, BUYER, 10 * BLACK)
    before = {w.address: black(client, w.address) for w in (DEVELOPER, TRAINER_A, TRAINER_B)}
    treasury = black(client, "treasury", "treasury")
    bought = cli(market, "market", "buy", listing, who=BUYER)
    assert bought["kind"] == "BuyModel" and bought["outcome"]["paid"] == price
    split = purchase_split(
        price, Asset.BLACK, 1000, {TRAINER_A.address: 1, TRAINER_B.address: 1}, FeeSchedule()
    )
    assert black(client, BUYER.address) == 10 * BLACK - price
    assert black(client, DEVELOPER.address) - before[DEVELOPER.address] == split.creator
    for trainer in (TRAINER_A, TRAINER_B):
        assert (
            black(client, trainer.address) - before[trainer.address]
            == split.royalties[trainer.address]
        )
    assert black(client, "treasury", "treasury") - treasury == split.platform
    assert client.get_json(f"/market/listings/{listing}/grants/{BUYER.address}")["price"] == price

    # The public blob route refuses the paid artifact; the CLI downloads it with a token.
    with pytest.raises(GatewayError) as caught:
        client.get_blob(market.artifact)
    assert (caught.value.status, caught.value.type.rsplit("/", 1)[1]) == (403, "grant-required")
    target = tmp_path / "model.safetensors"
    downloaded = cli(market, "market", "download", listing, "--out", str(target), who=BUYER)
    assert downloaded["bytes"] == target.stat().st_size
    assert "0x" + hashlib.sha256(target.read_bytes()).hexdigest() == market.artifact

    # The hub: a plan, a subscription through the CLI, requests metered to the quota.
    command(
        market,
        gateway.operator,
        "/hub/plans",
        "SetHubPlan",
        plan="basic",
        priceBlack=2 * BLACK + 1,
        priceUsd=0,
        periodSeconds=30 * 24 * 3600,
        quota=2,
        active=True,
    )
    plans = CliRunner().invoke(main, ["hub", "plans", "--gateway", gateway.base_url])
    assert plans.exit_code == 0 and "basic" in plans.output and "30 days" in plans.output
    fund(client, SUBSCRIBER, 3 * BLACK)
    subscribed = cli(market, "hub", "subscribe", "basic", who=SUBSCRIBER)
    assert subscribed["outcome"]["quota"] == 2
    rows = [[float(i % 5) - 2.0 for i in range(16)], [0.25] * 16]
    expected = forward(market, rows)
    answer = cli(market, "hub", "predict", listing, "--input", json.dumps(rows), who=SUBSCRIBER)
    assert answer["metering"]["metering"] == "subscription" and answer["metering"]["used"] == 1
    assert np.allclose(np.asarray(answer["outputs"]), expected, rtol=1e-5, atol=1e-5)
    assert answer["predictions"] == expected.argmax(axis=1).tolist()
    body = {
        "command": signed(
            gateway, SUBSCRIBER, "HubRequest", listing=listing, inputDigest=input_digest(rows)
        ),
        "inputs": rows,
    }
    assert client.post_json(f"/hub/models/{listing}/predict", body)["metering"]["used"] == 2
    # A retry of the same signed request is answered again, not metered again.
    assert client.post_json(f"/hub/models/{listing}/predict", body)["metering"]["used"] == 2
    size = log_size(client)
    over = {
        "command": signed(
            gateway, SUBSCRIBER, "HubRequest", listing=listing, inputDigest=input_digest(rows)
        ),
        "inputs": rows,
    }
    reply = client.request(
        "POST",
        f"/hub/models/{listing}/predict",
        json.dumps(over).encode(),
        {"Content-Type": "application/json"},
    )
    assert reply.status == 429 and reply.headers["content-type"] == "application/problem+json"
    problem = reply.json()
    assert problem["type"].endswith("/quota-exhausted") and (problem["quota"], problem["used"]) == (
        2,
        2,
    )
    assert int(reply.headers["retry-after"]) > 0
    assert log_size(client) == size

    # Without a subscription: paid per request, the fee to the treasury.
    fund(client, CALLER, BLACK)
    paid = cli(market, "hub", "predict", listing, "--input", json.dumps(rows[:1]), who=CALLER)
    assert paid["metering"] == {
        "listing": listing,
        "metering": "pay-per-request",
        "charged": 10**15,
        "currency": "BLACK",
    }
    assert black(client, CALLER.address) == BLACK - 10**15
    meter = client.get_json(f"/hub/models/{listing}")["meter"]
    assert (meter["subscribed"], meter["paid"], meter["charged"]) == (2, 1, 10**15)

    # The epoch: the whole pool to the one creator with requests, less the fee.
    creator_before = black(client, DEVELOPER.address)
    closed = command(market, gateway.operator, "/hub/epochs", "CloseHubEpoch", epoch=1)
    share = epoch_split(2 * BLACK + 1, Asset.BLACK, {DEVELOPER.address: 2}, FeeSchedule())
    assert closed["outcome"]["payouts"] == {
        "BLACK": {DEVELOPER.address: share.creators[DEVELOPER.address]}
    }
    assert black(client, DEVELOPER.address) - creator_before == share.creators[DEVELOPER.address]
    assert share.total == 2 * BLACK + 1
    assert balances(client, "treasury").get("BLACK/escrow:hub-pool", 0) == 0
    assert client.get_json("/hub/epochs")["items"][0]["requests"] == {listing: 2}

    report = audit_lines(export(client), workers=0, require_tree_head=False)
    assert report.ok, report.error
    assert report.events == log_size(client)


def _problem(call: Any) -> tuple[int, str, dict[str, Any]]:
    with pytest.raises(GatewayError) as caught:
        call()
    return caught.value.status, caught.value.type.rsplit("/", 1)[1], caught.value.problem


def _unchanged(market: Market, *who: str) -> tuple[int, dict[str, dict[str, int]]]:
    return log_size(market.client), {w: balances(market.client, w) for w in (*who, "treasury")}


def _blob(client: GatewayClient, data: bytes, media_type: str) -> str:
    digest = "0x" + hashlib.sha256(data).hexdigest()
    client.put_blob(digest, data, media_type)
    return digest


def _listing_fields(artifact: str, **changes: Any) -> dict[str, Any]:
    """A ListModel message priced at 1 BLACK (the protocol tests' fields otherwise)."""
    return listing_fields(artifact, **{"price": BLACK, **changes})


def test_bad_market_requests_are_problems_that_change_nothing(market: Market) -> None:
    """Listing someone else's job as provenance (403), an oversized (400), a
    non-safetensors (400) or a missing (404) artifact, buying without funds (409), a token
    asked by a non-buyer (403), a download without a token (403), with a tampered (403
    invalid-token) or an expired one (403 token-expired): each is an RFC 7807 problem, and
    the log and every balance stay as they were."""
    client, gateway = market.client, market.gateway
    paid = command(
        market,
        STRANGER,
        "/market/listings",
        "ListModel",
        **_listing_fields(_blob(client, save({"w": np.ones(4, np.float32)}), SAFETENSORS)),
    )["outcome"]["listing"]
    oversized = _blob(
        client, save({"w": np.zeros(ARTIFACT_BYTES_MAX // 4, np.float32)}), SAFETENSORS
    )
    pickle_like = _blob(client, b"\x80\x04\x95not a safetensors file", OCTET_STREAM)
    missing = "0x" + "ab" * 32
    cases = [
        (
            lambda: command(
                market,
                STRANGER,
                "/market/listings",
                "ListModel",
                **_listing_fields(market.artifact, provenanceJob=market.job),
            ),
            (403, "unauthorized"),
        ),
        (
            lambda: command(
                market, STRANGER, "/market/listings", "ListModel", **_listing_fields(oversized)
            ),
            (400, "invalid-artifact"),
        ),
        (
            lambda: command(
                market, STRANGER, "/market/listings", "ListModel", **_listing_fields(pickle_like)
            ),
            (400, "invalid-artifact"),
        ),
        (
            lambda: client.post_json(
                "/commands", signed(gateway, STRANGER, "ListModel", **_listing_fields(pickle_like))
            ),
            (400, "invalid-artifact"),
        ),
        (
            lambda: command(
                market, STRANGER, "/market/listings", "ListModel", **_listing_fields(missing)
            ),
            (404, "not-found"),
        ),
        (
            lambda: command(
                market,
                key(0xB40CE),
                f"/market/listings/{paid}/purchase",
                "BuyModel",
                listing=paid,
                price=BLACK,
                asset="BLACK",
            ),
            (409, "insufficient-funds"),
        ),
    ]
    for call, expected in cases:
        before = _unchanged(market, STRANGER.address)
        status, slug, problem = _problem(call)
        assert (status, slug) == expected, problem
        assert problem["status"] == status and problem["title"] and problem["detail"]
        assert _unchanged(market, STRANGER.address) == before

    artifact = client.get_json(f"/market/listings/{paid}")["artifact"]
    before = _unchanged(market, STRANGER.address, BUYER.address)
    expiry = int(time.time()) + 60
    request = {
        "buyer": BUYER.address,
        "expiry": expiry,
        "signature": sign_download_request(BUYER, gateway.chain_id, paid, expiry),
    }
    assert _problem(lambda: client.post_json(f"/market/listings/{paid}/token", request))[:2] == (
        403,
        "grant-required",
    )
    url = f"/market/listings/{paid}/artifact"
    assert _problem(lambda: client.get_json(url))[:2] == (403, "grant-required")
    assert _problem(lambda: client.get_blob(artifact))[:2] == (403, "grant-required")
    # A token the creator got, altered to name the buyer, or made to last longer.
    mine = sign_download_request(STRANGER, gateway.chain_id, paid, expiry)
    token = client.post_json(
        f"/market/listings/{paid}/token",
        {"buyer": STRANGER.address, "expiry": expiry, "signature": mine},
    )["token"]
    assert client.request("GET", f"{url}?token={token}").status == 200
    owner, until, signature = token.split(".")
    for forged in (
        f"{BUYER.address}.{until}.{signature}",
        f"{owner}.{int(until) + 60}.{signature}",
        "x",
    ):
        assert _problem(lambda t=forged: client.get_json(f"{url}?token={t}"))[:2] == (
            403,
            "invalid-token",
        )
    stale = issue_download_token(
        gateway.operator,
        gateway.chain_id,
        paid,
        STRANGER.address,
        artifact,
        int(time.time()) - 2 * download_token_seconds,
    ).encode()
    status, slug, problem = _problem(lambda: client.get_json(f"{url}?token={stale}"))
    assert (status, slug) == (403, "token-expired") and problem["expiry"] < problem["now"]
    assert _unchanged(market, STRANGER.address, BUYER.address) == before


def test_bad_hub_requests_are_problems_that_change_nothing(market: Market) -> None:
    """Inputs that do not hash to the signed digest, rows of the wrong width, a path that
    is not the signed listing, a model the hub does not serve, and a caller without a
    subscription or funds each get a problem; nothing is metered or charged."""
    client, gateway = market.client, market.gateway
    rng = np.random.default_rng(7)
    model = {
        "param.0.W": rng.standard_normal((8, 16)).astype(np.float32),
        "param.0.b": np.zeros(8, np.float32),
        "param.1.W": rng.standard_normal((4, 8)).astype(np.float32),
        "param.1.b": np.zeros(4, np.float32),
    }
    fields = _listing_fields(_blob(client, save(model), SAFETENSORS), price=0, hub=True)
    listing = command(
        market, STRANGER, "/market/listings", "ListModel", **{**fields, "requestPrice": 10**15}
    )["outcome"]["listing"]
    off_hub = command(
        market,
        STRANGER,
        "/market/listings",
        "ListModel",
        **_listing_fields(_blob(client, save({"w": np.ones(3, np.float32)}), SAFETENSORS)),
    )["outcome"]["listing"]
    rows = [[0.0] * 16]
    digest = input_digest(rows)

    def predict(inputs: Any, digest: str, path: str = listing, named: str = listing) -> Any:
        body = {
            "command": signed(gateway, CALLER, "HubRequest", listing=named, inputDigest=digest),
            "inputs": inputs,
        }
        return client.post_json(f"/hub/models/{path}/predict", body)

    broke = balances(client, CALLER.address).get("BLACK/available", 0)
    cases = [
        (lambda: predict(rows, input_digest([[1.0] * 16])), (400, "invalid-input")),
        (lambda: predict([[0.0] * 15], input_digest([[0.0] * 15])), (400, "invalid-input")),
        (lambda: predict(rows, digest, path=off_hub), (400, "invalid-input")),
        (lambda: predict(rows, digest, path=off_hub, named=off_hub), (409, "invalid-transition")),
    ]
    for call, expected in cases:
        before = _unchanged(market, CALLER.address, STRANGER.address)
        assert _problem(call)[:2] == expected
        assert _unchanged(market, CALLER.address, STRANGER.address) == before
    if broke < 10**15:
        before = _unchanged(market, CALLER.address, STRANGER.address)
        assert _problem(lambda: predict(rows, digest))[:2] == (409, "insufficient-funds")
        assert _unchanged(market, CALLER.address, STRANGER.address) == before
    nan = b'{"command": {}, "inputs": [[NaN]]}'
    reply = client.request(
        "POST", f"/hub/models/{listing}/predict", nan, {"Content-Type": "application/json"}
    )
    assert reply.status == 400 and reply.json()["type"].endswith("/malformed-json")
