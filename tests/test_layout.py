"""The shape of the code, as a specification: every registered method's options reach every place a
setting must reach (flag, recipe key, card), and hubprune's modules import each other without a cycle."""
from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from hubprune import schema
from hubprune.card import command
from hubprune.cli import build_parser
from hubprune.evaluation.settings import EvalSettings
from hubprune.heal.settings import HealSettings
from hubprune.job import PRUNE_KEYS_IN_PUSH, PruneJob, PushSettings
from hubprune.methods import Options, get_method, methods
from hubprune.push import _check_entry

PACKAGE = Path(__file__).parent.parent / "hubprune"


def _flags(command_name: str) -> dict[str, str]:
    """dest -> first flag of a sub-command's parser."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command_name]
    return {a.dest: a.option_strings[0] for a in sub._actions if a.option_strings}


def _example(cls: type, f: dataclasses.Field):
    """A valid value of a setting that differs from its default."""
    base, _ = schema.kind(cls, f.name)
    if f.metadata["choices"]:
        return next(c for c in f.metadata["choices"] if c != schema.default(f))
    current = schema.default(f)
    number = 2 * current if isinstance(current, int) and not isinstance(current, bool) and current else 3
    return {bool: True, int: number, float: 0.5, list: ["x"]}.get(base, "value")


@pytest.mark.parametrize("name", sorted(methods()))
def test_every_method_option_has_a_flag_a_recipe_key_and_a_card_rendering(name, tmp_path):
    method = get_method(name)
    assert method.summary and issubclass(method.Options, Options) and dataclasses.is_dataclass(method.Options)
    prune_flags, push_flags = _flags("prune"), _flags("push")
    for f in schema.fields(method.Options):
        assert f.metadata["help"], f"{name}: --{f.name} has no help"
        assert prune_flags[f.name] == push_flags[f.name] == schema.flag(f)
        if name == "manual":  # its one option names a file that must exist and parse
            continue
        value = "16,64" if f.name == "evopress_selection_tokens" else _example(method.Options, f)
        _check_entry({"method": name, "options": {f.name: value}}, "recipe")
        job = {"model": "default", "method": name, "sparsity": 0.25, "options": {f.name: value}}
        assert schema.flag(f) in command(job).split()


def test_an_option_shared_by_methods_means_the_same_everywhere():
    seen: dict[str, tuple] = {}
    for name, cls in methods().items():
        for f in schema.fields(cls.Options):
            meaning = (schema.kind(cls.Options, f.name), f.metadata["help"], f.metadata["choices"],
                       f.metadata["minimum"], f.metadata["group"])
            assert seen.setdefault(f.name, meaning) == meaning, f"--{f.name} differs between methods"


def test_every_job_setting_reaches_the_command_line_and_the_recipe():
    prune_flags, eval_flags, push_flags = _flags("prune"), _flags("eval"), _flags("push")
    for f in schema.cli_fields(PruneJob):
        assert f.name in prune_flags, f.name
        if f.name != "revision":  # push: --revision is the branch, the source's is --source-revision
            assert f.name in push_flags, f.name
    for f in schema.cli_fields(EvalSettings):
        assert f.name in prune_flags and f.name in eval_flags and f.name in push_flags, f.name
    for f in schema.cli_fields(PushSettings):
        assert f.name in push_flags, f.name
    recipe_keys = set(PRUNE_KEYS_IN_PUSH) | {f.name for f in schema.fields(PushSettings)}
    assert {"model", "method", "sparsity", "options", "evaluation", "heal", "repo_id", "source_revision"} <= recipe_keys


@pytest.mark.parametrize("field", [f.name for f in schema.cli_fields(HealSettings) if f.name != "method"])
def test_every_heal_setting_has_flags_and_survives_the_cards_command(field):
    """On prune, push and heal; and a value other than the default, written into the card's command,
    parses back to itself."""
    f = next(f for f in schema.fields(HealSettings) if f.name == field)
    for sub in ("prune", "push", "heal"):
        assert _flags(sub).get(schema.dest(f)) == schema.flag(f), (sub, field)
    value = _example(HealSettings, f)
    job = {"model": "default", "method": "manual", "options": {"plan": "p.yaml"}, "heal": {"method": "kd", field: value}}
    line = command(job).split()
    args = build_parser().parse_args(line[1:line.index("--output")] + ["--output", "x"])
    assert schema.from_args(HealSettings, args)[field] == value


# -- imports ---------------------------------------------------------------------------------------------

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """hubprune modules `path` imports anywhere (functions included), except under `if TYPE_CHECKING:`."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
               for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            submodules = {f"{target}.{a.name}" for a in node.names} & modules
            found |= submodules or ({target} & modules)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names} & modules
    return found - {name}


def test_the_import_graph_has_no_cycle():
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _imports(path, set(files)) for name, path in files.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_every_module_imports_on_its_own():
    """Each module imported first in a fresh interpreter (one process, modules in turn, caches cleared)."""
    names = sorted(_module_name(p) for p in PACKAGE.rglob("*.py") if "testing" not in p.parts)
    script = ("import importlib, sys\nfor name in sys.argv[1:]:\n"
              "    for loaded in [m for m in sys.modules if m == 'hubprune' or m.startswith('hubprune.')]:\n"
              "        del sys.modules[loaded]\n"
              "    importlib.import_module(name)\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


# -- families --------------------------------------------------------------------------------------------

def test_every_family_has_all_its_parts_and_the_remote_code_declares_exactly_those():
    import inspect

    from hubprune.families import FAMILIES
    from hubprune.modeling import OWN_CLASSES, configuration_hubprune, modeling_hubprune

    for name, family in FAMILIES.items():
        assert family.model_type == name and family.pruned_class_prefix
        assert family.tiny_config().model_type == name  # the tests build every family from it
        config_class, model_class = OWN_CLASSES[family.pruned_model_type]
        assert config_class.model_type == family.pruned_model_type
        assert model_class.__name__ == family.pruned_model_class and family.evopress_seq_len > 0
    declared_configs = {n for n, c in inspect.getmembers(configuration_hubprune, inspect.isclass)
                        if n.startswith("HubPrune") and n.endswith("Config")}
    declared_models = {n for n, c in inspect.getmembers(modeling_hubprune, inspect.isclass)
                       if n.startswith("HubPrune") and n.endswith("ForCausalLM") and n != "HubPruneForCausalLM"}
    declared_bases = {n for n, c in inspect.getmembers(modeling_hubprune, inspect.isclass)
                      if n.startswith("HubPrune") and n.endswith("Model") and n not in ("HubPruneModel",
                                                                                        "HubPrunePreTrainedModel")}
    assert declared_configs == {f.pruned_config_class for f in FAMILIES.values()}
    assert declared_models == {f.pruned_model_class for f in FAMILIES.values()}
    assert declared_bases == {f.pruned_base_class for f in FAMILIES.values()}
    assert {t: prefix for t, (_, prefix, _) in configuration_hubprune.FAMILIES.items()} == {
        t: f.pruned_class_prefix for t, f in FAMILIES.items()}
    for name, family in FAMILIES.items():  # the remote code puts each branch's norms where the adapter does
        if name != "opt":
            assert modeling_hubprune._BRANCH_NORMS.get(name, modeling_hubprune._PRE_NORM) == (
                family.attention_norms, family.mlp_norms), name
