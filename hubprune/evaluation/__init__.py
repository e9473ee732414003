"""Evaluation, dense vs pruned: perplexity (`perplexity`), zero-shot tasks through lm-eval (`tasks`),
inference speed (`speed`), assembled into one results.json by `suite.Evaluation` (schema:
results.schema.json) and shown as tables by `report`. What to evaluate is `settings.EvalSettings`.
Nothing is imported here, so that settings can be checked without importing torch."""
