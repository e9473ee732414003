"""2SSP's two stages on a `DecoderStack` (the method and its budget are in `twossp.py`)."""
from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from ...distributed import all_reduce_sum, local
from ...sequential import DecoderStack
from .greedy import greedy_cached, greedy_naive


# -- stage 1 --------------------------------------------------------------------------------------------
@torch.no_grad()
def neuron_scores(stack: DecoderStack, windows: torch.Tensor, *, progress: bool = True) -> torch.Tensor:
    """[N, d_ff] fp32: per block, the mean over windows of each neuron's L2 norm over the tokens at the
    input of the FFN's output projection. Dense forward, one window at a time, statistics on the device.
    Over several processes each takes its share of the windows and the sums are added."""
    consumer = stack.family.ffn_cols[0]
    totals = []
    states = [stack.embed(w.unsqueeze(0)) for w in local(windows)]
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
        totals.append(total)
    return all_reduce_sum(torch.stack(totals)) / len(windows)


def top_neurons(scores: torch.Tensor, keep: int) -> list[list[int]]:
    """Per block, the `keep` highest-scoring neurons in ascending index order (a tie keeps the lower index)."""
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :keep]
    return [sorted(row) for row in order.tolist()]


# -- stage 2 --------------------------------------------------------------------------------------------
def remove_attention(stack: DecoderStack, windows: torch.Tensor, keep: list[torch.Tensor], n_attn: int, *,
                     mode: str = "cached", batch: int = 8, progress: bool = True) -> tuple[list[int], list[dict]]:
    """Greedy removal of `n_attn` attention sub-modules from the width-pruned model (`keep`), by
    perplexity on `windows`; `mode` "naive" is the reference procedure (see `greedy.py`)."""
    schedule = [("attention",)] * n_attn
    if mode == "naive":
        removed, steps = greedy_naive(stack, windows, schedule, keep=keep, progress=progress, desc="2ssp stage 2 (naive)")
    else:
        removed, steps = greedy_cached(stack, windows, schedule, keep=keep, batch=batch, progress=progress,
                                       desc="2ssp stage 2")
    return [layer for layer, _ in removed], steps


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
    removed, steps = remove_attention(stack, stage2_windows, keep_index, n_attn, mode=stage2, batch=stage2_batch,
                                      progress=progress)
    stage2_record = {"mode": stage2, "seconds": _now(stack.device) - started, "block_forwards": stack.block_forwards,
                     "steps": steps}
    return {"kept": kept, "removed": removed, "stage1": stage1, "stage2": stage2_record}
