"""What every party to a job computes alike: the state layout, its initialization, the batch
of each step, the optimizer's float32 hyperparameters, and the state hash.

Normative text: specs/proof.md §1. Pure numpy and hashlib; the kernels that advance a state
by one step are in `verifier.kernels` (CPU) and `verifier.cuda_kernels` (CUDA).

A `TrainState` is the model's parameters and the optimizer's state after `step` steps:
  - parameters W0, b0, W1, b1, …: layer l maps width[l] to width[l + 1], W_l is
    (width[l + 1], width[l]) row-major float32 and b_l is (width[l + 1],);
  - per parameter, the optimizer's slots: SGD keeps a momentum buffer, AdamW keeps m and v;
  - AdamW also keeps beta1**t and beta2**t as float32 scalars, each advanced by one float32
    multiplication per step (never `pow`, whose last bit differs between libraries).
Its arrays are read-only: a state is a value, and a step makes a new one.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
from blake3 import blake3

from protocol.jobspec import AdamW, JobSpec, MlpModel, Optimizer, Sgd
from protocol.sampling import uniform_subset
from verifier.errors import InvalidState

Float32Array = npt.NDArray[np.float32]

INIT_DOMAIN = b"blacktail/init/v1"
BATCH_DOMAIN = b"blacktail/batch/v1"
STATE_DOMAIN = b"blacktail/state/v2"

# The optimizer's per-parameter slots and scalars, in the order they are hashed.
SLOT_NAMES: Mapping[str, tuple[str, ...]] = {Sgd.name: ("momentum",), AdamW.name: ("m", "v")}
POWER_NAMES: Mapping[str, tuple[str, ...]] = {
    Sgd.name: (),
    AdamW.name: ("beta1_power", "beta2_power"),
}
STEP_TENSOR = "step"
step_max = 2**64 - 1
# 24-bit uniform draws: k / 2**24 is exact in float32, and so is 2u - 1 = (k - 2**23) / 2**23.
_DRAW_BITS = 24
_WORD_BYTES = 4
_BLOCK_WORDS = 8


@dataclass(frozen=True, slots=True)
class SgdHyper:
    """SGD's hyperparameters as the float32 values the kernels use."""

    lr: np.float32
    momentum: np.float32
    weight_decay: np.float32

    name = Sgd.name


@dataclass(frozen=True, slots=True)
class AdamWHyper:
    """AdamW's hyperparameters as the float32 values the kernels use."""

    lr: np.float32
    beta1: np.float32
    beta2: np.float32
    eps: np.float32
    weight_decay: np.float32

    name = AdamW.name


Hyper = SgdHyper | AdamWHyper


def hyper_from_spec(optimizer: Optimizer) -> Hyper:
    """The optimizer's hyperparameters rounded to float32 as specs/jobspec.md prescribes."""
    if isinstance(optimizer, Sgd):
        return SgdHyper(
            lr=np.float32(optimizer.lr.float32()),
            momentum=np.float32(optimizer.momentum.float32()),
            weight_decay=np.float32(optimizer.weight_decay.float32()),
        )
    return AdamWHyper(
        lr=np.float32(optimizer.lr.float32()),
        beta1=np.float32(optimizer.beta1.float32()),
        beta2=np.float32(optimizer.beta2.float32()),
        eps=np.float32(optimizer.eps.float32()),
        weight_decay=np.float32(optimizer.weight_decay.float32()),
    )


def parameter_shapes(widths: Sequence[int]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter in order: param.0.W, param.0.b, param.1.W, …"""
    shapes: list[tuple[str, tuple[int, ...]]] = []
    for layer, (fan_in, fan_out) in enumerate(pairwise(widths)):
        shapes.append((f"param.{layer}.W", (fan_out, fan_in)))
        shapes.append((f"param.{layer}.b", (fan_out,)))
    return shapes


def tensor_layout(widths: Sequence[int], optimizer: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every float32 tensor of a state, in the canonical (hashed) order."""
    params = parameter_shapes(widths)
    layout = list(params)
    for slot in SLOT_NAMES[optimizer]:
        layout += [(f"opt.{slot}." + name.removeprefix("param."), shape) for name, shape in params]
    layout += [(f"opt.{power}", ()) for power in POWER_NAMES[optimizer]]
    return layout


def _frozen(array: npt.ArrayLike) -> Float32Array:
    """A read-only, C-contiguous, native float32 copy of `array` (exact for float32 input)."""
    out = np.array(array, dtype=np.float32, order="C", copy=True)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, slots=True, eq=False)
