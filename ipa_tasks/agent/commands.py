"""``ipa agent plan|explain|what-if`` (docs/agent.md). The model comes from the environment
(:mod:`.model_config`); without one, each command says what to set and exits 2."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_NOT_CONFIGURED = 2


def add_agent_parser(sub: Any) -> None:
    agent = sub.add_parser(
        "agent",
        help="the agentic planner: plan, explain a decision, answer a what-if (needs a model: docs/agent.md)",
        description="An LLM agent that plans with the optimizer's and simulator's tools; every plan it "
        "proposes is checked by the MILP before use. Configure the model with IPA_AGENT_MODEL (and "
        "IPA_AGENT_BASE_URL for an OpenAI-compatible server).",
    )
    actions = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--spec", required=True, help="spec file, or the name of a shipped pipeline")
        parser.add_argument("--quiet", action="store_true", help="leave out the session's transcript")

    plan = actions.add_parser(
        "plan",
        help="propose a configuration for a load, checked against the MILP's",
        description="The agent proposes a configuration for --load; it is used only if it is feasible and "
        "its objective is within --margin of the MILP's, else the MILP's plan is. With --apply, the agent "
        "may apply it to the target (the same one ipa_adapt uses) and the checked plan is applied.",
    )
    common(plan)
    plan.add_argument("--load", type=float, required=True, help="requests per second to plan for")
    plan.add_argument("--margin", type=float, default=0.02, help="objective shortfall allowed (0.02 = 2 %%)")
    plan.add_argument("--request", default="", help="what to ask, in words (default: plan for the load)")
    plan.add_argument("--apply", action="store_true", help="allow the agent to apply its plan")
    plan.add_argument(
        "--target",
        default="auto",
        help="with --apply: auto, local, kubernetes or stage-servers (as ipa_adapt)",
    )
    plan.add_argument("--json", action="store_true", help="print the outcome as JSON")
    plan.set_defaults(func=cmd_agent_plan)

    explain = actions.add_parser(
        "explain",
        help="explain a recorded adaptation decision in plain words",
        description="Explain the latest decision of ipa_adapt for the pipeline (or the one at --time), "
        "citing its objective terms; reads the decisions from MLflow, else from IPA_HOME.",
    )
    common(explain)
    explain.add_argument("--time", default="", help="the decision's time as recorded (default: the latest)")
    explain.set_defaults(func=cmd_agent_explain)

    what_if = actions.add_parser(
        "what-if",
        help="answer a what-if question with the read-only tools",
        description="Ask a question such as 'what if the load triples?'; the agent answers from the "
        "optimizer's and simulator's numbers. Nothing is applied.",
    )
    common(what_if)
    what_if.add_argument("--load", type=float, required=True, help="requests per second now")
    what_if.add_argument("question", help="the question, in words")
    what_if.set_defaults(func=cmd_agent_what_if)


def configured_model(who: str = "ipa agent") -> Any:
    """The configured model; None after saying on stderr, as ``who``, what to set."""
    from ipa_tasks.agent.model_config import AgentNotConfigured, build_model, model_config

    try:
        return build_model(model_config())
    except AgentNotConfigured as exc:
        print(f"{who}: {exc}", file=sys.stderr)
        return None


def _context(args: argparse.Namespace, load: float, **extra: Any) -> Any:
    from ipa_tasks.adaptation.planning import planner_for
    from ipa_tasks.agent.context import PlanningContext
    from ipa_tasks.settings import current_settings
    from ipa_tasks.spec import resolve_spec_path

    settings = current_settings()
    planner, source = planner_for(resolve_spec_path(args.spec), settings.profile_store)
    if not args.quiet:
        print(f"planning {planner.spec.name} with the {source}", file=sys.stderr)
    return PlanningContext(
        planner, load_rps=load, home=settings.home, tracking_uri=settings.tracking_uri, **extra
    )


def _print_transcript(lines: tuple[str, ...], quiet: bool) -> None:
    if not quiet:
        print("\n".join(lines))


def cmd_agent_plan(args: argparse.Namespace) -> int:
    from ipa_tasks.actuation.target import TargetError
    from ipa_tasks.adaptation.planning import running_plan
    from ipa_tasks.adaptation.steps import describe_plan, make_target
    from ipa_tasks.agent.sessions import plan_session
    from ipa_tasks.kubernetes_connection import kubernetes_connection_exists
    from ipa_tasks.settings import current_settings

    model = configured_model()
    if model is None:
        return EXIT_NOT_CONFIGURED
    ctx = _context(args, args.load, margin=args.margin)
    if args.apply:
        target = make_target(args.target, current_settings(), kubernetes_connection_exists)
        try:
            running = target.read(ctx.spec)
        except TargetError as exc:
            print(
                f"ipa agent: cannot read what runs on {target.name}, nothing was asked: {exc}",
                file=sys.stderr,
            )
            return 1
        ctx.target, ctx.may_apply, ctx.current = target, True, running_plan(ctx.spec, running)
    session = plan_session(ctx, model, args.request)
    if args.json:
        print(
            json.dumps(
                {
                    "accepted": session.verdict.accepted,
                    "reason": session.verdict.reason,
                    "plan": session.plan.to_dict(),
                    "milp": session.milp.to_dict(),
                    "proposal": None if session.proposal is None else session.proposal.model_dump(),
                    "applied": list(session.applied),
                    "transcript": list(session.transcript),
                },
                indent=2,
            )
        )
        return 0
    _print_transcript(session.transcript, args.quiet)
    print(session.verdict.reason)
    print(describe_plan(session.plan))
    for report in session.applied:
        print(f"applied: {report['status']} {report.get('message', '')}".rstrip())
    return 0


def cmd_agent_explain(args: argparse.Namespace) -> int:
    from ipa_tasks.agent.decision_record import recent_decisions
    from ipa_tasks.agent.sessions import TERM_NAMES, explain_session

    model = configured_model()
    if model is None:
        return EXIT_NOT_CONFIGURED
    ctx = _context(args, 0.0)
    rows, source = recent_decisions(ctx.home, ctx.tracking_uri, ctx.spec.name, limit=500)
    chosen = [row for row in rows if not args.time or row["time"] == args.time]
    if not chosen:
        what = f"at {args.time}" if args.time else "at all"
        print(f"ipa agent: no decision of {ctx.spec.name} {what} in {source}", file=sys.stderr)
        return 1
    ctx.decision = chosen[0]
    ctx.load_rps = float(chosen[0].get("forecast_rps") or 0.0)
    session = explain_session(ctx, model)
    _print_transcript(session.transcript, args.quiet)
    print(session.text)
    record = session.record or {}
    terms = ", ".join(f"{name} {record[name]:.4g}" for name in TERM_NAMES if record.get(name) is not None)
    print(f"\nrecorded decision {record.get('time')} ({source}): {record.get('configuration')}; {terms}")
    return 0


def cmd_agent_what_if(args: argparse.Namespace) -> int:
    from ipa_tasks.agent.sessions import what_if_session

    model = configured_model()
    if model is None:
        return EXIT_NOT_CONFIGURED
    session = what_if_session(_context(args, args.load), model, args.question)
    _print_transcript(session.transcript, args.quiet)
    print(session.text)
    return 0
