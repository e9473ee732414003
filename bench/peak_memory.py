"""Peak memory for the benchmarks: torch's allocator peak on a GPU, the process's peak resident set
(VmHWM) on a CPU."""
from __future__ import annotations

from pathlib import Path

import torch


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return status_bytes("VmHWM")


def current_bytes(device: torch.device) -> int:
    """Memory in use now: allocated tensors on a GPU, the resident set on a CPU."""
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else status_bytes("VmRSS")


def status_bytes(field: str) -> int:
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024
