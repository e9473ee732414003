"""FASP (arXiv:2501.09412, 2025): interlinked column/row pruning with least-squares restoration,
block by block, as reconstructed in docs/algorithms.md, "FASP" (no reference code exists; [REC] marks
the choices made here).

Per block, on the calibration windows' hidden states (the pruned outputs of the blocks before it):
1. Attention pair: the Gram matrix H_o of o_proj's inputs is accumulated; a value channel (KV group g,
   channel c) scores the sum over the group's heads h of sqrt(H_o[j, j]) · ‖W_o[:, j]‖₁, j = h·d_head + c.
   Every group keeps its own top v channels (the same count v in every group of the layer, so the
   pruned heads stay uniform: `per_head_uniform`). v_proj loses the other rows (and bias entries),
   o_proj the matching columns, and o_proj's kept columns are refitted by least squares ("Restoration").
2. FFN pair, on inputs recomputed with the pruned attention: the same for down_proj's columns (FFN
   neurons), gate/up (or Phi-3's fused gate_up) losing the matching rows, down_proj refitted.
3. The block's pruned output becomes the next block's input. Only one block is on the device.

Q and K are never touched. Allocation is uniform: every block keeps the same value width and FFN
width. `--fasp-sparsity-semantics params` (default) sizes them so the removed fraction of decoder-layer
parameters is the request (comparable with 2SSP); `columns` removes the fraction s of each pair's
columns. The FFN width is rounded to `--ffn-multiple` and the value width to `--value-multiple` (8: on
CUDA the memory-efficient SDPA kernel needs bf16 value widths divisible by 8, else the math kernel runs,
memory quadratic in the sequence length). `--no-restore` prunes without refitting.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from .. import schema
from ..errors import InvalidOptionError
from .base import (Options, Paper, PruneContext, PruningMethod, Selection, calib_data, calib_samples, ffn_multiple,
                   window_bytes)
from .registry import register

log = logging.getLogger("hubprune")

DAMPING = 0.01  # λ = 0.01 · mean(diag H[S,S]) [REC, the SparseGPT / SliceGPT habit]
FP64_GRAM_ABOVE = 16384  # accumulate H in fp64 for layers wider than this [REC]
# --fasp-gram-dtype: auto (fp64 above FP64_GRAM_ABOVE), or one dtype for every layer. fp64 is 20-60x
# slower than fp32 on consumer GPUs; the tests check that fp32 selects the same channels on real weights.
GRAM_DTYPES = {"auto": FP64_GRAM_ABOVE, "float32": float("inf"), "float64": 0}


@dataclass(frozen=True)
class Widths:
    """What every block keeps, and the parameter arithmetic behind it (recorded in the report)."""

    semantics: str
    column_fraction: float  # ρ: the fraction of each pair's columns to remove
    head_dim: int
    value_keep: int  # value channels kept per head
    ffn_width: int
    ffn_keep: int
    ffn_keep_exact: float
    predicted_sparsity: float  # removed fraction of decoder-layer parameters with these widths


def module_counts(model) -> dict:
    """Parameters per block of what FASP can remove, on a weightless (meta) model."""
    from ..families import get_family

    config = model.config
    family = get_family(config.model_type)
    layers = family.layers(model)
    params = dict(layers[0].named_parameters())
    kv_heads, head_dim = family.value_groups(config)
    rows = "self_attn.qkv_proj" if family.value_rows + ".weight" not in params else family.value_rows  # Phi-3: fused
    v_row = params[rows + ".weight"].shape[1] + (1 if rows + ".bias" in params else 0)
    per_channel = v_row * kv_heads + params[family.value_cols + ".weight"].shape[0] * config.num_attention_heads
    mlp = sum(p.numel() for n, p in params.items() if family.is_mlp_param(n) and not family.is_norm_param(n))
    return {"block": sum(p.numel() for p in params.values()), "decoder": sum(p.numel() for p in layers.parameters()),
            "value_per_head_channel": per_channel,  # one channel removed from every head
            "mlp": mlp, "ffn_width": family.ffn_width(config), "head_dim": head_dim}


def widths(counts: dict, sparsity: float, semantics: str, ffn_multiple: int, value_multiple: int = 1) -> Widths:
    """Uniform widths for the request; the value width is rounded first (to the multiple of
    `value_multiple` closest to it, when the head size is one) and the FFN width absorbs the rest of the
    parameter budget, rounded to the multiple of `ffn_multiple` closest to the request."""
    block, head_dim, ffn = counts["block"], counts["head_dim"], counts["ffn_width"]
    per_value, per_neuron = counts["value_per_head_channel"], counts["mlp"] / ffn
    prunable = per_value * head_dim + counts["mlp"]
    rho = sparsity * block / prunable if semantics == "params" else sparsity
    if rho >= 1:
        raise InvalidOptionError(
            f"FASP cannot remove {sparsity:.1%} of this model's decoder-layer parameters: the prunable columns "
            f"(value channels and FFN neurons) hold only {prunable / block:.1%} of them; use a lower --sparsity")
    value_keep = min(head_dim, max(1, round(head_dim * (1 - rho))))
    if head_dim % value_multiple == 0:
        value_keep = min(head_dim, max(value_multiple, value_multiple * round(value_keep / value_multiple)))
    if semantics == "params":
        needed = sparsity * block - (head_dim - value_keep) * per_value
        keep_exact = ffn - needed / per_neuron
    else:
        keep_exact = ffn * (1 - rho)
    keep = min(ffn, max(ffn_multiple, ffn_multiple * round(keep_exact / ffn_multiple)))
    predicted = ((head_dim - value_keep) * per_value + (ffn - keep) * per_neuron) / block
    return Widths(semantics, rho, head_dim, value_keep, ffn, keep, keep_exact, predicted)


@dataclass
class FASPOptions(Options):
    calib_data: str = calib_data()
    calib_samples: int = calib_samples(32)
    ffn_multiple: int = ffn_multiple()
    value_multiple: int = schema.setting(
        8, minimum=1, metavar="M", group="fasp",
        help="round the kept value channels per head to a multiple of M: on CUDA the memory-efficient attention "
             "kernel needs bf16 value widths divisible by 8 (else the math kernel, slow and quadratic in memory); "
             "1 keeps the unrounded width")
    fasp_sparsity_semantics: str = schema.setting(
        "params", choices=("params", "columns"), group="fasp",
        help="params: remove --sparsity of the decoder-layer parameters (comparable with 2SSP); columns: remove "
             "--sparsity of each pair's columns, fewer parameters since Q/K stay")
    fasp_gram_dtype: str = schema.setting(
        "auto", choices=tuple(GRAM_DTYPES), group="fasp",
        help="precision of the Gram matrices: auto = fp64 for layers wider than 16384 (fast on H100/H200, 20-60x "
             "slower on consumer GPUs), float32 everywhere, or float64 everywhere")
    no_restore: bool = schema.setting(False, group="fasp",
                                      help="prune without the least-squares refit of o_proj / down_proj (an ablation)")


@register
class FASP(PruningMethod):
    name = "fasp"
    produces = frozenset({"keep_ffn_neurons", "keep_value_channels"})
    summary = "interlinked column/row pruning of value and FFN channels with least-squares restoration"
    paper = Paper("FASP: Fast and Accurate Structured Pruning of Large Language Models", "2501.09412", "Hu, Hanyu")
    Options = FASPOptions

    def working_memory(self, config, itemsize: int, seq_len: int, sparsity: float | None, options: FASPOptions) -> dict:
        """The windows' states three times (block inputs, o_proj inputs, mid-block states), the Gram matrix
        of the widest refitted layer with the Cholesky factor and solve beside it (fp64 above
        FP64_GRAM_ABOVE), and one batch's FFN activations."""
        windows = options.calib_samples
        ffn = getattr(config, "intermediate_size", None) or config.ffn_dim
        width = max(ffn, config.hidden_size)
        gram = width * width * (8 if width > GRAM_DTYPES[options.fasp_gram_dtype] else 4)
        ffn_batch = min(8, windows) * seq_len * ffn * itemsize
        return {"device": 3 * window_bytes(config, windows, seq_len, itemsize) + 3 * gram + ffn_batch}

    def check_model(self, model, sparsity: float | None, options: FASPOptions) -> None:
        widths(module_counts(model), sparsity, options.fasp_sparsity_semantics, options.ffn_multiple,
               options.value_multiple)

    def select(self, context: PruneContext) -> Selection:
        from .compute.fasp_blocks import prune_blocks

        opts = context.options
        model = context.loaded.model
        plan_widths = widths(module_counts(model), context.sparsity, opts.fasp_sparsity_semantics, opts.ffn_multiple,
                             opts.value_multiple)
        windows = context.windows
        widest = max(plan_widths.ffn_width, model.config.num_attention_heads * plan_widths.head_dim)
        if not opts.no_restore and windows.numel() < 2 * widest:
            log.warning("FASP refits layers %d columns wide from %d calibration tokens: a least-squares fit from "
                        "so few tokens overfits them; use more --calib-samples or a longer --seq-len",
                        widest, windows.numel())
        started = time.perf_counter()
        plan, timings = prune_blocks(context.stack(), windows, plan_widths, context.restored,
                                     restore_weights=not opts.no_restore, damping=DAMPING,
                                     fp64_above=GRAM_DTYPES[opts.fasp_gram_dtype])
        timings["total"] = time.perf_counter() - started
        w = plan_widths
        return Selection(plan, {
            "summary": (f"every block keeps {w.value_keep}/{w.head_dim} value channels per head and {w.ffn_keep}/"
                        f"{w.ffn_width} FFN neurons (predicted sparsity {w.predicted_sparsity:.2%}; "
                        f"{'without' if opts.no_restore else 'with'} least-squares restoration)"),
            "options": asdict(opts), "widths": asdict(w), "damping": DAMPING, "restored": not opts.no_restore,
            "timing_seconds": timings})