class TrainState:
    """Parameters and optimizer state after `step` steps (see the module docstring)."""

    step: int
    optimizer: str
    params: tuple[Float32Array, ...]
    slots: tuple[tuple[Float32Array, ...], ...]
    powers: tuple[Float32Array, ...]

    def __post_init__(self) -> None:
        # Invariants of a value every kernel reads: checked where a state is made, so a
        # malformed one fails here and not deep inside a kernel.
        assert 0 <= self.step <= step_max, self.step
        assert self.optimizer in SLOT_NAMES, self.optimizer
        assert len(self.params) % 2 == 0 and self.params, len(self.params)
        assert len(self.slots) == len(SLOT_NAMES[self.optimizer])
        assert len(self.powers) == len(POWER_NAMES[self.optimizer])
        layout = tensor_layout(self.widths, self.optimizer)
        for (name, shape), array in zip(layout, self.arrays(), strict=True):
            assert array.dtype == np.float32, (name, array.dtype)
            assert array.shape == shape, (name, array.shape, shape)
            assert array.flags.c_contiguous and not array.flags.writeable, name

    @classmethod
    def create(
        cls,
        step: int,
        optimizer: str,
        params: Sequence[npt.ArrayLike],
        slots: Sequence[Sequence[npt.ArrayLike]],
        powers: Sequence[npt.ArrayLike] = (),
    ) -> TrainState:
        """Build a state from array-likes, copying each into a read-only float32 array."""
        return cls(
            step,
            optimizer,
            tuple(_frozen(p) for p in params),
            tuple(tuple(_frozen(a) for a in slot) for slot in slots),
            tuple(_frozen(p) for p in powers),
        )

    @property
    def widths(self) -> tuple[int, ...]:
        """Layer widths from the input to the logits."""
        weights = self.params[0::2]
        return (weights[0].shape[1], *(w.shape[0] for w in weights))

    def slot(self, name: str) -> tuple[Float32Array, ...]:
        """The optimizer slot `name` ("momentum", "m" or "v"), one array per parameter."""
        return self.slots[SLOT_NAMES[self.optimizer].index(name)]

    def arrays(self) -> Iterator[Float32Array]:
        """Every float32 tensor in the canonical order of `tensor_layout`."""
        yield from self.params
        for slot in self.slots:
            yield from slot
        yield from self.powers

    def to_tensors(self) -> dict[str, npt.NDArray[np.generic]]:
        """name -> array for safetensors: the float32 tensors and `step` as a 0-d uint64."""
        names = (name for name, _ in tensor_layout(self.widths, self.optimizer))
        tensors: dict[str, npt.NDArray[np.generic]] = {
            STEP_TENSOR: np.array(self.step, dtype=np.uint64)
        }
        tensors.update(zip(names, self.arrays(), strict=True))
        return tensors

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, npt.NDArray[np.generic]], model: MlpModel, optimizer: str
    ) -> TrainState:
        """Read a state written by `to_tensors` (untrusted: every name, dtype, shape checked)."""
        if optimizer not in SLOT_NAMES:
            raise InvalidState(f"unknown optimizer {optimizer!r}")
        layout = tensor_layout(model.widths, optimizer)
        expected = {STEP_TENSOR, *(name for name, _ in layout)}
        if set(tensors) != expected:
            missing = sorted(expected - set(tensors))
            unknown = sorted(set(tensors) - expected)
            raise InvalidState(
                f"state tensors do not fit the model: missing {missing}, unknown {unknown}"
            )
        step_array = np.asarray(tensors[STEP_TENSOR])
        if step_array.shape != () or step_array.dtype != np.uint64:
            raise InvalidState(
                f"step: expected a 0-d uint64, got {step_array.dtype} {step_array.shape}",
                tensor=STEP_TENSOR,
            )
        arrays: list[Float32Array] = []
        for name, shape in layout:
            array = np.asarray(tensors[name])
            if array.dtype != np.float32 or array.shape != shape:
                raise InvalidState(
                    f"{name}: expected float32 {shape}, got {array.dtype} {array.shape}",
                    tensor=name,
                )
            arrays.append(_frozen(array))
        n_params = 2 * (len(model.widths) - 1)
        n_slots = len(SLOT_NAMES[optimizer])
        params = tuple(arrays[:n_params])
        slots = tuple(
            tuple(arrays[n_params * (s + 1) : n_params * (s + 2)]) for s in range(n_slots)
        )
        powers = tuple(arrays[n_params * (n_slots + 1) :])
        return cls(int(step_array), optimizer, params, slots, powers)

    def hash(self) -> bytes:
        """The state hash (specs/proof.md §1.6): a leaf of the segment's commitment."""
        return state_hash(self)


