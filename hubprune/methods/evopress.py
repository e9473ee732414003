"""EvoPress (Sieberling et al., 2024), sub-module variant, as the 2SSP reference runs it (docs/algorithms.md,
"EvoPress").

A (1 + λ) evolutionary search over which k = ceil(s·N) attention and k MLP sub-modules to bypass.
Fitness is KL(p_dense ‖ q_candidate) per token on a random minibatch of the calibration sequences (lower
is better). 64 random candidates are scored on 2,048 tokens and the best is the first parent; each
generation makes 32 distinct offspring by min(U{1..3}, U{1..3}) swaps of a removed and a kept index of
one kind, then selects in two steps: the best 2 on 2,048 tokens, then the best 1 of those and the parent
on 32,768 tokens. ⌊k(N − k)/1.5⌋ generations. Calibration: 131,072 tokens of C4 train documents joined
into sequences of 4,096 tokens (Llama, Phi-3), 2,048 (Qwen2) or 8,192 (others).

The population, the fitness history and the random generator's state are saved to the run folder after
every generation, so an interrupted search resumes at the generation it reached with the same result.
"""
from __future__ import annotations

import math
import random
import time

from dataclasses import dataclass

from .. import schema
from ..errors import InvalidOptionError
from ..plan import PrunePlan
from .base import (BlockBudgetMethod, Calibration, Options, Paper, PruneContext, Selection, blocks_to_remove, calib_data,
                   window_bytes)
from .registry import register


SURVIVORS = (2, 1)  # per selection step; the parent joins the last step (elitist)
MAX_FLIPS = 3
CHECKPOINT = "evopress"


def generations_for(k: int, n: int) -> int:
    """The reference's generation count, ⌊k(N − k)/1.5⌋ (EvoPress paper, Table 8)."""
    return math.floor(k * (n - k) / 1.5)


def _ints(value) -> list[int]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        raise InvalidOptionError(f"expected comma-separated integers, got {value!r}") from None


def random_candidate(rng: random.Random, n: int, k: int):
    return tuple(sorted(rng.sample(range(n), k))), tuple(sorted(rng.sample(range(n), k)))


def mutate(rng: random.Random, parent, n: int):
    """min(U{1..3}, U{1..3}) flips; a flip picks attention or MLP, then bypasses one kept sub-module of
    that kind and restores one bypassed one (rejection sampling as the reference), keeping the count."""
    removed = [set(parent[0]), set(parent[1])]
    flips = min(rng.randint(1, MAX_FLIPS), rng.randint(1, MAX_FLIPS))
    for _ in range(flips):
        kind = removed[rng.randint(0, 1)]
        add = rng.randint(0, n - 1)
        while add in kind:
            add = rng.randint(0, n - 1)
        back = rng.randint(0, n - 1)
        while back not in kind:
            back = rng.randint(0, n - 1)
        kind.add(add)
        kind.discard(back)
    return tuple(sorted(removed[0])), tuple(sorted(removed[1]))


def distinct(rng: random.Random, count: int, make, exclude=(), max_misses: int = 10_000) -> list:
    """`count` distinct results of `make()` not in `exclude`; fewer when the space runs out (tiny models)."""
    out, misses = [], 0
    while len(out) < count and misses < max_misses:
        candidate = make()
        if candidate in out or candidate in exclude:
            misses += 1
            continue
        out.append(candidate)
    return out


def _as_candidate(value) -> tuple:
    return tuple(tuple(part) for part in value)


