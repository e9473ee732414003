"""`python -m hubprune ...`, and so `torchrun --nproc_per_node N -m hubprune prune ...`: the command line."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
