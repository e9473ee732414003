"""SliceGPT (Ashkboos et al., ICLR 2024, arXiv:2401.15024), as the 2SSP reference runs it
(docs/algorithms.md, "SliceGPT"): rotate the residual stream into its principal components, layer by layer, and
slice it to d' = ⌊(1 − s)·d⌋ channels, rounded down to a multiple of 8.

`--sparsity` is this slicing fraction of the hidden width, as in the paper and the reference; it is not
the removed fraction of decoder-layer parameters. The two shortcut matrices per block add parameters
back and the last block keeps its full output width, so far fewer parameters go (Llama-2-7B at 0.25:
15.5 %). Both numbers are reported (`slicing` in the method report, `sparsity.achieved` in the record).

Calibration: 256 windows of the reference's C4 by default; one PCA per residual point (embeddings, and
after each block's attention and MLP), fp64 with 1 % damping; `final_orientation=random` by default.
Norm weights are folded into the following linear layers; embeddings and head are rotated, the head
is not sliced and no longer tied to the embeddings. See compute/slicegpt_blocks.py for the pass.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from .. import schema
from ..errors import InvalidOptionError, UnsupportedArchitectureError
from ..plan import PrunePlan
from .base import CalibrationOptions, Paper, PruneContext, PruningMethod, Selection, window_bytes
from .registry import register

WIDTH_MULTIPLE = 8  # the reference rounds d' down to a multiple of 8 [C]


@dataclass(frozen=True)
class Slicing:
    """The width SliceGPT keeps and what it removes (recorded in the report)."""

    hidden_size: int
    residual_width: int
    fraction: float  # 1 − d'/d: the slicing fraction actually applied (the request, rounded)
    decoder_parameters_dense: int
    decoder_parameters_sliced: int
    predicted_sparsity: float  # removed fraction of decoder-layer parameters, shortcut matrices included


def residual_width(hidden_size: int, sparsity: float) -> int:
    """d' = ⌊(1 − s)·d⌋ rounded down to a multiple of 8."""
    return int((1 - sparsity) * hidden_size) // WIDTH_MULTIPLE * WIDTH_MULTIPLE


def slicing(model, sparsity: float) -> Slicing:
    """The slicing of `model` (weightless is enough) at `sparsity`, with the parameters of the sliced
    architecture counted on a weightless instance of it."""
    import torch

    from ..families import get_family
    from ..surgery import bind_plan, decoder_parameters, model_class, pruned_config

    config = model.config
    family = get_family(config.model_type)
    width = residual_width(config.hidden_size, sparsity)
    if width < WIDTH_MULTIPLE:
        raise InvalidOptionError(f"--sparsity {sparsity} slices the hidden width {config.hidden_size} to nothing; "
                                 "use a lower --sparsity")
    sliced_config = pruned_config(config, bind_plan(PrunePlan(residual_width=width), config, family), family)
    with torch.device("meta"):
        sliced = model_class(sliced_config)._from_config(sliced_config)
    dense_count, sliced_count = decoder_parameters(model), decoder_parameters(sliced)
    return Slicing(config.hidden_size, width, 1 - width / config.hidden_size, dense_count, sliced_count,
                   1 - sliced_count / dense_count)


@dataclass
class SliceGPTOptions(CalibrationOptions):
    slicegpt_orientation: str = schema.setting(
        "random", choices=("random", "pca"), group="slicegpt",
        help="basis of the kept channels: the principal components times a random orthogonal matrix (the "
             "reference's final_orientation) or the principal components themselves")


@register
class SliceGPT(PruningMethod):
    name = "slicegpt"
    produces = frozenset({"residual_width"})
    summary = "rotate the residual stream to its principal components and slice its width (sparsity = slicing fraction)"
    sparsity_means = "of the hidden width (SliceGPT's slicing fraction)"
    paper = Paper("SliceGPT: Compress Large Language Models by Deleting Rows and Columns", "2401.15024",
                  "Ashkboos, Saleh", "ICLR 2024")
    Options = SliceGPTOptions

    def working_memory(self, config, itemsize: int, seq_len: int, sparsity: float | None,
                       options: SliceGPTOptions) -> dict:
        """The windows' states, two copies at a time, and the fp64 covariance, its eigenvectors and the
        rotations (d x d each)."""
        states = 2 * window_bytes(config, options.calib_samples, seq_len, itemsize)
        return {"device": states + 4 * config.hidden_size ** 2 * 8}

    def check_model(self, model, sparsity: float | None, options: SliceGPTOptions) -> None:
        from ..families import FAMILIES, get_family

        config = model.config
        family = get_family(config.model_type)
        if not family.residual_slicing:
            supported = ", ".join(name for name, f in FAMILIES.items() if f.residual_slicing)
            raise UnsupportedArchitectureError(
                f"--method slicegpt folds the RMSNorm before each sub-module into the layers after it, and "
                f"{config.model_type}'s norms do not fold that way; it supports {supported}")
        if getattr(config, "block_configs", None) is not None:
            raise UnsupportedArchitectureError("--method slicegpt rotates a dense model; this one is already pruned")
        slicing(model, sparsity)

    def select(self, context: PruneContext) -> Selection:
        from .compute.slicegpt_blocks import DAMPING, rotate_and_slice

        opts = context.options
        plan_slicing = slicing(context.loaded.model, context.sparsity)
        started = time.perf_counter()
        measured = rotate_and_slice(context.stack(), context.windows, plan_slicing.residual_width, context.restored,
                                    orientation=opts.slicegpt_orientation, seed=context.seed)
        measured["timing_seconds"]["total"] = time.perf_counter() - started
        s = plan_slicing
        return Selection(PrunePlan(residual_width=s.residual_width), {
            "summary": (f"residual width {s.hidden_size} -> {s.residual_width} (slicing {s.fraction:.2%} of it); "
                        f"this removes {s.predicted_sparsity:.2%} of the decoder-layer parameters, the shortcut "
                        "matrices included (the head is not sliced, and is no longer tied to the embeddings)"),
            "options": asdict(opts), "slicing": asdict(s), "damping": DAMPING, **measured})
