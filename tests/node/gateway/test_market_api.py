"""The market and hub resources in process (the Flask app on a fresh SQLite store): their
response schemas keep every field the protocol objects carry, an artifact is checked in
the blob store on every path a listing can take (single, batch, an update that joins the
hub), free models are public while paid ones are not, the configuration is read
strictly, and creating the app does not import torch."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import marshmallow as ma
import numpy as np
import pytest
from flask.testing import FlaskClient
from safetensors.numpy import save

from node.gateway.config import GatewayConfig
from node.gateway.market_schemas import (
    EpochSchema,
    GrantSchema,
    HubSchema,
    ListingSchema,
    MeterSchema,
    ReviewSchema,
    SubscriptionSchema,
)
from protocol.application import Network
from protocol.errors import InvalidInput
from protocol.hub import (
    HUB_ID,
    Hub,
    HubMeter,
    Subscription,
    input_digest,
    meter_id,
    subscription_id,
)
from protocol.market import Grant, Review, grant_id, review_id, sign_download_request
from protocol.storage import memory_storage
from tests.gateway_server import REPO_ROOT
from tests.node.gateway.conftest import Gateway, MakeGateway
from tests.node.gateway.helpers import ALICE, BLACK, BOB, deposit, make_command, problem
from tests.protocol.compute_world import World
from tests.protocol.test_market import get_listing, list_model, listing_fields, trained_job


def mlp_bytes(seed: int = 0, widths: tuple[int, ...] = (4, 8, 3)) -> bytes:
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        tensors[f"param.{layer}.W"] = rng.standard_normal((fan_out, fan_in)).astype(np.float32)
        tensors[f"param.{layer}.b"] = rng.standard_normal(fan_out).astype(np.float32)
    return save(tensors)


def put(client: FlaskClient, data: bytes, media_type: str = "application/vnd.safetensors") -> str:
    digest = "0x" + hashlib.sha256(data).hexdigest()
    response = client.put(f"/blobs/{digest}", data=data, content_type=media_type)
    assert response.status_code in (200, 201), response.get_json()
    return digest


def listing_message(artifact: str, **changes: Any) -> dict[str, Any]:
    """A ListModel message priced at 1 BLACK (the protocol tests' fields otherwise)."""
    return listing_fields(artifact, **{"price": BLACK, **changes})


def list_one(gateway: Gateway, artifact: str, **changes: Any) -> str:
    command = make_command(
        ALICE, "ListModel", gateway.chain_id, **listing_message(artifact, **changes)
    )
    response = gateway.client.post("/market/listings", json=command.to_json())
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["outcome"]["listing"])


# -- schemas ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    app = Network(memory_storage())
    w = World(app)
    job = trained_job(w)
    buyer = w.providers[2]
    listing = list_model(
        w, w.get_job(job).checkpoint, provenanceJob=job, royaltyBps=200, hub=True, requestPrice=5
    )
    w.fund(buyer, 20 * BLACK)
    w.submit(buyer, "BuyModel", listing=listing, price=10 * BLACK, asset="BLACK")
    w.submit(buyer, "ReviewModel", listing=listing, rating=4, text="ok")
    w.submit(
        w.operator,
        "SetHubPlan",
        plan="basic",
        priceBlack=BLACK,
        priceUsd=0,
        periodSeconds=3600,
        quota=5,
        active=True,
    )
    w.submit(buyer, "Subscribe", plan="basic", asset="BLACK", price=BLACK)
    w.submit(buyer, "HubRequest", listing=listing, inputDigest="0x" + "00" * 32)
    w.submit(w.operator, "CloseHubEpoch", epoch=1)
    hub = app.get(HUB_ID)
    meter = app.get(meter_id(listing))
    subscription = app.get(subscription_id(buyer.address))
    grant = app.get(grant_id(listing, buyer.address))
    review = app.get(review_id(listing, buyer.address))
    assert isinstance(hub, Hub) and isinstance(meter, HubMeter)
    assert isinstance(subscription, Subscription) and isinstance(grant, Grant)
    assert isinstance(review, Review)
    found = {
        "listing": get_listing(w, listing).to_json(),
        "grant": grant.to_json(),
        "review": review.to_json(),
        "hub": hub.to_json(),
        "epoch": hub.epochs[0],
        "subscription": subscription.to_json(),
        "meter": meter.to_json(),
    }
    app.close()
    return found


@pytest.mark.parametrize(
    "name, schema",
    [
        ("listing", ListingSchema),
        ("grant", GrantSchema),
        ("review", ReviewSchema),
        ("hub", HubSchema),
        ("epoch", EpochSchema),
        ("subscription", SubscriptionSchema),
        ("meter", MeterSchema),
    ],
)
def test_schema_dumps_every_field_of_the_market_object(
    objects: dict[str, dict[str, Any]], name: str, schema: type[ma.Schema]
) -> None:
    """Dumping a market or hub object through its response schema keeps every field."""
    original = objects[name]
    assert schema().dump(original) == original


