"""The run folder: what a prune run has made so far, so that an interrupted run resumes where it stopped.

It sits next to the output (`.NAME.hubprune-run/` for output `NAME`, or `--run-dir`) and holds
`job.json` (the settings it belongs to) and one JSON file per finished step: the dense evaluation, the
method's selection (plan and report), and whatever checkpoints a method writes as it goes (EvoPress
saves its population every generation). Running the same command again reuses those files; a run with
other settings starts afresh; a successful run deletes the folder, and so does a failed one that had
finished nothing. A run folder carries a marker file (`MARKER`) written when hubprune creates it; a
folder without one (a user's folder given as --run-dir) is refused, never emptied or deleted.
"""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from .distributed import broadcast, ranks
from .errors import InvalidOptionError
from .export import write_json

log = logging.getLogger("hubprune")

JOB_FILE = "job.json"
MARKER = ".hubprune-run"  # written when hubprune creates the folder: only such a folder is ever deleted


def default_run_dir(output: str | Path) -> Path:
    output = Path(output).absolute()  # `.` has no name to put a sibling next to
    return output.with_name(f".{output.name}.hubprune-run")


class RunFolder:
    """A folder of named JSON records and files, bound to one set of job settings (`key`)."""

    def __init__(self, path: str | Path, key: dict):
        self.path = Path(path)
        self.key = json.loads(json.dumps(key, default=str))  # as it reads back from disk
        job_file = self.path / JOB_FILE
        self.resumed = False
        self.writer = ranks().main  # only process 0 writes, and deletes, the folder
        if not self.writer:
            return
        if self.path.exists() and not (self.path / MARKER).is_file():
            if not self.path.is_dir() or any(self.path.iterdir()):
                raise InvalidOptionError(f"run folder {self.path} exists and was not made by hubprune; it is never "
                                         "emptied or deleted: choose another --run-dir")
        if job_file.is_file():
            if json.loads(job_file.read_text()) == self.key:
                self.resumed = True
                log.warning("resuming the interrupted run in %s (delete it to start over)", self.path)
            else:
                log.warning("%s belongs to a run with other settings; starting afresh", self.path)
                shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / MARKER).write_text("made by hubprune; deleted when the run succeeds\n")
        write_json(job_file, self.key)

    def file(self, name: str) -> Path:
        return self.path / name

    def load(self, name: str) -> dict | None:
        """The saved record `name` (None if there is none). Over several processes, process 0's, on every
        process: every process calls it at the same point."""
        path = self.path / f"{name}.json"
        return broadcast(json.loads(path.read_text()) if self.writer and path.is_file() else None)

    def save(self, name: str, data: dict) -> None:
        if self.writer:
            write_json(self.path / f"{name}.json", data)

    def cached(self, name: str, make: Callable[[], dict]) -> dict:
        """The saved record `name`, or `make()` saved as it. `make` runs on every process (it may hold
        collectives)."""
        saved = self.load(name)
        if saved is None:
            self.save(name, make())
            saved = self.load(name)
        return saved  # as read back, so a resumed run continues from exactly the same values

    def steps(self) -> list[str]:
        return sorted(f.stem for f in self.path.glob("*.json") if f.name != JOB_FILE)

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Done: delete. Failed or interrupted: keep the finished steps for the next run (if any)."""
        if not self.writer:
            return
        if exc_type is not None and self.steps():
            size = sum(f.stat().st_blocks * 512 for f in self.path.rglob("*") if f.is_file())  # allocated, not apparent
            log.warning("finished steps (%s) are kept in %s (%.2f GB on disk): the same command resumes from them; "
                        "delete the folder to start over", ", ".join(self.steps()), self.path, size / 1e9)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


class LayerTensors:
    """Tensors per source layer (names local to the block), one safetensors file per layer in a folder:
    the weights a restoring method refitted, applied on top of the plan when the output is written.
    A string key names tensors outside the blocks (see `surgery.OUTSIDE_BLOCKS`)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _file(self, key: int | str) -> Path:
        return self.folder / (f"layer-{key:05d}.safetensors" if isinstance(key, int) else f"{key}.safetensors")

    def save(self, key: int | str, tensors: dict) -> None:
        """Written by process 0 alone: every process computes the same tensors."""
        from safetensors.torch import save_file

        if not ranks().main:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._file(key)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, tmp)
        tmp.replace(path)

    def __call__(self, key: int | str) -> dict | None:
        from safetensors.torch import load_file

        path = self._file(key)
        return load_file(path) if path.is_file() else None

    def __bool__(self) -> bool:
        return self.folder.is_dir() and any(self.folder.glob("*.safetensors"))
