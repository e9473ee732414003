"""One job over many processes, on torch.distributed as `torchrun` (or `accelerate launch`) sets it up:
NCCL between GPUs, gloo between CPUs. Without a launcher there is one process and every helper here is
the identity, so a plain run behaves exactly as before.

Two kinds of work are split (docs/distributed.md):
- statistics, which are sums over calibration windows: each process takes a contiguous share of the
  windows (`local`), and the sums are added across processes (`all_reduce_sum`);
- searches, which score candidates: each process scores its candidates (`mine`) and the scores are
  gathered (`gather`), so that every process holds every score and makes the same choice.
Process 0 alone writes files (`on_main`: its errors reach every process). Collectives time out
(`HUBPRUNE_DIST_TIMEOUT`, seconds, default 1800), so a process that dies makes the others fail with
an error instead of waiting for ever; under torchrun the launcher stops the others at once.

This module imports torch only inside its functions, so that options are checked before torch loads."""
from __future__ import annotations

import atexit
import datetime
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .errors import HubPruneError, InvalidOptionError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
TIMEOUT_ENV = "HUBPRUNE_DIST_TIMEOUT"


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: its rank among `world` processes, and its rank on this machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def share(self, count: int) -> slice:
        """This process's contiguous share of `count` items (the first shares one larger when uneven)."""
        base, extra = divmod(count, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


def ranks() -> Ranks:
    """The launcher's view (WORLD_SIZE, RANK, LOCAL_RANK), or one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    return Ranks(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def local_processes() -> int:
    """Processes on this machine (torchrun's LOCAL_WORLD_SIZE; 1 without a launcher)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def check_parallel(what: str, detail: str) -> None:
    """Refuse, in one line, work that runs in one process only when a launcher started several."""
    if ranks().distributed:
        raise InvalidOptionError(f"{what} runs in one process; over several processes (torchrun) {detail}: "
                                 f"launch it without torchrun")


def device_for(device: torch.device) -> torch.device:
    """Under a launcher every process takes its own GPU: `cuda` becomes `cuda:LOCAL_RANK`."""
    import torch

    r = ranks()
    if r.distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", r.local_rank)
    return device


def start(device: torch.device) -> Ranks:
    """Join the process group once (NCCL for CUDA devices, gloo otherwise); returns this process's ranks."""
    import torch
    import torch.distributed as dist

    r = ranks()
    if r.distributed and not dist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {}
        if backend == "nccl":
            torch.cuda.set_device(device)
            kwargs["device_id"] = device
        dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
        atexit.register(dist.destroy_process_group)
        if not r.main:
            _quiet()
    return r


def _quiet() -> None:
    """Process 0 speaks for all: the others log only errors and draw no progress bar, whatever a caller
    (hubprune's, or a library's) asks of tqdm."""
    import logging

    from tqdm import std

    logging.getLogger("hubprune").setLevel(logging.ERROR)
    draw = std.tqdm.__init__

    def silent(self, *args, **kwargs):
        draw(self, *args, **{**kwargs, "disable": True})

    std.tqdm.__init__ = silent


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over every process, in place, and the same bit for bit on every process. The sum
    runs where the backend works (gloo: the CPU, NCCL: this process's GPU): a tensor elsewhere goes there
    and back."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    where = torch.device("cpu") if dist.get_backend() == "gloo" else torch.device("cuda", torch.cuda.current_device())
    if tensor.device != where:
        moved = tensor.to(where)
        dist.all_reduce(moved)
        tensor.copy_(moved)
    else:
        dist.all_reduce(tensor)
    return tensor


def broadcast(value):
    """Process 0's `value` (any picklable object) on every process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def local(items: Sequence[T]) -> Sequence[T]:
    """This process's contiguous share of `items` (windows: a tensor's first dimension, or a list)."""
    return items[ranks().share(len(items))]


def mine(index: int) -> bool:
    """Whether candidate number `index` is this process's to score (dealt round-robin, so that the costly
    and the cheap candidates of a search spread evenly)."""
    r = ranks()
    return index % r.world == r.rank


def gather(scores: dict[int, float], count: int) -> list[float]:
    """Every process's `scores` (candidate number -> score, each number scored by one process) as one
    list of `count`; the same on every process. The sum adds zeros to each score: exact."""
    import torch

    if not ranks().distributed:
        return [scores[i] for i in range(count)]
    total = torch.zeros(count, dtype=torch.float64)
    for index, value in scores.items():
        total[index] = value
    return all_reduce_sum(total).tolist()


def assemble(part: torch.Tensor, count: int) -> torch.Tensor:
    """The whole of a tensor whose first dimension is split by `local` (this process holds `part`), on
    every process."""
    import torch

    r = ranks()
    if not r.distributed:
        return part
    whole = torch.zeros((count, *part.shape[1:]), dtype=part.dtype, device=part.device)
    whole[r.share(count)] = part
    return all_reduce_sum(whole)


def on_main(work: Callable[[], T]) -> T:
    """`work()` on process 0 alone (files, the lock, the upload); its result, or its error, on every
    process, so that one process's refusal stops them all at once instead of at a timeout."""
    import torch.distributed as dist

    if not ranks().distributed:
        return work()
    if not dist.is_initialized():
        raise RuntimeError("on_main before the process group started (loading.resolve_device starts it)")
    outcome = None
    if ranks().main:
        try:
            outcome = (True, work())
        except Exception as exc:  # noqa: BLE001 - sent to the others, then raised here as it was
            try:
                pickle.dumps(exc)
                sent = exc
            except Exception:  # noqa: BLE001 - an error that does not pickle travels as its text
                sent = HubPruneError(f"process 0 failed: {type(exc).__name__}: {exc}")
            broadcast((False, sent))
            raise
    ok, value = broadcast(outcome)
    if not ok:
        value.reported_by_process_0 = True  # the CLI prints it once, from process 0
        raise value
    return value


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
