"""Adding a method is one module: a method defined in this file, and nowhere else, is listed and
described by `hubprune methods`, gets its own flags on the command line, runs, is checked in recipes and
is cited and reproduced by the model card."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import yaml
from conftest import calibratable_model
from transformers import AutoConfig

from hubprune import schema
from hubprune.card import render_card
from hubprune.cli import main
from hubprune.errors import InvalidOptionError
from hubprune.methods import Options, Paper, PruneContext, PruningMethod, Selection, register, unregister
from hubprune.plan import PrunePlan
from hubprune.push import load_recipe


@dataclass
class DropLastOptions(Options):
    last_blocks: int = schema.setting(1, minimum=1, metavar="K", group="drop-last",
                                      help="how many of the last decoder blocks to remove")


class DropLast(PruningMethod):
    name = "drop-last"
    summary = "remove the last K decoder blocks (an example method)"
    paper = Paper("An Example of a Pruning Method", "2401.00001", "Example, Ann")
    takes_sparsity = False
    Options = DropLastOptions

    def select(self, context: PruneContext) -> Selection:
        n = context.loaded.model.config.num_hidden_layers
        removed = list(range(n - context.options.last_blocks, n))
        return Selection(PrunePlan(drop_blocks=removed), {"summary": f"removed blocks {removed}"})


@pytest.fixture
def drop_last():
    register(DropLast)
    yield DropLast
    unregister(DropLast.name)


def run(capsys, *args) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # --help
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_method_defined_in_one_file_works_everywhere(drop_last, tmp_path, capsys):
    code, out, _ = run(capsys, "methods")
    assert code == 0 and any(line.split(None, 1) == ["drop-last", DropLast.summary] for line in out.splitlines())
    code, out, _ = run(capsys, "methods", "drop-last")
    assert code == 0 and "--last-blocks K  [1]" in out and "arXiv:2401.00001" in out and "not taken" in out
    code, out, _ = run(capsys, "prune", "--help")
    assert code == 0 and "--last-blocks K" in out

    source = calibratable_model(tmp_path / "src", layers=4)
    output = tmp_path / "out"
    code, out, err = run(capsys, "prune", str(source), "--method", "drop-last", "--last-blocks", "2", "-o", str(output),
                         "--device", "cpu")
    assert code == 0, err
    assert AutoConfig.from_pretrained(output).num_hidden_layers == 2  # a stock export: no remote code needed

    card = str(render_card(output, repo_id="me/tiny-drop-last"))
    [line] = [line for line in card.splitlines() if line.startswith("hubprune prune")]
    assert "--method drop-last" in line and "--last-blocks 2" in line and "An Example of a Pruning Method" in card
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(card.split("```yaml\n")[1].split("```")[0])
    [job] = load_recipe(recipe)
    assert job["options"] == {"last_blocks": 2}


def test_a_new_methods_options_are_checked_like_any_other(drop_last, tmp_path, capsys):
    source = str(calibratable_model(tmp_path / "src", layers=4))
    for args, message in [(["--last-blocks", "0"], "--last-blocks 0: must be at least 1"),
                          (["--alpha", "1"], "--alpha does not apply to --method drop-last"),
                          (["--sparsity", "0.2"], "takes no --sparsity")]:
        code, _, err = run(capsys, "prune", source, "--method", "drop-last", *args, "-o", str(tmp_path / "o"))
        assert code == 2 and message in err and "Traceback" not in err
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"jobs": [{"model": source, "method": "drop-last", "repo_id": "me/x",
                                                "options": {"last_block": 2}}]}))
    with pytest.raises(InvalidOptionError, match="--last-block does not apply"):
        load_recipe(recipe)


def test_the_example_method_leaves_with_its_fixture():
    from hubprune.methods import methods

    assert "drop-last" not in methods()
