"""The provider's compute device: which one trains, what it is, and how fast it multiplies.

`resolve_device("auto")` picks CUDA when PyTorch sees a GPU and the CPU otherwise. The
benchmark a provider registers with is a timed float32 matrix multiplication on that
device (torch on CUDA, synchronized around the timed loop; numpy's BLAS on the CPU): a
figure the scheduler and developers can rank providers by, measured, never declared.
torch is imported only when a GPU is asked about, since it takes seconds to import.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

DEVICE_CHOICES = ("auto", "cpu", "cuda")
matmul_size_default = 512
matmul_repeats_default = 5


class DeviceError(RuntimeError):
    """The device asked for cannot be used here."""


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What a provider registers about its hardware."""

    kind: str  # "cpu" or "cuda"
    name: str
    count: int
    memory_mb: int


def resolve_device(choice: str) -> str:
    """ "cpu" or "cuda" for a `--device` choice; asking for CUDA without one is an error."""
    if choice not in DEVICE_CHOICES:
        raise DeviceError(f"device: expected one of {', '.join(DEVICE_CHOICES)}, got {choice!r}")
    if choice == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if choice == "cuda":
        raise DeviceError("device: CUDA was asked for, but PyTorch sees no GPU here")
    return "cpu"


def describe_device(kind: str) -> DeviceFacts:
    """Name, count and memory of the GPUs (or of this machine's CPU and RAM)."""
    if kind == "cuda":
        import torch

        props = torch.cuda.get_device_properties(0)
        return DeviceFacts(
            "cuda", props.name, torch.cuda.device_count(), props.total_memory // 2**20
        )
    name = platform.processor() or platform.machine() or "cpu"
    try:
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError, AttributeError):
        memory_mb = 1
    return DeviceFacts("cpu", f"CPU {name} ({os.cpu_count() or 1} cores)", 1, max(memory_mb, 1))


def measure_gflops(
    kind: str = "cpu", size: int = matmul_size_default, repeats: int = matmul_repeats_default
) -> int:
    """Float32 matmul throughput of the device, in whole GFLOP/s (a warm-up call, then timed).

    The figure is rounded down but never below 1: a device that answered at all is
    registered with a positive rate, even when a loaded machine slowed the timed calls.
    """
    flops = 2 * size**3 * repeats
    if kind == "cuda":
        import torch

        a = torch.randn((size, size), dtype=torch.float32, device="cuda")
        b = torch.randn((size, size), dtype=torch.float32, device="cuda")
        a @ b
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        torch.cuda.synchronize()
        return _whole_gflops(flops, time.perf_counter() - started)
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((size, size), dtype=np.float32)
    y = rng.standard_normal((size, size), dtype=np.float32)
    x @ y  # Warm up the BLAS threads.
    started = time.perf_counter()
    for _ in range(repeats):
        x @ y
    return _whole_gflops(flops, time.perf_counter() - started)


def _whole_gflops(flops: int, seconds: float) -> int:
    return max(1, int(flops / seconds / 1e9))
