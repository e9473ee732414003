"""One job over many processes, on torch.distributed as `torchrun` (or `accelerate launch`) sets it up:
NCCL between GPUs, gloo between CPUs. Without a launcher there is one process and every helper here is
the identity, so a plain run behaves exactly as before.

What is parallel is data: each process takes a contiguous share of the windows (`share`), and sums
computed over windows are added across processes (`all_reduce_sum`). Process 0 alone writes files.
So far `hubprune eval`'s perplexity runs this way; prune, heal, tasks and speed refuse a launcher.
Collectives time out (`HUBPRUNE_DIST_TIMEOUT`, seconds, default 1800), so a process that dies makes
the others fail with an error instead of waiting for ever."""
from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass

import torch

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


def device_for(device: torch.device) -> torch.device:
    """Under a launcher every process takes its own GPU: `cuda` becomes `cuda:LOCAL_RANK`."""
    r = ranks()
    if r.distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", r.local_rank)
    return device


def start(device: torch.device) -> Ranks:
    """Join the process group once (NCCL for CUDA devices, gloo otherwise); returns this process's ranks."""
    import torch.distributed as dist

    r = ranks()
    if r.distributed and not dist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
        atexit.register(dist.destroy_process_group)
    return r


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over every process, in place (gloo reduces on the CPU: a device tensor goes there
    and back). The sum has the same value, bit for bit, on every process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    if dist.get_backend() == "gloo" and tensor.device.type != "cpu":
        host = tensor.cpu()
        dist.all_reduce(host)
        tensor.copy_(host)
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


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
