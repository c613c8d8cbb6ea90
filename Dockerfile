# syntax=docker/dockerfile:1
#
# One image for every part of the system; the command picks the part (docs/deploy.md, README "Containers"):
#   stage server (default)   python -m ipa_tasks.serving.stage_server   (IPA_PIPELINE, IPA_STAGE, IPA_VARIANT ...)
#   router                   python -m ipa_tasks.serving.router --spec <pipeline> --replicas <stage>=<url> ...
#   Airflow                  airflow api-server | scheduler | dag-processor | triggerer | db migrate
#   MLflow                   mlflow server ...
#   profiling job            python -m profiling_jobs.profile_variant ...  (KubernetesPodOperator runs it)
#   variant build            ipa build-variants <pipeline>
#
# Build:  docker build -t ipa-airflow:0.1.0 .
# The stack is installed from requirements-runtime.lock: the same pins as requirements.lock, which CI tests,
# without the dev tools. torch comes from PyTorch's CPU index (the CUDA build is several GB bigger).

# Pinned to the Python the project is tested with (pyproject: >=3.11,<3.12) and to Debian 12, like the
# development machines. For a byte-for-byte rebuild, add the digest: python:3.11.7-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# ---------------------------------------------------------------------------------------------------------
# Stage 1: build the virtual environment. Nothing of this stage but /opt/ipa/venv reaches the final image.
FROM ${PYTHON_IMAGE} AS build

# The installer the Makefile uses, at the Makefile's version.
ARG UV_VERSION=0.13.9
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_LINK_MODE=copy
RUN pip install "uv==${UV_VERSION}"

WORKDIR /src
# The lock first: the dependency layer is rebuilt only when the pins change, not on every code change.
COPY requirements-runtime.lock ./
# The venv is made at the path it has in the final image: its scripts' shebangs name that path.
# --compile-bytecode: the final image's root filesystem is read-only for the non-root user, so Python
# could not write .pyc files at run time, and every process would compile the stack from source.
RUN uv venv --python /usr/local/bin/python3.11 /opt/ipa/venv \
 && uv pip install --python /opt/ipa/venv/bin/python --compile-bytecode \
        --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match \
        -r requirements-runtime.lock

# The project itself, as a regular (not editable) install: the shipped specs, profiles and accuracy
# tables are package data (pyproject: tool.setuptools.package-data).
COPY pyproject.toml README.md ./
COPY ipa_tasks ipa_tasks
COPY profiling_jobs profiling_jobs
RUN uv pip install --python /opt/ipa/venv/bin/python --compile-bytecode --no-deps .

# ---------------------------------------------------------------------------------------------------------
# Stage 2: the runtime image: the venv, the DAGs and the plugin, a non-root user.
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="ipa-airflow" \
      org.opencontainers.image.description="IPA inference-pipeline adaptation: Airflow DAGs, stage servers, router" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

# uid 50000 and gid 0, as in Apache Airflow's image: the official Helm chart's defaults, and OpenShift's
# arbitrary-uid convention (group 0 owns what the process must write).
ARG IPA_UID=50000
# The folders a service writes exist here with that owner, because a new named volume (docker-compose)
# starts as a copy of the image's folder, ownership included.
RUN useradd --uid "${IPA_UID}" --gid 0 --home-dir /home/ipa --create-home --shell /usr/sbin/nologin ipa \
 && mkdir -p /var/lib/ipa /var/lib/mlflow /opt/airflow/logs /opt/airflow/auth \
 && chown -R "${IPA_UID}:0" /var/lib/ipa /var/lib/mlflow /opt/airflow \
 && chmod -R 0775 /var/lib/ipa /var/lib/mlflow /opt/airflow

COPY --from=build /opt/ipa/venv /opt/ipa/venv
COPY dags /opt/ipa/dags
COPY plugins /opt/ipa/plugins
# What the official Airflow Helm chart calls in its image: /entrypoint (probes, jobs) and /clean-logs (the
# log-groomer sidecar). See docker/.
COPY --chmod=0755 docker/entrypoint docker/clean-logs /

# Where everything lives in a container; every one of these can be overridden per service.
#   IPA_HOME: built variants, profiles, decisions (a volume in Compose, a PersistentVolumeClaim in Kubernetes).
#   AIRFLOW_HOME: airflow.cfg and logs; the metadata database is Postgres (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN).
#   IPA_HOST: servers listen on all interfaces in a container, not on loopback as on a laptop.
#   MPLCONFIGDIR: matplotlib's cache, in /tmp because HOME may be read-only.
ENV PATH=/opt/ipa/venv/bin:${PATH} \
    IPA_HOME=/var/lib/ipa \
    IPA_HOST=0.0.0.0 \
    IPA_PORT=8000 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/ipa/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/ipa/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    GX_ANALYTICS_ENABLED=false \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONUNBUFFERED=1

USER ${IPA_UID}:0
WORKDIR /opt/ipa
EXPOSE 8000

# The stage server's liveness by default ($IPA_PORT/healthz); services that are not a stage server set
# IPA_HEALTH_URL (the Compose file does) or their own check. Standard library only: it runs every 15 s.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "ipa_tasks.health_check"]

CMD ["python", "-m", "ipa_tasks.serving.stage_server"]
