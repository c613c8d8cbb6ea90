"""docker-compose.yaml, without a Docker engine: it is valid against the Compose specification's schema
(the copy check-jsonschema ships), every service that stays up has a health check, start order follows
``depends_on`` conditions, secrets come only from the git-ignored .env (the example names them all), and
every command and variable a service is given is one the program it runs accepts."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ipa_tasks.actuation.manifests import (
    ENV_BATCH,
    ENV_PIPELINE,
    ENV_STAGE,
    ENV_THREADS,
    ENV_VARIANT,
    stage_object_name,
)
from ipa_tasks.actuation.stage_servers import URL_TEMPLATE_VARIABLE
from ipa_tasks.adaptation.steps import PIPELINES_VARIABLE, PROMETHEUS_URL_VARIABLE
from ipa_tasks.spec import load_spec, resolve_spec_path

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
ONE_SHOT = {"airflow-init", "build-variants"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).parent / "check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
    ]
    return subprocess.run([*command, str(path)], capture_output=True, text=True, check=False)


def test_the_file_is_valid_against_the_compose_specification() -> None:
    done = schema_check(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yaml"
    text = COMPOSE.read_text().replace("condition: service_healthy", "condition: service_up", 1)
    broken.write_text(text)
    done = schema_check(broken)
    assert done.returncode == 1 and "service_up" in done.stdout


def test_services_that_stay_up_have_health_checks_and_one_shots_do_not_restart(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck", {})
        if name in ONE_SHOT:
            assert service["restart"] == "no" and check == {"disable": True}, name
        else:
            assert check.get("test"), f"{name} has no health check"
            assert service["restart"] == "unless-stopped", name


def test_start_order_follows_health_and_completion(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for needed, how in service.get("depends_on", {}).items():
            assert needed in services, f"{name} depends on unknown {needed}"
            assert how["condition"] in CONDITIONS
            wanted = "service_completed_successfully" if needed in ONE_SHOT else "service_healthy"
            assert how["condition"] == wanted, f"{name} -> {needed}"
    assert "airflow-init" in services["airflow-scheduler"]["depends_on"]
    assert set(services["digit-strips-router"]["depends_on"]) == {
        "digit-strips-detect",
        "digit-strips-classify",
    }


def test_every_secret_comes_from_the_env_file_and_the_example_names_them_all() -> None:
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE.read_text()))  # "$${X}" is the container's
    example = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and line[0] != "#"
    )
    assert used == set(example), "docker-compose.yaml and .env.example name different variables"
    assert ".env" in (REPO / ".gitignore").read_text().split()
    secrets = [name for name in used if "PASSWORD" in name or "KEY" in name or "SECRET" in name]
    assert len(secrets) == 5
    for name in secrets:
        assert re.search(rf"\$\{{{name}:\?", COMPOSE.read_text()), f"{name} must be required (:?)"
        assert example[name] == "", (
            f"{name} must be empty in the example, so that Compose stops until it is set"
        )
    published = [
        p for s in yaml.safe_load(COMPOSE.read_text())["services"].values() for p in s.get("ports", [])
    ]
    assert published and all(port.startswith("127.0.0.1:") for port in published)


def airflow_argv(service: dict[str, Any]) -> list[str]:
    test = service.get("healthcheck", {}).get("test", [])
    return shlex.split(test[1].replace("$${HOSTNAME}", "host")) if test[:1] == ["CMD-SHELL"] else []


def test_airflow_commands_parse_with_airflows_own_parser(compose: dict[str, Any]) -> None:
    from airflow.cli.cli_parser import get_parser

    parser = get_parser()
    for name, service in compose["services"].items():
        for argv in (service.get("command", []), airflow_argv(service)):
            if argv[:1] == ["airflow"]:
                parser.parse_args(argv[1:])  # SystemExit on an unknown command or flag
            else:
                assert (
                    not argv or argv[0] in ("python", "ipa", "mlflow", "pg_isready") or "--config" in argv[0]
                ), name


def test_the_ipa_commands_parse_with_their_own_parsers(compose: dict[str, Any]) -> None:
    from ipa_tasks.cli import build_parser as ipa_parser
    from ipa_tasks.serving.router import build_parser as router_parser

    services = compose["services"]
    router = services["digit-strips-router"]["command"]
    assert router[:3] == ["python", "-m", "ipa_tasks.serving.router"]
    args = router_parser().parse_args(router[3:])
    stages = load_spec(resolve_spec_path(args.spec)).stage_names
    assert [r.split("=", 1)[0] for r in args.replicas] == stages
    for replica in args.replicas:
        stage, url = replica.split("=", 1)
        assert url == f"http://{stage_object_name(args.spec, stage)}:8000"
    ipa_parser().parse_args(services["build-variants"]["command"][1:])
    for service in services.values():
        test = service.get("healthcheck", {}).get("test", [])
        if "ipa_tasks.health_check" in test:
            assert test[:4] == ["CMD", "python", "-m", "ipa_tasks.health_check"]


def test_each_stage_service_is_named_and_configured_as_the_loop_expects(compose: dict[str, Any]) -> None:
    services = compose["services"]
    spec = load_spec(resolve_spec_path("digit-strips"))
    for stage in spec.stage_names:
        service = services[stage_object_name(spec.name, stage)]
        env = service["environment"]
        assert set(env) == {ENV_PIPELINE, ENV_STAGE, ENV_VARIANT, ENV_BATCH, ENV_THREADS}
        assert (env[ENV_PIPELINE], env[ENV_STAGE]) == (spec.name, stage)
        (offered,) = [s for s in spec.stages if s.name == stage]
        assert env[ENV_VARIANT] in {variant.name for variant in offered.variants}
        assert int(env[ENV_BATCH]) in offered.batch_sizes and int(env[ENV_THREADS]) in offered.cores
        assert service["cpus"] == int(env[ENV_THREADS])
        assert service.get("command") is None, "stage servers run the image's default command"
    airflow = services["airflow-scheduler"]["environment"]
    assert airflow[URL_TEMPLATE_VARIABLE] == "http://{name}:8000"
    assert airflow[PROMETHEUS_URL_VARIABLE] == "http://prometheus:9090"
    assert json.loads(airflow[f"AIRFLOW_VAR_{PIPELINES_VARIABLE.upper()}"]) == [spec.name]
    assert airflow["AIRFLOW_VAR_IPA_ADAPT_DRY_RUN"] == "true"


def test_mlflow_is_configured_through_variables_mlflow_reads(compose: dict[str, Any]) -> None:
    from mlflow.cli import cli

    read = {param.envvar for param in cli.commands["server"].params if param.envvar}
    env = compose["services"]["mlflow"]["environment"]
    assert set(env) - read == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION"}
    assert "mlflow:5000" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


def test_prometheus_scrapes_the_router_every_second_and_every_stage_server(compose: dict[str, Any]) -> None:
    config = yaml.safe_load(compose["configs"]["prometheus-config"]["content"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["ipa-router"]["scrape_interval"] == "1s"
    targets = {t for job in jobs.values() for group in job["static_configs"] for t in group["targets"]}
    stage_services = {
        name
        for name, s in compose["services"].items()
        if "x-stage" in str(s) or ENV_STAGE in s.get("environment", {})
    }
    assert targets == {f"{name}:8000" for name in stage_services | {"digit-strips-router"}}


def test_airflow_sees_the_shared_trace_and_windows_where_the_code_looks(compose: dict[str, Any]) -> None:
    from ipa_tasks.forecasting.trace_location import TRACE_VARIABLE
    from ipa_tasks.simulation.windows import PATTERNS_VARIABLE

    service = compose["services"]["airflow-scheduler"]
    (mount,) = [v for v in service["volumes"] if v.endswith(":/opt/ipa/shared-data:ro")]
    host = REPO / mount.split(":-", 1)[1].split("}", 1)[0]  # the default, relative to the Compose file
    for variable in (TRACE_VARIABLE, PATTERNS_VARIABLE):
        inside = Path(service["environment"][variable])
        assert (host / inside.relative_to("/opt/ipa/shared-data")).is_file(), variable