@dataclass
class EvoPressOptions(Options):
    calib_data: str = calib_data()
    evopress_generations: int | None = schema.setting(
        None, minimum=0, metavar="G", group="evopress",
        default_text="floor(k(N-k)/1.5), e.g. 160 for N=32 at 37.5%", help="generations to run")
    evopress_tokens: int = schema.setting(131072, minimum=1, metavar="T", group="evopress",
                                          help="calibration tokens in all")
    evopress_seq_len: int | None = schema.setting(
        None, minimum=2, metavar="L", group="evopress", help="calibration sequence length",
        default_text="4096 for Llama/Phi-3/OLMo 2, 2048 for Qwen2/Qwen3, 8192 otherwise")
    evopress_offspring: int = schema.setting(32, minimum=1, metavar="N", group="evopress",
                                             help="offspring per generation")
    evopress_initial: int = schema.setting(64, minimum=1, metavar="N", group="evopress",
                                           help="random candidates the first parent is chosen from")
    evopress_selection_tokens: str = schema.setting(
        "2048,32768", metavar="T1,T2", group="evopress",
        help="tokens scored in the two selection steps (best 2, then best 1 with the parent); the first also scores "
             "the initial candidates")
    evopress_batch: int = schema.setting(8, minimum=1, metavar="B", group="evopress",
                                         help="sequences run through a block together")

    def check(self) -> None:
        steps = _ints(self.evopress_selection_tokens)
        if len(steps) != len(SURVIVORS):
            raise InvalidOptionError(f"--evopress-selection-tokens takes {len(SURVIVORS)} token counts, "
                                     "one per selection step (the reference: 2048,32768)")
        if min(steps) < 1 or max(steps) > self.evopress_tokens:
            raise InvalidOptionError(f"--evopress-selection-tokens {self.evopress_selection_tokens}: each step "
                                     f"must use between 1 and --evopress-tokens ({self.evopress_tokens}) tokens")


