"""Launcher: ``python -m ipa_tasks.fake_kube_api --port PORT --kubeconfig PATH [--run-pods]``.

Serves the fake Kubernetes API on 127.0.0.1 until SIGINT/SIGTERM, then kills the pods' processes.
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
    return parser.parse_args(argv)


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
