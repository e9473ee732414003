"""Perplexity with the 2SSP protocol: non-overlapping windows, no BOS, batch 1, no cache.

Two modes (docs/algorithms.md, "Evaluation"):
- `accurate` (default): the loss is computed on fp32 logits whatever the model dtype and summed in
  fp64 over all predicted tokens (every window has seq_len - 1 targets, so this equals the mean of
  window means).
- `reference`: what the 2SSP code computes: each window's mean cross-entropy on logits in the model's
  dtype (bf16 loss in a bf16 run, with its ~1 % rounding), then the mean of the window means.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..distributed import all_reduce_sum, local
from .settings import PPL_MODES


@dataclass
class PerplexityResult:
    perplexity: float
    nll: float  # mean negative log-likelihood per predicted token (nats)
    tokens: int  # predicted tokens
    windows: int
    seq_len: int

    def to_dict(self) -> dict:
        return asdict(self)


def window_nll(logits: torch.Tensor, targets: torch.Tensor, mode: str) -> torch.Tensor:
    """Summed NLL of one window's targets: fp64 from fp32 logits (accurate), or the reference's
    model-dtype mean times the target count (so both modes sum the same way afterwards)."""
    if mode == "accurate":
        return F.cross_entropy(logits.float(), targets, reduction="sum").double()
    if mode == "reference":
        return F.cross_entropy(logits, targets).double() * targets.numel()
    raise ValueError(f"unknown perplexity mode {mode!r}: {', '.join(PPL_MODES)}")


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, *, mode: str = "accurate", desc: str = "perplexity",
               progress: bool = True) -> PerplexityResult:
    """Over several processes (torchrun), each takes its share of the windows and the fp64 sums are added."""
    device = next(model.parameters()).device
    nll_sum = torch.zeros((), dtype=torch.float64, device=device)
    for window in tqdm(local(windows), desc=desc, disable=not progress, leave=False):
        ids = window.unsqueeze(0).to(device)
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1]
        nll_sum += window_nll(logits, ids[0, 1:], mode)
    all_reduce_sum(nll_sum)
    tokens = windows.shape[0] * (windows.shape[1] - 1)
    nll = (nll_sum / tokens).item()
    return PerplexityResult(math.exp(nll), nll, tokens, len(windows), windows.shape[1])
