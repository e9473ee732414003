"""The last step of `make demo`: publish the demo's output folder the way `hubprune push` does, to a
local Hub server (the Hub itself cannot be reached from every machine), then download it back with
huggingface_hub and check that it loads and gives the same logits.

    python -m hubprune.testing.demo runs/demo
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Before huggingface_hub is imported: the local server speaks the LFS upload protocol, not Xet.
os.environ["HF_HUB_DISABLE_XET"] = "1"

USER, TOKEN = "demo", "hf_demo_token"


def main(folder: str) -> None:
    import torch
    from huggingface_hub import snapshot_download
    from transformers import AutoModelForCausalLM

    from ..loading import load_model
    from ..push import push
    from .hub_server import LocalHub

    repo_id = f"{USER}/{Path(folder).resolve().name}"
    with tempfile.TemporaryDirectory() as root, LocalHub(Path(root) / "hub", {USER: TOKEN}) as hub:
        result = push(repo_id=repo_id, from_dir=folder, token=TOKEN, endpoint=hub.url)
        published = result.published
        print(f"published {len(published.files)} files to {published.url} (local Hub server), commit {published.commit}")
        path = snapshot_download(repo_id, endpoint=hub.url, token=TOKEN, cache_dir=Path(root) / "cache")
        remote = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, dtype=torch.float32)
        local = load_model(folder, device="cpu", dtype="float32").model
        ids = torch.arange(1, 17).unsqueeze(0)
        with torch.no_grad():
            same = torch.equal(remote(input_ids=ids).logits, local(input_ids=ids).logits)
        print(f"downloaded back with huggingface_hub, loaded with trust_remote_code=True: logits "
              f"{'identical to' if same else 'DIFFERENT from'} the local folder's; model card: {folder}/README.md")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")
