"""The agentic planner beside the MILP (``ipa agent``, policy ``agent``; docs/agent.md).

An LLM agent (pydantic-ai) plans with the tools a platform engineer would use (:mod:`.tools`): it reads the
spec, the profiles and the load, solves the MILP, evaluates candidate plans, looks up past decisions, and
applies a plan only when the session allows it. Every plan it proposes is checked (:mod:`.guard`): an
infeasible plan, or one worse than the MILP's by more than a stated margin, is replaced by the MILP's, and
the reason is recorded. The model comes from configuration (:mod:`.model_config`); without one, the agent
commands say so and everything else runs as before.
"""
