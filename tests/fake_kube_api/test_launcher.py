"""``python -m ipa_tasks.fake_kube_api``: serves, writes the kubeconfig, stops on SIGTERM without orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kubernetes import client, config


def test_help_describes_the_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ipa_tasks.fake_kube_api", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "--kubeconfig" in result.stdout and "--run-pods" in result.stdout


def test_the_launcher_serves_until_sigterm_and_kills_its_pods(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig.yaml"
    command = [
        sys.executable,
        "-m",
        "ipa_tasks.fake_kube_api",
        "--port",
        "0",
        "--kubeconfig",
        str(kubeconfig),
    ]
    server = subprocess.Popen([*command, "--run-pods"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        first_line = server.stdout.readline()
        assert first_line.startswith("fake kube-apiserver listening on http://127.0.0.1:")
        api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        marker = tmp_path / "pod.pid"
        script = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
        spec = {"containers": [{"name": "base", "image": "i", "command": ["python", "-c", script]}]}
        api.create_namespaced_pod("default", {"metadata": {"name": "sleeper"}, "spec": spec})
        deadline = time.monotonic() + 20
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pod_pid = int(marker.read_text())
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
        assert "stopped" in server.stdout.read()
        try:
            os.kill(pod_pid, 0)
        except ProcessLookupError:
            pass
        else:
            raise AssertionError(f"pod process {pod_pid} outlived the server")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
