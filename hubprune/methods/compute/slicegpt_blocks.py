"""SliceGPT's block-by-block pass (see slicegpt.py): one PCA per residual point, then the block's
weights rotated into those bases and sliced.

The pass runs the source blocks unchanged and keeps the hidden states in the source basis, with the
residual stream *projected* onto the kept principal directions (x -> x·P·Pᵀ, P = the first d' columns
of the rotation) wherever the sliced model slices it. This is the sliced model in other coordinates:
the rotation is orthogonal and the fused norms divide by the source width, so every signal (and so
every PCA) equals the reference's, which runs the rotated blocks instead. Only one block is on the
device; the rotated weights go to `restored` as each block is done.

Rotation, with weights stored [out, in] (y = x·Wᵀ) and P_in / P_mid / P_out the bases of the block's
input, of the residual after its attention and after its MLP:
    q, k, v (qkv)   W <- W·diag(γ_input_norm)·P_in         o_proj     W <- P_midᵀ·W
    gate, up        W <- W·diag(γ_post_norm)·P_mid          down_proj  W <- P_outᵀ·W
    attn_shortcut_Q = P_inᵀ·P_mid                           mlp_shortcut_Q = P_midᵀ·P_out
    embeddings      E <- E·P_emb                            head       W <- W·diag(γ_final_norm)·P_last
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ...distributed import all_reduce_sum, local
from ...runs import LayerTensors
from ...sequential import DecoderStack
from ...surgery import OUTSIDE_BLOCKS
from .clock import PhaseClock

DAMPING = 0.01  # of the mean diagonal of H, added to the diagonal before the eigendecomposition [C]
ROWS_PER_STEP = 8192  # rows of a weight (or tokens of a signal) converted to fp64 at a time: bounds the copy


def random_orthogonal(size: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """[size, size] fp64 orthogonal: Q of the QR decomposition of a uniform [0, 1) matrix, as the
    reference's `random_orthogonal_upper_left` builds its top-left block. The matrix is drawn from the
    (CPU) generator, so it is the same on every device; the QR runs on `device`."""
    return torch.linalg.qr(torch.rand(size, size, generator=generator, dtype=torch.float64).to(device))[0]


@torch.no_grad()
def principal_basis(states: list[torch.Tensor], size: int, width: int, *, orientation: str,
                    generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, float]:
    """[d, width] fp64 on `device`: the `width` leading eigenvectors of H = Σ xᵀx over every token of the
    `size`-wide states (fp64, 1 % damping; over several processes the sum covers every process's
    states), times a random orthogonal matrix when `orientation` is 'random'; and the fraction of H's
    trace they keep."""
    gram = torch.zeros(size, size, dtype=torch.float64, device=device)
    for state in states:
        for rows in state.reshape(-1, size).split(ROWS_PER_STEP):
            rows = rows.double()
            gram.addmm_(rows.T, rows)
    all_reduce_sum(gram)
    gram.diagonal().add_(DAMPING * gram.diagonal().mean())
    values, vectors = torch.linalg.eigh(gram)
    order = torch.argsort(values, descending=True)[:width]
    basis = vectors[:, order]
    # An eigenvector's sign is arbitrary, and a rounding-level change of H (another device, another
    # split of the windows over processes) can flip it: fix it, so that equal inputs give equal weights.
    peak = basis.abs().argmax(dim=0, keepdim=True)
    basis = basis * torch.sign(basis.gather(0, peak))
    kept = (values[order].sum() / values.sum()).item()
    if orientation == "random":
        basis = basis @ random_orthogonal(width, generator, basis.device)
    return basis, kept


def project(states: list[torch.Tensor], basis: torch.Tensor) -> list[torch.Tensor]:
    """Each state with its residual stream reduced to the span of `basis` (in fp32, back to its dtype)."""
    p = basis.float()
    return [((s.float() @ p) @ p.T).to(s.dtype) for s in states]


def _right(weight: torch.Tensor, basis: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """weight·diag(scale)·basis in fp64, `ROWS_PER_STEP` rows at a time, returned in weight's dtype."""
    out = []
    for rows in weight.split(ROWS_PER_STEP):
        rows = rows.double() if scale is None else rows.double() * scale.double()
        out.append((rows @ basis).to(weight.dtype))
    return torch.cat(out)


