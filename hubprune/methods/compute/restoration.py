"""Column pruning of a linear layer with closed-form least-squares restoration (docs/algorithms.md, "FASP").

For a consumer layer W [d_out, n] whose inputs X [n, T] have the Gram matrix H = X Xᵀ (accumulated
over the calibration tokens), a column j scores ‖X_j‖₂ · ‖W[:, j]‖₁ = sqrt(H_jj) · Σ_i |W_ij|
(Wanda summed over the column). When the columns P are removed, the kept ones S are refitted so that
the layer's output changes least on the calibration inputs:

    minimize ‖W X − W'_S X_S‖²   ->   W'_S = W_S + W_P H[P,S] (H[S,S] + λI)⁻¹

with λ = damping · mean(diag H[S,S]) (×10 and retry while the Cholesky factorisation fails).
"""
from __future__ import annotations

import torch

from ...errors import HubPruneError


class RestorationError(HubPruneError):
    """The damped Gram matrix stayed singular: calibration data too short for the layer's width."""


def column_scores(weight: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """score_j = sqrt(H_jj) · ‖W[:, j]‖₁, in fp32 (or H's dtype if wider)."""
    dtype = torch.promote_types(hessian.dtype, torch.float32)
    return hessian.diagonal().to(dtype).clamp_min(0).sqrt() * weight.to(dtype).abs().sum(0)


def restore(weight: torch.Tensor, hessian: torch.Tensor, keep: torch.Tensor, *, damping: float = 0.01,
            retries: int = 6) -> torch.Tensor:
    """W'_S [d_out, |S|]: the kept columns `keep` of `weight` refitted to the removed ones' output.

    Solved in the dtype of `hessian` (fp32, or fp64 for wide layers) and cast back to the weight's."""
    n = weight.shape[1]
    dtype = torch.promote_types(hessian.dtype, torch.float32)
    mask = torch.ones(n, dtype=torch.bool, device=weight.device)
    mask[keep] = False
    pruned = mask.nonzero().squeeze(1)
    w = weight.to(dtype)
    if pruned.numel() == 0:
        return weight.clone()
    h = hessian.to(device=weight.device, dtype=dtype)
    h_ss = h[keep][:, keep]
    rhs = (w[:, pruned] @ h[pruned][:, keep]).T  # [|S|, d_out]
    diagonal = h_ss.diagonal()
    lam = damping * diagonal.mean().item()
    for _ in range(retries + 1):
        factor, info = torch.linalg.cholesky_ex(h_ss + lam * torch.eye(len(keep), dtype=dtype, device=h.device))
        if int(info) == 0:
            delta = torch.cholesky_solve(rhs, factor).T
            return (w[:, keep] + delta).to(weight.dtype)
        lam = lam * 10 if lam > 0 else 1e-8 * max(diagonal.abs().max().item(), 1.0)
    raise RestorationError(f"least-squares restoration failed: the calibration inputs' Gram matrix ({len(keep)} "
                           "kept columns) stays singular after damping; use more calibration tokens, or --no-restore")
