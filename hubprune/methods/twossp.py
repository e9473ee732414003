"""2SSP: two-stage structured pruning (Sandri et al., TMLR 2025), as in docs/algorithms.md, "2SSP".

Stage 1 removes FFN neurons: every block keeps the same number `k_keep`, chosen per block by the mean
over calibration windows of each neuron's L2 norm (over tokens) at the `down_proj` input.
Stage 2 then removes `N_attn` attention sub-modules greedily, each step the one whose bypass gives the
lowest perplexity on the stage-2 window(s). "Equation 5" balances the two stages.

Differences from the reference code, all numerical or in speed, none in the procedure:
- scores, losses and perplexities are fp32 (the reference takes bf16 norms on the CPU and a bf16 loss);
- statistics stay on the device, and calibration walks the model block by block (`DecoderStack`);
- stage 2 reuses the outputs of the blocks before each candidate and batches candidates through each
  block (`--stage2 naive` runs one full forward per candidate, as the reference does);
- `--ffn-multiple M` (default 8) rounds `k_keep` to a multiple of M; M = 1 is the reference's rounding.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import schema
from ..errors import InvalidOptionError
from ..plan import PrunePlan
from .base import (Options, Paper, PruneContext, PruningMethod, Selection, calib_data, calib_samples, ffn_multiple,
                   window_bytes)
from .registry import register


@dataclass
class TwoStageOptions(Options):
    alpha: float = schema.setting(1.5, above=0, group="2ssp",
                                  help="balance between attention removal and FFN width (Eq. 5)")
    calib_data: str = calib_data()
    calib_samples: int = calib_samples(32)
    stage2_samples: int = schema.setting(1, minimum=1, metavar="N", group="2ssp",
                                         help="calibration windows scored by stage 2's perplexity")
    ffn_multiple: int = ffn_multiple()
    stage2: str = schema.setting("cached", choices=("cached", "naive"), group="2ssp",
                                 help="cached: reuse the outputs of unchanged blocks and batch candidates; naive: one "
                                      "full forward per candidate, as the reference code")
    stage2_batch: int = schema.setting(8, minimum=1, metavar="B", group="2ssp",
                                       help="candidates run through a block together")

    def check(self) -> None:
        if self.stage2_samples > self.calib_samples:
            raise InvalidOptionError("--stage2-samples cannot exceed --calib-samples (stage 2 uses the first windows)")


# -- balancing ("Equation 5") ---------------------------------------------------------------------------
@dataclass
class Balance:
    """How 2SSP splits a sparsity budget between attention removal and FFN width."""

    sparsity: float
    alpha: float
    ffn_multiple: int
    num_layers: int
    ffn_width: int
    attention_parameters: int  # P_attn: block 0's attention module (biases included)
    mlp_parameters: int  # P_mlp: block 0's MLP module
    decoder_parameters: int  # P_main: all decoder blocks (norms included)
    n_attn: int  # attention sub-modules to remove
    keep_exact: float  # FFN neurons to keep before any rounding
    keep_reference: int  # the reference's k_keep (its two roundings)
    keep: int  # k_keep used: keep_reference if ffn_multiple == 1, else the nearest multiple

    @property
    def sparsity_predicted(self) -> float:
        removed = self.n_attn * self.attention_parameters
        removed += self.num_layers * (self.ffn_width - self.keep) * self.mlp_parameters / self.ffn_width
        return removed / self.decoder_parameters

    def to_dict(self) -> dict:
        return {**asdict(self), "sparsity_predicted": self.sparsity_predicted}


def module_sizes(model) -> tuple[int, int, int]:
    """(P_attn, P_mlp, P_main) of a causal LM, norms excluded from the first two; works on a weightless
    (meta) model."""
    from ..families import get_family

    family = get_family(model.config.model_type)
    layers = family.layers(model)
    params = dict(layers[0].named_parameters())
    p_attn = sum(p.numel() for n, p in params.items() if n.startswith(family.attention_prefix))
    p_mlp = sum(p.numel() for n, p in params.items() if family.is_mlp_param(n) and not family.is_norm_param(n))
    return p_attn, p_mlp, sum(p.numel() for p in layers.parameters())


def balance(*, sparsity: float, num_layers: int, ffn_width: int, attention_parameters: int, mlp_parameters: int,
            decoder_parameters: int, alpha: float = 1.5, ffn_multiple: int = 1) -> Balance:
    """N_attn = round(N · s^((P_mlp/P_attn)/α)), then the FFN budget spread evenly over all N blocks."""
    s, n, p_attn, p_mlp, p_main = sparsity, num_layers, attention_parameters, mlp_parameters, decoder_parameters
    n_attn = round(n * s ** ((p_mlp / p_attn) / alpha))  # Python's round, as the reference
    if n_attn * p_attn / p_main > s:
        raise InvalidOptionError(
            f"2SSP cannot balance sparsity {s} with --alpha {alpha}: removing {n_attn} attention modules alone "
            f"removes {n_attn * p_attn / p_main:.2%}; use a smaller --alpha")
    if (n_attn * p_attn + n * p_mlp) / p_main < s:
        raise InvalidOptionError(
            f"2SSP cannot reach sparsity {s} with --alpha {alpha}: {n_attn} attention modules plus every FFN neuron "
            f"remove only {(n_attn * p_attn + n * p_mlp) / p_main:.2%}; use a larger --alpha or a lower --sparsity")
    total = round(s * p_main)
    per_mlp = round((total - n_attn * p_attn) / n)
    keep_reference = round(ffn_width * (1 - per_mlp / p_mlp))
    keep_exact = ffn_width * (1 - (total - n_attn * p_attn) / (n * p_mlp))
    if ffn_multiple == 1:
        keep = keep_reference
    else:  # the achieved sparsity is linear in k_keep: the nearest multiple is the closest to the request
        keep = min(ffn_width, ffn_multiple * round(keep_exact / ffn_multiple))
    if keep < 1:
        raise InvalidOptionError(f"2SSP at sparsity {s} would keep {keep} FFN neurons per block; lower --sparsity"
                                 + (f" or --ffn-multiple {ffn_multiple}" if ffn_multiple > 1 else ""))
    return Balance(s, alpha, ffn_multiple, n, ffn_width, p_attn, p_mlp, p_main, n_attn, keep_exact,
                   keep_reference, keep)


# -- the method -----------------------------------------------------------------------------------------
@register
class TwoStageMethod(PruningMethod):
    name = "2ssp"
    produces = frozenset({"keep_ffn_neurons", "skip_attention"})
    summary = "two-stage: uniform FFN-neuron width pruning, then greedy removal of attention sub-modules"
    paper = Paper("2SSP: A Two-Stage Framework for Structured Pruning of LLMs", "2501.17771", "Sandri, Fabrizio",
                  "TMLR 2025")
    Options = TwoStageOptions

    def check_model(self, model, sparsity: float | None, options: TwoStageOptions) -> None:
        self.budget(model, sparsity, options)

    def working_memory(self, config, itemsize: int, seq_len: int, sparsity: float | None,
                       options: TwoStageOptions) -> dict:
        """Stage 1 holds the calibration windows' states (and a block's outputs); stage 2 every block's
        input plus up to one candidate per block in flight, on the stage-2 windows."""
        stage1 = 2 * window_bytes(config, options.calib_samples, seq_len, itemsize)
        stage2 = 2 * config.num_hidden_layers * window_bytes(config, options.stage2_samples, seq_len, itemsize)
        return {"device": max(stage1, stage2)}

    @staticmethod
    def budget(model, sparsity: float, opts: TwoStageOptions) -> Balance:
        from ..families import get_family

        p_attn, p_mlp, p_main = module_sizes(model)
        return balance(sparsity=sparsity, num_layers=model.config.num_hidden_layers,
                       ffn_width=get_family(model.config.model_type).ffn_width(model.config),
                       attention_parameters=p_attn, mlp_parameters=p_mlp, decoder_parameters=p_main,
                       alpha=opts.alpha, ffn_multiple=opts.ffn_multiple)

    def select(self, context: PruneContext) -> Selection:
        from .compute.twossp_stages import two_stages

        opts = context.options
        budget = self.budget(context.loaded.model, context.sparsity, opts)
        result = two_stages(context.stack(), context.windows, keep=budget.keep, n_attn=budget.n_attn,
                            stage2_samples=opts.stage2_samples, stage2=opts.stage2, stage2_batch=opts.stage2_batch)
        removed = sorted(result["removed"])
        summary = (f"removed attention in {len(removed)} blocks {removed}, kept {budget.keep} of "
                   f"{budget.ffn_width} FFN neurons per block; stage 1 {result['stage1']['seconds']:.1f} s, "
                   f"stage 2 {result['stage2']['seconds']:.1f} s")
        plan = PrunePlan(keep_ffn_neurons=dict(enumerate(result["kept"])), skip_attention=removed)
        return Selection(plan, {"summary": summary, "options": asdict(opts), "balance": budget.to_dict(),
                                "stage1": result["stage1"], "stage2": result["stage2"],
                                "removed_attention": result["removed"]})

