"""FASP's building blocks (docs/algorithms.md, "FASP"): the column metric and the least-squares restoration."""
from __future__ import annotations

import pytest
import torch

from hubprune.methods.compute.restoration import RestorationError, column_scores, restore


def layer(seed=0, d_out=16, n=32, tokens=300):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(n, n, generator=g) / n**0.5 + torch.eye(n)  # correlated inputs: restoration has work to do
    x = (mix @ torch.randn(n, tokens, generator=g, dtype=torch.float32)).double()
    w = torch.randn(d_out, n, generator=g).double()
    keep = torch.sort(torch.randperm(n, generator=g)[:20]).values
    return w, x, keep


def test_scores_are_input_norm_times_column_l1_norm():
    w, x, _ = layer()
    expected = torch.stack([x[j].norm() * w[:, j].abs().sum() for j in range(w.shape[1])])
    torch.testing.assert_close(column_scores(w, x @ x.T), expected)


def test_undamped_restoration_is_the_least_squares_solution():
    w, x, keep = layer()
    restored = restore(w, x @ x.T, keep, damping=0.0)
    lstsq = torch.linalg.lstsq(x[keep].T, (w @ x).T).solution.T
    torch.testing.assert_close(restored, lstsq, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_damped_restoration_beats_plain_column_removal(seed):
    w, x, keep = layer(seed)
    target = w @ x
    restored = restore(w, (x @ x.T).float(), keep)  # fp32 Gram matrix, the default accumulation
    error = lambda w_s: (target - w_s.double() @ x[keep]).norm()  # noqa: E731
    assert restored.dtype == w.dtype
    assert error(restored) < 0.9 * error(w[:, keep])


def test_nothing_pruned_leaves_the_weights_unchanged():
    w, x, _ = layer()
    assert torch.equal(restore(w, x @ x.T, torch.arange(w.shape[1])), w)


def test_a_singular_gram_matrix_is_damped_until_it_factorises():
    w, x, keep = layer(tokens=5)  # rank 5 < 20 kept columns
    restored = restore(w, x @ x.T, keep, damping=0.0)
    assert torch.isfinite(restored).all()
    with pytest.raises(RestorationError, match="singular"):
        restore(w, torch.full((32, 32), float("nan"), dtype=torch.float64), keep)
