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


def test_seed_creates_a_pipelines_stage_objects_that_the_target_reads(tmp_path: Path) -> None:
    from ipa_tasks.actuation.config import StageConfig
    from ipa_tasks.actuation.manifests import owner_selector

    kubeconfig = tmp_path / "kubeconfig.yaml"
    command = [sys.executable, "-m", "ipa_tasks.fake_kube_api", "--port", "0", "--kubeconfig"]
    command += [str(kubeconfig), "--seed", "digit-strips"]
    # A home of its own: the plan comes from the shipped profile, not one another test published.
    env = {**os.environ, "IPA_HOME": str(tmp_path / "ipa")}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        lines = [server.stdout.readline() for _ in range(3)]
        assert lines[2].startswith("seeded digit-strips: detect det_fcn_l batch 1 x1"), lines
        api = config.new_client_from_config(config_file=str(kubeconfig))
        deployments = client.AppsV1Api(api).list_namespaced_deployment(
            "default", label_selector=owner_selector("digit-strips")
        )
        names = sorted(d.metadata.name for d in deployments.items)
        assert names == ["digit-strips-classify", "digit-strips-detect"]
        detect = next(d for d in deployments.items if d.metadata.name == "digit-strips-detect")
        env = {e.name: e.value for e in detect.spec.template.spec.containers[0].env}
        seeded = StageConfig(env["IPA_VARIANT"], int(env["IPA_BATCH_SIZE"]), 1, detect.spec.replicas)
        assert seeded == StageConfig("det_fcn_l", batch_size=1, cores=1, replicas=1)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
