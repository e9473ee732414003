"""2SSP's two stages on a `DecoderStack` (the method and its budget are in `twossp.py`)."""
from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from ..sequential import DecoderStack, mlp_parameters


# -- stage 1 --------------------------------------------------------------------------------------------
@torch.no_grad()
def neuron_scores(stack: DecoderStack, windows: torch.Tensor, *, progress: bool = True) -> torch.Tensor:
    """[N, d_ff] fp32: per block, the mean over windows of each neuron's L2 norm over the tokens at the
    input of the FFN's output projection. Dense forward, one window at a time, statistics on the device."""
    consumer = stack.family.ffn_cols[0]
    scores = []
    states = [stack.embed(w.unsqueeze(0)) for w in windows]
    for index in tqdm(range(stack.num_layers), desc="2ssp stage 1", disable=not progress, leave=False):
        with stack.block(index) as layer:
            total = torch.zeros(stack.family.ffn_width(stack.config), dtype=torch.float32, device=stack.device)

            def accumulate(_module, args):
                total.add_(torch.linalg.vector_norm(args[0].float(), ord=2, dim=1).sum(0))

            handle = layer.get_submodule(consumer).register_forward_pre_hook(accumulate)
            try:
                states = [stack.run(layer, index, s) for s in states]
            finally:
                handle.remove()
        scores.append(total / len(windows))
    return torch.stack(scores)


def top_neurons(scores: torch.Tensor, keep: int) -> list[list[int]]:
    """Per block, the `keep` highest-scoring neurons in ascending index order (a tie keeps the lower index)."""
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :keep]
    return [sorted(row) for row in order.tolist()]


# -- stage 2 --------------------------------------------------------------------------------------------
def _pick(perplexities: dict[int, float]) -> int:
    """Lowest perplexity; candidates are compared in ascending layer order with a strict '<'."""
    best, best_ppl = None, math.inf
    for layer in sorted(perplexities):
        if perplexities[layer] < best_ppl:
            best, best_ppl = layer, perplexities[layer]
    return best


def _batched(stack: DecoderStack, layer, index: int, states: list[torch.Tensor], batch: int, **kwargs):
    """Run `states` (each [windows, seq, d]) through one block, at most `batch` of them at a time."""
    out = []
    for start in range(0, len(states), batch):
        group = states[start:start + batch]
        result = stack.run(layer, index, torch.cat(group), **kwargs)
        out.extend(result.split([g.shape[0] for g in group]))
    return out


@torch.no_grad()
def remove_attention_cached(stack: DecoderStack, windows: torch.Tensor, keep: list[torch.Tensor], n_attn: int,
                            *, batch: int = 8, progress: bool = True) -> tuple[list[int], list[dict]]:
    """Greedy attention removal, each block visited once per step.

    `base[j]` is block j's input with the current removals; it does not depend on later candidates, so
    candidate l starts from `base[l]` instead of the embeddings. At block j the candidates started
    earlier pass through j together (batched), and candidate j starts. After a step only the inputs
    behind the removed layer change, so only those are recomputed."""
    n = stack.num_layers
    tokens = windows.shape[0] * (windows.shape[1] - 1)
    removed: list[int] = []
    steps: list[dict] = []
    base: list[torch.Tensor | None] = [stack.embed(windows)] + [None] * (n - 1)
    stale_from = 0  # base[j + 1] is recomputed for j >= stale_from
    for _ in tqdm(range(n_attn), desc="2ssp stage 2", disable=not progress, leave=False):
        active: list[tuple[int, torch.Tensor]] = []
        for j in range(n):
            with stack.block(j) as layer:
                params = mlp_parameters(layer, stack.family, keep[j])
                carried = [state for _, state in active]
                refresh = stale_from <= j < n - 1
                if refresh:
                    carried.append(base[j])
                outputs = _batched(stack, layer, j, carried, batch, skip_attention=j in removed, mlp_params=params)
                if refresh:
                    base[j + 1] = outputs.pop()
                active = [(l, out) for (l, _), out in zip(active, outputs)]
                if j not in removed:
                    active.append((j, stack.run(layer, j, base[j], skip_attention=True, mlp_params=params)))
        ppl = {l: math.exp(stack.nll(state, windows).item() / tokens) for l, state in active}
        best = _pick(ppl)
        removed.append(best)
        stale_from = best
        steps.append({"removed": best, "perplexity": ppl[best], "candidates": {str(l): p for l, p in ppl.items()}})
    return removed, steps


@torch.no_grad()
def remove_attention_naive(stack: DecoderStack, windows: torch.Tensor, keep: list[torch.Tensor], n_attn: int,
                           *, progress: bool = True) -> tuple[list[int], list[dict]]:
    """The reference procedure: one full forward per candidate and step."""
    n = stack.num_layers
    tokens = windows.shape[0] * (windows.shape[1] - 1)
    removed: list[int] = []
    steps: list[dict] = []
    for _ in tqdm(range(n_attn), desc="2ssp stage 2 (naive)", disable=not progress, leave=False):
        ppl = {}
        for candidate in (l for l in range(n) if l not in removed):
            skip = set(removed) | {candidate}
            hidden = stack.embed(windows)
            for j in range(n):
                with stack.block(j) as layer:
                    hidden = stack.run(layer, j, hidden, skip_attention=j in skip,
                                       mlp_params=mlp_parameters(layer, stack.family, keep[j]))
            ppl[candidate] = math.exp(stack.nll(hidden, windows).item() / tokens)
        best = _pick(ppl)
        removed.append(best)
        steps.append({"removed": best, "perplexity": ppl[best], "candidates": {str(l): p for l, p in ppl.items()}})
    return removed, steps


def _now(device: torch.device) -> float:
    if device.type == "cuda":  # kernels are asynchronous: a stage ends when the device is done
        torch.cuda.synchronize(device)
    return time.perf_counter()


def two_stages(stack: DecoderStack, windows: torch.Tensor, *, keep: int, n_attn: int, stage2_samples: int = 1,
               stage2: str = "cached", stage2_batch: int = 8, progress: bool = True) -> dict:
    """Stage 1 on all `windows`, then stage 2 on the first `stage2_samples` of them. Returns the kept
    neurons per block, the removed attention layers, and each stage's wall time and block forwards."""
    started = _now(stack.device)
    kept = top_neurons(neuron_scores(stack, windows, progress=progress), keep)
    stage1 = {"seconds": _now(stack.device) - started, "block_forwards": stack.block_forwards}

    keep_index = [torch.tensor(k, dtype=torch.long, device=stack.device) for k in kept]
    stage2_windows = windows[:stage2_samples]
    stack.block_forwards = 0
    started = _now(stack.device)
    if n_attn == 0:
        removed, steps = [], []
    elif stage2 == "naive":
        removed, steps = remove_attention_naive(stack, stage2_windows, keep_index, n_attn, progress=progress)
    else:
        removed, steps = remove_attention_cached(stack, stage2_windows, keep_index, n_attn, batch=stage2_batch,
                                                 progress=progress)
    stage2_record = {"mode": stage2, "seconds": _now(stack.device) - started, "block_forwards": stack.block_forwards,
                     "steps": steps}
    return {"kept": kept, "removed": removed, "stage1": stage1, "stage2": stage2_record}
