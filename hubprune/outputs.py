"""The life of an output folder: one writer at a time, written whole or not at all, and never a folder
hubprune did not make replaced or deleted.

- `OutputLock(output)`: an exclusive lock (`flock` on `.NAME.hubprune-lock` next to the output) for the
  whole run, so two runs on one `--output` cannot replace or break each other; the second is refused at
  once with the first one's PID. The lock file is removed on release.
- `atomic_folder(output, overwrite)`: the output is written to `.NAME.tmp-PID` and renamed into place
  when complete. `--overwrite` replaces only a folder that holds hubprune's record (`hubprune.json`);
  the target is checked again at the rename.
- `recover(output)`, run under the lock: what a killed run left behind is cleaned up. A temporary
  folder is removed; an overwrite that was killed between its two renames is undone (the previous
  output is put back) or finished (the replaced output is removed), so no output is ever lost.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import InsufficientResourcesError, OutputBusyError, OutputExistsError, OutputNotWritableError

RECORD_FILENAME = "hubprune.json"  # every hubprune output holds it: what marks a folder as ours
log = logging.getLogger("hubprune")


def read_json_object(path: Path, error: type[Exception], advice: str) -> dict:
    """A JSON object from a model or output folder, or one line (`error`) naming the broken file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path} is not valid JSON ({exc}); {advice}") from None
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object; {advice}")
    return data


def is_hubprune_output(folder: Path) -> bool:
    return (Path(folder) / RECORD_FILENAME).is_file()


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an existing output unless --overwrite was given and the folder is a hubprune output."""
    output = Path(output)
    if not output.exists():
        return
    if not overwrite:
        raise OutputExistsError(f"{output} already exists; pass --overwrite to replace it, or choose another --output")
    if not output.is_dir() or not is_hubprune_output(output):
        raise OutputExistsError(f"{output} exists and was not written by hubprune (no {RECORD_FILENAME}); --overwrite "
                                "replaces only hubprune outputs: choose another --output or remove it yourself")


def check_writable(output: Path) -> None:
    """Refuse an output whose nearest existing parent cannot be written, before any model is loaded."""
    output = Path(output).absolute()
    existing = next(p for p in output.parents if p.exists())
    if not existing.is_dir():
        raise OutputNotWritableError(f"cannot write --output {output}: {existing} is a file, not a folder")
    try:  # permissions alone do not tell (root, read-only mounts): try
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".hubprune-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputNotWritableError(f"cannot write --output {output}: {existing} is not writable ({exc.strerror})") from None


def _sibling(output: Path, kind: str, pid: int | str) -> Path:
    return output.with_name(f".{output.name}.{kind}-{pid}")


class OutputLock:
    """Held for a whole run: `with OutputLock(output): ...`. Refuses at once when another run holds it."""

    def __init__(self, output: str | Path):
        self.output = Path(output).absolute()
        self.path = self.output.with_name(f".{self.output.name}.hubprune-lock")
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputBusyError(f"another hubprune run (pid {holder}) is writing {self.output}; wait for it to "
                                      "finish or choose another --output") from None
            try:  # the holder before us may have removed the file after we opened it: lock the current one
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still locked: a waiting run then locks a new file
            os.close(self.fd)
            self.fd = None


def recover(output: Path) -> None:
    """Clean up after a killed run on `output` (call it holding the output's lock)."""
    output = Path(output)
    if not output.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(output.name)}\.(tmp|old)-(\d+)")
    leftovers = {"tmp": [], "old": []}
    for path in output.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_dir():
            leftovers[match.group(1)].append(path)
    for tmp in leftovers["tmp"]:
        log.warning("removing %s, left by an interrupted run", tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    for old in sorted(leftovers["old"]):
        if not is_hubprune_output(old):
            continue  # not ours after all: leave it alone
        if output.exists():  # the new output was in place: finish the swap
            log.warning("removing %s, the output an interrupted --overwrite had replaced", old)
            shutil.rmtree(old, ignore_errors=True)
        else:  # killed between the two renames: put the previous output back
            log.warning("restoring %s from %s (an interrupted --overwrite)", output, old)
            os.replace(old, output)


def disk_full(exc: BaseException) -> bool:
    """ENOSPC, whether as an OSError or as the plain Exception that Rust writers (tokenizers,
    safetensors) raise with the OS message in its text."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    return "No space left on device" in str(exc) or "os error 28" in str(exc)


@contextmanager
def atomic_folder(output: Path, overwrite: bool):
    """Yield a temporary folder; on success it replaces `output`, on failure it is removed."""
    output = Path(output)
    check_output(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(output, "tmp", os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        for path in tmp.rglob("*"):  # some writers create 0600 temp files; outputs are for sharing
            path.chmod((0o755 if path.is_dir() else 0o644) & ~umask)
        check_output(output, overwrite)  # again: something may have appeared there while we worked
        if output.exists():
            old = _sibling(output, "old", os.getpid())
            os.replace(output, old)  # a kill from here to the next line is undone by `recover`
            os.replace(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, output)
    except Exception as exc:
        if disk_full(exc):
            raise InsufficientResourcesError(
                f"disk full while writing {output}; free space or choose --output on a larger disk") from None
        if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise OutputNotWritableError(f"cannot write {output}: {exc.strerror}; choose another --output") from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
