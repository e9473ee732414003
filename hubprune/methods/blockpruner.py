"""BlockPruner (Zhong et al., 2024) as the 2SSP reference implements it (docs/algorithms.md,
"BlockPruner"): k = ceil(s·N)
rounds, each removing the attention sub-module, then the MLP, whose bypass gives the lowest perplexity
on one calibration window. k attention + k MLP sub-modules go, the parameters of k whole blocks; a block
loses both only if both were chosen.

`--blockpruner-mode mix` is the original paper's search: each step removes whichever single sub-module
(attention or MLP) gives the lowest perplexity, with no equal counts, until the removed parameters reach
s of the decoder layers' parameters. The paper's 64 Alpaca calibration samples are not reproduced:
calibration is the same as the reference's (--calib-data, --calib-samples)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import schema
from ..plan import PrunePlan
from .base import (BlockBudgetMethod, CalibrationOptions, Paper, PruneContext, Selection, blocks_to_remove, calib_samples,
                   window_bytes)
from .registry import register


@dataclass
class BlockPrunerOptions(CalibrationOptions):
    calib_samples: int = calib_samples(1)
    blockpruner_mode: str = schema.setting(
        "paired", choices=("paired", "mix"), group="blockpruner",
        help="paired: each round removes one attention then one MLP, k of each (the 2SSP reference); mix: each step "
             "removes the best sub-module of either kind until the removed parameters reach --sparsity (the "
             "BlockPruner paper)")


@register
class BlockPruner(BlockBudgetMethod):
    name = "blockpruner"
    produces = frozenset({"skip_attention", "skip_mlp", "drop_blocks"})  # both skipped: a dropped block
    summary = "greedy by perplexity: each round removes the best attention, then the best MLP sub-module"
    paper = Paper("BlockPruner: Fine-grained Pruning for Large Language Models", "2406.10594", "Zhong, Longguang")
    Options = BlockPrunerOptions

    def working_memory(self, config, itemsize: int, seq_len: int, sparsity: float | None,
                       options: BlockPrunerOptions) -> dict:
        """The greedy search's block inputs (one per block) and its candidates in flight (up to two per block)."""
        windows = options.calib_samples
        return {"device": 3 * config.num_hidden_layers * window_bytes(config, windows, seq_len, itemsize)}

    def select(self, context: PruneContext) -> Selection:
        from .compute.greedy import greedy_cached
        from .twossp import module_sizes

        opts = context.options
        model = context.loaded.model
        n = model.config.num_hidden_layers
        if opts.blockpruner_mode == "paired":
            k = blocks_to_remove(context.sparsity, n)
            schedule, until, budget = [("attention",), ("mlp",)] * k, None, f"k = {k} of {n}"
        else:
            p_attn, p_mlp, p_main = module_sizes(model)
            target = context.sparsity * p_main
            size = {"attention": p_attn, "mlp": p_mlp}
            schedule = [("attention", "mlp")] * (2 * n)
            until = lambda removed: sum(size[kind] for _, kind in removed) >= target  # noqa: E731
            budget = f"mix, until {context.sparsity:.2%} of decoder parameters"
        removed, steps = greedy_cached(context.stack(), context.windows, schedule, until=until, desc="blockpruner")
        attention = sorted(layer for layer, kind in removed if kind == "attention")
        mlp = sorted(layer for layer, kind in removed if kind == "mlp")
        return Selection(PrunePlan(skip_attention=attention, skip_mlp=mlp), {
            "summary": f"removed attention in {attention}, MLP in {mlp} ({budget})", "options": asdict(opts),
            "steps": steps})
