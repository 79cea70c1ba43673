"""Training states as safetensors blobs: round trip, stable bytes, hostile bytes refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from protocol.jobspec import parse_job_spec
from verifier.checkpoints import blob_digest, decode_state, encode_state
from verifier.errors import InvalidState
from verifier.model import initial_state

TINY = Path(__file__).resolve().parents[2] / "specs" / "examples" / "tiny.yaml"


def test_a_state_round_trips_through_its_blob_with_stable_bytes() -> None:
    """Encoding a state twice gives the same bytes, and decoding gives the same state hash."""
    spec = parse_job_spec(yaml.safe_load(TINY.read_text()))
    state = initial_state(spec)
    data = encode_state(state)
    assert blob_digest(data) == blob_digest(encode_state(state))
    assert decode_state(data, spec).hash() == state.hash()


def test_hostile_or_mismatched_bytes_are_refused() -> None:
    """Garbage, a pickle and a state of another model are each refused as InvalidState."""
    spec = parse_job_spec(yaml.safe_load(TINY.read_text()))
    other = yaml.safe_load(TINY.read_text())
    other["model"]["hidden"] = [8]
    wrong_model = encode_state(initial_state(parse_job_spec(other)))
    for data in (b"garbage", b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00.", wrong_model):
        with pytest.raises(InvalidState):
            decode_state(data, spec)