# -- artifacts ----------------------------------------------------------------------------------


def test_an_artifact_is_checked_on_every_path_a_listing_takes(make_gateway: MakeGateway) -> None:
    """A listing of an oversized, non-safetensors or missing artifact is refused through
    /market/listings, /commands and /commands/batch alike, and the log keeps its size."""
    gateway = make_gateway(artifact_bytes_max=1024)
    client = gateway.client
    oversized = put(client, save({"w": np.zeros(512, np.float32)}))
    garbage = put(client, b"not safetensors at all", "application/octet-stream")
    missing = "0x" + "cd" * 32
    size = gateway.log_size()
    for artifact, status, slug in (
        (oversized, 400, "invalid-artifact"),
        (garbage, 400, "invalid-artifact"),
        (missing, 404, "not-found"),
    ):
        body = make_command(
            ALICE, "ListModel", gateway.chain_id, **listing_message(artifact)
        ).to_json()
        problem(client.post("/market/listings", json=body), status, slug)
        problem(client.post("/commands", json=body), status, slug)
        batch = client.post("/commands/batch", json={"commands": [body]}).get_json()
        assert batch["results"][0]["status"] == status
        assert batch["results"][0]["problem"]["type"].endswith(slug)
    body = problem(
        client.post(
            "/market/listings",
            json=make_command(
                ALICE, "ListModel", gateway.chain_id, **listing_message(oversized)
            ).to_json(),
        ),
        400,
        "invalid-artifact",
    )
    assert body["bytes_max"] == 1024 and body["artifact"] == oversized
    assert gateway.log_size() == size


def test_a_hub_model_must_be_an_mlp_the_hub_can_run(gateway: Gateway) -> None:
    """A safetensors file that is not an MLP may be sold but not served: listing it for the
    hub, or an update that offers it to the hub, is refused (400 invalid-artifact)."""
    client = gateway.client
    not_mlp = put(client, save({"embedding": np.ones((3, 4), np.float32)}))
    broken_chain = put(
        client,
        save(
            {
                "param.0.W": np.ones((8, 4), np.float32),
                "param.0.b": np.ones(8, np.float32),
                "param.1.W": np.ones((3, 7), np.float32),
                "param.1.b": np.ones(3, np.float32),
            }
        ),
    )
    for artifact in (not_mlp, broken_chain):
        body = make_command(
            ALICE, "ListModel", gateway.chain_id, **listing_message(artifact, hub=True)
        ).to_json()
        problem(client.post("/market/listings", json=body), 400, "invalid-artifact")
    listing = list_one(gateway, not_mlp)
    update = make_command(
        ALICE,
        "UpdateListing",
        gateway.chain_id,
        listing=listing,
        price=BLACK,
        description="",
        hub=True,
        requestPrice=0,
    )
    size = gateway.log_size()
    problem(
        client.post(f"/market/listings/{listing}/update", json=update.to_json()),
        400,
        "invalid-artifact",
    )
    assert gateway.log_size() == size
    list_one(gateway, put(client, mlp_bytes()), hub=True)


def test_free_models_are_public_and_paid_ones_only_with_a_token(gateway: Gateway) -> None:
    """A free model's artifact is served to anyone (blob route and market route); a paid
    one's is refused on both without a token, and a token for a grant-less caller is
    refused too."""
    client = gateway.client
    free = put(client, mlp_bytes(1))
    paid = put(client, mlp_bytes(2))
    free_listing = list_one(gateway, free, price=0)
    paid_listing = list_one(gateway, paid)
    assert client.get(f"/blobs/{free}").status_code == 200
    response = client.get(f"/market/listings/{free_listing}/artifact")
    assert response.status_code == 200
    assert "0x" + hashlib.sha256(response.data).hexdigest() == free
    problem(client.get(f"/blobs/{paid}"), 403, "grant-required")
    assert client.head(f"/blobs/{paid}").status_code == 403
    problem(client.get(f"/market/listings/{paid_listing}/artifact"), 403, "grant-required")
    expiry = int(time.time()) + 60
    request = {
        "buyer": BOB.address,
        "expiry": expiry,
        "signature": sign_download_request(BOB, gateway.chain_id, paid_listing, expiry),
    }
    problem(
        client.post(f"/market/listings/{paid_listing}/token", json=request), 403, "grant-required"
    )
    request["buyer"] = ALICE.address
    problem(
        client.post(f"/market/listings/{paid_listing}/token", json=request), 400, "wrong-signer"
    )
    deposit(client, BOB.address, 2 * BLACK)
    buy = make_command(
        BOB, "BuyModel", gateway.chain_id, listing=paid_listing, price=BLACK, asset="BLACK"
    )
    assert (
        client.post(f"/market/listings/{paid_listing}/purchase", json=buy.to_json()).status_code
        == 201
    )
    request["buyer"] = BOB.address
    token = client.post(f"/market/listings/{paid_listing}/token", json=request).get_json()
    response = client.get(token["url"])
    assert response.status_code == 200 and response.headers["Cache-Control"].count("private")
    assert "0x" + hashlib.sha256(response.data).hexdigest() == paid
    problem(client.get(f"/blobs/{paid}"), 403, "grant-required")


