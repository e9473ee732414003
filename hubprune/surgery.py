"""Apply a `PrunePlan` to a loaded model: slice its weights and build the pruned model in memory.

The result is exactly what gets exported: a stock transformers model when the plan needs no custom
code (only whole blocks removed, or one FFN width everywhere and nothing skipped), otherwise the
hubprune remote-code architecture (`hubprune.modeling`). Weights keep the source dtype and device.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from . import modeling
from .families import Family, get_family
from .plan import BoundPlan, PrunePlan

# The key of `overrides` that holds tensors outside the blocks (full names), e.g. SliceGPT's rotated
# embeddings and head.
OUTSIDE_BLOCKS = "outside"

# Config keys that describe a checkpoint rather than the architecture.
_DROP_CONFIG_KEYS = ("transformers_version", "architectures", "model_type", "auto_map", "_name_or_path",
                     "quantization_config", "block_configs", "hubprune")


def decoder_parameters(model: PreTrainedModel) -> int:
    """Parameters of the decoder blocks (embeddings, lm_head and final norm excluded)."""
    return sum(p.numel() for p in get_family(model.config.model_type).layers(model).parameters())


def total_parameters(model: PreTrainedModel) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def plan_limits(config: PretrainedConfig, family: Family) -> tuple:
    """The model's dimensions a plan is validated against (`PrunePlan.validate`'s arguments)."""
    return (config.num_hidden_layers, family.ffn_width(config), family.value_groups(config),
            config.hidden_size if family.residual_slicing else None)


def bind_plan(plan: PrunePlan, config: PretrainedConfig, family: Family | None = None) -> BoundPlan:
    """Check `plan` against the model of `config` (a `PlanError` names the first problem) and put it in
    normal form: the one plan surgery and export accept."""
    family = family or get_family(config.model_type)
    plan.validate(*plan_limits(config, family))
    return BoundPlan(plan.normalized(config.num_hidden_layers), config.num_hidden_layers, config.hidden_size)


def needs_custom_code(bound: BoundPlan) -> bool:
    plan = bound.plan
    if plan.skip_attention or plan.skip_mlp or plan.keep_value_channels or plan.residual_width is not None:
        return True
    widths = {len(plan.keep_ffn_neurons.get(l, ())) or None for l in bound.kept_layers}
    return len(widths) > 1  # a mix of pruned and unpruned layers, or different widths


def pruned_config(source: PretrainedConfig, bound: BoundPlan, family: Family):
    """The config of the pruned model (stock class when possible, else the hubprune class). The run's
    `hubprune` summary is set on it when it is saved."""
    plan, kept = bound.plan, bound.kept_layers
    width = family.ffn_width(source)
    data = {k: v for k, v in source.to_dict().items() if k not in _DROP_CONFIG_KEYS}
    data["num_hidden_layers"] = len(kept)
    family.remap_layer_fields(data, source, kept)

    if not needs_custom_code(bound):
        widths = {len(plan.keep_ffn_neurons[l]) for l in kept if l in plan.keep_ffn_neurons}
        family.set_ffn_width(data, widths.pop() if widths else width)
        config = AutoConfig.for_model(family.model_type, **data)
    else:
        source_types = family.source_layer_types(source)
        data["layer_types"] = [source_types[l] for l in kept]
        residual = bound.residual_widths()
        data["block_configs"] = [
            {
                "attention": {"no_op": l in plan.skip_attention, "num_key_value_heads": family.value_groups(source)[0],
                              **({"v_head_dim": len(plan.keep_value_channels[l][0])}
                                 if l in plan.keep_value_channels else {})},
                "ffn": {
                    "no_op": l in plan.skip_mlp,
                    "intermediate_size": 0 if l in plan.skip_mlp else len(plan.keep_ffn_neurons.get(l, range(width))),
                },
                **({"residual": dict(zip(("input", "middle", "output"), residual[i]))}
                   if plan.residual_width is not None else {}),
            }
            for i, l in enumerate(kept)
        ]
        if plan.residual_width is not None:
            data["tie_word_embeddings"] = False  # the embeddings and the head are rotated differently
        data["auto_map"] = {
            "AutoConfig": f"configuration_hubprune.{family.pruned_config_class}",
            "AutoModelForCausalLM": f"modeling_hubprune.{family.pruned_model_class}",
            "AutoModel": f"modeling_hubprune.{family.pruned_base_class}",
        }
        data["architectures"] = [family.pruned_model_class]
        config = modeling.OWN_CLASSES[family.pruned_model_type][0](**data)
    return config


def prune_block(tensors: dict[str, torch.Tensor], layer: int, bound: BoundPlan, family: Family,
                config: PretrainedConfig, overrides: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """One source block's tensors (names local to the block) with the plan applied. `overrides` replaces
    tensors after slicing, e.g. weights refitted by a restoring method. Under `residual_width` every
    tensor of the block comes from `overrides` (rotated; norms folded in)."""
    plan = bound.plan
    if plan.residual_width is not None:
        return _rotated_block(tensors, layer, family, overrides)
    if layer in plan.skip_attention:
        tensors = {k: v for k, v in tensors.items() if not family.is_attention_param(k)}
    elif layer in plan.keep_value_channels:
        tensors = family.slice_values(tensors, plan.keep_value_channels[layer], config)
    if layer in plan.skip_mlp:
        tensors = {k: v for k, v in tensors.items() if not family.is_mlp_param(k)}
    elif layer in plan.keep_ffn_neurons:
        tensors = family.slice_ffn(tensors, torch.tensor(plan.keep_ffn_neurons[layer], dtype=torch.long))
    for name, tensor in (overrides or {}).items():
        if name not in tensors or tensors[name].shape != tensor.shape:
            raise RuntimeError(f"restored weight {name} of layer {layer} does not match the pruned block")
        tensors[name] = tensor.to(device=tensors[name].device, dtype=tensors[name].dtype)
    return tensors


def _rotated_block(tensors: dict[str, torch.Tensor], layer: int, family: Family,
                   rotated: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    expected = {n for n in tensors if not family.is_norm_param(n)} | {"attn_shortcut_Q", "mlp_shortcut_Q"}
    if rotated is None or set(rotated) != expected:
        raise RuntimeError(f"layer {layer}: a residual_width plan needs the rotated weights of the run that made it "
                           f"(expected {sorted(expected)}, found {sorted(rotated or {})})")
    dtype, device = next(iter(tensors.values())).dtype, next(iter(tensors.values())).device
    return {name: tensor.to(device=device, dtype=dtype) for name, tensor in rotated.items()}


def pruned_outside(tensors: dict[str, torch.Tensor], bound: BoundPlan, family: Family,
                   overrides: Callable[[int | str], dict[str, torch.Tensor]] | None) -> dict[str, torch.Tensor]:
    """The tensors outside the blocks (full names): unchanged, except under `residual_width`, where the
    embeddings and the head are the rotated ones from `overrides(OUTSIDE_BLOCKS)` and the final norm's
    weight is gone (folded into the head)."""
    if bound.plan.residual_width is None:
        return dict(tensors)
    rotated = overrides(OUTSIDE_BLOCKS) if overrides else None
    expected = {family.embedding_weight, family.head_weight}
    if rotated is None or set(rotated) != expected:
        raise RuntimeError(f"a residual_width plan needs the rotated embeddings and head of the run that made it "
                           f"(expected {sorted(expected)}, found {sorted(rotated or {})})")
    like = tensors[family.embedding_weight]
    out = {n: t for n, t in tensors.items() if n not in expected and n != family.final_norm_weight}
    out.update({n: t.to(device=like.device, dtype=like.dtype) for n, t in rotated.items()})
    return out


def pruned_state_dict(model: PreTrainedModel, bound: BoundPlan, family: Family,
                      overrides: Callable[[int | str], dict[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
    """Source weights with the plan applied and layers renumbered. Kept tensors are shared, not copied.
    `overrides(layer)` gives the restored tensors of a source layer (see `prune_block`), and
    `overrides(OUTSIDE_BLOCKS)` those outside the blocks (see `pruned_outside`)."""
    by_layer: dict[int, dict[str, torch.Tensor]] = {}
    outside: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name.startswith(family.layers_prefix):
            index, local = name[len(family.layers_prefix):].split(".", 1)
            by_layer.setdefault(int(index), {})[local] = tensor
        else:
            outside[name] = tensor
    out = pruned_outside(outside, bound, family, overrides)
    for new_index, layer in enumerate(bound.kept_layers):
        restored = overrides(layer) if overrides else None
        for local, tensor in prune_block(by_layer[layer], layer, bound, family, model.config, restored).items():
            out[f"{family.layers_prefix}{new_index}.{local}"] = tensor
    return out


def model_class(config: PretrainedConfig) -> type[PreTrainedModel]:
    """The class for `config`: hubprune's own for the pruned format, else the stock transformers class."""
    if config.model_type in modeling.OWN_CLASSES:
        return modeling.OWN_CLASSES[config.model_type][1]
    if type(config) in AutoModelForCausalLM._model_mapping:
        return AutoModelForCausalLM._model_mapping[type(config)]
    # a config class of the model's own (trusted) code: the stock model of its model_type
    return AutoModelForCausalLM._model_mapping[CONFIG_MAPPING[config.model_type]]


