"""Inference speed and memory of a model in memory: prefill latency and decode throughput.

Prefill follows the 2SSP reference (docs/algorithms.md, "Evaluation"): one forward of a [1, tokens] input with no
cache, `warmup` untimed passes, then `repeats` timed ones; the mean in milliseconds. On a GPU each pass
is timed with CUDA events inside synchronizations, as the reference does; on a CPU with perf_counter.
Decode (which the reference does not measure) is greedy generation with the KV cache, timed per step
after a prefill of the prompt: tokens/s for each batch size. Timing does not depend on the token
values, so inputs are seeded random ids.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class SpeedSettings:
    prefill_tokens: int
    warmup: int
    repeats: int
    decode_prompt_tokens: int
    decode_tokens: int
    decode_batches: tuple[int, ...]

    @classmethod
    def for_device(cls, device: torch.device, prefill_tokens: int | None = None,
                   decode_batch: int | None = None) -> SpeedSettings:
        """The reference's settings on a GPU; shorter ones on a CPU, where 2048-token passes take seconds."""
        if device.type == "cuda":
            return cls(prefill_tokens or 2048, 10, 10, 128, 128, (1, decode_batch or 16))
        return cls(prefill_tokens or 256, 2, 5, 32, 32, (1, decode_batch or 4))

    def to_dict(self) -> dict:
        return {**asdict(self), "decode_batches": list(self.decode_batches)}


class _Timer:
    """Seconds of GPU work between start() and stop() (CUDA events), or wall time on a CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self._events[0].record()
        else:
            self._started = time.perf_counter()

    def stop(self) -> float:
        if self.device.type == "cuda":
            self._events[1].record()
            torch.cuda.synchronize(self.device)
            return self._events[0].elapsed_time(self._events[1]) / 1000
        return time.perf_counter() - self._started


def timer_name(device: torch.device) -> str:
    return "torch.cuda.Event" if device.type == "cuda" else "time.perf_counter"


@torch.no_grad()
def measure_speed(model, settings: SpeedSettings, *, seed: int = 0, desc: str = "speed") -> dict:
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(seed)
    timer = _Timer(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    steps = settings.warmup + settings.repeats + len(settings.decode_batches)
    progress = tqdm(total=steps, desc=desc, leave=False)

    ids = torch.randint(vocab, (1, settings.prefill_tokens), generator=generator).to(device)
    prefill = []
    for i in range(settings.warmup + settings.repeats):
        timer.start()
        model(input_ids=ids, use_cache=False)
        elapsed = timer.stop()
        if i >= settings.warmup:
            prefill.append(elapsed * 1000)
        progress.update()

    decode = {}
    for batch in settings.decode_batches:
        prompt = torch.randint(vocab, (batch, settings.decode_prompt_tokens), generator=generator).to(device)
        _decode_seconds(model, prompt, 2, timer)  # warm-up (allocations, kernels for this batch)
        seconds = _decode_seconds(model, prompt, settings.decode_tokens, timer)
        decode[str(batch)] = batch * settings.decode_tokens / seconds
        progress.update()
    progress.close()
    return {
        "prefill_ms": statistics.fmean(prefill),
        "prefill_ms_stdev": statistics.stdev(prefill) if len(prefill) > 1 else 0.0,
        "decode_tokens_per_second": decode,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }


def _decode_seconds(model, prompt: torch.Tensor, tokens: int, timer: _Timer) -> float:
    """Seconds for `tokens` greedy decode steps with the KV cache, after an untimed prefill of `prompt`."""
    out = model(input_ids=prompt, use_cache=True)
    cache, token = out.cache, out.logits[:, -1:].argmax(-1)
    timer.start()
    for _ in range(tokens):
        out = model(input_ids=token, cache=cache, use_cache=True)
        cache, token = out.cache, out.logits[:, -1:].argmax(-1)
    return timer.stop()
