"""The hub's models in memory: MLPs read from their safetensors artifacts and run with
PyTorch, on a GPU when one is there, kept per gateway worker.

An artifact is read by safetensors' own parser (never unpickled) after its header has
passed `node.artifacts.check_artifact`; only its `param.<l>.W` and `param.<l>.b` tensors
are kept. torch is imported on the first model loaded, never when the gateway starts: a
worker that serves no hub request never pays for it.

Each worker keeps at most `hub_models_cached_max` models (least recently used leave
first). torch runs each request on `hub_torch_threads` threads: requests are small, and
a gateway's parallelism is its workers and their threads, which more torch threads per
request would only oversubscribe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from node.artifacts import MlpLayout, check_artifact
from node.blobs import BlobStore

hub_models_cached_max = 16
hub_torch_threads = 1
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True, slots=True)
class Prediction:
    """A batch's logits (float32 values as Python floats) and each row's top class."""

    logits: list[list[float]]
    classes: list[int]


class HubModel:
    """One MLP on one device: linear layers with ReLU between them."""

    def __init__(self, layout: MlpLayout, weights: list[tuple[Any, Any]], device: str) -> None:
        self.layout = layout
        self.device = device
        self._weights = weights

    @property
    def input_width(self) -> int:
        return self.layout.widths[0]

    def predict(self, rows: Sequence[Sequence[float]]) -> Prediction:
        import torch
        from torch.nn import functional

        with torch.inference_mode():
            x = torch.tensor(rows, dtype=torch.float32, device=self.device)
            last = len(self._weights) - 1
            for layer, (weight, bias) in enumerate(self._weights):
                x = functional.linear(x, weight, bias)
                if layer < last:
                    x = torch.relu(x)
            classes = torch.argmax(x, dim=1)
            return Prediction(x.cpu().tolist(), classes.cpu().tolist())


def resolve_device(choice: str) -> str:
    """ "cuda" or "cpu" for a DEVICES choice ("auto": a GPU when torch sees one)."""
    if choice not in DEVICES:
        raise ValueError(f"device: one of {', '.join(DEVICES)}, not {choice!r}")
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda asked for, but torch sees no GPU")
    return choice


def load_model(data: bytes, layout: MlpLayout, device: str) -> HubModel:
    """The MLP in safetensors `data` whose header gave `layout`, on `device`."""
    import torch
    from safetensors.torch import load

    tensors = load(data)
    weights = []
    for layer in range(layout.layers):
        w_name, b_name = MlpLayout.tensor_names(layer)
        weights.append((tensors[w_name].to(device), tensors[b_name].to(device)))
    del tensors
    torch.set_num_threads(hub_torch_threads)
    return HubModel(layout, weights, device)


class HubModels:
    """Models by artifact digest, loaded from the blob store on first use."""

    def __init__(
        self,
        store: BlobStore,
        artifact_bytes_max: int,
        device: str = "auto",
        cached_max: int = hub_models_cached_max,
    ) -> None:
        if device not in DEVICES:
            raise ValueError(f"device: one of {', '.join(DEVICES)}, not {device!r}")
        self.store = store
        self.artifact_bytes_max = artifact_bytes_max
        self.cached_max = cached_max
        self._choice = device
        self._device: str | None = None
        self._models: OrderedDict[str, HubModel] = OrderedDict()
        # One lock for the cache: a first load holds it, so two threads asking for the
        # same new model load it once.
        self._lock = threading.Lock()

    def get(self, artifact: str) -> HubModel:
        with self._lock:
            model = self._models.get(artifact)
            if model is not None:
                self._models.move_to_end(artifact)
                return model
            model = self._load(artifact)
            self._models[artifact] = model
            while len(self._models) > self.cached_max:
                self._models.popitem(last=False)
            return model

    def _load(self, artifact: str) -> HubModel:
        info = check_artifact(self.store, artifact, self.artifact_bytes_max, servable=True)
        assert info.layout is not None
        if self._device is None:
            self._device = resolve_device(self._choice)
        with self.store.open(artifact) as handle:
            data = handle.read(info.size + 1)
        # The header was checked on this very file; a blob never changes once stored.
        assert len(data) == info.size, "a stored blob changed size"
        return load_model(data, info.layout, self._device)
