"""EvoPress's fitness: KL(p_dense ‖ q_candidate) per token, for many sub-module removal candidates.

The dense model's logits on the calibration sequences are computed once and kept on the CPU, in RAM or,
when they would not fit (131,072 tokens x a 152k vocabulary is about 40 GB in bf16), in a file that is
memory-mapped, so only the rows a minibatch needs are read. They keep the model's dtype, as in the
reference. Candidates are scored together, block by block: each block is fetched once per selection
step, and candidates that agree on every block so far share one hidden state (offspring differ from
their parent in at most three sub-modules, so most of the stack is computed once, not per candidate).

Over several processes (`scores`) a minibatch of at least one sequence per process is split by
sequences: every process scores every candidate on its sequences and the KL sums are added. A smaller
one (a selection step's first minibatch is often part of one sequence) is split by candidates, though
candidates that share a prefix then compute it once per process. Every process needs the dense logits
of any sequence, so they go to a mapped file in the run folder: process 0 computes it once and the
others map the same file (one copy in a machine's page cache, not one per process).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ... import memory
from ...distributed import all_reduce_sum, barrier, broadcast, gather, local, mine, ranks
from ...sequential import DecoderStack, final_states, token_chunk

log = logging.getLogger("hubprune")

Candidate = tuple[tuple[int, ...], tuple[int, ...]]  # (attention removed, MLP removed), layer indices sorted
Minibatch = list[tuple[int, int]]  # (sequence index, tokens used from its start)


def spills(nbytes: int) -> bool:
    """Whether dense logits of `nbytes` go to a mapped file: over half of the free RAM."""
    ram = memory.available_ram()
    return ram is not None and nbytes > ram // 2


class DenseLogits:
    """Dense logits [sequences, seq_len, vocab] of `sequences` on the CPU (in RAM or a mapped file)."""

    def __init__(self, stack: DecoderStack, sequences: torch.Tensor, spill_dir: Path | None, *, batch: int = 8,
                 progress: bool = True):
        count, seq_len = sequences.shape
        vocab = stack.model.lm_head.out_features
        dtype = stack.dtype
        size = count * seq_len * vocab
        nbytes = size * torch.empty((), dtype=dtype).element_size()
        # One decision for every process; several processes share one file rather than hold a copy each.
        self.spilled = broadcast(spill_dir is not None and (ranks().distributed or spills(nbytes)))
        marker = None
        here = ranks()
        if nbytes > 2**30:  # said before an hour of work, not discovered after it
            log.warning("EvoPress keeps the dense logits of %d calibration tokens: %.1f GB %s; --evopress-tokens "
                        "sets how many", count * seq_len, nbytes / 1e9,
                        "on disk in the run folder" if self.spilled else "in RAM")
        if self.spilled:
            path = spill_dir / "dense-logits.bin"
            marker = spill_dir / "dense-logits.complete"
            if not ranks().distributed:
                log.warning("the dense logits (%.1f GB) do not fit in memory; keeping them in %s", nbytes / 1e9, path)
            if here.main and not marker.is_file():
                path.unlink(missing_ok=True)
        self.nbytes = nbytes
        self.copies = 0  # rows sent to the device (see `rows`)
        if self.spilled and not here.main:
            barrier()  # process 0 has written the file
            self.logits = torch.from_file(str(path), shared=True, size=size, dtype=dtype).view(count, seq_len, vocab)
            self.reused = True
            return
        store = torch.from_file(str(path), shared=True, size=size, dtype=dtype) if self.spilled else torch.empty(size, dtype=dtype)
        self.logits = store.view(count, seq_len, vocab)
        self.reused = marker is not None and marker.is_file()
        if not self.reused:
            self._compute(stack, sequences, batch, progress)
            if marker is not None:
                marker.touch()
        if self.spilled:
            barrier()

    @torch.no_grad()
    def _compute(self, stack: DecoderStack, sequences: torch.Tensor, batch: int, progress: bool) -> None:
        states = final_states(stack, sequences, batch=batch, desc="dense logits", progress=progress)
        chunk = token_chunk(self.logits.shape[-1])
        for i, state in enumerate(states):
            for start in range(0, state.shape[1], chunk):
                part = stack.logits(state[0, start:start + chunk]).to(self.logits.dtype)
                self.logits[i, start:start + chunk] = part.cpu()


    def rows(self, index: int, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """Sequence `index`'s dense logits at positions [start, stop), on `device`."""
        self.copies += 1
        return self.logits[index, start:stop].to(device)


