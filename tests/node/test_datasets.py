"""Content-addressed datasets: builders, the manifest and its id, checked loading, the blob
store round trip, the example job specs and the `blacktail dataset` commands."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
import struct
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save

from node import datasets
from node.blobs import BlobStore
from node.cli import main
from node.datasets import (
    DATA_FILE,
    MANIFEST_FILE,
    DataFileDigestMismatch,
    DataFileSizeMismatch,
    DatasetArrays,
    DatasetError,
    DatasetFiles,
    DatasetNotFound,
    InvalidDataFile,
    InvalidDatasetId,
    InvalidDatasetParameter,
    InvalidManifest,
    LabelOutOfRange,
    Manifest,
    ManifestDigestMismatch,
    NonFiniteFeature,
    TensorMismatch,
    build_digits,
    build_synthetic,
    fetch,
    load_dataset,
    publish,
    save_dataset,
)
from protocol import canonical
from protocol.jobspec import parse_job_spec
from tests.gateway_server import run_gateway

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "specs" / "examples"
# Golden ids (specs/datasets.md): a change to a builder, the manifest format or the pinned
# safetensors writer changes them, and every job spec that names the dataset with them.
DIGITS_ID = "0x36eee4cfa46808a7ccf8043b3b203dd657273d65fd7abe4b16e9ab9ee96002f9"
TINY_ID = "0x9ffa86fcd5ade787ff1ae439527eda9c7ceb6456a0c4cd087134526ee9fe6123"
TINY_ARGS = (0, 512, 16, 4)

# -- the synthetic generator, written again from specs/datasets.md alone -------------------

_PCG_MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645
_MASK64 = (1 << 64) - 1


def _reference_words(seed: int, features: int, classes: int) -> Iterator[int]:
    key = hashlib.sha256(
        b"blacktail/datasets/synthetic/v1"
        + seed.to_bytes(8, "big")
        + features.to_bytes(4, "big")
        + classes.to_bytes(4, "big")
    ).digest()
    state = int.from_bytes(key[:16], "big")
    increment = int.from_bytes(key[16:], "big") | 1
    while True:
        state = (state * _PCG_MULTIPLIER + increment) % (1 << 128)
        folded = (state >> 64) ^ (state & _MASK64)
        rotation = state >> 122
        yield ((folded >> rotation) | (folded << (64 - rotation))) & _MASK64


def _lanes(word: int) -> list[int]:
    return [(word >> shift) & 0xFFFF for shift in (0, 16, 32, 48)]


def _reference_synthetic(
    seed: int, examples: int, features: int, classes: int
) -> tuple[np.ndarray, np.ndarray]:
    words = _reference_words(seed, features, classes)
    centre_words = -(-classes * features // 4)
    lanes = [lane for word in islice(words, centre_words) for lane in _lanes(word)]
    centre = [[lanes[a * features + j] - 32_768 for j in range(features)] for a in range(classes)]
    rows, labels = [], []
    for _ in range(examples):
        label = ((next(words) >> 32) * classes) >> 32
        noise = [sum(_lanes(next(words))) - 131_070 for _ in range(features)]
        # Python floats hold integer * 2**-15 exactly, and so does float32 below 2**18.
        rows.append([(centre[label][j] + noise[j]) * 2.0**-15 for j in range(features)])
        labels.append(label)
    return (
        np.array(rows, dtype=np.float32).reshape(examples, features),
        np.array(labels, dtype=np.int32),
    )


# -- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny")
    save_dataset(build_synthetic(*TINY_ARGS), directory)
    return directory


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("digits")
    save_dataset(build_digits(), directory)
    return directory


@pytest.fixture
def tiny_copy(tiny_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny dataset, for a test to damage."""
    return Path(shutil.copytree(tiny_dir, tmp_path / "copy"))


