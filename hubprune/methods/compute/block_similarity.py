"""Cosine similarity between the outputs of decoder blocks, for the block-removal baselines
(ShortGPT's block influence, the window method of Gromov et al.). Computed block by block on a
`DecoderStack`, in fp32, with the dense model."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...distributed import all_reduce_sum, assemble, local
from ...sequential import DecoderStack


@torch.no_grad()
def block_outputs_last_token(stack: DecoderStack, windows: torch.Tensor, *, progress: bool = True) -> torch.Tensor:
    """[N, windows, d] fp32: every block's output hidden state at the last token of every window (over
    several processes each runs its share of the windows, and the rows are assembled)."""
    states = [stack.embed(w.unsqueeze(0)) for w in local(windows)]
    outputs = []
    for index in tqdm(range(stack.num_layers), desc="block outputs", disable=not progress, leave=False):
        with stack.block(index) as layer:
            states = [stack.run(layer, index, s) for s in states]
        outputs.append(torch.cat([s[:, -1].float() for s in states]) if states
                       else torch.zeros(0, stack.config.hidden_size, device=stack.device))
    by_window = torch.stack(outputs).transpose(0, 1).contiguous()  # [windows here, N, d]
    return assemble(by_window, len(windows)).transpose(0, 1)


@torch.no_grad()
def consecutive_similarity_all_tokens(stack: DecoderStack, windows: torch.Tensor, *,
                                      progress: bool = True) -> torch.Tensor:
    """[N] fp32: mean over windows and tokens of cos(input of block i, output of block i) (ShortGPT's
    paper definition; entry 0 compares block 0's output with the embeddings). The per-window means are
    summed over each process's share of the windows, then over processes."""
    states = [stack.embed(w.unsqueeze(0)) for w in local(windows)]
    similarity = []
    for index in tqdm(range(stack.num_layers), desc="block influence", disable=not progress, leave=False):
        with stack.block(index) as layer:
            outputs = [stack.run(layer, index, s) for s in states]
        total = torch.zeros((), dtype=torch.float32, device=stack.device)
        for a, b in zip(states, outputs):
            total += F.cosine_similarity(a.float(), b.float(), dim=-1).mean()
        similarity.append(total)
        states = outputs
    return all_reduce_sum(torch.stack(similarity)) / len(windows)


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over windows of the cosine similarity of two [windows, d] sets of last-token states."""
    return F.cosine_similarity(a, b, dim=-1).mean().item()