def scores(stack: DecoderStack, sequences: torch.Tensor, dense: DenseLogits, candidates: list[Candidate],
           minibatch: Minibatch, *, batch: int = 8) -> list[float]:
    """`kl_fitness` of every candidate, on every process; over several processes the minibatch's
    sequences, or the candidates when there are fewer sequences than processes, are shared out."""
    here = ranks()
    if not here.distributed:
        return kl_fitness(stack, sequences, dense, candidates, minibatch, batch=batch)
    if len(minibatch) >= here.world:
        sums = kl_sums(stack, sequences, dense, candidates, local(minibatch), batch=batch)
        return (all_reduce_sum(sums) / sum(take for _, take in minibatch)).tolist()
    numbers = [i for i in range(len(candidates)) if mine(i)]
    values = kl_fitness(stack, sequences, dense, [candidates[i] for i in numbers], minibatch, batch=batch)
    return gather(dict(zip(numbers, values)), len(candidates))


def sample_minibatch(rng, sequences: int, seq_len: int, tokens: int) -> Minibatch:
    """The reference's minibatch: distinct random sequences until exactly `tokens` tokens, the last one cut."""
    if tokens > sequences * seq_len:
        raise ValueError(f"a minibatch of {tokens} tokens needs more than {sequences} sequences of {seq_len}")
    chosen: Minibatch = []
    used = 0
    while used < tokens:
        index = rng.randint(0, sequences - 1)
        if any(index == seen for seen, _ in chosen):
            continue
        take = min(seq_len, tokens - used)
        chosen.append((index, take))
        used += take
    return chosen


def kl_fitness(stack: DecoderStack, sequences: torch.Tensor, dense: DenseLogits, candidates: list[Candidate],
               minibatch: Minibatch, *, batch: int = 8) -> list[float]:
    """Mean per-token KL(p_dense ‖ q_candidate) over the minibatch's tokens, for each candidate (fp32
    log-softmax, fp64 sums). Every position of every sequence counts, as in the reference."""
    tokens = sum(take for _, take in minibatch)
    return (kl_sums(stack, sequences, dense, candidates, minibatch, batch=batch) / tokens).tolist()


@torch.no_grad()
def kl_sums(stack: DecoderStack, sequences: torch.Tensor, dense: DenseLogits, candidates: list[Candidate],
            minibatch: Minibatch, *, batch: int = 8) -> torch.Tensor:
    """[candidates] fp64 on the CPU: each candidate's KL summed over the minibatch's tokens."""
    if not candidates:
        return torch.zeros(0, dtype=torch.float64)
    # Parts of equal length run as one batch: the full sequences, and the cut last one.
    parts: dict[int, list[int]] = {}
    for index, take in minibatch:
        parts.setdefault(take, []).append(index)
    ids = {take: sequences[indices, :take] for take, indices in parts.items()}
    # Hidden states keyed by the removal pattern of the blocks passed so far; candidates share them.
    states: dict[tuple, dict[int, torch.Tensor]] = {(): {take: stack.embed(t) for take, t in ids.items()}}
    prefix_of = [() for _ in candidates]
    for j in range(stack.num_layers):
        moves: dict[tuple, tuple[tuple, tuple[bool, bool]]] = {}  # new prefix -> (old prefix, skips at j)
        for c, (attention, mlp) in enumerate(candidates):
            skips = (j in attention, j in mlp)
            new = prefix_of[c] + (skips,)
            moves.setdefault(new, (prefix_of[c], skips))
            prefix_of[c] = new
        with stack.block(j) as layer:
            next_states = {}
            for skips in sorted({s for _, s in moves.values()}):
                group = [new for new, (_, s) in moves.items() if s == skips]
                for take in ids:
                    outs = stack.run_batched(layer, j, [states[moves[new][0]][take] for new in group], batch,
                                             skip_attention=skips[0], skip_mlp=skips[1])
                    for new, out in zip(group, outs):
                        next_states.setdefault(new, {})[take] = out
        states = next_states
    # Each dense row goes to the device once per selection step and serves every candidate; the sums
    # stay on the device until the end (one synchronisation, not one per candidate).
    chunk = token_chunk(dense.logits.shape[-1])
    totals = {prefix: torch.zeros((), dtype=torch.float64, device=stack.device) for prefix in states}
    for take, indices in parts.items():
        for row, index in enumerate(indices):
            for start in range(0, take, chunk):
                stop = min(start + chunk, take)
                log_p = torch.log_softmax(dense.rows(index, start, stop, stack.device).float(), dim=-1)
                p = log_p.exp()
                for prefix, by_take in states.items():
                    log_q = torch.log_softmax(stack.logits(by_take[take][row, start:stop]), dim=-1)
                    totals[prefix] += (p * (log_p - log_q)).sum(dtype=torch.float64)
    values = torch.stack(list(totals.values())).cpu()
    position = {prefix: i for i, prefix in enumerate(totals)}
    return values[[position[p] for p in prefix_of]]