def _craft(directory: Path, data: bytes, examples: int, features: int, classes: int = 4) -> str:
    """Write `data` as a dataset file with an honest manifest for it; the dataset's id.

    A lying publisher controls both files, so every attack below comes with a manifest whose
    digests match: only the file's contents can give it away.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DATA_FILE).write_bytes(data)
    digest = hashlib.sha256(data).digest()
    manifest = Manifest("crafted", examples, features, classes, digest, len(data), "a test")
    (directory / MANIFEST_FILE).write_bytes(manifest.encode())
    return manifest.id


def _arrays(examples: int = 8, features: int = 3) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(examples * features, dtype=np.float32).reshape(examples, features) / 8
    y = (np.arange(examples) % 4).astype(np.int32)
    return x, y


def _rewrite_manifest(directory: Path, document: object) -> str:
    raw = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    (directory / MANIFEST_FILE).write_bytes(raw)
    return "0x" + hashlib.sha256(raw).hexdigest()


def _manifest_json(directory: Path) -> dict[str, object]:
    document: dict[str, object] = json.loads((directory / MANIFEST_FILE).read_bytes())
    return document


# -- builders ----------------------------------------------------------------------------


def test_digits_build_is_deterministic_and_its_id_is_pinned(
    digits_dir: Path, tmp_path: Path
) -> None:
    """Two digits builds write the same bytes, and their id is the golden one."""
    again = save_dataset(build_digits(), tmp_path)
    assert again.id == DIGITS_ID
    for name in (DATA_FILE, MANIFEST_FILE):
        assert (tmp_path / name).read_bytes() == (digits_dir / name).read_bytes()
    loaded = load_dataset(digits_dir, DIGITS_ID)
    assert loaded.x.shape == (1797, 64) and loaded.y.shape == (1797,)
    assert np.all(loaded.x * 16 == np.round(loaded.x * 16))  # pixel counts / 16, exactly
    assert loaded.x.min() == 0 and loaded.x.max() == 1
    assert np.bincount(loaded.y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_synthetic_builds_are_byte_identical(tmp_path: Path) -> None:
    """Two builds with the same arguments write the same two files, so the same id."""
    first = save_dataset(build_synthetic(*TINY_ARGS), tmp_path / "a")
    second = save_dataset(build_synthetic(*TINY_ARGS), tmp_path / "b")
    assert first.id == second.id == TINY_ID
    for name in (DATA_FILE, MANIFEST_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_synthetic_datasets_differ_across_seeds(tmp_path: Path) -> None:
    """Another seed gives other features, other labels and another id."""
    a = build_synthetic(0, 256, 16, 4)
    b = build_synthetic(1, 256, 16, 4)
    assert not np.array_equal(a.x, b.x)
    assert not np.array_equal(a.y, b.y)
    assert save_dataset(a, tmp_path / "a").id != save_dataset(b, tmp_path / "b").id


def test_synthetic_generator_follows_the_spec_test_vector() -> None:
    """The PCG64 state and first words, labels and values are those specs/datasets.md lists."""
    generator = datasets.synthetic_bit_generator(0, 16, 4)
    assert [int(w) for w in generator.random_raw(3)] == [
        0x031BECEBB0D0DE71,
        0x5CA0DC8CB7927346,
        0xAA9520C048E368B5,
    ]
    assert list(islice(_reference_words(0, 16, 4), 3)) == [
        0x031BECEBB0D0DE71,
        0x5CA0DC8CB7927346,
        0xAA9520C048E368B5,
    ]
    built = build_synthetic(*TINY_ARGS)
    assert built.y[:4].tolist() == [0, 1, 0, 3]
    assert (built.x[0, :4] * 2**15).tolist() == [-21_674, 62_086, -68_291, -12_103]


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**64 - 1),
    examples=st.integers(1, 12),
    features=st.integers(1, 7),
    classes=st.integers(2, 9),
)
def test_synthetic_arrays_equal_an_independent_implementation_of_the_spec(
    seed: int, examples: int, features: int, classes: int
) -> None:
    """build_synthetic equals a pure-Python reading of the spec's generator, for any size."""
    built = build_synthetic(seed, examples, features, classes)
    x, y = _reference_synthetic(seed, examples, features, classes)
    assert built.x.tobytes() == x.tobytes()
    assert built.y.tobytes() == y.tobytes()
    assert built.y.min() >= 0 and built.y.max() < classes


