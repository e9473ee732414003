"""The pruned-model format, for every family: what is exported is exactly what was pruned, it equals an
independent hook-masked reference, and the KV cache is right even when layer 0 has no attention."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import FAMILIES, left_padded_batch, model_type, tiny_model
from transformers import AutoModelForCausalLM

from hubprune.export import save_model_folder
from hubprune.families import get_family
from hubprune.plan import PrunePlan
from hubprune.surgery import apply_plan, bind_plan, needs_custom_code

# Layer 0 without attention is the KV-cache trap; the rest covers every kind of removal at once,
# including narrower value heads (head_dim 16; 2 KV groups, each keeping its own channels).
PLAN = PrunePlan(
    keep_ffn_neurons={1: list(range(0, 96, 2)), 3: list(range(70))},
    keep_value_channels={1: [[0, 3, 5, 6, 9, 10, 12, 15], [1, 2, 4, 7, 8, 11, 13, 14]], 2: [[15, 2, 7], [0, 1, 2]]},
    skip_attention=[0, 3],
    skip_mlp=[2],
    drop_blocks=[4],
)


def export(model, plan, folder):
    pruned = apply_plan(model, plan)
    save_model_folder(folder, pruned, None, plan=plan, record={})
    return pruned


def reload(folder, **kwargs):
    return AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, **kwargs).eval()


def hook_masked_logits(dense, plan: PrunePlan, input_ids, attention_mask=None):
    """Reference: the dense model with the plan's removals simulated by hooks (zero outputs, masked
    neurons, identity blocks). Shares no code with surgery or the pruned modeling file."""
    handles = []
    family = get_family(dense.config.model_type)
    for index, layer in enumerate(family.layers(dense)):
        if index in plan.drop_blocks:
            handles.append(layer.register_forward_hook(
                lambda mod, args, kwargs, out: args[0] if args else kwargs["hidden_states"], with_kwargs=True))
            continue
        if index in plan.skip_attention:
            handles.append(layer.self_attn.register_forward_hook(lambda mod, inp, out: (torch.zeros_like(out[0]), out[1])))
        if index in plan.skip_mlp:  # OPT's MLP has no module of its own: zero what fc2 adds
            mlp = layer.mlp if hasattr(layer, "mlp") else layer.fc2
            handles.append(mlp.register_forward_hook(lambda mod, inp, out: torch.zeros_like(out)))
        if index in plan.keep_value_channels:  # zero the removed (head, channel) inputs of o_proj
            config = dense.config
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            per_group = config.num_attention_heads // getattr(config, "num_key_value_heads", config.num_attention_heads)
            mask = torch.zeros(config.num_attention_heads * head_dim)
            for head in range(config.num_attention_heads):
                for channel in plan.keep_value_channels[index][head // per_group]:
                    mask[head * head_dim + channel] = 1
            out_proj = layer.get_submodule(family.value_cols)
            handles.append(out_proj.register_forward_pre_hook(lambda mod, inp, m=mask: (inp[0] * m,)))
        if index in plan.keep_ffn_neurons:
            mask = torch.zeros(family.ffn_width(dense.config))
            mask[plan.keep_ffn_neurons[index]] = 1
            down = layer.get_submodule(family.ffn_cols[0])
            handles.append(down.register_forward_pre_hook(lambda mod, inp, m=mask: (inp[0] * m,)))
    try:
        with torch.no_grad():
            return dense(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_reloaded_model_equals_in_memory_and_hook_masked_dense(family, tmp_path):
    dense = tiny_model(family)
    pruned = export(dense, PLAN, tmp_path)
    reloaded = reload(tmp_path)
    assert type(reloaded).__name__ == type(pruned).__name__
    assert reloaded.config.layer_types[0] == "moe"  # layer 0 has no attention -> no KV-cache entry
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        in_memory = pruned(ids).logits
        from_disk = reloaded(ids).logits
    assert (from_disk - in_memory).abs().max() <= 1e-5
    torch.testing.assert_close(in_memory, hook_masked_logits(dense, PLAN, ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_kv_cache_generation_matches_no_cache_for_left_padded_batch(family, tmp_path):
    export(tiny_model(family), PLAN, tmp_path)
    model = reload(tmp_path)
    ids, mask = left_padded_batch(128, model.config.pad_token_id)
    kwargs = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    with_cache = model.generate(ids, use_cache=True, **kwargs)
    without_cache = model.generate(ids, use_cache=False, **kwargs)
    assert torch.equal(with_cache, without_cache)
    # ... and both equal the hook-masked dense model decoding greedily without cache
    dense = tiny_model(family)
    tokens, m = ids, mask
    finished = torch.zeros(2, dtype=torch.bool)
    for _ in range(8):
        logits = hook_masked_logits(dense, PLAN, tokens, m)
        next_token = logits[:, -1].argmax(-1).masked_fill(finished, 0)  # generate pads rows after EOS
        finished |= next_token == model.config.eos_token_id
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        m = torch.cat([m, torch.ones_like(m[:, :1])], dim=1)
    assert torch.equal(with_cache, tokens)


@pytest.mark.parametrize("family", FAMILIES)
def test_prefill_then_one_step_decode_equals_full_forward(family, tmp_path):
    export(tiny_model(family), PLAN, tmp_path)
    model = reload(tmp_path)
    ids = torch.randint(3, 128, (1, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits[:, -1]
        prefill = model(ids[:, :-1], use_cache=True)
        assert prefill.cache.get_seq_length() == 9  # would be 0 if layer 0's dummy entry were read
        step = model(ids[:, -1:], cache=prefill.cache, use_cache=True).logits[:, -1]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_pretrained_of_reloaded_model_round_trips(family, tmp_path):
    export(tiny_model(family), PLAN, tmp_path / "a")
    first = reload(tmp_path / "a")
    first.save_pretrained(tmp_path / "b")
    second = reload(tmp_path / "b")
    ids = torch.randint(3, 128, (1, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(first(ids).logits, second(ids).logits)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["block_configs"] == first.config.block_configs


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_in_bfloat16(family, tmp_path):
    pruned = export(tiny_model(family), PLAN, tmp_path)
    model = reload(tmp_path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    ids = torch.randint(3, 128, (1, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits.float(), pruned(ids).logits, atol=0.1, rtol=0.05)


def test_config_describes_every_kept_block(tmp_path):
    export(tiny_model("llama"), PLAN, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "hubprune_llama"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_hubprune.HubPruneLlamaForCausalLM"
    assert config["num_hidden_layers"] == 4  # block 4 dropped
    assert [b["attention"]["no_op"] for b in config["block_configs"]] == [True, False, False, True]
    assert [b["ffn"]["no_op"] for b in config["block_configs"]] == [False, False, True, False]
    assert [b["ffn"]["intermediate_size"] for b in config["block_configs"]] == [96, 48, 0, 70]
    assert (tmp_path / "modeling_hubprune.py").is_file() and (tmp_path / "configuration_hubprune.py").is_file()


def test_qwen2_layer_types_follow_the_kept_source_layers(tmp_path):
    # Source layers 0-1 are full attention, 2-4 sliding (max_window_layers=2).
    export(tiny_model("qwen2"), PrunePlan(skip_attention=[3], drop_blocks=[0]), tmp_path)
    model = reload(tmp_path)
    assert model.config.layer_types == ["full_attention", "sliding_attention", "moe", "sliding_attention"]


def test_remote_code_depends_only_on_torch_and_transformers():
    import ast
    import sys

    from hubprune.modeling import REMOTE_CODE_FILES

    allowed = {"torch", "transformers", "huggingface_hub", "__future__"} | set(sys.stdlib_module_names)
    for file in REMOTE_CODE_FILES:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] in allowed, (file.name, node.module)
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] in allowed for a in node.names), file.name


@pytest.mark.parametrize("family", FAMILIES)
def test_whole_blocks_removed_export_as_stock_architecture(family, tmp_path):
    dense = tiny_model(family)
    plan = PrunePlan(drop_blocks=[1, 3])
    assert not needs_custom_code(bind_plan(plan, dense.config))
    pruned = export(dense, plan, tmp_path)
    stock = AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # no trust_remote_code
    assert stock.config.model_type == model_type(family) and stock.config.num_hidden_layers == 3
    assert not (tmp_path / "modeling_hubprune.py").exists()
    ids = torch.randint(3, 128, (1, 10), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert (stock(ids).logits - pruned(ids).logits).abs().max() <= 1e-5
    torch.testing.assert_close(pruned(ids).logits, hook_masked_logits(dense, plan, ids), atol=1e-5, rtol=1e-5)


def test_uniform_ffn_width_exports_as_stock_architecture(tmp_path):
    keep = list(range(0, 96, 3))
    plan = PrunePlan(keep_ffn_neurons={l: keep for l in range(5)})
    export(tiny_model("llama"), plan, tmp_path)
    stock = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert stock.config.model_type == "llama" and stock.config.intermediate_size == 32


def test_tied_embeddings_stay_tied_and_dtype_is_preserved(tmp_path):
    dense = tiny_model("llama").to(torch.bfloat16)
    export(dense, PLAN, tmp_path)
    model = reload(tmp_path)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.dtype == torch.bfloat16
    from safetensors import safe_open

    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert "lm_head.weight" not in f.keys()
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}


def test_the_base_model_loads_with_automodel_from_the_remote_code(tmp_path):
    """`AutoModel` (auto_map) gives every family's base model, without the head, from the files in the
    folder alone (a fresh process that never imports hubprune): the pruned model's hidden states."""
    import subprocess
    import sys

    expected = {}
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    for family in FAMILIES:
        pruned = export(tiny_model(family), PLAN, tmp_path / family)
        with torch.no_grad():
            expected[family] = pruned.model(ids).last_hidden_state
        torch.save(ids, tmp_path / "ids.pt")
    script = ("import sys, torch\nfrom transformers import AutoModel\nids = torch.load(sys.argv[1])\nout = {}\n"
              "for folder in sys.argv[2:]:\n"
              "    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()\n"
              "    with torch.no_grad():\n"
              "        out[folder] = (type(model).__name__, model(ids).last_hidden_state)\n"
              "assert 'hubprune' not in sys.modules\ntorch.save(out, sys.argv[1] + '.out')\n")
    folders = [str(tmp_path / family) for family in FAMILIES]
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ids.pt"), *folders], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    got = torch.load(tmp_path / "ids.pt.out")
    for family in FAMILIES:
        name, hidden = got[str(tmp_path / family)]
        assert name == get_family(model_type(family)).pruned_base_class
        assert (hidden - expected[family]).abs().max() <= 1e-5, family
