"""Planning: dataset fingerprint -> plans.json (nnU-Net v2's self-configuration rules).

Public API:

* :func:`plan_dataset` - fingerprint a raw dataset and write ``WORKDIR/NAME/plans.json``.
* :func:`plan_experiment` - plans dictionary from a fingerprint (pure, no I/O).
* :func:`network_rules` - the default planner's or a ResEnc preset's network constants.
* :func:`load_plans` / :func:`validate_plans` - read plans.json, checking the keys later stages need.
"""

from unetkit.planning.api import budget_for, plan_dataset
from unetkit.planning.planner import (DEVICE_MEMORY_GB, PLANNER_NAMES, NetworkRules, PlannerSettings, network_rules,
                                     plan_configuration, plan_experiment)
from unetkit.planning.plans import PlansError, configuration, load_plans, validate_plans

__all__ = ["plan_dataset", "plan_experiment", "plan_configuration", "PlannerSettings", "DEVICE_MEMORY_GB",
           "budget_for", "network_rules", "NetworkRules", "PLANNER_NAMES", "load_plans", "validate_plans", "configuration", "PlansError"]
