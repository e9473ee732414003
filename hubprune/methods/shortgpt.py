"""ShortGPT (Men et al., 2024) as the 2SSP reference runs it (docs/algorithms.md, "ShortGPT"): remove the
k = ceil(s·N) whole blocks whose output changes their input least, judged on the dense model's block
outputs on calibration windows (256 x 2048 tokens of C4 by default). Exports a stock architecture."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import schema
from ..plan import PrunePlan
from .base import BlockBudgetMethod, CalibrationOptions, Paper, PruneContext, Selection, blocks_to_remove
from .registry import register


@dataclass
class ShortGPTOptions(CalibrationOptions):
    shortgpt_tokens: str = schema.setting(
        "last", choices=("last", "all"), group="shortgpt",
        help="block influence from the last token of each window (the 2SSP reference) or from every token "
             "(the ShortGPT paper)")


@register
class ShortGPT(BlockBudgetMethod):
    name = "shortgpt"
    produces = frozenset({"drop_blocks"})
    summary = "remove the k whole blocks whose output changes their input least (block influence)"
    paper = Paper("ShortGPT: Layers in Large Language Models are More Redundant Than You Expect", "2403.03853",
                  "Men, Xin")
    Options = ShortGPTOptions

    def select(self, context: PruneContext) -> Selection:
        from .compute.block_similarity import block_outputs_last_token, consecutive_similarity_all_tokens, mean_cosine

        opts = context.options
        n = context.loaded.model.config.num_hidden_layers
        k = blocks_to_remove(context.sparsity, n)
        windows = context.windows
        stack = context.stack()
        if opts.shortgpt_tokens == "last":
            # The reference records block outputs only, so block 0 has no input to compare: BI_0 = 1.
            outputs = block_outputs_last_token(stack, windows)
            influence = [1.0] + [1 - mean_cosine(outputs[i - 1], outputs[i]) for i in range(1, n)]
        else:
            influence = (1 - consecutive_similarity_all_tokens(stack, windows)).tolist()
        removed = sorted(sorted(range(n), key=lambda i: influence[i])[:k])  # stable: a tie keeps the lower index
        return Selection(PrunePlan(drop_blocks=removed), {
            "summary": f"removed blocks {removed} (k = {k} of {n})", "options": asdict(opts), "blocks_removed": k,
            "block_influence": influence})
