"""The provider's device: resolving --train-on, describing the hardware, and the benchmark."""

from __future__ import annotations

import pytest
import torch

from node.device import DeviceError, describe_device, measure_gflops, resolve_device


def test_cpu_is_always_available_and_auto_follows_torch() -> None:
    """'cpu' resolves to the CPU; 'auto' to CUDA exactly when PyTorch sees a GPU."""
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_asking_for_a_missing_gpu_or_an_unknown_device_is_a_clear_error() -> None:
    """'cuda' without a GPU, and a name that is no choice, raise DeviceError naming it."""
    with pytest.raises(DeviceError, match="tpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no GPU"):
            resolve_device("cuda")


def test_the_cpu_is_described_and_benchmarked_with_real_figures() -> None:
    """The CPU's description carries its memory, and a timed matmul gives a positive rate."""
    facts = describe_device("cpu")
    assert facts.kind == "cpu" and facts.count == 1 and facts.memory_mb > 100
    assert "cores" in facts.name
    assert measure_gflops("cpu", size=128, repeats=3) > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_is_described_and_benchmarked() -> None:
    """On a GPU machine the description names the GPU and the benchmark runs on it."""
    facts = describe_device("cuda")
    assert facts.kind == "cuda" and facts.count >= 1 and facts.memory_mb > 1000
    assert measure_gflops("cuda", size=1024, repeats=3) > 0
