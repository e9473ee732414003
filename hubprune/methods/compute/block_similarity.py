"""Cosine similarity between the outputs of decoder blocks, for the block-removal baselines
(ShortGPT's block influence, the window method of Gromov et al.). Computed block by block on a
`DecoderStack`, in fp32, with the dense model."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...sequential import DecoderStack


@torch.no_grad()
def block_outputs_last_token(stack: DecoderStack, windows: torch.Tensor, *, progress: bool = True) -> torch.Tensor:
    """[N, windows, d] fp32: every block's output hidden state at the last token of every window."""
    states = [stack.embed(w.unsqueeze(0)) for w in windows]
    outputs = []
    for index in tqdm(range(stack.num_layers), desc="block outputs", disable=not progress, leave=False):
        with stack.block(index) as layer:
            states = [stack.run(layer, index, s) for s in states]
        outputs.append(torch.cat([s[:, -1].float() for s in states]))
    return torch.stack(outputs)


@torch.no_grad()
def consecutive_similarity_all_tokens(stack: DecoderStack, windows: torch.Tensor, *,
                                      progress: bool = True) -> torch.Tensor:
    """[N] fp32: mean over windows and tokens of cos(input of block i, output of block i) (ShortGPT's
    paper definition; entry 0 compares block 0's output with the embeddings)."""
    states = [stack.embed(w.unsqueeze(0)) for w in windows]
    similarity = []
    for index in tqdm(range(stack.num_layers), desc="block influence", disable=not progress, leave=False):
        with stack.block(index) as layer:
            outputs = [stack.run(layer, index, s) for s in states]
        cos = [F.cosine_similarity(a.float(), b.float(), dim=-1).mean() for a, b in zip(states, outputs)]
        similarity.append(torch.stack(cos).mean())
        states = outputs
    return torch.stack(similarity)


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over windows of the cosine similarity of two [windows, d] sets of last-token states."""
    return F.cosine_similarity(a, b, dim=-1).mean().item()
