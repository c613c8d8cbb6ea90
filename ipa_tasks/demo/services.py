"""Background services the demo starts (Airflow's components, the MLflow server, the serving runtime) and
the record that lets a later command stop them.

What: :func:`start_service` starts a command in a session of its own (so a stop reaches its children too,
e.g. the api-server's workers or a profiling round's jobs), output to a log file, and returns a
:class:`Service`. :func:`write_services` keeps them in ``<IPA_HOME>/demo/services.json``;
:func:`stop_services` sends SIGTERM to each one's process group, waits, then SIGKILLs what is left of the
group, also when its leader is already gone and only children remain. (The serving runtime starts its stage
servers in sessions of their own; they stop with it through the kernel's parent-death signal.)

Why a record with start times: ``ipa demo --keep-up`` leaves the services running after the demo returns,
and ``ipa demo-stop`` (another process, maybe days later) must stop exactly those processes. A pid alone
could by then name some other process; the kernel's start time of the process (``/proc/<pid>/stat``) pins
it, and a record whose process has gone or has been replaced is skipped, not killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ipa_tasks.atomic_files import atomic_write_text

STOP_GRACE_S = 20.0


class ServiceError(RuntimeError):
    """A service did not start, or stopped while it was awaited (the message names its log)."""


@dataclass(frozen=True)
class Service:
    name: str
    pid: int
    started: int
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or 0."""
    log: str
    url: str = ""


def services_file(home: Path) -> Path:
    return Path(home) / "demo" / "services.json"


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` from field 3 on (state first), or [] when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    return stat.rsplit(")", 1)[1].split()


def process_start_time(pid: int) -> int:
    """The kernel's start time of ``pid`` (clock ticks since boot), 0 when it cannot be read."""
    fields = _stat_fields(pid)
    return int(fields[19]) if len(fields) > 19 else 0


def is_running(service: Service) -> bool:
    """Whether the service's process is alive (not a zombie) and is the one that was started."""
    fields = _stat_fields(service.pid)
    if not fields or fields[0] == "Z":
        return False
    return service.started == 0 or int(fields[19]) == service.started


def group_members(service: Service) -> list[int]:
    """Live processes of the service's process group started no earlier than the service (its children
    outlive a leader that died; a group that merely reuses the number is younger than none of them)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        ours = len(fields) > 19 and fields[0] != "Z" and int(fields[2]) == service.pid
        if ours and int(fields[19]) >= service.started:
            members.append(int(entry.name))
    return members


def is_left(service: Service) -> bool:
    """Whether anything of the service still runs: its own process, or children of its group."""
    if is_running(service):
        return True
    leader = _stat_fields(service.pid)
    # Our pid is someone else's now (its start time differs): the group number is theirs, not ours.
    if leader and leader[0] != "Z" and service.started and int(leader[19]) != service.started:
        return False
    return bool(group_members(service))


def start_service(
    name: str, argv: Sequence[str], env: Mapping[str, str], log: Path, url: str = ""
) -> tuple[Service, subprocess.Popen[bytes]]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = Service(name, process.pid, process_start_time(process.pid), str(log), url)
    return service, process


def wait_until(
    check: Callable[[], bool], service: Service, process: subprocess.Popen[bytes] | None, timeout_s: float
) -> None:
    """Poll ``check`` until it is true; fail early if the process exits, or at the timeout."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if process is not None and process.poll() is not None:
            raise ServiceError(
                f"{service.name} exited with status {process.returncode} while starting; see {service.log}"
            )
        if time.monotonic() > deadline:
            raise ServiceError(f"{service.name} was not up after {timeout_s:.0f} s; see {service.log}")
        time.sleep(0.5)


def answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``url`` answers a GET with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def write_services(home: Path, services: Sequence[Service]) -> Path:
    path = services_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps([asdict(s) for s in services], indent=2) + "\n")
    return path


def read_services(home: Path) -> list[Service]:
    """The recorded services; an unreadable record is an error that names the file."""
    path = services_file(home)
    if not path.exists():
        return []
    try:
        return [Service(**entry) for entry in json.loads(path.read_text(encoding="utf-8"))]
    except (ValueError, TypeError) as exc:
        raise ServiceError(
            f"{path}: not a services record ({exc}); remove it and stop the processes"
        ) from None


def stop_services(
    services: Sequence[Service], grace_s: float = STOP_GRACE_S, log: Callable[[str], None] = print
) -> list[str]:
    """Stop the services in reverse order of start; the names of those that were still running."""
    stopped = []
    for service in reversed(services):
        _reap(service.pid)
        if not is_left(service):
            continue
        log(f"stopping {service.name} (pid {service.pid})")
        _signal_group(service.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while is_left(service) and time.monotonic() < deadline:
            _reap(service.pid)
            time.sleep(0.2)
        if is_left(service):
            log(f"{service.name} did not stop within {grace_s:.0f} s: killing it")
            _signal_group(service.pid, signal.SIGKILL)
        _reap(service.pid)
        stopped.append(service.name)
    return stopped


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _reap(pid: int) -> None:
    """Collect our own child's exit status, so that it does not linger as a zombie that looks alive."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
