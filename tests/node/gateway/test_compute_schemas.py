"""The compute response schemas name every field the protocol objects carry, so a field
added to an aggregate's JSON cannot silently vanish from the API's answers."""

from __future__ import annotations

import marshmallow as ma
import pytest

from node.gateway.compute_schemas import (
    CommitmentSchema,
    DisputeSchema,
    JobSchema,
    LeaseSchema,
    ProviderSchema,
    VerifierSchema,
)
from protocol.application import Network
from protocol.participants import Provider, Verifier, provider_id, verifier_id
from protocol.storage import memory_storage
from tests.protocol.compute_world import World


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, object]]:
    app = Network(memory_storage())
    w = World(app)
    w.setup(providers=1, verifiers=3)
    job = w.submit_job()
    lease = w.lease(w.providers[0], job)["lease"]
    commitment = w.commit(w.providers[0], lease)
    dispute = w.verdict(commitment, accepted=False).outcome["dispute"]
    provider = app.get(provider_id(w.providers[0].address))
    verifier = app.get(verifier_id(w.verifiers[0].address))
    assert isinstance(provider, Provider) and isinstance(verifier, Verifier)
    found = {
        "provider": provider.to_json(),
        "verifier": verifier.to_json(),
        "job": w.get_job(job).to_json(),
        "lease": w.get_lease(lease).to_json(),
        "commitment": w.get_commitment(commitment).to_json(),
        "dispute": w.get_dispute(dispute).to_json(),
    }
    app.close()
    return found


@pytest.mark.parametrize(
    "name, schema",
    [
        ("provider", ProviderSchema),
        ("verifier", VerifierSchema),
        ("job", JobSchema),
        ("lease", LeaseSchema),
        ("commitment", CommitmentSchema),
        ("dispute", DisputeSchema),
    ],
)
def test_schema_dumps_every_field_of_the_protocol_object(
    objects: dict[str, dict[str, object]], name: str, schema: type[ma.Schema]
) -> None:
    """Dumping a protocol object through its response schema keeps every field and value."""
    original = objects[name]
    assert schema().dump(original) == original
