"""`hubprune info`: a model's architecture, and for a pruned model its per-layer structure and
parameter counts dense vs pruned. Reads the config only; no weights are loaded."""
from __future__ import annotations

from .families import get_family
from .loading import load_config, parameter_count, resolve_model


def model_info(reference: str, *, revision: str | None = None, token: str | None = None,
               trust_remote_code: bool = False) -> dict:
    source = resolve_model(reference, revision=revision, token=token, trust_remote_code=trust_remote_code)
    config = load_config(source)
    family = get_family(config.model_type)
    info = {
        "model": reference,
        "model_type": config.model_type,
        "family": family.model_type,
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "intermediate_size": family.ffn_width(config),
        "attention_heads": config.num_attention_heads,
        "kv_heads": family.value_groups(config)[0],
        "vocab_size": config.vocab_size,
        "tied_embeddings": bool(config.tie_word_embeddings),
        "parameters": parameter_count(config),
    }
    record = getattr(config, "hubprune", None)
    if record:
        info["hubprune"] = record
    blocks = getattr(config, "block_configs", None)
    if blocks:
        head_dim = family.value_groups(config)[1]
        info["blocks"] = [
            {"layer": i, "attention": not b["attention"]["no_op"],
             "value_head_dim": None if b["attention"]["no_op"] else b["attention"].get("v_head_dim", head_dim),
             "ffn_width": 0 if b["ffn"]["no_op"] else b["ffn"]["intermediate_size"],
             "residual": b.get("residual")}  # (input, middle, output) widths when sliced (SliceGPT)
            for i, b in enumerate(blocks)
        ]
    return info


def format_info(info: dict) -> str:
    lines = [
        f"model          {info['model']}",
        f"family         {info['family']} (model_type {info['model_type']})",
        f"layers         {info['layers']}   hidden {info['hidden_size']}   FFN {info['intermediate_size']}   "
        f"heads {info['attention_heads']} / {info['kv_heads']} KV   vocab {info['vocab_size']}",
        f"parameters     {info['parameters']:,}" + ("  (embeddings tied)" if info["tied_embeddings"] else ""),
    ]
    record = info.get("hubprune")
    if record:
        dense = record.get("parameters_dense")
        if dense:
            lines.append(f"dense          {dense:,} parameters; pruned keeps {info['parameters'] / dense:.1%}")
        lines.append(f"pruned by      hubprune {record.get('hubprune_version')} --method {record.get('method')} "
                     f"from {record.get('source')}")
        if record.get("sparsity_achieved") is not None:
            requested = record.get("sparsity_requested")
            means = record.get("sparsity_requested_means", "of the decoder-layer parameters")
            lines.append(f"sparsity       achieved {record['sparsity_achieved']:.2%} of the decoder-layer parameters"
                         + (f"; requested {requested:.2%} {means}" if requested is not None else ""))
    if "blocks" in info:
        sliced = any(b["residual"] for b in info["blocks"])
        lines.append("layer  attention  value_dim  ffn_width" + ("  residual in/mid/out" if sliced else ""))
        lines += [f"{b['layer']:>5}  {'yes' if b['attention'] else 'skipped':>9}  "
                  f"{b['value_head_dim'] if b['attention'] else '-':>9}  "
                  f"{b['ffn_width'] if b['ffn_width'] else 'skipped':>9}"
                  + (f"  {'/'.join(str(w) for w in b['residual'].values())}" if b["residual"] else "")
                  for b in info["blocks"]]
    return "\n".join(lines)