# -- configuration and imports ----------------------------------------------------------------


def test_the_market_settings_are_read_strictly(tmp_path: Path) -> None:
    """BLACKTAIL_ARTIFACT_BYTES_MAX and BLACKTAIL_HUB_DEVICE are read from the environment;
    a bad value names its variable."""
    env = {
        "BLACKTAIL_DATA_DIR": str(tmp_path),
        "BLACKTAIL_ARTIFACT_BYTES_MAX": "4096",
        "BLACKTAIL_HUB_DEVICE": "cpu",
    }
    config = GatewayConfig.resolve(environ=env)
    assert (config.artifact_bytes_max, config.hub_device) == (4096, "cpu")
    with pytest.raises(InvalidInput, match="BLACKTAIL_HUB_DEVICE"):
        GatewayConfig.resolve(environ={**env, "BLACKTAIL_HUB_DEVICE": "tpu"})
    with pytest.raises(InvalidInput, match="BLACKTAIL_ARTIFACT_BYTES_MAX"):
        GatewayConfig.resolve(environ={**env, "BLACKTAIL_ARTIFACT_BYTES_MAX": "-1"})


def test_creating_the_gateway_does_not_import_torch(tmp_path: Path) -> None:
    """A gateway worker that serves no hub request never imports torch."""
    script = (
        "import sys; from pathlib import Path; "
        "from node.gateway import GatewayConfig, create_app; "
        "from protocol.storage import memory_storage; "
        f"d = Path({str(tmp_path)!r}); "
        "create_app(GatewayConfig(storage=memory_storage(), operator_key_path=d / 'k.pem', "
        "blob_dir=d / 'b')); "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"


def test_the_hub_answers_429_with_retry_after_when_the_quota_is_used(gateway: Gateway) -> None:
    """Inputs that are not rows of numbers are refused by the schema; past its quota a
    subscriber's predict is a quota-exhausted problem with Retry-After; neither records
    anything."""
    client = gateway.client
    listing = list_one(gateway, put(client, mlp_bytes(3)), price=0, hub=True)
    plan = make_command(
        gateway.operator,
        "SetHubPlan",
        gateway.chain_id,
        plan="one",
        priceBlack=1,
        priceUsd=0,
        periodSeconds=3600,
        quota=1,
        active=True,
    )
    assert client.post("/hub/plans", json=plan.to_json()).status_code == 201
    deposit(client, BOB.address, 1)
    subscribe = make_command(BOB, "Subscribe", gateway.chain_id, plan="one", asset="BLACK", price=1)
    assert client.post("/hub/subscriptions", json=subscribe.to_json()).status_code == 201
    rows = [[1.0, 2.0, 3.0, 4.0]]

    def predict() -> Any:
        command = make_command(
            BOB, "HubRequest", gateway.chain_id, listing=listing, inputDigest=input_digest(rows)
        )
        return client.post(
            f"/hub/models/{listing}/predict", json={"command": command.to_json(), "inputs": rows}
        )

    size = gateway.log_size()
    for bad in ([[True, 2.0, 3.0, 4.0]], [[1.0, "2", 3.0, 4.0]], [[]], []):
        command = make_command(
            BOB, "HubRequest", gateway.chain_id, listing=listing, inputDigest="0x" + "00" * 32
        )
        response = client.post(
            f"/hub/models/{listing}/predict", json={"command": command.to_json(), "inputs": bad}
        )
        problem(response, 400, "invalid-request")
    assert gateway.log_size() == size
    first = predict()
    assert first.status_code == 200 and len(first.get_json()["outputs"][0]) == 3
    size = gateway.log_size()
    response = predict()
    body = problem(response, 429, "quota-exhausted")
    assert (body["quota"], body["used"]) == (1, 1)
    assert 0 < int(response.headers["Retry-After"]) <= 3600
    assert gateway.log_size() == size
    assert client.get(f"/hub/subscriptions/{BOB.address}").get_json()["used"] == 1
