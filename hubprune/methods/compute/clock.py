"""Wall time per phase of a method's pass (reported in its method_report)."""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch


class PhaseClock:
    """Wall time per phase; synchronises CUDA so that asynchronous kernels are charged to their phase."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        self._sync()
        started = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
