"""Whole-block removal baselines of the 2SSP paper (algorithms.md §4.1-4.2), as the 2SSP reference
implements them: ShortGPT (Men et al., 2024) and the window method (Gromov et al., 2024).

Both remove k = ceil(s·N) whole blocks, chosen from the dense model's block outputs on calibration
windows (256 x 2048 tokens of C4 by default), and export a stock architecture (no remote code)."""
from __future__ import annotations

import math

from ..errors import InvalidOptionError
from ..plan import PrunePlan
from .base import PruneContext, PruningMethod, window_bytes
from .registry import register


def blocks_to_remove(sparsity: float, num_layers: int) -> int:
    """k = ceil(s·N), as the reference (so the real rate is k/N); rounding guards against 0.3*10 = 3.0000000000000004."""
    return math.ceil(round(sparsity * num_layers, 9))


class BlockBudgetMethod(PruningMethod):
    """A method whose budget is k = ceil(s·N) blocks' worth (whole blocks, or k attention + k MLPs)."""

    defaults: dict = {"calib_data": "auto", "calib_samples": 256}
    options = tuple(defaults)

    def check_options(self, options: dict) -> None:
        if int(self.with_defaults(options)["calib_samples"]) < 1:
            raise InvalidOptionError("--calib-samples must be at least 1")

    def working_memory(self, config, itemsize: int, seq_len: int, sparsity: float | None, options: dict) -> dict:
        """Every calibration window's state, two copies while a block runs (its input and its output)."""
        return {"device": 2 * window_bytes(config, self.with_defaults(options)["calib_samples"], seq_len, itemsize)}

    def check_model(self, model, sparsity: float | None, options: dict) -> None:
        n = model.config.num_hidden_layers
        if blocks_to_remove(sparsity, n) > n - 1:
            raise InvalidOptionError(f"--sparsity {sparsity} would remove all {n} blocks of this model; "
                                     f"the most {self.name} can remove is {n - 1} (sparsity {(n - 1) / n:.3f})")


@register
class ShortGPT(BlockBudgetMethod):
    name = "shortgpt"
    summary = "remove the k whole blocks whose output changes their input least (block influence)"
    paper = "Men et al., ShortGPT: Layers in Large Language Models are More Redundant Than You Expect (2024), arXiv:2403.03853"
    defaults = {**BlockBudgetMethod.defaults, "shortgpt_tokens": "last"}
    options = tuple(defaults)

    def check_options(self, options: dict) -> None:
        super().check_options(options)
        if self.with_defaults(options)["shortgpt_tokens"] not in ("last", "all"):
            raise InvalidOptionError("--shortgpt-tokens: choose last (the 2SSP reference) or all (the ShortGPT paper)")

    def select(self, context: PruneContext) -> PrunePlan:
        from .block_similarity import block_outputs_last_token, consecutive_similarity_all_tokens, mean_cosine

        opts = self.with_defaults(context.options)
        n = context.loaded.model.config.num_hidden_layers
        k = blocks_to_remove(context.sparsity, n)
        windows, provenance = context.calibration(opts["calib_data"], int(opts["calib_samples"]))
        stack = context.stack()
        if opts["shortgpt_tokens"] == "last":
            # The reference records block outputs only, so block 0 has no input to compare: BI_0 = 1.
            outputs = block_outputs_last_token(stack, windows)
            influence = [1.0] + [1 - mean_cosine(outputs[i - 1], outputs[i]) for i in range(1, n)]
        else:
            influence = (1 - consecutive_similarity_all_tokens(stack, windows)).tolist()
        removed = sorted(sorted(range(n), key=lambda i: influence[i])[:k])  # stable: a tie keeps the lower index
        context.report.update(summary=f"removed blocks {removed} (k = {k} of {n})", options=opts,
                              calibration=provenance, blocks_removed=k, block_influence=influence)
        return PrunePlan(drop_blocks=removed)


@register
class WindowMethod(BlockBudgetMethod):
    name = "window"
    summary = "remove the k consecutive blocks whose input and output are most similar (Gromov et al.)"
    paper = "Gromov et al., The Unreasonable Ineffectiveness of the Deeper Layers (2024), arXiv:2403.17887"

    def select(self, context: PruneContext) -> PrunePlan:
        from .block_similarity import block_outputs_last_token, mean_cosine

        opts = self.with_defaults(context.options)
        n = context.loaded.model.config.num_hidden_layers
        k = blocks_to_remove(context.sparsity, n)
        windows, provenance = context.calibration(opts["calib_data"], int(opts["calib_samples"]))
        outputs = block_outputs_last_token(context.stack(), windows)
        similarity = {start: mean_cosine(outputs[start], outputs[start + k]) for start in range(n - k)}
        # As the reference: start from (0, 1) with similarity 0 and take later windows on ties (>=).
        # If no similarity is positive this keeps the fallback and removes block 1 only (recorded).
        first, last, best = 0, 1, 0.0
        for start, value in similarity.items():
            if value >= best:
                first, last, best = start, start + k, value
        removed = list(range(first + 1, last + 1))
        context.report.update(summary=f"removed blocks {removed} (k = {k} of {n})", options=opts,
                              calibration=provenance, blocks_removed=len(removed),
                              window_similarity={str(s): v for s, v in similarity.items()},
                              degenerate_fallback=len(removed) != k)
        return PrunePlan(drop_blocks=removed)
