"""Many processes (torchrun, gloo on the CPU): `hubprune eval` shares the perplexity windows among the
processes and adds their fp64 sums, so two processes measure what one does; process 0 alone writes; the
jobs that are not parallel yet refuse torchrun in one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import calibratable_model


def torchrun(processes: int, *args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HUBPRUNE_DIST_TIMEOUT": "120"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "hubprune.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return calibratable_model(tmp_path_factory.mktemp("dist") / "src")


def test_two_processes_measure_the_perplexity_one_does(source, tmp_path):
    args = ["eval", str(source), "--ppl", "default", "--max-windows", "5", "--seq-len", "32", "--device", "cpu"]
    one = torchrun(1, *args, "--output", str(tmp_path / "one"))
    two = torchrun(2, *args, "--output", str(tmp_path / "two"))
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    a, b = (json.loads((tmp_path / n / "results.json").read_text())["perplexity"]["default"]["dense"]
            for n in ("one", "two"))
    assert a["tokens"] == b["tokens"] == 5 * 31  # five windows, shared 3 + 2: none lost, none twice
    assert b["perplexity"] == pytest.approx(a["perplexity"], rel=1e-12)  # fp64 sums, another order
    assert two.stdout.count("results:") == 1  # one report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no run folder left behind


def test_jobs_that_are_not_parallel_yet_refuse_torchrun(source, tmp_path):
    out = torchrun(2, "prune", str(source), "--method", "shortgpt", "--sparsity", "0.25", "--calib-data", "default",
                   "--device", "cpu", "-o", str(tmp_path / "out"))
    assert out.returncode != 0 and "prune runs in one process for now" in out.stderr
    assert not (tmp_path / "out").exists()
