"""Started by tests/test_distributed.py under torchrun: every process runs the `hubprune.prune` jobs
listed in the JSON file given as the argument, in order (one launch for several methods)."""
import json
import sys
from pathlib import Path

import hubprune

for job in json.loads(Path(sys.argv[1]).read_text()):
    hubprune.prune(**job)
