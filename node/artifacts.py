"""A listed model's artifact in the blob store, checked before a listing reaches the ledger.

The ledger records only an artifact's digest; the gateway, which holds the blobs, refuses
a `ListModel` (or an `UpdateListing` that offers a model to the hub) whose artifact is
missing, larger than the market takes, not a well-formed safetensors file, or, for the
hub, not an MLP the hub can run. Only the safetensors header is read: nothing here
imports torch or unpickles anything (specs/market.md, "Artifacts").

An MLP the hub runs is what a BlackTail job trains (specs/proof.md §1): float32 tensors
`param.<l>.W` of shape (out, in) and `param.<l>.b` of shape (out,) for l = 0, 1, …, each
layer's input the previous layer's output, ReLU between layers, logits out. Other
tensors (a checkpoint's optimizer state and step) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from node.blobs import BlobError, BlobStore, parse_digest
from node.safetensors_format import (
    InvalidSafetensors,
    SafetensorsHeader,
    TensorInfo,
    check_safetensors,
)
from protocol.market import Listing

# A job's model has at most 16 hidden layers (specs/jobspec.md), so 17 linear layers.
layers_max = 17
width_max = 65536


class InvalidArtifact(BlobError, ValueError):
    """A listing's artifact that the market refuses; `reason` says why."""

    def __init__(self, artifact: str, reason: str, bytes_max: int | None = None) -> None:
        super().__init__(f"artifact {artifact}: {reason}")
        self.artifact = artifact
        self.reason = reason
        self.bytes_max = bytes_max


@dataclass(frozen=True, slots=True)
class MlpLayout:
    """The layers of an MLP artifact: widths from the input to the logits."""

    widths: tuple[int, ...]

    @property
    def layers(self) -> int:
        return len(self.widths) - 1

    @staticmethod
    def tensor_names(layer: int) -> tuple[str, str]:
        return f"param.{layer}.W", f"param.{layer}.b"


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    digest: str  # 0x + 64 lowercase hex digits
    size: int
    layout: MlpLayout | None


def mlp_layout(artifact: str, header: SafetensorsHeader) -> MlpLayout:
    """The MLP the header describes, or InvalidArtifact saying what is missing."""
    tensors: Mapping[str, TensorInfo] = {t.name: t for t in header.tensors}
    widths: list[int] = []
    layer = 0
    while MlpLayout.tensor_names(layer)[0] in tensors:
        if layer >= layers_max:
            raise InvalidArtifact(artifact, f"more than {layers_max} layers")
        w_name, b_name = MlpLayout.tensor_names(layer)
        weight, bias = tensors[w_name], tensors.get(b_name)
        if bias is None:
            raise InvalidArtifact(artifact, f"{w_name} has no {b_name}")
        if weight.dtype != "F32" or bias.dtype != "F32":
            raise InvalidArtifact(artifact, f"layer {layer} is not float32")
        if len(weight.shape) != 2 or bias.shape != weight.shape[:1]:
            raise InvalidArtifact(artifact, f"layer {layer}: W must be (out, in) and b (out,)")
        out_width, in_width = weight.shape
        if widths and in_width != widths[-1]:
            raise InvalidArtifact(
                artifact,
                f"layer {layer} takes {in_width} inputs, the layer before gives {widths[-1]}",
            )
        if not (1 <= in_width <= width_max and 1 <= out_width <= width_max):
            raise InvalidArtifact(artifact, f"layer {layer}: widths are 1 to {width_max}")
        if not widths:
            widths.append(in_width)
        widths.append(out_width)
        layer += 1
    if not widths:
        raise InvalidArtifact(artifact, "no param.0.W: not an MLP the hub can serve")
    return MlpLayout(tuple(widths))


def check_artifact(
    store: BlobStore, artifact: str, bytes_max: int, *, servable: bool
) -> ArtifactInfo:
    """Check a stored artifact: present (BlobNotFound), at most `bytes_max` bytes, a
    well-formed safetensors file and, when `servable`, an MLP the hub can run."""
    hex_digest = parse_digest(artifact)
    digest = "0x" + hex_digest
    size = store.size(hex_digest)
    if size > bytes_max:
        raise InvalidArtifact(
            digest, f"{size} bytes, the market takes at most {bytes_max}", bytes_max
        )
    with store.open(hex_digest) as handle:
        try:
            header = check_safetensors(handle, size)
        except InvalidSafetensors as error:
            raise InvalidArtifact(digest, error.reason) from None
    return ArtifactInfo(digest, size, mlp_layout(digest, header) if servable else None)


def check_market_command(
    kind: str, message: Mapping[str, Any], store: BlobStore, bytes_max: int, network: Any
) -> None:
    """The blob-store checks of a market command, before it is handed to the ledger: a
    ListModel's artifact, and the artifact of a listing an UpdateListing offers to the hub.

    `message` is as received; a malformed field is left for the protocol to refuse.
    """
    if kind == "ListModel":
        artifact = message.get("artifact")
        if isinstance(artifact, str):
            check_artifact(store, artifact, bytes_max, servable=message.get("hub") is True)
    elif kind == "UpdateListing" and message.get("hub") is True:
        try:
            listing = network.get(UUID(str(message.get("listing"))))
        except ValueError:
            return
        if isinstance(listing, Listing) and not listing.hub:
            check_artifact(store, listing.artifact, bytes_max, servable=True)
