"""Adaptation policies: IPA-style (everything free) and the paper's baselines, as restrictions.

All policies share the same options, objective and solvers (as in the paper, ``reference/ipa.md`` 1.9);
a baseline only pins part of the configuration:

* ``ipa``: variant, batch size, cores and replicas all free;
* ``fa2-low`` / ``fa2-high``: the variant of every stage pinned (spec ``baselines.fa2_low`` /
  ``fa2_high``, default the least / most accurate variant), batch, cores and replicas free (FA2 is
  autoscaling plus batching);
* ``rim``: replicas pinned to the spec's over-provisioned ``baselines.rim_replicas``; variant, batch and
  cores free.
"""

from __future__ import annotations

from collections.abc import Mapping

from ipa_tasks.optimizer.choices import POLICIES
from ipa_tasks.optimizer.options import Restriction
from ipa_tasks.profiles import ProfileError
from ipa_tasks.spec import PipelineSpec, SpecError


def restriction_for(
    policy: str, spec: PipelineSpec, accuracies: Mapping[tuple[str, str], float]
) -> Restriction:
    """What ``policy`` pins for ``spec``; ``accuracies`` (stage, variant) -> accuracy picks FA2 defaults."""
    if policy == "ipa":
        return Restriction()
    if policy in ("fa2-low", "fa2-high"):
        configured = spec.baselines.fa2_low if policy == "fa2-low" else spec.baselines.fa2_high
        pick = min if policy == "fa2-low" else max
        variants = {}
        for stage in spec.stages:
            if stage.name in configured:
                variants[stage.name] = configured[stage.name]
            else:
                missing = [v.name for v in stage.variants if (stage.name, v.name) not in accuracies]
                if missing:
                    raise ProfileError(
                        f"policy {policy!r} picks the {'least' if policy == 'fa2-low' else 'most'} accurate "
                        f"variant of stage {stage.name!r}, but neither the spec nor the profile gives an "
                        f"accuracy for {', '.join(missing)}; pin one in baselines.{policy.replace('-', '_')}"
                    )
                # Ties go to the first variant in spec order, so the choice is stable.
                variants[stage.name] = pick(
                    stage.variants, key=lambda v, s=stage.name: accuracies[(s, v.name)]
                ).name
        return Restriction(variants=variants)
    if policy == "rim":
        missing = [s for s in spec.stage_names if s not in spec.baselines.rim_replicas]
        if missing:
            where = spec.source_path or spec.name
            raise SpecError(
                f"{where}: baselines.rim_replicas: policy 'rim' needs a replica count for stage(s) "
                f"{', '.join(missing)}"
            )
        return Restriction(replicas=dict(spec.baselines.rim_replicas))
    raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
