"""BlockPruner (Zhong et al., 2024) as the 2SSP reference implements it (algorithms.md §4.3): k = ceil(s·N)
rounds, each removing the attention sub-module, then the MLP, whose bypass gives the lowest perplexity
on one calibration window. k attention + k MLP sub-modules go, the parameters of k whole blocks; a block
loses both only if both were chosen. The original paper's "mix" search (either kind at each step, no
equal counts) and its 64 Alpaca samples are not implemented here."""
from __future__ import annotations

from ..plan import PrunePlan
from .base import PruneContext
from .blockdrop import BlockBudgetMethod, blocks_to_remove
from .registry import register


@register
class BlockPruner(BlockBudgetMethod):
    name = "blockpruner"
    summary = "greedy by perplexity: each round removes the best attention, then the best MLP sub-module"
    paper = "Zhong et al., BlockPruner: Fine-grained Pruning for Large Language Models (2024), arXiv:2406.10594"
    defaults = {"calib_data": "auto", "calib_samples": 1}
    options = tuple(defaults)

    def select(self, context: PruneContext) -> PrunePlan:
        from .greedy import greedy_cached

        opts = self.with_defaults(context.options)
        n = context.loaded.model.config.num_hidden_layers
        k = blocks_to_remove(context.sparsity, n)
        windows, provenance = context.calibration(opts["calib_data"], int(opts["calib_samples"]))
        removed, steps = greedy_cached(context.stack(), windows, [("attention",), ("mlp",)] * k, desc="blockpruner")
        attention = sorted(layer for layer, kind in removed if kind == "attention")
        mlp = sorted(layer for layer, kind in removed if kind == "mlp")
        context.report.update(summary=f"removed attention in {attention}, MLP in {mlp} (k = {k} of {n})",
                              options=opts, calibration=provenance, rounds=k, steps=steps)
        return PrunePlan(skip_attention=attention, skip_mlp=mlp)
