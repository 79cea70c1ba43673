"""The shared definitions of specs/proof.md §1: initialization, batches, layout and state hash.

Golden vectors pin every byte a provider and a verifier must agree on; the state hash is
also recomputed here from the spec's text by a second, plain encoder.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from blake3 import blake3
from safetensors.numpy import load, save

from protocol.jobspec import MlpModel, parse_job_spec
from protocol.sampling import uniform_subset
from tests.verifier import cases
from verifier.errors import InvalidState
from verifier.model import (
    TrainState,
    batch_indices,
    batch_seed,
    hyper_from_spec,
    init_bound,
    init_seed,
    init_state,
    initial_state,
    stream_words,
    tensor_layout,
)

FIXTURE = Path(__file__).parents[1] / "protocol" / "fixtures" / "jobspec_digits.yaml"
SEED = 1234567890123456789


def _bits(values: np.ndarray) -> list[str]:
    return [f"0x{v:08x}" for v in np.ascontiguousarray(values, np.float32).view(np.uint32)]


def test_init_seed_and_stream_are_pinned() -> None:
    """The init key is SHA-256(domain, u64 seed, u32 layer, u32 tensor); its words are pinned."""
    key = init_seed(SEED, 0, 0)
    assert key == hashlib.sha256(b"blacktail/init/v1" + struct.pack(">QII", SEED, 0, 0)).digest()
    assert key.hex() == "faf9995ee6b86674f4d6e66765fdbfa226df7b22d83b5554e8378f7811e4499b"
    assert init_seed(SEED, 2, 1).hex() == (
        "f4c318d3fcf04dfc18df99e7d846574ee5b4fbf2c907f1038c93c8cff8f71b5a"
    )
    assert [int(w) for w in stream_words(key, 4)] == [
        2946998469,
        2681461480,
        1588902818,
        1671542224,
    ]


def test_init_bound_is_the_correctly_rounded_inverse_square_root() -> None:
    """bound = 1 / sqrt(fan_in) in float32, each operation rounded once (pinned bits)."""
    expected = {1: 0x3F800000, 3: 0x3F13CD3A, 10: 0x3EA1E89B, 64: 0x3E000000, 784: 0x3D124925}
    for fan_in, bits in expected.items():
        assert np.array(init_bound(fan_in)).view(np.uint32) == bits


def test_initial_parameters_of_the_fixture_job_are_pinned() -> None:
    """The digits fixture's first weights and last biases, and state 0's hashes, are pinned."""
    model = MlpModel(64, (64, 32), 10)
    state = init_state(model, "adamw", SEED)
    assert _bits(state.params[0].reshape(-1)[:4]) == [
        "0x3d3e9e80",
        "0x3cfe9ed0",
        "0xbd052d14",
        "0xbce2f258",
    ]
    assert _bits(state.params[5][:3]) == ["0xbcd47767", "0xbcd0b475", "0x3dafe3c9"]
    assert state.hash().hex() == (
        "4722fab1d140955fcfa70bd2ed07df6665ed926ea7c91b678347237753b5cb71"
    )
    assert init_state(model, "sgd", SEED).hash().hex() == (
        "3a155d672c408be524ee14e66779712a29fad0f125ac0dc6bd250cf49901f065"
    )
    spec = parse_job_spec(json.loads(FIXTURE.read_text()))
    assert initial_state(spec).hash() == state.hash()


def test_initial_weights_follow_the_24_bit_draw_rule() -> None:
    """Element e of a tensor is ((word_e >> 8) - 2**23) / 2**23 times the bound, row-major."""
    state = init_state(MlpModel(5, (), 3), "sgd", 9)
    words = stream_words(init_seed(9, 0, 0), 15)
    expected = [
        np.float32(np.float32(((int(w) >> 8) - 2**23) / 2**23) * init_bound(5)) for w in words
    ]
    assert state.params[0].reshape(-1).tolist() == [float(v) for v in expected]
    assert np.all(np.abs(state.params[1]) < init_bound(5))
    assert all(not np.any(a) for a in state.slot("momentum"))


def test_batch_seed_and_indices_are_pinned() -> None:
    """The batch of step t is uniform_subset(SHA-256(domain, u64 seed, u64 t), N, B)."""
    key = batch_seed(SEED, 0)
    assert key == hashlib.sha256(b"blacktail/batch/v1" + struct.pack(">QQ", SEED, 0)).digest()
    assert key.hex() == "f95e6e1d2b1be6e8ca2fc5c8e135306b28941b78427f808778a7dd5e5ddb4d9e"
    assert batch_indices(SEED, 0, 1797, 8).tolist() == [78, 109, 209, 304, 323, 423, 841, 1608]
    assert batch_indices(SEED, 599, 1797, 8).tolist() == [
        87,
        484,
        568,
        879,
        989,
        1283,
        1368,
        1484,
    ]
    assert batch_indices(0, 0, 10, 4).tolist() == [0, 1, 4, 8]
    assert batch_indices(SEED, 5, 1797, 64).tolist() == uniform_subset(
        batch_seed(SEED, 5), 1797, 64
    )


def test_the_whole_dataset_is_every_batch_when_b_equals_n() -> None:
    """B = N takes every example once, in ascending order."""
    assert batch_indices(3, 17, 6, 6).tolist() == [0, 1, 2, 3, 4, 5]


def _plain_state_hash(state: TrainState) -> bytes:
    """The encoding of specs/proof.md §1.6, written from the text."""
    layout = tensor_layout(state.widths, state.optimizer)
    out = b"blacktail/state/v2" + struct.pack(">QI", state.step, len(layout))
    for (name, shape), array in zip(layout, state.arrays(), strict=True):
        out += struct.pack(">I", len(name)) + name.encode() + struct.pack(">I", len(shape))
        out += b"".join(struct.pack(">Q", d) for d in shape)
        out += b"".join(struct.pack("<f", float(v)) for v in array.reshape(-1))
    return blake3(out).digest()


def test_state_hash_of_a_handmade_state_is_pinned() -> None:
    """A 2 -> 1 SGD state at step 3 hashes to the pinned vector and to the spec's encoding."""
    state = TrainState.create(3, "sgd", [[[1.0, -2.0]], [0.5]], [[[[0.25, 0.0]], [-1.0]]])
    assert [name for name, _ in tensor_layout(state.widths, "sgd")] == [
        "param.0.W",
        "param.0.b",
        "opt.momentum.0.W",
        "opt.momentum.0.b",
    ]
    assert state.hash() == _plain_state_hash(state)
    assert state.hash().hex() == (
        "fec428940108b025191ba10b93b8b3af99968d6c915bf11a4613ebb625a170fa"
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_state_hash_matches_the_plain_encoding_for_deeper_models(optimizer: str) -> None:
    """Every tensor, the step and the beta powers enter the hash as the spec lays them out."""
    state = init_state(MlpModel(3, (4, 2), 2), optimizer, 5)
    assert state.hash() == _plain_state_hash(state)


def test_state_hash_changes_with_any_bit_and_with_the_step() -> None:
    """Flipping one bit of any tensor, or changing the step, changes the hash."""
    state = init_state(MlpModel(3, (2,), 2), "adamw", 1)
    base = state.hash()
    tensors = state.to_tensors()
    for name in tensors:
        if name == "step":
            continue
        flipped = dict(tensors)
        array = np.array(tensors[name], dtype=np.float32)
        array.reshape(-1).view(np.uint32)[0] ^= 1
        flipped[name] = array
        model = MlpModel(3, (2,), 2)
        assert TrainState.from_tensors(flipped, model, "adamw").hash() != base, name
    later = TrainState(4, state.optimizer, state.params, state.slots, state.powers)
    assert later.hash() != base


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_state_round_trips_through_safetensors(optimizer: str) -> None:
    """to_tensors -> safetensors bytes -> from_tensors gives the same state and hash."""
    model = MlpModel(4, (3,), 2)
    state = init_state(model, optimizer, 11)
    blob = save(state.to_tensors())
    back = TrainState.from_tensors(load(blob), model, optimizer)
    assert back.step == state.step and back.hash() == state.hash()
    assert all(not a.flags.writeable for a in back.arrays())


def test_from_tensors_refuses_states_that_do_not_fit_the_model() -> None:
    """Missing, unknown, mistyped or misshapen tensors are refused with the tensor named."""
    model = MlpModel(4, (3,), 2)
    good = init_state(model, "sgd", 1).to_tensors()
    with pytest.raises(InvalidState):
        TrainState.from_tensors({k: v for k, v in good.items() if k != "param.0.b"}, model, "sgd")
    with pytest.raises(InvalidState):
        TrainState.from_tensors({**good, "extra": np.zeros(1, np.float32)}, model, "sgd")
    with pytest.raises(InvalidState) as caught:
        TrainState.from_tensors({**good, "param.1.W": np.zeros((2, 3), np.float64)}, model, "sgd")
    assert caught.value.tensor == "param.1.W"
    with pytest.raises(InvalidState) as caught:
        TrainState.from_tensors({**good, "opt.momentum.0.b": np.zeros(4, np.float32)}, model, "sgd")
    assert caught.value.tensor == "opt.momentum.0.b"
    with pytest.raises(InvalidState) as caught:
        TrainState.from_tensors({**good, "step": np.array(1, np.int32)}, model, "sgd")
    assert caught.value.tensor == "step"
    with pytest.raises(InvalidState):
        TrainState.from_tensors(good, model, "adamw")


def test_hyperparameters_are_the_spec_float32_values() -> None:
    """The kernels' hyperparameters are the specs' correctly rounded float32 values."""
    spec = parse_job_spec(json.loads(FIXTURE.read_text()))
    hyper = hyper_from_spec(spec.optimizer)
    assert _bits(np.array([hyper.lr, hyper.beta1, hyper.beta2, hyper.eps, hyper.weight_decay])) == [  # type: ignore[union-attr]
        "0x3a83126f",
        "0x3f666666",
        "0x3f7fbe77",
        "0x322bcc77",
        "0x3c23d70a",
    ]
    assert isinstance(hyper_from_spec(cases.spec().optimizer).lr, np.float32)


def test_a_large_state_hashed_tensor_by_tensor_matches_the_encoding() -> None:
    """A state over the one-buffer limit (2.4 MB) hashes as the encoding of §1.6 says."""
    state = init_state(MlpModel(600, (), 500), "sgd", 7)
    assert sum(a.nbytes for a in state.arrays()) > 1 << 20
    layout = tensor_layout(state.widths, state.optimizer)
    out = b"blacktail/state/v2" + struct.pack(">QI", state.step, len(layout))
    for (name, shape), array in zip(layout, state.arrays(), strict=True):
        out += struct.pack(">I", len(name)) + name.encode() + struct.pack(">I", len(shape))
        out += b"".join(struct.pack(">Q", d) for d in shape) + array.astype("<f4").tobytes()
    assert state.hash() == blake3(out).digest()
