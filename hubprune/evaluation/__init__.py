"""Evaluation, dense vs pruned: perplexity (`perplexity`), zero-shot tasks through lm-eval (`tasks`),
inference speed (`speed`), assembled into one results.json by `suite.Evaluation` (schema:
results.schema.json) and shown as tables by `report`."""
from .perplexity import PerplexityResult, perplexity

__all__ = ["PerplexityResult", "perplexity"]
