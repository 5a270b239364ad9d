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
    if placement.is_cuda:
        free, _total = torch.cuda.mem_get_info(placement.device)
        return int(free)
    return available_host_bytes()


def memory_figures(placement: Placement, model_bytes: int) -> dict[str, int]:
    out = {"rssBytes": rss_bytes(), "anonBytes": anon_bytes(), "modelBytes": model_bytes}
    if placement.is_cuda:
        out["deviceAllocatedBytes"] = int(torch.cuda.memory_allocated(placement.device))
        out["devicePeakBytes"] = int(torch.cuda.max_memory_allocated(placement.device))
    return out