def _left(basis: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """basisᵀ·weight in fp64, returned in weight's dtype (a bias is a vector)."""
    if weight.dim() == 1:
        return (basis.T @ weight.double()).to(weight.dtype)
    return _right(weight.T, basis).T.contiguous()


def rotate_block(tensors: dict[str, torch.Tensor], family, p_in: torch.Tensor, p_mid: torch.Tensor,
                 p_out: torch.Tensor) -> dict[str, torch.Tensor]:
    """One block's tensors (names local to the block) rotated and sliced; norm weights folded in."""
    attention_norm = tensors[family.attention_norm + "weight"]
    mlp_norm = tensors[family.mlp_norm + "weight"]
    reads = {**{n: (p_in, attention_norm) for n in family.attention_inputs},
             **{n: (p_mid, mlp_norm) for n in family.ffn_rows}}
    writes = {family.value_cols: p_mid, family.ffn_cols[0]: p_out}
    out = {}
    for name, tensor in tensors.items():
        module, _, kind = name.rpartition(".")
        if name.startswith((family.attention_norm, family.mlp_norm)):
            continue  # folded into the linear layers that read the norm's output
        if module in reads and kind == "weight":
            basis, scale = reads[module]
            out[name] = _right(tensor, basis, scale)
        elif module in reads or module in family.head_space_norms:
            out[name] = tensor  # q/k/v biases (Qwen2), per-head q/k norms (Qwen3): after the rotated input
        elif module in writes:
            out[name] = _left(writes[module], tensor)
        else:
            raise RuntimeError(f"SliceGPT does not know how to rotate {name}")
    dtype = tensors[family.value_cols + ".weight"].dtype
    out["attn_shortcut_Q"] = (p_in.T @ p_mid).to(dtype)
    out["mlp_shortcut_Q"] = (p_mid.T @ p_out).to(dtype)
    return out


@torch.no_grad()
def rotate_and_slice(stack: DecoderStack, windows: torch.Tensor, width: int, restored: LayerTensors, *,
                     orientation: str = "random", seed: int = 0, batch: int = 8, progress: bool = True) -> dict:
    """Calibrate the rotations on `windows`, write every block's rotated weights and the embeddings and
    head to `restored`; return what was measured (kept variance per residual point, timings)."""
    family, model, last = stack.family, stack.model, stack.num_layers - 1
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same rotations on every device
    clock = PhaseClock(stack.device)

    def basis(signals: list[torch.Tensor], size: int) -> tuple[torch.Tensor, float]:
        with clock("pca"):
            return principal_basis(signals, stack.config.hidden_size, size, orientation=orientation,
                                   generator=generator, device=stack.device)

    mine = local(windows)  # over several processes, each runs its share and the covariances are added
    with clock("calibration forward"):
        states = [stack.embed(mine[i:i + batch]) for i in range(0, mine.shape[0], batch)]
    p_embedding, kept = basis(states, width)
    kept_variance = {"embeddings": kept, "layers": []}
    states = project(states, p_embedding)
    p_in = p_embedding
    for index in tqdm(range(stack.num_layers), desc="slicegpt", disable=not progress, leave=False):
        with stack.block(index) as layer:
            with clock("calibration forward"):
                mids = [stack.run(layer, index, h, skip_mlp=True) for h in states]
            del states
            p_mid, kept_mid = basis(mids, width)
            mids = project(mids, p_mid)
            with clock("calibration forward"):
                states = [stack.run(layer, index, m, skip_attention=True) for m in mids]
            del mids
            # The head is not sliced: the last block writes the full width (still rotated, as the reference).
            p_out, kept_out = basis(states, stack.config.hidden_size if index == last else width)
            if index != last:
                states = project(states, p_out)
            with clock("rotation"):
                rotated = rotate_block(dict(layer.named_parameters()), family, p_in, p_mid, p_out)
            restored.save(index, rotated)
            del rotated
        kept_variance["layers"].append({"middle": kept_mid, "output": kept_out})
        p_in = p_out
    with clock("rotation"):
        restored.save(OUTSIDE_BLOCKS, {
            family.embedding_weight: _right(model.get_parameter(family.embedding_weight), p_embedding),
            family.head_weight: _right(model.get_parameter(family.head_weight), p_in,
                                       model.get_parameter(family.final_norm_weight)),
        })
    return {"kept_variance": kept_variance, "timing_seconds": clock.seconds}
