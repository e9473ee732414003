"""Nothing lost: hubprune never deletes or replaces a folder it did not make, two runs on one output
cannot break each other, and whatever a killed run left behind is cleaned up or restored by the next."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import tiny_model

from hubprune.errors import OutputBusyError, OutputExistsError, OutputNotWritableError
from hubprune.errors import InvalidOptionError
from hubprune.outputs import OutputLock, atomic_folder, recover
from hubprune.pipeline import prune


@pytest.fixture()
def source(tmp_path):
    folder = tmp_path / "src"
    tiny_model("llama").save_pretrained(folder)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"drop_blocks": [3]}))
    return folder, plan


def run(source, output, **kwargs):
    folder, plan = source
    return prune(str(folder), "manual", output=output, options={"plan": str(plan)}, device="cpu", **kwargs)


def users_folder(path):
    path.mkdir()
    (path / "thesis.txt").write_text("four years of work")
    return path


def test_overwrite_replaces_only_a_hubprune_output(source, tmp_path):
    mine = users_folder(tmp_path / "mine")
    with pytest.raises(OutputExistsError, match="not written by hubprune"):
        run(source, mine, overwrite=True)
    assert (mine / "thesis.txt").read_text() == "four years of work"
    out = tmp_path / "out"
    run(source, out)
    first = (out / "hubprune.json").stat().st_ino
    run(source, out, overwrite=True)  # a hubprune output: replaced
    assert (out / "hubprune.json").stat().st_ino != first
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []


def test_a_run_dir_hubprune_did_not_make_is_refused_not_deleted(source, tmp_path):
    mine = users_folder(tmp_path / "mine")
    with pytest.raises(InvalidOptionError, match="not made by hubprune"):
        run(source, tmp_path / "out", run_dir=mine)
    assert (mine / "thesis.txt").read_text() == "four years of work"
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder is fine to use, and is removed on success as hubprune marked it
    run(source, tmp_path / "out", run_dir=empty)
    assert (tmp_path / "out" / "hubprune.json").is_file()


def test_a_second_run_on_the_same_output_is_refused_at_once(source, tmp_path):
    out = tmp_path / "out"
    with OutputLock(out):
        with pytest.raises(OutputBusyError, match=f"pid {os.getpid()}"):
            run(source, out)
        lock = tmp_path / ".out.hubprune-lock"
        assert lock.is_file()
    assert not lock.exists()  # released and removed
    run(source, out)  # free again


def test_the_lock_is_held_across_processes(tmp_path):
    out = tmp_path / "out"
    script = ("import sys\nfrom hubprune.outputs import OutputLock\nfrom hubprune.errors import OutputBusyError\n"
              "try:\n    OutputLock(sys.argv[1]).__enter__()\nexcept OutputBusyError as exc:\n"
              "    print(exc)\n    sys.exit(2)")
    with OutputLock(out):
        busy = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True)
    assert busy.returncode == 2 and f"another hubprune run (pid {os.getpid()})" in busy.stdout
    free = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True)
    assert free.returncode == 0, free.stdout + free.stderr


def test_the_target_is_checked_again_at_the_final_rename(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputExistsError):
        with atomic_folder(out, overwrite=False) as tmp:
            (tmp / "hubprune.json").write_text("{}")
            users_folder(out)  # appeared while we worked
    assert (out / "thesis.txt").is_file() and not any(p.name.startswith(".out.tmp") for p in tmp_path.iterdir())


def test_a_killed_run_leaves_nothing_the_next_does_not_clean(source, tmp_path):
    out = tmp_path / "out"
    stale = tmp_path / ".out.tmp-999999"  # a SIGKILL while writing
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"0" * 1000)
    run(source, out)
    assert not stale.exists()


def test_an_overwrite_killed_between_its_renames_is_undone(source, tmp_path):
    out = tmp_path / "out"
    run(source, out)
    old = tmp_path / ".out.old-999999"
    os.replace(out, old)  # the first rename happened, the second did not
    (tmp_path / ".out.tmp-999999").mkdir()
    recover(out)
    assert (out / "hubprune.json").is_file() and not old.exists()
    assert not (tmp_path / ".out.tmp-999999").exists()
    run(source, tmp_path / "again")
    os.replace(tmp_path / "again", old)  # both renames happened, the deletion of the old one did not
    recover(out)
    assert (out / "hubprune.json").is_file() and not old.exists()


def test_leftovers_that_are_not_hubprune_outputs_are_left_alone(tmp_path):
    old = users_folder(tmp_path / ".out.old-5")
    recover(tmp_path / "out")
    assert (old / "thesis.txt").is_file()


def test_an_unwritable_output_is_refused_before_loading(source, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputNotWritableError, match="is a file"):
        run(source, blocker / "out")
    with pytest.raises(OutputNotWritableError, match="not writable"):
        run(source, "/proc/hubprune-out")