def test_synthetic_output_does_not_depend_on_the_chunk_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Generating in many small chunks gives the bytes of one large chunk, with progress."""
    whole = build_synthetic(3, 1000, 10, 5)
    monkeypatch.setattr(datasets, "synthetic_chunk_bytes", 8 * 11 * 7)  # 7 rows a chunk
    reported: list[int] = []
    chunked = build_synthetic(3, 1000, 10, 5, progress=reported.append)
    assert chunked.x.tobytes() == whole.x.tobytes()
    assert chunked.y.tobytes() == whole.y.tobytes()
    assert reported[0] == 7 and reported[-1] == 1000 and reported == sorted(reported)


def test_smaller_synthetic_set_is_a_prefix_of_a_larger_one() -> None:
    """The stream does not depend on the example count, so sizes nest."""
    small = build_synthetic(9, 100, 8, 3)
    large = build_synthetic(9, 300, 8, 3)
    assert np.array_equal(large.x[:100], small.x)
    assert np.array_equal(large.y[:100], small.y)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((-1, 10, 4, 2), "seed"),
        ((2**64, 10, 4, 2), "seed"),
        ((0, 0, 4, 2), "examples"),
        ((0, 10, 0, 2), "features"),
        ((0, 10, 4, 1), "classes"),
        ((0, 10, 65_536, 65_536), "classes"),  # 2**32 centres
        ((0, 2**32, 4096, 2), "examples"),  # a 64 TiB file
        ((True, 10, 4, 2), "seed"),
    ],
)
def test_synthetic_refuses_arguments_out_of_bounds(
    args: tuple[int, int, int, int], field: str
) -> None:
    """Each bad argument is refused with its name, before any memory is allocated."""
    with pytest.raises(InvalidDatasetParameter) as caught:
        build_synthetic(*args)
    assert caught.value.field == field


# -- saving ------------------------------------------------------------------------------


def test_saved_file_is_the_layout_the_spec_fixes_and_reads_back_with_safetensors(
    tiny_dir: Path,
) -> None:
    """The data file is the spec's space-padded header, then x, then y; safetensors reads it."""
    data = (tiny_dir / DATA_FILE).read_bytes()
    header = (
        b'{"x":{"dtype":"F32","shape":[512,16],"data_offsets":[0,32768]},'
        b'"y":{"dtype":"I32","shape":[512],"data_offsets":[32768,34816]}}'
    )
    padded = header + b" " * (-len(header) % 8)
    assert data[:8] == struct.pack("<Q", len(padded))
    assert data[8 : 8 + len(padded)] == padded
    built = build_synthetic(*TINY_ARGS)
    assert (
        data[8 + len(padded) :] == built.x.astype("<f4").tobytes() + built.y.astype("<i4").tobytes()
    )
    tensors = load_file(tiny_dir / DATA_FILE)
    assert np.array_equal(tensors["x"], built.x) and np.array_equal(tensors["y"], built.y)
    assert (tiny_dir / MANIFEST_FILE).read_bytes() == canonical.encode(_manifest_json(tiny_dir))


def test_save_leaves_no_temporary_files_and_keeps_the_old_dataset_on_refusal(
    tiny_copy: Path,
) -> None:
    """A refused save changes nothing in the directory; a good one leaves exactly two files."""
    before = {p.name: p.read_bytes() for p in tiny_copy.iterdir()}
    x, y = _arrays()
    with pytest.raises(InvalidDatasetParameter) as caught:
        save_dataset(DatasetArrays("Not A Name", "a test", 4, x, y), tiny_copy)
    assert caught.value.field == "name"
    assert {p.name: p.read_bytes() for p in tiny_copy.iterdir()} == before
    save_dataset(DatasetArrays("small", "a test", 4, x, y), tiny_copy)
    assert sorted(p.name for p in tiny_copy.iterdir()) == [DATA_FILE, MANIFEST_FILE]


def test_save_refuses_arrays_a_reader_would_refuse(tmp_path: Path) -> None:
    """Labels out of range, NaN features and wrong dtypes are refused at write time too."""
    x, y = _arrays()
    with pytest.raises(LabelOutOfRange) as label:
        save_dataset(DatasetArrays("bad", "a test", 3, x, y), tmp_path)
    assert (label.value.example, label.value.label) == (3, 3)
    x_nan = x.copy()
    x_nan[5, 1] = np.nan
    with pytest.raises(NonFiniteFeature) as nan:
        save_dataset(DatasetArrays("bad", "a test", 4, x_nan, y), tmp_path)
    assert nan.value.example == 5
    with pytest.raises(InvalidDatasetParameter):
        save_dataset(DatasetArrays("bad", "a test", 4, x.astype(np.float64), y), tmp_path)
    assert not list(tmp_path.iterdir())


# -- loading: every lie is refused with its own error --------------------------------------


