"""What files meant for publishing may say about the machine they were made on: a local path becomes
its last part (the folder or file name), so a pushed hubprune.json, config.json, results.json or model
card never reveals a home directory or a private folder name. Hub repo ids and corpus names stay."""
from __future__ import annotations

import os
from pathlib import Path


def looks_local(value: str) -> bool:
    """A path on this machine, as opposed to a repo id, a corpus name or any other text."""
    if not value or "\n" in value or len(value) > 4096:
        return False
    if value.startswith(("/", "~", "./", "../", ".\\")) or (len(value) > 2 and value[1] == ":" and value[2] in "\\/"):
        return True
    return (os.sep in value or "/" in value) and os.path.exists(value)


def public(value):
    """`value` (any JSON-like structure) with every local path replaced by its name."""
    if isinstance(value, str):
        return Path(value).expanduser().name if looks_local(value) else value
    if isinstance(value, dict):
        return {key: public(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [public(item) for item in value]
    return value
