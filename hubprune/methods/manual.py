"""The manual method: apply a plan file as it is (docs/format.md, "The plan")."""
from __future__ import annotations

from dataclasses import dataclass

from .. import schema
from ..errors import InvalidOptionError
from ..plan import PrunePlan
from .base import Options, PruneContext, PruningMethod, Selection
from .registry import register


@dataclass
class ManualOptions(Options):
    plan: str | None = schema.setting(None, metavar="FILE", group="method",
                                      help="plan file for --method manual (JSON or YAML; the format: `hubprune prune --help`, docs/format.md)")

    def check(self) -> None:
        if not self.plan:
            raise InvalidOptionError("--method manual needs --plan FILE (JSON or YAML; see `hubprune prune --help`)")
        plan = PrunePlan.load(self.plan)  # a malformed file is reported before the model is loaded
        if plan.residual_width is not None:
            raise InvalidOptionError("a plan with residual_width needs the rotations SliceGPT calibrates, which a plan "
                                     "file does not hold; use --method slicegpt")


@register
class ManualMethod(PruningMethod):
    name = "manual"
    summary = "apply an explicit plan file (FFN neurons to keep, attention/MLP to skip, blocks to drop)"
    takes_sparsity = False
    Options = ManualOptions

    def plan_keys(self, options: ManualOptions) -> frozenset[str]:
        plan = PrunePlan.load(options.plan).to_dict()
        return frozenset(key for key, value in plan.items() if value)

    def select(self, context: PruneContext) -> Selection:
        return Selection(PrunePlan.load(context.options.plan))