@register
class EvoPress(BlockBudgetMethod):
    name = "evopress"
    produces = frozenset({"skip_attention", "skip_mlp", "drop_blocks"})  # both skipped: a dropped block
    summary = "evolutionary search over k attention + k MLP removals, fitness = KL to the dense model"
    paper = Paper("EvoPress: Towards Optimal Dynamic Model Compression via Evolutionary Search", "2410.14649",
                  "Sieberling, Oliver")
    Options = EvoPressOptions

    def working_memory(self, config, itemsize: int, seq_len: int, sparsity: float | None,
                       options: EvoPressOptions) -> dict:
        """On the device: the hidden states of a selection step's minibatch for every distinct candidate
        prefix (at most the offspring and their parent). On the host: the dense logits of every calibration
        token (in RAM, or in the run folder when over half of the free RAM: "disk")."""
        from .compute.kl_fitness import spills

        step_tokens = max(_ints(options.evopress_selection_tokens))
        device = (options.evopress_offspring + 2) * window_bytes(config, 1, step_tokens, itemsize)
        logits = options.evopress_tokens * config.vocab_size * itemsize
        return {"device": device, "disk" if spills(logits) else "host": logits}

    @staticmethod
    def layout(options: EvoPressOptions, config) -> tuple[int, int]:
        """(sequence length, sequences) of the calibration data for this model."""
        from ..families import get_family

        seq_len = min(options.evopress_seq_len or get_family(config.model_type).evopress_seq_len, options.evopress_tokens)
        usable = options.evopress_tokens // seq_len * seq_len
        if max(_ints(options.evopress_selection_tokens)) > usable:
            raise InvalidOptionError(f"--evopress-selection-tokens: a step scores more tokens than the {usable} "
                                     f"calibration tokens in whole sequences of {seq_len}")
        return seq_len, options.evopress_tokens // seq_len

    def calibration(self, options: EvoPressOptions, config) -> Calibration:
        seq_len, sequences = self.layout(options, config)
        return Calibration(options.calib_data, sequences, seq_len=seq_len, joined=True)

    def check_model(self, model, sparsity: float | None, options: EvoPressOptions) -> None:
        super().check_model(model, sparsity, options)
        self.layout(options, model.config)

    def settings(self, context: PruneContext) -> dict:
        """Every setting of the search, defaults resolved for this model (recorded in the report)."""
        opts = context.options
        config = context.loaded.model.config
        n = config.num_hidden_layers
        k = blocks_to_remove(context.sparsity, n)
        seq_len, sequences = self.layout(opts, config)
        generations = opts.evopress_generations
        steps = _ints(opts.evopress_selection_tokens)
        return {"calib_data": opts.calib_data, "k": k, "num_layers": n, "seq_len": seq_len, "sequences": sequences,
                "generations": generations_for(k, n) if generations is None else generations,
                "generations_reference": generations_for(k, n), "offspring": opts.evopress_offspring,
                "initially_generated": opts.evopress_initial, "selection_tokens": steps,
                "survivors": list(SURVIVORS), "initial_tokens": steps[0], "max_flips": MAX_FLIPS,
                "batch": opts.evopress_batch, "seed": context.seed}

    def select(self, context: PruneContext) -> Selection:
        from .compute.kl_fitness import DenseLogits, sample_minibatch, scores

        s = self.settings(context)
        n, k = s["num_layers"], s["k"]
        sequences = context.windows
        stack = context.stack()
        timings = {}
        started = time.perf_counter()
        dense = DenseLogits(stack, sequences, context.run.path if context.run else None, batch=s["batch"])
        timings["dense_logits"] = time.perf_counter() - started

        def select_best(candidates, survive: int, tokens: int, rng):
            batch = sample_minibatch(rng, s["sequences"], s["seq_len"], tokens)
            fitness = scores(stack, sequences, dense, candidates, batch, batch=s["batch"])
            order = sorted(range(len(candidates)), key=lambda i: fitness[i])[:survive]  # stable: ties keep order
            return [candidates[i] for i in order], [fitness[i] for i in order]

        rng = random.Random(s["seed"])
        saved = context.run.load(CHECKPOINT) if context.run else None
        if saved is None:
            started = time.perf_counter()
            initial = distinct(rng, s["initially_generated"], lambda: random_candidate(rng, n, k))
            population, fitness = select_best(initial, 1, s["initial_tokens"], rng)
            seconds = time.perf_counter() - started
            state = _checkpoint(context, rng, {
                "generation": 0, "population": population, "fitness": fitness,
                "initial": {"candidate": population[0], "fitness": fitness[0], "generated": len(initial),
                            "seconds": seconds},
                "history": [], "seconds": seconds})
        else:
            state = _restore(saved, rng)
        with _progress(s["generations"], state["generation"]) as bar:
            while state["generation"] < s["generations"]:
                started = time.perf_counter()
                population = [_as_candidate(c) for c in state["population"]]
                offspring = distinct(rng, s["offspring"], lambda: mutate(rng, rng.choice(population), n),
                                     exclude=population)
                for step, (survive, tokens) in enumerate(zip(SURVIVORS, s["selection_tokens"])):
                    if step == len(SURVIVORS) - 1:
                        offspring += [p for p in population if p not in offspring]
                    offspring, fitness = select_best(offspring, survive, tokens, rng)
                seconds = time.perf_counter() - started
                state.update(generation=state["generation"] + 1, population=offspring, fitness=fitness,
                             seconds=state["seconds"] + seconds)
                state["history"].append({"fitness": fitness[0], "candidate": offspring[0], "seconds": seconds})
                state = _checkpoint(context, rng, state)
                bar.update()
        timings["search"] = state["seconds"]
        best = _as_candidate(state["population"][0])
        started = time.perf_counter()
        everything = [(i, s["seq_len"]) for i in range(s["sequences"])]
        initial_kl, final_kl = scores(stack, sequences, dense, [_as_candidate(state["initial"]["candidate"]), best],
                                          everything, batch=s["batch"])
        timings["final_check"] = time.perf_counter() - started
        attention, mlp = list(best[0]), list(best[1])
        return Selection(PrunePlan(skip_attention=attention, skip_mlp=mlp), {
            "summary": f"removed attention in {attention}, MLP in {mlp} (k = {k} of {n}; {state['generation']} "
                       f"generations, KL to dense {initial_kl:.4f} -> {final_kl:.4f} on all calibration tokens)",
            "settings": s, "dense_logits": {"bytes": dense.nbytes, "on_disk": dense.spilled},
            "initial": state["initial"], "history": state["history"], "generations_done": state["generation"],
            "kl_all_calibration_tokens": {"initial": initial_kl, "final": final_kl},
            "block_forwards": stack.block_forwards, "timing_seconds": timings})


def _checkpoint(context: PruneContext, rng: random.Random, state: dict) -> dict:
    """Save the search state with the generator's, and continue from them as read back, exactly as a
    resumed run will."""
    if context.run is None:
        return state
    version, internal, gauss = rng.getstate()
    context.run.save(CHECKPOINT, {**state, "rng": [version, list(internal), gauss]})
    return _restore(context.run.load(CHECKPOINT), rng)


def _restore(saved: dict, rng: random.Random) -> dict:
    state = dict(saved)
    version, internal, gauss = state.pop("rng")
    rng.setstate((version, tuple(internal), gauss))
    return state


def _progress(total: int, done: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="evopress generations", leave=False)