def test_load_returns_the_arrays_for_the_right_id(tiny_dir: Path) -> None:
    """The id of the directory's manifest loads the arrays the builder made."""
    loaded = load_dataset(tiny_dir, TINY_ID.upper().replace("0X", "0x"))
    built = build_synthetic(*TINY_ARGS)
    assert loaded.id == TINY_ID
    assert loaded.x.dtype == np.float32 and loaded.y.dtype == np.int32
    assert np.array_equal(loaded.x, built.x) and np.array_equal(loaded.y, built.y)
    assert (loaded.manifest.examples, loaded.manifest.features, loaded.manifest.classes) == (
        512,
        16,
        4,
    )


def test_load_refuses_a_wrong_id(tiny_dir: Path) -> None:
    """Another dataset's id is refused by the manifest digest, and a malformed id by form."""
    with pytest.raises(ManifestDigestMismatch) as caught:
        load_dataset(tiny_dir, DIGITS_ID)
    assert caught.value.expected == DIGITS_ID and caught.value.actual == TINY_ID
    with pytest.raises(InvalidDatasetId):
        load_dataset(tiny_dir, TINY_ID[2:])


def test_load_refuses_a_tampered_data_file(tiny_copy: Path) -> None:
    """One flipped bit in a feature is caught by the file digest."""
    path = tiny_copy / DATA_FILE
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DataFileDigestMismatch) as caught:
        load_dataset(tiny_copy, TINY_ID)
    assert caught.value.actual == "0x" + hashlib.sha256(data).hexdigest()


def test_load_refuses_a_truncated_data_file(tiny_copy: Path) -> None:
    """A file cut short is refused by its size before it is hashed or parsed."""
    path = tiny_copy / DATA_FILE
    whole = path.read_bytes()
    path.write_bytes(whole[:-4])
    with pytest.raises(DataFileSizeMismatch) as caught:
        load_dataset(tiny_copy, TINY_ID)
    assert (caught.value.expected, caught.value.actual) == (len(whole), len(whole) - 4)


