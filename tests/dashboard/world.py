"""A small network for the dashboard's page tests, built through the gateway's own API
(signed commands over the Flask test client): two providers (one of them cheating), two
verifiers, a developer whose two-segment job completes after the cheat is caught, a model
listed in the marketplace, and a settled epoch to audit. Commitments carry made-up roots
and checkpoints (the ledger does not re-execute; tests/dashboard/test_browser.py runs the
real agents)."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from flask.testing import FlaskClient

from node.client import SAFETENSORS
from protocol.commands import sign_command
from protocol.keys import PrivateKey
from tests.protocol.compute_world import small_spec
from verifier.checkpoints import blob_digest, encode_state
from verifier.model import initial_state

BLACK = 10**18
PRICE = 5 * 10**13
_numbers = itertools.count(1)


def key(number: int) -> PrivateKey:
    return PrivateKey.from_bytes(number.to_bytes(32, "big"))


DEVELOPER, HONEST, CHEATER = key(0xD0D1), key(0xD0D2), key(0xD0D3)
VERIFIERS = (key(0xD0E1), key(0xD0E2))
TOKENS = {"blackToken": "0x" + "b1" * 20, "usdToken": "0x" + "05" * 20}
MODEL_NAME = "Digits <b>classifier</b> & friends"


@dataclass
class PageWorld:
    """What the page tests look for on the pages."""

    client: FlaskClient
    chain_id: int
    operator: PrivateKey
    job: str = ""
    commitments: list[str] = field(default_factory=list)
    dispute: str = ""

    def command(
        self, who: PrivateKey, path: str, kind: str, context: dict[str, Any] | None = None, **m: Any
    ) -> Any:
        number = next(_numbers)
        m.setdefault("clientId", f"dash-{number}-{time.time_ns()}")
        m.setdefault("nonce", time.time_ns() + number)
        m.setdefault("expiry", int(time.time()) + 600)
        body = sign_command(who, kind, self.chain_id, m).to_json()
        if context is not None:
            body["context"] = context
        response = self.client.post(path, json=body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["outcome"]

    def get(self, path: str) -> Any:
        response = self.client.get(path)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def verifier_key(self, address: str) -> PrivateKey:
        (found,) = (v for v in VERIFIERS if v.address == address)
        return found

    def segment(self, provider: PrivateKey, *, honest: bool) -> str:
        """Lease the job's next segment to `provider`, commit and open it, and have its
        verifier judge it: accepted when honest, else rejected and ruled fraud by the
        other verifier. The commitment's id."""
        lease = self.command(provider, "/leases", "RequestLease", job=self.job)
        steps = lease["end_step"] - lease["start_step"]
        # float32 losses 1.0, 0.9375, 0.875, ... by step: a curve that goes down.
        losses = "".join(
            f"{0x3F800000 - 0x100000 * (lease['start_step'] + i):08x}" for i in range(steps)
        )
        commitment = self.command(
            provider,
            f"/leases/{lease['lease']}/commitment",
            "Commit",
            lease=lease["lease"],
            startCheckpoint=lease["start_checkpoint"],
            endCheckpoint="0x" + f"{lease['end_step'] + (0 if honest else 999):064x}",
            root="0x" + ("cd" if honest else "ee") * 32,
            steps=steps,
            lossTrace="0x" + losses,
        )["commitment"]
        self.command(
            provider,
            f"/commitments/{commitment}/openings",
            "OpenSamples",
            commitment=commitment,
            openings="0x" + "0e" * 32,
        )
        detail = self.get(f"/commitments/{commitment}")
        verifier = self.verifier_key(lease["verifier"])
        samples = detail["sample_indices"]
        verdict = self.command(
            verifier,
            f"/commitments/{commitment}/verdict",
            "PostVerdict",
            commitment=commitment,
            accepted=honest,
            samples=samples,
            failedStep=0 if honest else samples[0],
            reason="" if honest else "state hash mismatch after re-execution",
        )
        if not honest:
            self.dispute = verdict["dispute"]
            dispute = self.get(f"/disputes/{self.dispute}")
            self.command(
                self.verifier_key(dispute["referee"]),
                f"/disputes/{self.dispute}/ruling",
                "RuleDispute",
                dispute=self.dispute,
                fraud=True,
                reason="the referee's re-execution agrees with the accuser",
            )
        self.commitments.append(commitment)
        return str(commitment)

    def list_model(self) -> str:
        """The developer lists a model (an untrained one: any valid safetensors file is a
        model to the market) under a name that needs escaping; the listing's id."""
        state = encode_state(initial_state(small_spec()))
        digest = blob_digest(state)
        response = self.client.put(f"/blobs/{digest}", data=state, content_type=SAFETENSORS)
        assert response.status_code in (200, 201), response.get_json()
        listing = self.command(
            DEVELOPER,
            "/market/listings",
            "ListModel",
            artifact=digest,
            name=MODEL_NAME,
            task="classification",
            license="MIT",
            licenseText="",
            description="A 64-64-32-10 MLP for 8x8 digits",
            price=3 * BLACK,
            asset="BLACK",
            royaltyBps=0,
            provenanceJob="",
            hub=False,
            requestPrice=0,
        )
        return str(listing["listing"])

    def settle(self, epoch: int, *, log_root: str | None = None) -> None:
        """Record epoch `epoch` as the operator's SettleEpoch does, anchoring the log as it
        is now (or, with `log_root`, a root that is not the log's)."""
        head = self.get("/tree-head")
        self.command(
            self.operator,
            "/commands",
            "SettleEpoch",
            epoch=epoch,
            root="0x" + "ab" * 32,
            logSize=head["size"],
            logRoot=log_root or head["root"],
            chainRef="0x" + f"{epoch:064x}",
            **TOKENS,
        )


def build(client: FlaskClient, chain_id: int, operator: PrivateKey) -> PageWorld:
    """Fund and register everyone, submit the job and run it to completion: segment 0
    honest, segment 1 cheated (caught, ruled fraud, re-leased), then honest; settle epoch
    1 over the log as it then is."""
    world = PageWorld(client, chain_id, operator)
    for who in (DEVELOPER, HONEST, CHEATER, *VERIFIERS):
        response = client.post(
            "/dev/deposit", json={"account": who.address, "asset": "BLACK", "amount": 100 * BLACK}
        )
        assert response.status_code == 201, response.get_json()
    for provider, device in ((HONEST, "NVIDIA H100"), (CHEATER, "cpu")):
        world.command(
            provider,
            "/providers",
            "RegisterProvider",
            device=device,
            gpus=2,
            memoryMb=80_000,
            benchmarkGflops=900,
            priceBlack=PRICE,
            priceUsd=50,
            stake=20 * BLACK,
        )
    for verifier in VERIFIERS:
        world.command(verifier, "/verifiers", "RegisterVerifier", stake=20 * BLACK)
    spec = small_spec()
    world.job = world.command(
        DEVELOPER,
        "/jobs",
        "SubmitJob",
        {"spec": spec.to_json()},
        specHash="0x" + spec.digest().hex(),
    )["job"]
    world.segment(HONEST, honest=True)
    world.segment(CHEATER, honest=False)
    world.segment(HONEST, honest=True)
    world.list_model()
    world.settle(1)
    return world
