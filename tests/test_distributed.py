"""Many processes (torchrun, gloo on the CPU): `hubprune eval` shares the perplexity windows among the
processes and adds their fp64 sums, so two processes measure what one does; process 0 alone writes; the
jobs that are not parallel yet refuse a launcher in one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import calibratable_model

import hubprune
from hubprune.distributed import Ranks


def test_shares_cover_every_item_once_in_order():
    for count in (0, 1, 5, 8):
        for world in (1, 2, 3):
            shares = [range(count)[Ranks(r, world).share(count)] for r in range(world)]
            assert [i for share in shares for i in share] == list(range(count))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_two_processes_measure_the_perplexity_one_does(tmp_path):
    source = calibratable_model(tmp_path / "src")
    settings = dict(ppl=["default"], max_windows=5, seq_len=32, device="cpu")
    one = hubprune.evaluate(str(source), **settings)["perplexity"]["default"]["dense"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HUBPRUNE_DIST_TIMEOUT": "120"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                          "hubprune.cli", "eval", str(source), "--ppl", "default", "--max-windows", "5", "--seq-len",
                          "32", "--device", "cpu", "--output", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    shared = json.loads((tmp_path / "two" / "results.json").read_text())["perplexity"]["default"]["dense"]
    assert shared["tokens"] == one["tokens"] == 5 * 31  # five windows, shared 3 + 2: none lost, none twice
    assert shared["perplexity"] == pytest.approx(one["perplexity"], rel=1e-12)  # fp64 sums, in another order
    assert two.stdout.count("results:") == 1  # one report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "two"]  # no run folder or lock left behind


@pytest.mark.parametrize("job", ["prune", "heal"])
def test_jobs_that_are_not_parallel_yet_refuse_a_launcher(job, tmp_path, monkeypatch, capsys):
    from hubprune.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets in every process it starts
    monkeypatch.setenv("RANK", "1")
    args = {"prune": ["prune", "default", "--method", "manual", "--plan", str(tmp_path / "p.yaml")],
            "heal": ["heal", "default"]}[job]
    (tmp_path / "p.yaml").write_text("drop_blocks: [0]\n")
    assert main([*args, "-o", str(tmp_path / "out")]) == 2
    assert "runs in one process" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
