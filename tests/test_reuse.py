"""What a new user does right after a prune: load the tokenizer the usual way (no extra arguments, in a
fresh process that has never imported hubprune), and point hubprune at its own output again."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import METHOD_OPTIONS, method_options

import hubprune
from hubprune.errors import InvalidOptionError
from hubprune.methods import methods

@pytest.fixture(scope="module")
def outputs(method_outputs):
    source, results, _ = method_outputs("llama")
    return source, {method: result.output for method, result in results.items()}


def test_every_method_is_covered():
    assert set(METHOD_OPTIONS) == set(methods())


def test_the_plain_tokenizer_call_works_on_every_output(outputs):
    _, made = outputs
    script = ("import sys\nfrom transformers import AutoTokenizer\nfor folder in sys.argv[1:]:\n"
              "    tokenizer = AutoTokenizer.from_pretrained(folder)\n"
              "    assert tokenizer('hello world').input_ids, folder\n"
              "assert 'hubprune' not in sys.modules\nprint('ok', len(sys.argv) - 1)")
    # For a remote-code output transformers asks whether to run its code (it reads config.json first);
    # either answer loads the tokenizer. No answer at all (no terminal) is the case tested here.
    out = subprocess.run([sys.executable, "-c", script, *map(str, made.values())], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith(f"ok {len(made)}")


def test_pruning_a_pruned_output_again_is_refused_before_any_work(outputs, tmp_path):
    _, made = outputs
    with pytest.raises(InvalidOptionError, match="already pruned by hubprune"):
        hubprune.prune(str(made["2ssp"]), "shortgpt", sparsity=0.2, output=tmp_path / "again", device="cpu",
                       options=METHOD_OPTIONS["shortgpt"], seq_len=32)
    assert list(tmp_path.iterdir()) == []  # no run folder, no output


def test_each_method_keeps_to_the_plan_keys_it_declares_and_exports_when_they_allow(outputs, tmp_path):
    """`plan_keys` is what `--export` is checked against before pruning: every method's real plan keeps
    to it, and every output whose method declares nothing a serving format cannot carry exports."""
    from hubprune.errors import ExportError
    from hubprune.methods import get_method
    from hubprune.serving import export
    from hubprune.serving.blocks import NOT_SERVABLE

    _, made = outputs
    for method, folder in made.items():
        impl = get_method(method)
        options = method_options(method, folder.parent)
        declared = impl.plan_keys(impl.configure(options))
        used = {k for k, v in json.loads((folder / "hubprune_plan.json").read_text()).items() if v}
        assert declared is not None and used <= declared, method
        if declared & NOT_SERVABLE.keys():
            with pytest.raises(ExportError):
                export(folder, "vllm", tmp_path / method)
        else:
            export(folder, "vllm", tmp_path / method)
            assert json.loads((tmp_path / method / "config.json").read_text())["model_type"] == "nemotron-nas"
