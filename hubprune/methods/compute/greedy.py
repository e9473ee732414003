"""Greedy removal of sub-modules by perplexity, shared by 2SSP's stage 2 and BlockPruner.

Each step bypasses, one at a time, every sub-module still present among the step's kinds
("attention", "mlp"), scores the perplexity of the calibration window(s) with the removals so far plus
that candidate, and removes the best one: the lowest perplexity, compared in (layer, kind) order with
a strict '<', so a tie keeps the lower layer (attention before MLP in the same layer).

`greedy_cached` visits each block once per step. `base[j]`, block j's input under the removals so
far, does not depend on later candidates, so a candidate at layer l starts from `base[l]` instead of
the embeddings; at block j the candidates started earlier pass through together (batched), and the
candidates at j start. After a step only the inputs behind the removed layer change, so only those are
recomputed. `greedy_naive` is the reference procedure: a full forward per candidate.

Over several processes the candidates of a step are dealt round-robin (`distributed.mine`): each
process runs the inputs `base` and its own candidates, and the NLL sums are gathered, so every process
sees every perplexity and picks the same one.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from ...distributed import gather, mine
from ...sequential import DecoderStack, mlp_parameters

KINDS = ("attention", "mlp")
Candidate = tuple[int, str]  # (layer, kind)


def _pick(perplexities: dict[Candidate, float]) -> Candidate:
    best, best_ppl = None, math.inf
    for candidate in sorted(perplexities, key=lambda c: (c[0], KINDS.index(c[1]))):
        if perplexities[candidate] < best_ppl:
            best, best_ppl = candidate, perplexities[candidate]
    return best


def _perplexities(candidates: list[Candidate], nll: dict[Candidate, float], tokens: int) -> dict[Candidate, float]:
    """Every candidate's perplexity from the NLL sums of the candidates this process scored (`nll`),
    gathered from every process."""
    gathered = gather({number: nll[c] for number, c in enumerate(candidates) if c in nll}, len(candidates))
    return {c: math.exp(value / tokens) for c, value in zip(candidates, gathered)}


def _step_record(best: Candidate, perplexities: dict[Candidate, float]) -> dict:
    return {"removed": list(best), "perplexity": perplexities[best],
            "candidates": {f"{layer}.{kind}": p for (layer, kind), p in perplexities.items()}}


def _skips(layer: int, removed: set[Candidate], extra: str | None = None) -> dict:
    return {"skip_attention": (layer, "attention") in removed or extra == "attention",
            "skip_mlp": (layer, "mlp") in removed or extra == "mlp"}


@torch.no_grad()
def greedy_cached(stack: DecoderStack, windows: torch.Tensor, schedule: list[tuple[str, ...]], *,
                  keep: list[torch.Tensor] | None = None, until: Callable[[list[Candidate]], bool] | None = None,
                  batch: int = 8, progress: bool = True,
                  desc: str = "greedy removal") -> tuple[list[Candidate], list[dict]]:
    """One removal per entry of `schedule` (the kinds it may remove), stopping early once `until(removed)`
    holds. `keep` narrows each block's FFN."""
    n = stack.num_layers
    tokens = windows.shape[0] * (windows.shape[1] - 1)
    removed: list[Candidate] = []
    steps: list[dict] = []
    base: list[torch.Tensor | None] = [stack.embed(windows)] + [None] * (n - 1)
    stale_from = 0  # base[j + 1] is recomputed for j >= stale_from
    for kinds in tqdm(schedule, desc=desc, disable=not progress, leave=False):
        if until is not None and until(removed):
            break
        done = set(removed)
        candidates = [(j, kind) for j in range(n) for kind in kinds if (j, kind) not in done]
        ours = {c for number, c in enumerate(candidates) if mine(number)}
        active: list[tuple[Candidate, torch.Tensor]] = []
        for j in range(n):
            with stack.block(j) as layer:
                # Sliced on each visit, not cached: a sliced copy of every FFN would take the memory
                # that streaming blocks (offload) saves.
                params = mlp_parameters(layer, stack.family, None if keep is None else keep[j])
                carried = [state for _, state in active]
                refresh = stale_from <= j < n - 1
                if refresh:
                    carried.append(base[j])
                outputs = stack.run_batched(layer, j, carried, batch, mlp_params=params, **_skips(j, done))
                if refresh:
                    base[j + 1] = outputs.pop()
                active = [(c, out) for (c, _), out in zip(active, outputs)]
                for kind in kinds:
                    if (j, kind) in ours:
                        state = stack.run(layer, j, base[j], mlp_params=params, **_skips(j, done, kind))
                        active.append(((j, kind), state))
        nll = torch.stack([stack.nll(state, windows) for _, state in active]).cpu().tolist() if active else []
        ppl = _perplexities(candidates, {c: value for (c, _), value in zip(active, nll)}, tokens)
        best = _pick(ppl)
        removed.append(best)
        stale_from = best[0]
        steps.append(_step_record(best, ppl))
    return removed, steps


@torch.no_grad()
def greedy_naive(stack: DecoderStack, windows: torch.Tensor, schedule: list[tuple[str, ...]], *,
                 keep: list[torch.Tensor] | None = None, progress: bool = True,
                 desc: str = "greedy removal (naive)") -> tuple[list[Candidate], list[dict]]:
    """The reference procedure: one full forward per candidate and step."""
    n = stack.num_layers
    tokens = windows.shape[0] * (windows.shape[1] - 1)
    removed: list[Candidate] = []
    steps: list[dict] = []
    for kinds in tqdm(schedule, desc=desc, disable=not progress, leave=False):
        done = set(removed)
        candidates = [(l, k) for l in range(n) for k in kinds if (l, k) not in done]
        nll = {}
        for candidate in (c for number, c in enumerate(candidates) if mine(number)):
            hidden = stack.embed(windows)
            for j in range(n):
                with stack.block(j) as layer:
                    extra = candidate[1] if candidate[0] == j else None
                    hidden = stack.run(layer, j, hidden, **_skips(j, done, extra),
                                       mlp_params=mlp_parameters(layer, stack.family, None if keep is None else keep[j]))
            nll[candidate] = stack.nll(hidden, windows).item()
        ppl = _perplexities(candidates, nll, tokens)
        best = _pick(ppl)
        removed.append(best)
        steps.append(_step_record(best, ppl))
    return removed, steps
