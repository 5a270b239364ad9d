"""Device and dtype resolution, and the memory figures the admin plane and benchmarks report."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .settings import DeviceName, DtypeName

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def resolve_placement(device: DeviceName, dtype: DtypeName) -> Placement:
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available")
    dev = torch.device(
        "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if dtype == "auto":
        # fp16 is the production choice on GPUs; CPU kernels are fastest (and exact) in fp32.
        dt = torch.float16 if dev.type == "cuda" else torch.float32
    else:
        dt = _DTYPES[dtype]
    return Placement(dev, dt)


def _proc_status_kib(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def anon_bytes() -> int:
    """Resident anonymous memory of this process (RssAnon): heap and tensors, not mapped files."""
    return _proc_status_kib("RssAnon") * 1024


def rss_bytes() -> int:
    return _proc_status_kib("VmRSS") * 1024


def available_host_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def device_free_bytes(placement: Placement) -> int:
    """What a new allocation can use: on CUDA the driver's free memory plus the blocks torch's
    caching allocator holds reserved but not allocated (``mem_get_info`` counts those as used);
    on CPU the kernel's MemAvailable."""
    if placement.is_cuda:
        free, _total = torch.cuda.mem_get_info(placement.device)
        reserved = torch.cuda.memory_reserved(placement.device)
        allocated = torch.cuda.memory_allocated(placement.device)
        return int(free) + max(0, int(reserved) - int(allocated))
    return available_host_bytes()


# A second copy of the model fits only with this much of its size spare beside it, and beside
# the activations of the forwards that keep running during a double swap.
DOUBLE_HEADROOM = 1.2


def activation_peak_bytes(placement: Placement) -> int:
    """The most memory forwards have taken above the live weights since the last peak reset
    (each swap resets it): ``max_memory_allocated - memory_allocated``. 0 on CPU."""
    if not placement.is_cuda:
        return 0
    peak = torch.cuda.max_memory_allocated(placement.device)
    return max(0, int(peak) - int(torch.cuda.memory_allocated(placement.device)))


def double_fits(free_bytes: int, model_bytes: int, activation_peak: int) -> bool:
    """The ``auto`` rule: a second copy is loaded beside the live one only when the memory free
    for it (driver free + reserved-but-free) exceeds 1.2x its size plus the activation peak
    forwards reached (they keep running while both copies are resident)."""
    return free_bytes > model_bytes * DOUBLE_HEADROOM + activation_peak


def has_room_for(placement: Placement, model_bytes: int) -> bool:
    return double_fits(device_free_bytes(placement), model_bytes, activation_peak_bytes(placement))


def reset_device_peak(placement: Placement) -> int | None:
    """Reset the device's peak-allocation counter; returns what is allocated now (None on CPU)."""
    if not placement.is_cuda:
        return None
    torch.cuda.reset_peak_memory_stats(placement.device)  # allocator bookkeeping: no device sync
    return int(torch.cuda.memory_allocated(placement.device))


def device_peak(placement: Placement) -> int | None:
    if not placement.is_cuda:
        return None
    return int(torch.cuda.max_memory_allocated(placement.device))


def memory_figures(placement: Placement, model_bytes: int) -> dict[str, int]:
    out = {"rssBytes": rss_bytes(), "anonBytes": anon_bytes(), "modelBytes": model_bytes}
    if placement.is_cuda:
        out["deviceAllocatedBytes"] = int(torch.cuda.memory_allocated(placement.device))
        out["devicePeakBytes"] = int(torch.cuda.max_memory_allocated(placement.device))
        out["deviceReservedBytes"] = int(torch.cuda.memory_reserved(placement.device))
    return out