def test_load_refuses_a_file_rewritten_in_place_after_it_was_hashed(
    tiny_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes changed between the digest pass and the reading pass never reach the arrays."""
    real_sha256 = datasets._sha256
    path = tiny_copy / DATA_FILE

    def hash_then_tamper(handle: BinaryIO) -> bytes:
        digest = real_sha256(handle)
        with path.open("r+b") as writer:  # the same file, not a replacement
            writer.seek(200)
            writer.write(b"\xff\xff\xff\xff")
        return digest

    monkeypatch.setattr(datasets, "_sha256", hash_then_tamper)
    with pytest.raises(DataFileDigestMismatch):
        load_dataset(tiny_copy, TINY_ID)


def test_load_refuses_a_missing_data_file(tiny_copy: Path) -> None:
    """A manifest without its data file is DatasetNotFound, naming the path."""
    (tiny_copy / DATA_FILE).unlink()
    with pytest.raises(DatasetNotFound) as caught:
        load_dataset(tiny_copy, TINY_ID)
    assert caught.value.where == str(tiny_copy / DATA_FILE)


@pytest.mark.parametrize(
    ("tensors", "culprit"),
    [
        # Self-consistent headers that disagree with the manifest (8 examples, 3 features).
        ({"x": np.zeros((3, 8), np.float32), "y": np.zeros(8, np.int32)}, "x"),
        ({"x": np.zeros((8, 3), np.int32), "y": np.zeros(8, np.int32)}, "x"),
        ({"x": np.zeros((8, 3), np.float32), "y": np.zeros(8, np.float32)}, "y"),
        ({"x": np.zeros((8, 3), np.float32), "y": np.zeros((8, 1), np.int32)}, "y"),
        ({"x": np.zeros((8, 3), np.float32), "z": np.zeros(8, np.int32)}, "x,z"),
    ],
)
def test_load_refuses_a_header_lying_about_shapes_or_dtypes(
    tmp_path: Path, tensors: dict[str, np.ndarray], culprit: str
) -> None:
    """A well-formed file whose tensors are not the manifest's x and y is TensorMismatch."""
    dataset_id = _craft(tmp_path, save(tensors), examples=8, features=3)
    with pytest.raises(TensorMismatch) as caught:
        load_dataset(tmp_path, dataset_id)
    assert caught.value.tensor == culprit


def test_load_refuses_a_file_with_metadata(tmp_path: Path) -> None:
    """A dataset file carries exactly two tensors and nothing else in its header."""
    x, y = _arrays()
    data = save({"x": x, "y": y}, metadata={"format": "np"})
    with pytest.raises(TensorMismatch) as caught:
        load_dataset(tmp_path, _craft(tmp_path, data, examples=8, features=3))
    assert caught.value.tensor == "__metadata__"


def test_load_refuses_a_header_whose_sizes_do_not_add_up(tiny_copy: Path, tmp_path: Path) -> None:
    """A header claiming a shape its byte range cannot hold is not a safetensors file."""
    data = (tiny_copy / DATA_FILE).read_bytes().replace(b'"shape":[512,16]', b'"shape":[512,15]')
    dataset_id = _craft(tmp_path, data, examples=512, features=16)
    with pytest.raises(InvalidDataFile) as caught:
        load_dataset(tmp_path, dataset_id)
    assert "needs 30720" in caught.value.reason


def test_load_refuses_a_pickle_disguised_as_safetensors(tmp_path: Path) -> None:
    """A pickle under the dataset file's name is refused by its header, never unpickled."""
    x, y = _arrays()
    data = pickle.dumps({"x": x, "y": y}, protocol=pickle.HIGHEST_PROTOCOL)
    dataset_id = _craft(tmp_path, data, examples=8, features=3)
    with pytest.raises(InvalidDataFile) as caught:
        load_dataset(tmp_path, dataset_id)
    assert "header length" in caught.value.reason


def test_load_refuses_labels_out_of_range(tmp_path: Path) -> None:
    """A label equal to the class count (or negative) names the first such example."""
    x, y = _arrays()
    y[6] = 4
    y[7] = -1
    with pytest.raises(LabelOutOfRange) as caught:
        load_dataset(tmp_path, _craft(tmp_path, save({"x": x, "y": y}), 8, 3, classes=4))
    assert (caught.value.example, caught.value.label, caught.value.classes) == (6, 4, 4)


def test_load_refuses_non_finite_features(tmp_path: Path) -> None:
    """An infinite feature names its example."""
    x, y = _arrays()
    x[2, 0] = np.inf
    with pytest.raises(NonFiniteFeature) as caught:
        load_dataset(tmp_path, _craft(tmp_path, save({"x": x, "y": y}), 8, 3))
    assert caught.value.example == 2


def test_load_refuses_a_manifest_in_another_spelling(tiny_copy: Path) -> None:
    """Pretty-printed JSON of the same manifest has its own digest but is not canonical."""
    document = _manifest_json(tiny_copy)
    raw = json.dumps(document, indent=2).encode()
    (tiny_copy / MANIFEST_FILE).write_bytes(raw)
    with pytest.raises(InvalidManifest) as caught:
        load_dataset(tiny_copy, "0x" + hashlib.sha256(raw).hexdigest())
    assert "canonical" in str(caught.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"version": "2"}, "version"),
        ({"classes": 1}, "classes"),
        ({"examples": 0}, "examples"),
        ({"features": True}, "features"),
        ({"name": "UPPER"}, "name"),
        ({"source": ""}, "source"),
        ({"source": "line\nbreak"}, "source"),
        ({"extra": 1}, "extra"),
        ({"file": {"sha256": "0x" + "AB" * 32, "bytes": 34952}}, "file.sha256"),
        ({"file": {"sha256": "0x" + "ab" * 32, "bytes": 34816}}, "file.bytes"),
        ({"file": {"sha256": "0x" + "ab" * 32}}, "file.bytes"),
    ],
)
def test_load_refuses_manifest_fields_out_of_bounds(
    tiny_copy: Path, change: dict[str, object], field: str
) -> None:
    """A canonical manifest with one bad field is InvalidManifest naming that field."""
    document = {**_manifest_json(tiny_copy), **change}
    dataset_id = _rewrite_manifest(tiny_copy, document)
    with pytest.raises(InvalidManifest) as caught:
        load_dataset(tiny_copy, dataset_id)
    assert caught.value.field == field


def test_load_refuses_a_manifest_with_a_fraction(tiny_copy: Path) -> None:
    """A number with a fraction has no canonical form, so the manifest is refused."""
    raw = (tiny_copy / MANIFEST_FILE).read_bytes().replace(b'"classes":4', b'"classes":4.0')
    (tiny_copy / MANIFEST_FILE).write_bytes(raw)
    with pytest.raises(InvalidManifest):
        load_dataset(tiny_copy, "0x" + hashlib.sha256(raw).hexdigest())


