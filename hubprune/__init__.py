"""hubprune: structured pruning of Hugging Face causal LMs into loadable, publishable models.

Library API (the CLI is a thin layer over it):

    import hubprune
    result = hubprune.prune("default", "manual", options={"plan": "plan.yaml"}, output="out", ppl=["default"])
    hubprune.evaluate("out", ppl=["default"], tasks=["piqa"], speed=True)
    hubprune.heal_output("out", output="out-healed", heal={"steps": 200}, ppl=["default"])
    hubprune.push(repo_id="me/model", from_dir="out")
    hubprune.load_model("meta-llama/Llama-2-7b-hf", device="cuda", dtype="bfloat16")
"""
__version__ = "0.1.0"

# Public names, imported on first use so that `hubprune --help` and `hubprune methods` start fast.
_EXPORTS = {
    "HubPruneError": "errors", "model_info": "info", "load_model": "loading", "get_method": "methods",
    "register": "methods", "PruneJob": "job", "EvalSettings": "evaluation.settings", "PruneResult": "pipeline",
    "evaluate": "pipeline", "prune": "pipeline", "PrunePlan": "plan", "apply_plan": "surgery", "push": "push", "render_card": "card",
    "HealSettings": "heal.settings", "heal_output": "heal.run",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'hubprune' has no attribute {name!r}")