def state_hash(state: TrainState) -> bytes:
    """BLAKE3-256 of the canonical encoding of the state (specs/proof.md §1.6).

    BLAKE3(domain ‖ u64be(step) ‖ u32be(T) ‖ for each of the T tensors in canonical order:
    u32be(len(name)) ‖ name ‖ u32be(ndim) ‖ u64be(dim)… ‖ the elements as little-endian
    float32, row-major). The arrays are hashed in place, without a copy, and the tensor
    headers come from a cache: a provider hashes every state it trains, so this is on the
    training loop's critical path (BLAKE3 reads about 3.5 GB/s here, SHA-256 about 1).
    """
    headers = _tensor_headers(state.widths, state.optimizer)
    prefix = STATE_DOMAIN + state.step.to_bytes(8, "big") + len(headers).to_bytes(4, "big")
    arrays = list(state.arrays())
    if not _LITTLE_ENDIAN:
        arrays = [a.astype("<f4") for a in arrays]
    size = sum(a.nbytes for a in arrays)
    if size <= _JOIN_BYTES_MAX:
        # One call over one buffer: each call into the hash costs microseconds, which for
        # the small states of small models is most of the time a hash takes.
        parts: list[Any] = [prefix]
        for header, array in zip(headers, arrays, strict=True):
            parts += (header, array)
        return blake3(b"".join(parts)).digest()
    # Large states are hashed on every core: BLAKE3's tree mode gives the same digest
    # whatever the thread count (about 2x on two cores for a 50 MB state).
    threads = blake3.AUTO if size >= _THREADED_BYTES_MIN else 1
    h = blake3(prefix, max_threads=threads)
    for header, array in zip(headers, arrays, strict=True):
        h.update(header)
        h.update(array.reshape(-1).view(np.uint8).data)
    return h.digest()


# States up to this size are copied into one buffer before hashing (the copy is cheaper
# than a call per tensor); larger ones are hashed tensor by tensor, in place.
_JOIN_BYTES_MAX = 1 << 20
# States from this size are hashed with BLAKE3's multi-threaded update (below it, waking
# the threads costs more than it saves).
_THREADED_BYTES_MIN = 2 << 20
_LITTLE_ENDIAN = sys.byteorder == "little"


@lru_cache(maxsize=64)
def _tensor_headers(widths: tuple[int, ...], optimizer: str) -> tuple[bytes, ...]:
    """Per tensor: u32be(len(name)) ‖ name ‖ u32be(ndim) ‖ u64be(dim)…"""
    return tuple(
        len(name).to_bytes(4, "big")
        + name.encode("ascii")
        + len(shape).to_bytes(4, "big")
        + b"".join(dim.to_bytes(8, "big") for dim in shape)
        for name, shape in tensor_layout(widths, optimizer)
    )


