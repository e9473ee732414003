"""Many processes (torchrun, gloo on the CPU). Two processes do what one does: calibration statistics are
summed over each process's share of the windows, searches share out their candidates (or EvoPress's
sequences) and gather the scores, so every method chooses the same plan, with the same weights up to
fp32 summation order, and the same perplexity. Process 0 alone writes; a process that dies fails the
job at once, and the same command resumes; what is not parallel yet refuses a launcher in one line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SHARED_JOBS, TWOSSP_SEQ_LEN, calibratable_model
from safetensors.torch import load_file

import hubprune
from hubprune.distributed import Ranks

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# One thread per process (as torchrun sets), and a stuck collective fails within two minutes.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HUBPRUNE_DIST_TIMEOUT": "120"}
# The jobs other modules check in one process (SHARED_JOBS), and small ones for the other searches.
JOBS = {
    **SHARED_JOBS,
    "blockpruner": dict(model="default", method="blockpruner", sparsity=0.01, seq_len=32, ppl=["default"],
                        max_windows=2, options={"calib_samples": 2}),
    "shortgpt": dict(model="default", method="shortgpt", sparsity=0.1, seq_len=32, ppl=["default"], max_windows=2,
                     options={"calib_samples": 5, "shortgpt_tokens": "all"}),
    "window": dict(model="default", method="window", sparsity=0.1, seq_len=32, ppl=["default"], max_windows=2,
                   options={"calib_samples": 5}),
}


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


def weights(folder: Path) -> dict:
    return {name: t for file in sorted(folder.glob("*.safetensors")) for name, t in load_file(file).items()}


def assert_same_result(one: Path, two: Path, *, rtol: float = 0, ppl_rtol: float = 1e-12) -> None:
    """Two outputs of one job: the same plan, the same tensors (each within `rtol` in norm), the same
    perplexities (within `ppl_rtol`: fp64 sums in another order); the second made by two processes."""
    assert json.loads((two / "hubprune_plan.json").read_text()) == json.loads((one / "hubprune_plan.json").read_text())
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name].float() - b[name].float()).norm() <= rtol * a[name].float().norm(), name
    first, second = (json.loads((f / "hubprune.json").read_text()) for f in (one, two))
    assert second["environment"]["processes"] == 2 and "processes" not in first["environment"]
    for corpus, entry in first["evaluation"]["perplexity"].items():
        for role in ("dense", "pruned"):
            got = second["evaluation"]["perplexity"][corpus][role]
            assert got["tokens"] == entry[role]["tokens"]
            assert got["perplexity"] == pytest.approx(entry[role]["perplexity"], rel=ppl_rtol)


def test_two_processes_prune_with_2ssp_as_one_does_even_when_one_of_them_dies(twossp_runs, tmp_path):
    """The CLI under torchrun. One of the two processes is killed in the middle of the run: torchrun
    stops the other and fails (no wait for a timeout), nothing reaches the output, the finished steps
    stay. The same command then resumes, and gives what one process gives: stage 1's neuron norms summed
    over both processes' windows, stage 2's candidates shared out. One report; nothing left but the output."""
    output, run = tmp_path / "two", tmp_path / ".two.hubprune-run"
    command = [*TORCHRUN, "-m", "hubprune", "prune", "default", "--method", "2ssp", "--sparsity", "0.25",
               "--calib-samples", "4", "--seq-len", str(TWOSSP_SEQ_LEN), "--ppl", "default", "--max-windows", "8",
               "--device", "cpu", "--dtype", "float32", "-o", str(output)]
    launched = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 300
    while not list(run.glob("dense-*.json")):  # the dense model is evaluated: the selection is under way
        assert launched.poll() is None and time.monotonic() < deadline, launched.communicate()[1][-3000:]
        time.sleep(0.1)
    killed = time.monotonic()
    os.kill(_process_of_rank(launched.pid, 1), signal.SIGKILL)
    _, err = launched.communicate(timeout=120)
    assert launched.returncode != 0 and time.monotonic() - killed < 60
    assert "rank      : 1" in err and "Signal 9" in err  # torchrun's report names the process and the cause
    assert not output.exists() and list(run.glob("dense-*.json")) and "selection.json" not in os.listdir(run)

    again = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming the interrupted run" in again.stderr
    assert any(step.startswith("dense-") for step in json.loads((output / "hubprune.json").read_text())["resumed_steps"])
    assert_same_result(twossp_runs[0.25].output, output)
    assert again.stdout.count("output:") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]


def _process_of_rank(launcher: int, rank: int) -> int:
    """The pid of the process torchrun (`launcher`) started as `rank` (from its environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no process of rank {rank} under {launcher}")


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory, embedded_model, fasp_run, evopress_run):
    """{method: (one-process output, two-process output)} for each of JOBS; the two-process runs in one
    torchrun launch, the one-process runs here meanwhile (they share the cores: nothing here is timed)."""
    folder = tmp_path_factory.mktemp("jobs")
    jobs = [{**job, "output": str(folder / method), "device": "cpu", "dtype": "float32"} for method, job in JOBS.items()]
    (folder / "jobs.json").write_text(json.dumps(jobs))
    launched = subprocess.Popen([*TORCHRUN, str(Path(__file__).with_name("torchrun_jobs.py")), str(folder / "jobs.json")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    ones = {"fasp": fasp_run.output, "evopress": evopress_run.output}  # the shared runs (embedded model, fp32)
    for method, job in JOBS.items():
        if method not in ones:
            ones[method] = hubprune.prune(**job, output=folder / f"one-{method}", loaded=embedded_model).output
    _, err = launched.communicate(timeout=900)
    assert launched.returncode == 0, err[-3000:]
    return {method: (ones[method], folder / method) for method in JOBS}


@pytest.mark.parametrize("method", JOBS)
def test_two_processes_choose_the_plan_one_does(two_process_runs, method):
    # FASP's Gram matrices are fp32 sums over windows, added in another order: its refitted weights move
    # by rounding. Every other method copies source tensors: exactly equal.
    one, two = two_process_runs[method]
    if method == "fasp":
        assert_same_result(one, two, rtol=1e-4, ppl_rtol=1e-5)
    else:
        assert_same_result(one, two)


def test_a_refusal_on_process_0_stops_every_process_at_once_in_one_line(tmp_path):
    (tmp_path / "out").mkdir()  # an output that exists: process 0 refuses it, before loading anything
    started = time.monotonic()
    done = subprocess.run([*TORCHRUN, "-m", "hubprune", "prune", "default", "--method", "shortgpt", "--sparsity",
                           "0.1", "--device", "cpu", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode != 0 and time.monotonic() - started < 60  # not a collective's timeout
    errors = [line for line in done.stderr.splitlines() if line.startswith("hubprune: error:")]
    assert len(errors) == 1 and "--overwrite" in errors[0]
    assert f"{os.sep}hubprune{os.sep}" not in done.stderr  # no traceback through hubprune (torchrun adds its own)


@pytest.mark.parametrize("job", ["heal", "prune-heal", "tasks", "from-dir"])
def test_what_is_not_parallel_yet_refuses_a_launcher(job, tmp_path, monkeypatch, capsys):
    from hubprune.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets in every process it starts
    monkeypatch.setenv("RANK", "1")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "hubprune.json").write_text("{}")
    args = {"heal": ["heal", "default", "-o", str(tmp_path / "out")],
            "prune-heal": ["prune", "default", "--method", "shortgpt", "--sparsity", "0.1", "--heal", "kd",
                           "-o", str(tmp_path / "out")],
            "tasks": ["prune", "default", "--method", "shortgpt", "--sparsity", "0.1", "--tasks", "arc_easy",
                      "-o", str(tmp_path / "out")],
            "from-dir": ["push", "--from-dir", str(tmp_path / "src"), "--repo-id", "me/x"]}[job]
    assert main(args) == 2
    assert "runs in one process" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
