"""FASP's block-by-block pass (see fasp.py): statistics, selection and restoration for each block in turn.

While a block is being decided, its pruned sub-modules run at full shape with the refitted weights in
the kept columns and zeros in the removed ones: a removed value channel or FFN neuron then adds
exactly nothing, so the block computes what the pruned block will, and the next block is calibrated on
the pruned model's own hidden states. Each sub-module runs twice per block: once dense for its
statistics, once pruned (the attention's second run is only its output projection, on the inputs kept
from the first). The refitted weights, in the pruned layout, go to `restored`. Over several processes
each runs its share of the windows and the Gram matrices are added, so every process decides the same.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...distributed import all_reduce_sum, local
from ...plan import PrunePlan
from ...runs import LayerTensors
from ...sequential import DecoderStack
from .clock import PhaseClock
from .restoration import column_scores, restore
from .twossp_stages import top_neurons


@contextmanager
def _gram(module: torch.nn.Module, size: int, dtype: torch.dtype, device: torch.device, inputs: list | None = None):
    """Accumulate H = Σ x xᵀ over every token of `module`'s input while the `with` runs (and append
    each input to `inputs` when given). The hook only queues work: no host synchronisation in it."""
    gram = torch.zeros(size, size, dtype=dtype, device=device)

    def hook(_module, args):
        if inputs is not None:
            inputs.append(args[0])
        x = args[0].reshape(-1, size).to(dtype)
        gram.addmm_(x.T, x)

    handle = module.register_forward_pre_hook(hook)
    try:
        yield gram
    finally:
        handle.remove()


def _full_width(restored: torch.Tensor, columns: torch.Tensor, width: int) -> torch.Tensor:
    """A [d_out, width] weight with `restored` in `columns` and zeros elsewhere."""
    full = torch.zeros(restored.shape[0], width, dtype=restored.dtype, device=restored.device)
    full[:, columns.to(restored.device)] = restored
    return full


@torch.no_grad()
def prune_blocks(stack: DecoderStack, windows: torch.Tensor, widths, restored: LayerTensors | None, *,
                 restore_weights: bool = True, damping: float = 0.01, fp64_above: int = 16384, batch: int = 8,
                 progress: bool = True) -> tuple[PrunePlan, dict]:
    config, family, device = stack.config, stack.family, stack.device
    kv_heads, head_dim = family.value_groups(config)
    heads = config.num_attention_heads
    value_cols, down = family.value_cols, family.ffn_cols[0]  # block-local: "self_attn.o_proj", "mlp.down_proj"
    clock = PhaseClock(device)
    plan = PrunePlan()
    mine = local(windows)
    states = [stack.embed(mine[i:i + batch]) for i in range(0, mine.shape[0], batch)]
    for index in tqdm(range(stack.num_layers), desc="fasp", disable=not progress, leave=False):
        with stack.block(index) as layer:
            # Attention pair: o_proj's input does not depend on o_proj, so the dense pass gives H_o, and
            # its inputs (kept) give the pruned attention's output without running the attention again.
            o_proj = layer.get_submodule(value_cols)
            w_o = o_proj.weight
            size = w_o.shape[1]
            dtype = torch.float64 if size > fp64_above else torch.float32
            o_inputs: list[torch.Tensor] = []
            with clock("calibration forward"), _gram(o_proj, size, dtype, device, o_inputs) as h_o:
                for h in states:
                    stack.run(layer, index, h, skip_mlp=True)
            all_reduce_sum(h_o)
            with clock("solves"):
                scores = column_scores(w_o, h_o).view(kv_heads, heads // kv_heads, head_dim).sum(1)
                groups = top_neurons(scores, widths.value_keep)
                columns = family.value_columns(config, groups)
                w_o_kept = restore(w_o, h_o, columns.to(device), damping=damping) if restore_weights else w_o[:, columns.to(device)]
            del h_o
            w_o_full = _full_width(w_o_kept, columns, size)

            # FFN pair, on the outputs of the pruned attention.
            with clock("calibration forward"):
                mids = [h + family.attention_branch_output(layer, F.linear(x, w_o_full, o_proj.bias))
                        for h, x in zip(states, o_inputs)]
            del o_inputs
            w_d = layer.get_submodule(down).weight
            size = w_d.shape[1]
            dtype = torch.float64 if size > fp64_above else torch.float32
            with clock("calibration forward"), _gram(layer.get_submodule(down), size, dtype, device) as h_d:
                for m in mids:
                    stack.run(layer, index, m, skip_attention=True)
            all_reduce_sum(h_d)
            with clock("solves"):
                neurons = torch.tensor(top_neurons(column_scores(w_d, h_d)[None], widths.ffn_keep)[0], device=device)
                w_d_kept = restore(w_d, h_d, neurons, damping=damping) if restore_weights else w_d[:, neurons]
            del h_d
            mlp_params = {f"{down}.weight": _full_width(w_d_kept, neurons, size)}
            with clock("calibration forward"):
                states = [stack.run(layer, index, m, skip_attention=True, mlp_params=mlp_params) for m in mids]
            del mids
        plan.keep_value_channels[index] = groups
        plan.keep_ffn_neurons[index] = neurons.tolist()
        if restored is not None and restore_weights:
            restored.save(index, {f"{value_cols}.weight": w_o_kept, f"{down}.weight": w_d_kept})
    return plan, clock.seconds  # the statistics' time is inside the forward passes that feed them
