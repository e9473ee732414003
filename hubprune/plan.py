"""The pruning plan: what to remove from a model, as pure data.

Every method turns (model, calibration data, options) into a plan; `surgery.apply_plan` applies it.
Layer indices refer to the *source* model. The file format (JSON or YAML) is

    {"keep_ffn_neurons": {"<layer>": [indices]},   # FFN neurons kept in that layer, others removed
     "keep_value_channels": {"<layer>": [[c, ...], ...]},  # per KV group, the value channels kept
                                                   # (same count in every group; Q/K untouched)
     "skip_attention": [layers],                   # attention sub-module removed (residual pass-through)
     "skip_mlp": [layers],                         # MLP sub-module removed
     "drop_blocks": [layers],                      # whole decoder block removed
     "residual_width": d'}                         # residual stream rotated and sliced to d' (SliceGPT)

Omitted keys remove nothing. A block whose attention and MLP are both skipped is an identity and is
dropped. `residual_width` stands alone: every residual point (embeddings, the middle and the output
of each block) keeps d' channels, except the last block's output, which keeps the full width because
the head is not sliced. The rotations that go with it are calibrated, so such a plan is applied with
the weights of the run that made it, not from the plan file alone. Every output folder holds the plan
that made it as `hubprune_plan.json`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import PlanError

PLAN_FILENAME = "hubprune_plan.json"
PLAN_KEYS = ("keep_ffn_neurons", "skip_attention", "skip_mlp", "drop_blocks", "keep_value_channels", "residual_width")
_LAYER_LISTS = ("skip_attention", "skip_mlp", "drop_blocks")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list(value, where: str) -> list:
    if not isinstance(value, list):
        raise PlanError(f"{where} must be a list, not {value!r}")
    return value


def _indices(value, where: str) -> list[int]:
    """A list of whole numbers, taken as they are: 1.9 or true is an error, never layer 1."""
    bad = next((v for v in _list(value, where) if not _is_int(v)), None)
    if bad is not None:
        raise PlanError(f"{where}: {bad!r} is not a whole number; plan indices must be integers")
    return list(value)


def _layer(key, where: str) -> int:
    """A layer key: an integer, or its decimal string as JSON keys are ("0", never "00" or "1.0")."""
    if _is_int(key):
        return key
    if isinstance(key, str) and re.fullmatch(r"0|[1-9][0-9]*", key):
        return int(key)
    raise PlanError(f"{where}: layer key {key!r} is not a layer index (write 0, 1, 2, ...)")


def _refuse_duplicates(keys: list, where: str = "") -> None:
    duplicate = next((k for k in keys if keys.count(k) > 1), None)
    if duplicate is not None:
        raise PlanError(f"key {duplicate!r} appears twice{where}")


def _unique_keys(pairs: list[tuple]) -> dict:
    _refuse_duplicates([k for k, _ in pairs])
    return dict(pairs)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that repeats a key (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        _refuse_duplicates([self.construct_object(key, deep=deep) for key, _ in node.value],
                           f" (line {node.start_mark.line + 1})")
        return super().construct_mapping(node, deep=deep)


@dataclass
class PrunePlan:
    keep_ffn_neurons: dict[int, list[int]] = field(default_factory=dict)
    skip_attention: list[int] = field(default_factory=list)
    skip_mlp: list[int] = field(default_factory=list)
    drop_blocks: list[int] = field(default_factory=list)
    keep_value_channels: dict[int, list[list[int]]] = field(default_factory=dict)
    residual_width: int | None = None

    # -- (de)serialisation ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict) -> PrunePlan:
        if not isinstance(data, dict):
            raise PlanError(f"a plan must be a mapping with keys {', '.join(PLAN_KEYS)}; got {type(data).__name__}")
        unknown = sorted(set(data) - set(PLAN_KEYS))
        if unknown:
            raise PlanError(f"unknown plan key(s) {unknown}; allowed: {', '.join(PLAN_KEYS)}")
        keep = data.get("keep_ffn_neurons") or {}
        if not isinstance(keep, dict):
            raise PlanError('keep_ffn_neurons must map a layer index to a list of neuron indices, e.g. {"0": [0, 5]}')
        values = data.get("keep_value_channels") or {}
        if not isinstance(values, dict):
            raise PlanError('keep_value_channels must map a layer index to one list of channels per KV group, '
                            'e.g. {"0": [[0, 3], [1, 2]]}')
        keep_ffn = {_layer(k, "keep_ffn_neurons"): _indices(v, f"keep_ffn_neurons[{k}]") for k, v in keep.items()}
        keep_values = {_layer(k, "keep_value_channels"): [_indices(g, f"keep_value_channels[{k}]") for g in
                                                          _list(groups, f"keep_value_channels[{k}]")]
                       for k, groups in values.items()}
        lists = {k: _indices(data.get(k) or [], k) for k in _LAYER_LISTS}
        width = data.get("residual_width")
        if width is not None and not _is_int(width):
            raise PlanError(f"residual_width must be a whole number, not {width!r}")
        if len(keep_ffn) != len(keep) or len(keep_values) != len(values):
            raise PlanError("a layer is listed twice (e.g. as 0 and \"0\")")
        return cls(keep_ffn_neurons=keep_ffn, keep_value_channels=keep_values, residual_width=width, **lists)

    @classmethod
    def load(cls, path: str | Path) -> PrunePlan:
        path = Path(path)
        if not path.is_file():
            raise PlanError(f"plan file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
            data = (json.loads(text, object_pairs_hook=_unique_keys) if path.suffix == ".json"
                    else yaml.load(text, Loader=_UniqueKeyLoader))  # noqa: S506 - a SafeLoader subclass
        except UnicodeDecodeError as exc:
            raise PlanError(f"plan file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
        except (json.JSONDecodeError, yaml.YAMLError, PlanError) as exc:
            raise PlanError(f"cannot parse plan file {path}: {str(exc).splitlines()[0]}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        data = {
            "keep_ffn_neurons": {str(k): list(v) for k, v in sorted(self.keep_ffn_neurons.items())},
            "skip_attention": sorted(self.skip_attention),
            "skip_mlp": sorted(self.skip_mlp),
            "drop_blocks": sorted(self.drop_blocks),
            "keep_value_channels": {str(k): [list(g) for g in v] for k, v in sorted(self.keep_value_channels.items())},
        }
        if self.residual_width is not None:
            data["residual_width"] = self.residual_width
        return data

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    # -- checks and normal form -------------------------------------------------------------
    def validate(self, num_layers: int, ffn_width: int, value_groups: tuple[int, int] | None = None,
                 hidden_size: int | None = None) -> None:
        """Raise PlanError naming the first problem: indices out of range, duplicates, contradictions.
        `value_groups` is (KV heads, head dim), needed to check keep_value_channels; `hidden_size`, to
        check residual_width."""

        def check_layers(name: str, layers) -> None:
            bad = [l for l in layers if not 0 <= l < num_layers]
            if bad:
                raise PlanError(f"{name}: layer {bad[0]} out of range; the model has layers 0..{num_layers - 1}")
            dup = sorted({l for l in layers if list(layers).count(l) > 1})
            if dup:
                raise PlanError(f"{name}: layer {dup[0]} listed twice")

        for key in _LAYER_LISTS:
            check_layers(key, getattr(self, key))
        check_layers("keep_ffn_neurons", list(self.keep_ffn_neurons))
        for layer, idx in self.keep_ffn_neurons.items():
            if not idx:
                raise PlanError(f"keep_ffn_neurons[{layer}] is empty; to remove the whole MLP use skip_mlp: [{layer}]")
            bad = [i for i in idx if not 0 <= i < ffn_width]
            if bad:
                raise PlanError(f"keep_ffn_neurons[{layer}]: neuron {bad[0]} out of range 0..{ffn_width - 1}")
            if len(set(idx)) != len(idx):
                raise PlanError(f"keep_ffn_neurons[{layer}] lists a neuron twice")
            if layer in self.skip_mlp or layer in self.drop_blocks:
                raise PlanError(f"layer {layer} both keeps FFN neurons and removes its MLP; choose one")
        check_layers("keep_value_channels", list(self.keep_value_channels))
        for layer, groups in self.keep_value_channels.items():
            if value_groups is None:
                raise PlanError("keep_value_channels is not supported for this architecture")
            heads, head_dim = value_groups
            if len(groups) != heads:
                raise PlanError(f"keep_value_channels[{layer}] has {len(groups)} group(s); the model has {heads} KV heads")
            if len({len(g) for g in groups}) != 1 or not groups[0]:
                raise PlanError(f"keep_value_channels[{layer}]: every KV group must keep the same number (>= 1) of channels")
            for group in groups:
                if any(not 0 <= c < head_dim for c in group) or len(set(group)) != len(group):
                    raise PlanError(f"keep_value_channels[{layer}]: channels must be distinct and in 0..{head_dim - 1}")
            if layer in self.skip_attention or layer in self.drop_blocks:
                raise PlanError(f"layer {layer} both keeps value channels and removes its attention; choose one")
        if not self.kept_layers(num_layers):
            raise PlanError("the plan removes every decoder block; keep at least one")
        if self.residual_width is not None:
            if hidden_size is None:
                raise PlanError("residual_width is not supported for this architecture")
            if not 1 <= self.residual_width <= hidden_size:
                raise PlanError(f"residual_width {self.residual_width} must be in 1..{hidden_size} (the hidden size)")
            if any(getattr(self, k) for k in PLAN_KEYS if k != "residual_width"):
                raise PlanError("residual_width (SliceGPT) cannot be combined with other pruning in one plan")

    def residual_widths(self, num_layers: int, hidden_size: int) -> list[tuple[int, int, int]]:
        """(input, middle, output) width of every block's residual stream under `residual_width`."""
        width = self.residual_width or hidden_size
        return [(width, width, hidden_size if l == num_layers - 1 else width) for l in range(num_layers)]

    def normalized(self, num_layers: int) -> PrunePlan:
        """Same pruned model, canonical form: sorted, identity blocks dropped, no redundant entries."""
        drop = set(self.drop_blocks) | (set(self.skip_attention) & set(self.skip_mlp))
        return PrunePlan(
            keep_ffn_neurons={l: sorted(v) for l, v in sorted(self.keep_ffn_neurons.items()) if l not in drop},
            keep_value_channels={l: [sorted(g) for g in v] for l, v in sorted(self.keep_value_channels.items())
                                 if l not in drop},
            skip_attention=sorted(set(self.skip_attention) - drop),
            skip_mlp=sorted(set(self.skip_mlp) - drop),
            drop_blocks=sorted(drop),
            residual_width=self.residual_width,
        )

    def kept_layers(self, num_layers: int) -> list[int]:
        drop = set(self.drop_blocks) | (set(self.skip_attention) & set(self.skip_mlp))
        return [l for l in range(num_layers) if l not in drop]

    def is_empty(self) -> bool:
        return not any(getattr(self, k) for k in PLAN_KEYS)


@dataclass(frozen=True)
class BoundPlan:
    """A plan checked against one model and put in normal form, once (`surgery.bind_plan`). Surgery and
    export take only this: none of them checks or normalizes a plan again."""

    plan: PrunePlan  # normalized
    num_layers: int  # the source model's
    hidden_size: int

    @property
    def kept_layers(self) -> list[int]:
        return self.plan.kept_layers(self.num_layers)

    def residual_widths(self) -> list[tuple[int, int, int]]:
        """(input, middle, output) width of every kept block's residual stream."""
        return self.plan.residual_widths(len(self.kept_layers), self.hidden_size)
