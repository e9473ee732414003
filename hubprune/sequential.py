"""A causal LM seen as embed -> N decoder blocks -> head, so that calibration walks it block by block.

Every calibrating method works through `DecoderStack`: it embeds windows, fetches one block at a time
onto the device, runs it (optionally with its attention or MLP bypassed, or with a narrower FFN given
as sliced weights), and scores the final hidden states. The block comes either from a model held in
memory or, with `offload`, straight from the checkpoint's safetensors shards: then only one block,
the embeddings and the head are ever resident, which is how a 70B model is pruned on one 80 GB GPU.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from . import memory
from .distributed import all_reduce_sum, local, local_processes
from .errors import InvalidOptionError
from .evaluation.perplexity import PerplexityResult, window_nll

SAFETENSORS_INDEX = "model.safetensors.index.json"


class ShardReader:
    """The tensors of a safetensors checkpoint folder, read on demand (nothing is loaded up front).

    Files are opened per read and closed again, so no shard stays mapped into memory."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.store: BlockStore | None = None  # set by the first DecoderStack over these shards
        index = self.folder / SAFETENSORS_INDEX
        if index.is_file():
            self.files = {name: self.folder / file for name, file in json.loads(index.read_text())["weight_map"].items()}
        elif (self.folder / "model.safetensors").is_file():
            with safe_open(self.folder / "model.safetensors", framework="pt") as f:
                self.files = {name: self.folder / "model.safetensors" for name in f.keys()}
        else:
            raise InvalidOptionError(f"{self.folder} has no safetensors weights; block-by-block loading (--offload) "
                                     "reads safetensors checkpoints only")

    def names(self, prefix: str = "") -> list[str]:
        return [name for name in self.files if name.startswith(prefix)]

    def _by_file(self, names: list[str]) -> dict[Path, list[str]]:
        by_file: dict[Path, list[str]] = {}
        for name in names:
            by_file.setdefault(self.files[name], []).append(name)
        return by_file

    def numel(self, names: list[str]) -> int:
        """Elements of `names`, from the shards' headers (no tensor is read)."""
        total = 0
        for file, file_names in self._by_file(names).items():
            with safe_open(file, framework="pt") as f:
                total += sum(math.prod(f.get_slice(name).get_shape()) for name in file_names)
        return total

    def read(self, names: list[str], *, device: torch.device, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
        out = {}
        for file, file_names in self._by_file(names).items():
            with safe_open(file, framework="pt", device=str(device)) as f:
                for name in file_names:
                    tensor = f.get_tensor(name)
                    out[name] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
        return out


class BlockStore:
    """The decoder blocks of a streamed model, as CPU tensors (names local to the block).

    A search visits every block once per step. With `cache`, each block is read from the shards once
    and kept in host RAM; the disk is read once in all. Without it every visit reads the disk. For a GPU
    (`for_gpu`) the tensors are pinned, so copies to the device are asynchronous, and the next block is
    read ahead in a background thread while the current one computes (safetensors releases the GIL while
    it reads). Not on the CPU: there reading competes with the compute for the same cores, and memory
    freed across threads stays in glibc's per-thread arenas (it tripled the streamed peak in a test).
    `disk_reads` counts the blocks read from the shards."""

    def __init__(self, shards: ShardReader, prefix: str, num_blocks: int, dtype: torch.dtype, *, cache: bool,
                 for_gpu: bool = False):
        self.shards, self.prefix, self.num_blocks, self.dtype = shards, prefix, num_blocks, dtype
        self.cache, self.pin, self.read_ahead = cache, for_gpu, for_gpu
        self.disk_reads = 0
        self._cached: dict[int, dict[str, torch.Tensor]] = {}
        self._ahead: tuple[int, Future] | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hubprune-read-ahead")

    def _read(self, index: int) -> dict[str, torch.Tensor]:
        prefix = f"{self.prefix}{index}."
        tensors = self.shards.read(self.shards.names(prefix), device=torch.device("cpu"), dtype=self.dtype)
        self.disk_reads += 1
        local = {name[len(prefix):]: tensor for name, tensor in tensors.items()}
        if self.pin:
            local = {name: tensor.pin_memory() for name, tensor in local.items()}
        return local

    def get(self, index: int) -> dict[str, torch.Tensor]:
        """Block `index`'s tensors. They may be the cache's own: copy before changing them in place."""
        if index in self._cached:
            return self._cached[index]
        if self._ahead is not None and self._ahead[0] == index:
            tensors = self._ahead[1].result()
        else:
            tensors = self._read(index)
        self._ahead = None
        following = index + 1
        if self.read_ahead and following < self.num_blocks and following not in self._cached:
            self._ahead = (following, self._reader.submit(self._read, following))
        if self.cache:
            self._cached[index] = tensors
        return tensors


def host_cache_fits(shards: ShardReader, prefix: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Keep the blocks in host RAM when streaming to a GPU and they take at most half the free RAM (shared
    among the processes of the machine). On the CPU the point of streaming is to keep host memory small,
    so they are never kept."""
    if device.type == "cpu":
        return False
    ram = memory.available_ram()
    # Every process of this machine (torchrun) keeps its own cache: they share the half.
    return ram is not None and shards.numel(shards.names(prefix)) * dtype.itemsize < ram // 2 // local_processes()


@dataclass
class BlockInputs:
    """What every block needs besides its hidden states, for a batch of unpadded windows of one length."""

    position_ids: torch.Tensor
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | dict[str, tuple[torch.Tensor, torch.Tensor]]
    masks: dict[str, torch.Tensor | None]  # by layer type; None lets SDPA use its causal kernel


class DecoderStack:
    """Block-by-block access to a loaded model (`loading.LoadedModel`), in memory or streamed from shards."""

    def __init__(self, loaded):
        self.model = loaded.model
        self.config = loaded.model.config
        self.family = loaded.family
        self.device = loaded.device
        self.dtype = loaded.dtype
        self.shards: ShardReader | None = loaded.shards
        self.num_layers = self.config.num_hidden_layers
        self.family.check_supported(self.config)
        self.layer_types = self.family.source_layer_types(self.config)
        self._inputs: dict[tuple[int, int], BlockInputs] = {}
        self.block_forwards = 0  # one window through one block counts 1
        self.store: BlockStore | None = None
        if self.shards is not None:
            if self.family.embeddings(self.model).weight.is_meta:
                self._load_outside_blocks()  # once per loaded model, however many stacks walk it
            if self.shards.store is None:  # one per loaded model too: its cache serves every stack
                prefix = self.family.layers_prefix
                self.shards.store = BlockStore(self.shards, prefix, self.num_layers, self.dtype,
                                               cache=host_cache_fits(self.shards, prefix, self.device, self.dtype),
                                               for_gpu=self.device.type == "cuda")
            self.store = self.shards.store

    # -- weights -------------------------------------------------------------------------------------
    def _load_outside_blocks(self) -> None:
        """Embeddings, final norm and head onto the device; the blocks stay on `meta` until fetched."""
        prefix = self.family.layers_prefix
        names = [n for n in self.shards.names() if not n.startswith(prefix)]
        tensors = self.shards.read(names, device=self.device, dtype=self.dtype)
        self.model.load_state_dict(tensors, strict=False, assign=True)
        if self.config.tie_word_embeddings:
            self.model.lm_head.weight = self.family.embeddings(self.model).weight
        self.family.rebuild_buffers(self.model, self.config, self.device)  # rebuilt, not read

    @contextmanager
    def block(self, index: int) -> Iterator[torch.nn.Module]:
        """Block `index` on the device for the duration of the `with` (then released if streamed)."""
        layer = self.family.layers(self.model)[index]
        if self.store is not None:
            # Cached tensors are copied (on the CPU too): a method may change the block in place, and the
            # cache must stay as read. Uncached ones are fresh from the disk and used as they are.
            tensors = {n: t.to(self.device, non_blocking=True, copy=self.store.cache)
                       for n, t in self.store.get(index).items()}
            layer.load_state_dict(tensors, assign=True)
            del tensors
            try:
                yield layer
            finally:
                layer.to("meta")
            return
        home = next(layer.parameters()).device
        if home != self.device:  # a model kept on the CPU while the work runs on the GPU
            layer.to(self.device)
            try:
                yield layer
            finally:
                layer.to(home)
            return
        yield layer

    # -- compute -------------------------------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """[batch, seq] token ids -> [batch, seq, hidden] on the device, in the model dtype."""
        position_ids = torch.arange(ids.shape[1], device=self.device).unsqueeze(0)
        return self.family.embed(self.model, ids.to(self.device), position_ids)

    def inputs(self, batch: int, seq_len: int) -> BlockInputs:
        key = (batch, seq_len)
        if key not in self._inputs:
            embeds = torch.empty(batch, seq_len, self.config.hidden_size, dtype=self.dtype, device=self.device)
            position_ids = torch.arange(seq_len, device=self.device).unsqueeze(0)
            kwargs = dict(config=self.config, inputs_embeds=embeds, attention_mask=None, cache=None,
                          position_ids=position_ids)
            masks = {}
            if "full_attention" in self.layer_types:
                masks["full_attention"] = create_causal_mask(**kwargs)
            if "sliding_attention" in self.layer_types:
                masks["sliding_attention"] = create_sliding_window_causal_mask(**kwargs)
            position_embeddings = self.family.position_embeddings(self.model, embeds, position_ids)
            self._inputs[key] = BlockInputs(position_ids, position_embeddings, masks)
        return self._inputs[key]

    @torch.no_grad()
    def run(self, layer: torch.nn.Module, index: int, hidden: torch.Tensor, *, skip_attention: bool = False,
            skip_mlp: bool = False, mlp_params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """One block on `hidden` [batch, seq, d]. A skipped sub-module adds nothing to the residual (its
        norm is not evaluated either). `mlp_params` replaces some of the MLP's weights (names local to
        the block), e.g. by a sliced FFN or a refitted down projection."""
        inputs = self.inputs(hidden.shape[0], hidden.shape[1])
        self.block_forwards += hidden.shape[0]
        if getattr(layer, "self_attn", None) is not None and not skip_attention:
            kind = self.layer_types[index]
            if isinstance(inputs.position_embeddings, dict):  # one RoPE per attention type
                inputs = replace(inputs, position_embeddings=inputs.position_embeddings[kind])
            mask = inputs.masks.get(kind)
            hidden = _shortcut(layer, "attn_shortcut_Q", hidden) + self.family.run_attention(layer, hidden, inputs, mask)
        if self.family.has_mlp(layer) and not skip_mlp:
            hidden = _shortcut(layer, "mlp_shortcut_Q", hidden) + self.family.run_mlp(layer, hidden, mlp_params)
        return hidden

    def run_batched(self, layer: torch.nn.Module, index: int, states: list[torch.Tensor], batch: int,
                    **kwargs) -> list[torch.Tensor]:
        """`run` on each of `states` (same shape [windows, seq, d]), at most `batch` of them per call."""
        out = []
        for start in range(0, len(states), batch):
            group = states[start:start + batch]
            result = self.run(layer, index, torch.cat(group), **kwargs)
            out.extend(result.split([g.shape[0] for g in group]))
        return out

    @torch.no_grad()
    def logits(self, hidden: torch.Tensor, fp32: bool = True) -> torch.Tensor:
        """Logits of final hidden states [..., d] (final norm, then the head), upcast to fp32 unless not `fp32`."""
        logits = self.family.logits(self.model, self.family.final(self.model, hidden))
        return logits.float() if fp32 else logits

    @torch.no_grad()
    def nll(self, hidden: torch.Tensor, ids: torch.Tensor, mode: str = "accurate") -> torch.Tensor:
        """Summed next-token NLL (fp64) of final hidden states [batch, seq, d] against `ids` [batch, seq],
        as `evaluation.perplexity` computes it in `mode`; one window at a time so a large vocabulary never
        holds [batch, seq, V]."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        ids = ids.to(self.device)
        for window, target in zip(hidden, ids):
            total += window_nll(self.logits(window[:-1], fp32=mode == "accurate"), target[1:], mode)
        return total


def _shortcut(layer: torch.nn.Module, name: str, residual: torch.Tensor) -> torch.Tensor:
    """The residual carried past a sub-module: rotated into the next basis in a sliced (SliceGPT) block."""
    rotation = getattr(layer, name, None)
    return residual if rotation is None else residual @ rotation


def mlp_parameters(layer: torch.nn.Module, family, keep: torch.Tensor | None) -> dict[str, torch.Tensor] | None:
    """The MLP weights of `layer` narrowed to FFN neurons `keep` (names local to the block), or None."""
    if keep is None:
        return None
    tensors = {n: p for n, p in layer.named_parameters() if family.is_mlp_param(n) and not family.is_norm_param(n)}
    return family.slice_ffn(tensors, keep)


@torch.no_grad()
def final_states(stack: DecoderStack, sequences: torch.Tensor, *, batch: int, desc: str,
                 progress: bool = True) -> list[torch.Tensor]:
    """The final hidden states [1, seq, d] of each of `sequences` [count, seq], the blocks walked once."""
    states = [stack.embed(sequences[i:i + 1]) for i in range(sequences.shape[0])]
    for index in tqdm(range(stack.num_layers), desc=desc, disable=not progress, leave=False):
        with stack.block(index) as layer:
            states = stack.run_batched(layer, index, states, batch)
    return states


def token_chunk(vocab: int) -> int:
    """Tokens per head evaluation, so fp32 logits of a chunk stay near 512 MB whatever the vocabulary."""
    return max(1, 2**27 // vocab)


@torch.no_grad()
def stack_perplexity(stack: DecoderStack, windows: torch.Tensor, *, mode: str = "accurate", desc: str = "perplexity",
                     progress: bool = True):
    """Perplexity computed block by block (same protocol as `evaluation.perplexity`); every window's
    hidden state is held on the device while the blocks pass."""
    mine = local(windows)  # over several processes, each takes its share of the windows; the fp64 sums are added
    states = [stack.embed(w.unsqueeze(0)) for w in mine]
    for index in tqdm(range(stack.num_layers), desc=desc, disable=not progress, leave=False):
        with stack.block(index) as layer:
            states = [stack.run(layer, index, s) for s in states]
    nll_sum = torch.zeros((), dtype=torch.float64, device=stack.device)
    for s, w in zip(states, mine):
        nll_sum += stack.nll(s, w.unsqueeze(0), mode)
    all_reduce_sum(nll_sum)
    tokens = windows.shape[0] * (windows.shape[1] - 1)
    nll = (nll_sum / tokens).item()
    return PerplexityResult(math.exp(nll), nll, tokens, len(windows), windows.shape[1])
