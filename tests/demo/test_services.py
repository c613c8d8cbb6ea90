"""The demo's service record: started in a session of their own, stopped with their children, recorded so
that a later command stops exactly them and never a process that took a dead one's pid."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ipa_tasks.demo.services import (
    Service,
    ServiceError,
    group_members,
    is_left,
    is_running,
    read_services,
    services_file,
    start_service,
    stop_services,
    wait_until,
    write_services,
)

# A parent that starts a child in its own process group and ignores SIGTERM: stopping it takes the kill,
# and the child must go with it.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def _child_pid(log: Path) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = log.read_text().strip()
        if text:
            return int(text.splitlines()[0])
        time.sleep(0.05)
    raise AssertionError("the service never printed its child's pid")


def test_a_stubborn_service_and_its_child_are_stopped(tmp_path: Path):
    service, process = start_service(
        "stubborn", [sys.executable, "-c", STUBBORN], os.environ, tmp_path / "s.log"
    )
    child = _child_pid(tmp_path / "s.log")
    assert is_running(service) and service.started > 0
    lines: list[str] = []
    assert stop_services([service], grace_s=1.0, log=lines.append) == ["stubborn"]
    process.wait(10)
    assert not is_running(service)
    assert any("killing it" in line for line in lines)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(Service("child", child, 0, ""))


def test_the_record_round_trips_and_skips_a_process_that_took_a_dead_ones_pid(tmp_path: Path):
    service, process = start_service(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], os.environ, tmp_path / "a.log"
    )
    try:
        write_services(tmp_path, [service])
        assert read_services(tmp_path) == [service]
        # Same pid, another start time: not ours, so not running and never signalled.
        impostor = replace(service, started=service.started + 1)
        assert not is_running(impostor)
        assert stop_services([impostor], log=lambda _: None) == []
        assert process.poll() is None
    finally:
        stop_services([service], log=lambda _: None)
        process.wait(10)


def test_a_damaged_record_is_an_error_that_names_the_file(tmp_path: Path):
    services_file(tmp_path).parent.mkdir(parents=True)
    services_file(tmp_path).write_text("[{not json")
    with pytest.raises(ServiceError, match=r"services\.json"):
        read_services(tmp_path)
    assert read_services(tmp_path / "nothing") == []


def test_waiting_for_a_service_that_exits_names_its_log(tmp_path: Path):
    service, process = start_service(
        "quitter", [sys.executable, "-c", "raise SystemExit(3)"], os.environ, tmp_path / "q.log"
    )
    with pytest.raises(ServiceError, match=r"quitter exited with status 3.*q\.log"):
        wait_until(lambda: False, service, process, timeout_s=20)
    with pytest.raises(ServiceError, match="was not up after 0 s"):
        wait_until(lambda: False, service, None, timeout_s=0)


# A leader that leaves a child behind in its process group and exits.
ORPHANING = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
"""


def test_children_of_a_leader_that_died_are_found_and_stopped(tmp_path: Path):
    service, process = start_service(
        "orphaning", [sys.executable, "-c", ORPHANING], os.environ, tmp_path / "o.log"
    )
    child = _child_pid(tmp_path / "o.log")
    process.wait(20)
    assert not is_running(service)  # the leader is gone (a zombie until reaped)...
    assert group_members(service) == [child] and is_left(service)  # ...its child is not
    assert stop_services([service], grace_s=5, log=lambda _: None) == ["orphaning"]
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_left(service)
