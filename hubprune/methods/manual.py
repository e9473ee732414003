from __future__ import annotations

from ..errors import InvalidOptionError
from ..plan import PrunePlan
from .base import PruneContext, PruningMethod
from .registry import register


@register
class ManualMethod(PruningMethod):
    name = "manual"
    summary = "apply an explicit plan file (FFN neurons to keep, attention/MLP to skip, blocks to drop)"
    takes_sparsity = False
    options = ("plan",)

    def check_options(self, options: dict) -> None:
        if not options.get("plan"):
            raise InvalidOptionError("--method manual needs --plan FILE (JSON or YAML; see `hubprune prune --help`)")
        plan = PrunePlan.load(options["plan"])  # a malformed file is reported before the model is loaded
        if plan.residual_width is not None:
            raise InvalidOptionError("a plan with residual_width needs the rotations SliceGPT calibrates, which a plan "
                                     "file does not hold; use --method slicegpt")

    def select(self, context: PruneContext) -> PrunePlan:
        return PrunePlan.load(context.options["plan"])
