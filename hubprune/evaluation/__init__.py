"""Evaluation: perplexity now; downstream tasks (lm-eval) and speed come next."""
from .perplexity import PerplexityResult, perplexity

__all__ = ["PerplexityResult", "perplexity"]