def test_every_dataset_error_is_narrow_and_shares_one_root() -> None:
    """Each refusal is a DatasetError and also the builtin a caller would expect."""
    for error in (
        ManifestDigestMismatch,
        InvalidManifest,
        DataFileSizeMismatch,
        DataFileDigestMismatch,
        InvalidDataFile,
        TensorMismatch,
        LabelOutOfRange,
        NonFiniteFeature,
        InvalidDatasetId,
        InvalidDatasetParameter,
    ):
        assert issubclass(error, DatasetError) and issubclass(error, ValueError)
    assert issubclass(DatasetNotFound, DatasetError) and issubclass(DatasetNotFound, LookupError)


# -- publish and fetch -------------------------------------------------------------------


def test_publish_and_fetch_round_trip_through_a_blob_store(tiny_dir: Path, tmp_path: Path) -> None:
    """The manifest is stored under the dataset id, the data under its digest; fetch checks both."""
    store = BlobStore(tmp_path / "blobs")
    assert publish(tiny_dir, store) == TINY_ID
    assert store.path(TINY_ID).read_bytes() == (tiny_dir / MANIFEST_FILE).read_bytes()
    file_digest = _manifest_json(tiny_dir)["file"]
    assert isinstance(file_digest, dict)
    assert store.exists(file_digest["sha256"])
    fetched = fetch(TINY_ID, store, tmp_path / "cache")
    built = build_synthetic(*TINY_ARGS)
    assert np.array_equal(fetched.x, built.x) and np.array_equal(fetched.y, built.y)
    assert publish(tiny_dir, store) == TINY_ID  # publishing again changes nothing


def test_fetch_from_a_blob_store_refuses_unknown_and_tampered_datasets(
    tiny_dir: Path, tmp_path: Path
) -> None:
    """An id the store lacks is DatasetNotFound; a data blob changed on disk is caught."""
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(DatasetNotFound):
        fetch(DIGITS_ID, store, tmp_path / "cache")
    publish(tiny_dir, store)
    file_digest = _manifest_json(tiny_dir)["file"]
    assert isinstance(file_digest, dict)
    blob = store.path(file_digest["sha256"])
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(DataFileDigestMismatch):
        fetch(TINY_ID, store, tmp_path / "cache")


def test_publish_refuses_a_dataset_that_fails_its_checks(tiny_copy: Path, tmp_path: Path) -> None:
    """A damaged dataset is not published: nothing lands in the store."""
    path = tiny_copy / DATA_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(DataFileDigestMismatch):
        publish(tiny_copy, store)
    assert not any(p.is_file() for p in (tmp_path / "blobs").rglob("*"))


def test_publish_and_fetch_round_trip_through_a_real_gateway(
    digits_dir: Path, tmp_path: Path
) -> None:
    """Through gunicorn on loopback: publish, fetch to a cache, repair a damaged cache, reuse it."""
    cache = tmp_path / "cache"
    with run_gateway(tmp_path / "gateway") as gateway, gateway.client() as client:
        assert publish(digits_dir, client) == DIGITS_ID
        assert client.blob_size(DIGITS_ID) == (digits_dir / MANIFEST_FILE).stat().st_size
        fetched = fetch(DIGITS_ID, client, cache)
        assert np.array_equal(fetched.x, build_digits().x)
        cached = cache / DIGITS_ID[2:] / DATA_FILE
        assert cached.read_bytes() == (digits_dir / DATA_FILE).read_bytes()
        cached.write_bytes(b"\x00" * cached.stat().st_size)  # a damaged cache is fetched again
        assert np.array_equal(fetch(DIGITS_ID, client, cache).y, fetched.y)
        assert cached.read_bytes() == (digits_dir / DATA_FILE).read_bytes()
        with pytest.raises(DatasetNotFound):
            fetch(TINY_ID, client, cache)
    # The gateway is gone: a sound cached copy is all fetch needs.
    assert np.array_equal(fetch(DIGITS_ID, client, cache).x, fetched.x)


def test_load_reads_a_dataset_from_two_blob_paths(tiny_dir: Path, tmp_path: Path) -> None:
    """DatasetFiles points load_dataset at files with any names, such as blobs."""
    store = BlobStore(tmp_path / "blobs")
    publish(tiny_dir, store)
    file_digest = _manifest_json(tiny_dir)["file"]
    assert isinstance(file_digest, dict)
    files = DatasetFiles(store.path(TINY_ID), store.path(file_digest["sha256"]))
    assert load_dataset(files, TINY_ID).id == TINY_ID


