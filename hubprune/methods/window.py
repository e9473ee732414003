"""The window method (Gromov et al., 2024) as the 2SSP reference runs it (docs/algorithms.md, "Window"):
remove the k = ceil(s·N) consecutive blocks whose input and output are most similar on calibration
windows. Exports a stock architecture."""
from __future__ import annotations

from dataclasses import asdict

from ..plan import PrunePlan
from .base import BlockBudgetMethod, Paper, PruneContext, Selection, blocks_to_remove
from .registry import register


@register
class WindowMethod(BlockBudgetMethod):
    name = "window"
    produces = frozenset({"drop_blocks"})
    summary = "remove the k consecutive blocks whose input and output are most similar (Gromov et al.)"
    paper = Paper("The Unreasonable Ineffectiveness of the Deeper Layers", "2403.17887", "Gromov, Andrey")

    def select(self, context: PruneContext) -> Selection:
        from .compute.block_similarity import block_outputs_last_token, mean_cosine

        opts = context.options
        n = context.loaded.model.config.num_hidden_layers
        k = blocks_to_remove(context.sparsity, n)
        outputs = block_outputs_last_token(context.stack(), context.windows)
        similarity = {start: mean_cosine(outputs[start], outputs[start + k]) for start in range(n - k)}
        # As the reference: start from (0, 1) with similarity 0 and take later windows on ties (>=).
        # If no similarity is positive this keeps the fallback and removes block 1 only (recorded).
        first, last, best = 0, 1, 0.0
        for start, value in similarity.items():
            if value >= best:
                first, last, best = start, start + k, value
        removed = list(range(first + 1, last + 1))
        return Selection(PrunePlan(drop_blocks=removed), {
            "summary": f"removed blocks {removed} (k = {k} of {n})", "options": asdict(opts),
            "blocks_removed": len(removed), "window_similarity": {str(s): v for s, v in similarity.items()},
            "degenerate_fallback": len(removed) != k})
