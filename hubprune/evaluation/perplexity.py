"""Perplexity with the 2SSP protocol: non-overlapping windows, no BOS, batch 1, no cache.

Loss is computed on fp32 logits whatever the model dtype, and summed in fp64 over all predicted
tokens (every window has seq_len - 1 targets, so this equals the reference's mean of window means).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@dataclass
class PerplexityResult:
    perplexity: float
    nll: float  # mean negative log-likelihood per predicted token (nats)
    tokens: int  # predicted tokens
    windows: int
    seq_len: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, *, desc: str = "perplexity", progress: bool = True) -> PerplexityResult:
    device = next(model.parameters()).device
    nll_sum = torch.zeros((), dtype=torch.float64, device=device)
    tokens = 0
    for window in tqdm(windows, desc=desc, disable=not progress, leave=False):
        ids = window.unsqueeze(0).to(device)
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
        nll_sum += F.cross_entropy(logits, ids[0, 1:], reduction="sum").double()
        tokens += ids.shape[1] - 1
    nll = (nll_sum / tokens).item()
    return PerplexityResult(math.exp(nll), nll, tokens, len(windows), windows.shape[1])
