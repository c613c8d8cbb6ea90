"""Launcher: ``python -m ipa_tasks.fake_kube_api --port PORT --kubeconfig PATH [--run-pods] [--seed SPEC]``.

Serves the fake Kubernetes API on 127.0.0.1 until SIGINT/SIGTERM, then kills the pods' processes.
``--seed`` creates the stage Deployments and ConfigMaps of a pipeline (what the Helm chart would install),
running the optimizer's plan at ``--seed-load``, so that ``ipa_adapt`` has something to adapt.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from ipa_tasks.fake_kube_api.server import FakeKubeOptions, FakeKubeServer, write_kubeconfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ipa_tasks.fake_kube_api",
        description="Stateful fake Kubernetes API server (kmock-based) with a fake controller and kubelet.",
    )
    parser.add_argument("--port", type=int, default=18080, help="port on --host (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--kubeconfig", type=Path, required=True, help="where to write the kubeconfig")
    parser.add_argument("--namespace", default="default", help="namespace of the kubeconfig's context")
    parser.add_argument("--run-pods", action="store_true", help="run pods' commands as local processes")
    parser.add_argument("--pod-start-delay", type=float, default=0.0, help="seconds pods stay Pending")
    parser.add_argument(
        "--workload-delay", type=float, default=0.0, help="seconds before Deployment status follows spec"
    )
    parser.add_argument(
        "--seed",
        action="append",
        default=[],
        metavar="SPEC",
        help="create the stage objects of this pipeline (a shipped name or a spec file; repeatable)",
    )
    parser.add_argument("--seed-load", type=float, default=1.0, help="requests/s the seeded plan is for")
    parser.add_argument("--image", default="ipa-airflow:0.1.0", help="image of the seeded stage servers")
    return parser.parse_args(argv)


def seed_stages(kubeconfig: Path, namespace: str, spec_ref: str, load_rps: float, image: str) -> str:
    """Create one pipeline's stage objects through the API, as ``kubectl apply`` of the chart would; the
    plan they run, in words."""
    from kubernetes import client, config

    from ipa_tasks.actuation.config import config_of
    from ipa_tasks.actuation.manifests import stage_manifests
    from ipa_tasks.adaptation.planning import planner_for
    from ipa_tasks.settings import current_settings
    from ipa_tasks.spec import resolve_spec_path

    planner, _ = planner_for(resolve_spec_path(spec_ref), current_settings().profile_store)
    running = config_of(planner.plan(load_rps))
    api = config.new_client_from_config(config_file=str(kubeconfig))
    for manifest in stage_manifests(planner.spec, running, image=image, namespace=namespace):
        if manifest["kind"] == "Deployment":
            client.AppsV1Api(api).create_namespaced_deployment(namespace, manifest)
        else:
            client.CoreV1Api(api).create_namespaced_config_map(namespace, manifest)
    return f"{planner.spec.name}: " + "; ".join(f"{stage} {c.describe()}" for stage, c in running.items())


async def serve(args: argparse.Namespace) -> None:
    options = FakeKubeOptions(
        run_pods=args.run_pods, pod_start_delay=args.pod_start_delay, workload_delay=args.workload_delay
    )
    server = FakeKubeServer(args.host, args.port, options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    try:
        write_kubeconfig(args.kubeconfig, server.url, args.namespace)
        print(f"fake kube-apiserver listening on {server.url}", flush=True)
        print(f"kubeconfig: {args.kubeconfig.resolve()}", flush=True)
        for spec_ref in args.seed:
            # In a thread: the blocking client talks to this very event loop.
            seeded = await asyncio.to_thread(
                seed_stages, args.kubeconfig, args.namespace, spec_ref, args.seed_load, args.image
            )
            print(f"seeded {seeded}", flush=True)
        await stop.wait()
    finally:
        await server.stop()
    print("fake kube-apiserver stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except OSError as exc:  # e.g. the port is taken
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