def build_model(config: PretrainedConfig, state_dict: dict[str, torch.Tensor], *, dtype: torch.dtype,
                device: torch.device | str, attn_implementation: str | None = None) -> PreTrainedModel:
    """Instantiate `config`'s model without allocating random weights, then take `state_dict`'s tensors."""
    with torch.device("meta"):
        model = model_class(config)._from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    model.load_state_dict(state_dict, strict=not config.tie_word_embeddings, assign=True)
    family = get_family(config.model_type)
    if config.tie_word_embeddings:
        model.lm_head.weight = family.embeddings(model).weight
    family.rebuild_buffers(model, config, device)  # non-persistent buffers (rotary frequencies) are still on meta
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:
        raise RuntimeError(f"pruned model has uninitialised tensors: {leftovers[:5]}")
    return model.to(device).eval()


def apply_plan(model: PreTrainedModel, plan: PrunePlan | BoundPlan,
               overrides: Callable[[int | str], dict[str, torch.Tensor]] | None = None) -> PreTrainedModel:
    """The pruned model, on the source model's device and in its dtype (a `PrunePlan` is bound first)."""
    family = get_family(model.config.model_type)
    bound = plan if isinstance(plan, BoundPlan) else bind_plan(plan, model.config, family)
    config = pruned_config(model.config, bound, family)
    state = pruned_state_dict(model, bound, family, overrides)
    return build_model(config, state, dtype=model.dtype, device=model.device,
                       attn_implementation=model.config._attn_implementation)