def init_seed(seed: int, layer: int, tensor: int) -> bytes:
    """SHA-256(init domain ‖ u64be(seed) ‖ u32be(layer) ‖ u32be(tensor)); tensor 0 is W, 1 is b."""
    return hashlib.sha256(
        INIT_DOMAIN + seed.to_bytes(8, "big") + layer.to_bytes(4, "big") + tensor.to_bytes(4, "big")
    ).digest()


def stream_words(seed: bytes, count: int) -> npt.NDArray[np.uint32]:
    """The first `count` words of the SHA-256 counter-mode stream of `seed`.

    The stream of `protocol.sampling` (specs/compute_sampling_fees.md §2): block c is
    SHA-256(seed ‖ u64be(c)), read as big-endian 32-bit words. About a microsecond per
    block of 8 words here, so a million parameters cost about 0.15 s.
    """
    blocks = -(-count // _BLOCK_WORDS)
    prefix = hashlib.sha256(seed)
    raw = bytearray(blocks * _BLOCK_WORDS * _WORD_BYTES)
    for c in range(blocks):
        h = prefix.copy()
        h.update(c.to_bytes(8, "big"))
        raw[c * 32 : c * 32 + 32] = h.digest()
    words: npt.NDArray[np.uint32] = np.frombuffer(bytes(raw), dtype=">u4")[:count].astype(np.uint32)
    return words


def uniform_tensor(seed: bytes, shape: tuple[int, ...], bound: np.float32) -> Float32Array:
    """Elements (row-major) s ⊗ bound with s = (k - 2**23) / 2**23, k the top 24 bits of a word."""
    count = int(np.prod(shape, dtype=np.int64))
    k = (stream_words(seed, count) >> np.uint32(32 - _DRAW_BITS)).astype(np.int64)
    # Both the subtraction and the division by a power of two are exact in float32, so
    # the one rounding is the multiplication by the bound.
    s = (k - 2 ** (_DRAW_BITS - 1)).astype(np.float32) / np.float32(2 ** (_DRAW_BITS - 1))
    values: Float32Array = (s * bound).astype(np.float32).reshape(shape)
    return values


def init_bound(fan_in: int) -> np.float32:
    """1 ⊘ √fan_in in float32, each operation correctly rounded (torch.nn.Linear's bound)."""
    return np.float32(np.float32(1.0) / np.sqrt(np.float32(fan_in)))


def init_state(model: MlpModel, optimizer: str, seed: int) -> TrainState:
    """State 0: parameters drawn from the seed, optimizer slots zero, beta powers one."""
    params: list[Float32Array] = []
    for layer, (fan_in, fan_out) in enumerate(pairwise(model.widths)):
        bound = init_bound(fan_in)
        params.append(uniform_tensor(init_seed(seed, layer, 0), (fan_out, fan_in), bound))
        params.append(uniform_tensor(init_seed(seed, layer, 1), (fan_out,), bound))
    slots = [[np.zeros_like(p) for p in params] for _ in SLOT_NAMES[optimizer]]
    powers = [np.float32(1.0) for _ in POWER_NAMES[optimizer]]
    return TrainState.create(0, optimizer, params, slots, powers)


def initial_state(spec: JobSpec) -> TrainState:
    """State 0 of the job."""
    return init_state(spec.model, spec.optimizer.name, spec.seed)


def batch_seed(seed: int, step: int) -> bytes:
    """SHA-256(batch domain ‖ u64be(seed) ‖ u64be(step)): the key of step `step`'s batch."""
    return hashlib.sha256(BATCH_DOMAIN + seed.to_bytes(8, "big") + step.to_bytes(8, "big")).digest()


def batch_indices(seed: int, step: int, examples: int, batch_size: int) -> npt.NDArray[np.int64]:
    """The ascending example indices of step `step`'s batch: B distinct draws from N."""
    return np.array(uniform_subset(batch_seed(seed, step), examples, batch_size), dtype=np.int64)