# -- the example job specs ---------------------------------------------------------------

_README_ROW = re.compile(
    r"\| \[`(?P<spec>[\w.-]+\.yaml)`\].*`blacktail dataset build (?P<args>[^`]*) --out DIR` \|"
)


def _readme_commands() -> dict[str, list[str]]:
    text = (EXAMPLES / "README.md").read_text()
    return {m["spec"]: m["args"].split() for m in _README_ROW.finditer(text)}


def test_every_example_spec_has_a_rebuild_command() -> None:
    """specs/examples/README.md names the dataset command of every example spec."""
    specs = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    assert {"tiny.yaml", "digits.yaml", "digits-tolerance.yaml"} <= set(specs)
    assert sorted(_readme_commands()) == specs


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_spec_parses_and_names_the_dataset_its_command_builds(
    name: str, tmp_path: Path
) -> None:
    """Each example parses, and the README's command builds the dataset its spec names."""
    spec = parse_job_spec(yaml.safe_load((EXAMPLES / name).read_text()))
    args = _readme_commands()[name]
    result = CliRunner().invoke(main, ["dataset", "build", *args, "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    built = json.loads(result.stdout)
    assert built["id"] == "0x" + spec.dataset.sha256.hex()
    assert (built["examples"], built["features"], built["classes"]) == (
        spec.dataset.examples,
        spec.dataset.features,
        spec.dataset.classes,
    )


def test_tiny_example_is_small_enough_to_train_in_seconds() -> None:
    """tiny.yaml keeps its promise: a few thousand parameters, 200 steps, exact mode."""
    spec = parse_job_spec(yaml.safe_load((EXAMPLES / "tiny.yaml").read_text()))
    assert spec.dataset.sha256.hex() == TINY_ID[2:]
    assert spec.parameter_count() < 10_000 and spec.total_steps <= 200
    assert spec.verification.mode.value == "exact"
    assert len(spec.segments()) == 4


# -- the command line --------------------------------------------------------------------


def test_cli_build_and_info_agree_on_the_id(tmp_path: Path) -> None:
    """`dataset build` prints the id that `dataset info` verifies, with the class counts."""
    runner = CliRunner()
    built = runner.invoke(main, ["dataset", "build", "synthetic", "--out", str(tmp_path)])
    assert built.exit_code == 0, built.output
    assert TINY_ID in built.stdout.replace("\n", "").replace("│", "").replace(" ", "")
    info = runner.invoke(main, ["dataset", "info", str(tmp_path), "--json"])
    assert info.exit_code == 0, info.output
    facts = json.loads(info.stdout)
    assert facts["id"] == TINY_ID
    assert sum(facts["class_counts"]) == 512 and len(facts["class_counts"]) == 4
    human = runner.invoke(main, ["dataset", "info", str(tmp_path)])
    assert human.exit_code == 0 and "verified" in human.stdout


def test_cli_build_synthetic_takes_sizes(tmp_path: Path) -> None:
    """The size options reach the generator and the manifest."""
    result = CliRunner().invoke(
        main,
        ["dataset", "build", "synthetic", "--seed", "5", "--examples", "40", "--features", "3",
         "--classes", "7", "--out", str(tmp_path), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert (facts["examples"], facts["features"], facts["classes"]) == (40, 3, 7)
    assert facts["id"] == save_dataset(build_synthetic(5, 40, 3, 7), tmp_path / "again").id


def test_cli_info_exits_1_naming_the_failed_check(tiny_copy: Path) -> None:
    """A tampered file makes `dataset info` fail with one line, not a traceback."""
    path = tiny_copy / DATA_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["dataset", "info", str(tiny_copy)])
    assert result.exit_code == 1
    assert "data file hashes to" in result.stderr and "Traceback" not in result.output
    assert result.stdout == ""


def test_cli_refuses_sizes_for_digits(tmp_path: Path) -> None:
    """--examples and friends apply to synthetic datasets only: a usage error, nothing written."""
    result = CliRunner().invoke(
        main, ["dataset", "build", "digits", "--examples", "10", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "synthetic datasets only" in result.stderr
    assert not list(tmp_path.iterdir())
