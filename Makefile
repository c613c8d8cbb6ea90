# The two commands a new user needs (see README):
#   make demo   - installs what is missing, then runs the main job on the embedded default
#   make test   - installs what is missing, then runs the test suite
# Installation is driven by requirements.lock and re-runs only when it or pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV_VERSION := 0.13.9
HELM_SDKPY_VERSION := 0.1.32
# torch's CPU-only wheel: from a local wheel folder when there is one, else PyTorch's CPU index.
FIND_LINKS ?= $(if $(wildcard /opt/wheels/torch-*.whl),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)

.PHONY: demo demo-stop test lint lock bench clean-venv variants profile adapt train-forecaster fake-kube serve airflow mlflow

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (PYTHON=$(PYTHON))")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# A venv made by uv has no pip; give it one rather than failing.
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade >/dev/null
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@# Byte-compile at install: imports take half the time, and PYTHONDONTWRITEBYTECODE (set on some
	@# machines) would otherwise keep every process compiling the stack from source.
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python $(FIND_LINKS) -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@# Helm itself, for the chart's lint and install tests: helm-sdkpy's metadata asks for Python 3.12, but
	@# its Go library runs under 3.11, so it goes in beside the lock (cffi, its one dependency, is locked).
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --ignore-requires-python \
		helm-sdkpy==$(HELM_SDKPY_VERSION)
	@touch $(STAMP)

# The end-to-end demo (README, "The demo"): Airflow, MLflow, profiling, serving, adaptation, a report.
# DEMO_ARGS passes options, e.g. make demo DEMO_ARGS=--keep-up (then make demo-stop); ipa demo --help.
DEMO_ARGS ?=
demo: $(STAMP)
	$(AIRFLOW_ENV) $(BIN)/ipa demo $(DEMO_ARGS)

demo-stop: $(STAMP)
	$(AIRFLOW_ENV) $(BIN)/ipa demo-stop

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Airflow on the embedded default: SQLite and logs in .airflow/, this repository's dags/, loopback only.
# State of the system (variant cache, profile store, MLflow SQLite store) lives in IPA_HOME (~/.ipa).
AIRFLOW_PORT ?= 8080
AIRFLOW_ENV = PATH="$(CURDIR)/$(BIN):$$PATH" AIRFLOW_HOME=$(CURDIR)/.airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__PLUGINS_FOLDER=$(CURDIR)/plugins \
	AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__PARALLELISM=4 \
	AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$(AIRFLOW_PORT)/execution/ \
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin \
	GX_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true
PROFILE_CONF ?= {}
ADAPT_CONF ?= {}
FORECASTER_CONF ?= {}
FAKE_KUBE_PORT ?= 18080

# Build, cache and register every demo variant (a few minutes the first time, seconds afterwards).
variants: $(STAMP)
	$(BIN)/ipa build-variants digit-strips
	$(BIN)/ipa build-variants language-routing

# One profiling round from the command line, e.g. make profile PROFILE_CONF='{"pipelines": ["digit-strips"]}'
profile: $(STAMP)
	@$(AIRFLOW_ENV) $(BIN)/airflow db migrate >/dev/null
	$(AIRFLOW_ENV) $(BIN)/airflow dags test ipa_profile -c '$(PROFILE_CONF)'

# One adaptation tick from the command line, e.g. make adapt ADAPT_CONF='{"pipelines": ["digit-strips"], "dry_run": true}'
adapt: $(STAMP)
	@$(AIRFLOW_ENV) $(BIN)/airflow db migrate >/dev/null
	$(AIRFLOW_ENV) $(BIN)/airflow dags test ipa_adapt -c '$(ADAPT_CONF)'

# Train the load forecaster on the Twitter trace and register it if it beats the champion (about 3 minutes).
train-forecaster: $(STAMP)
	@$(AIRFLOW_ENV) $(BIN)/airflow db migrate >/dev/null
	$(AIRFLOW_ENV) $(BIN)/airflow dags test ipa_train_forecaster -c '$(FORECASTER_CONF)'

# A fake Kubernetes API server with both demo pipelines' stages deployed, to try the Kubernetes target
# without a cluster (see README, "Adapting on Kubernetes"). Stop it with Ctrl-C.
fake-kube: $(STAMP)
	$(BIN)/python -m ipa_tasks.fake_kube_api --port $(FAKE_KUBE_PORT) --kubeconfig .fake-kube/kubeconfig.yaml \
		--seed digit-strips --seed language-routing

# The local serving runtime: routers and stage-server replicas of both demo pipelines (build the variants
# first with make variants); while it runs, ipa_adapt's local target starts and stops its replicas.
serve: $(STAMP)
	$(BIN)/python -m ipa_tasks.serving.runtime --spec digit-strips --spec language-routing

# The Airflow UI (api-server, scheduler, dag-processor, triggerer) on http://127.0.0.1:$(AIRFLOW_PORT);
# user admin, password printed at start-up and kept in .airflow/simple_auth_manager_passwords.json.generated
airflow: $(STAMP)
	$(AIRFLOW_ENV) $(BIN)/airflow standalone

# The MLflow UI over the store the tasks use ($MLFLOW_TRACKING_URI, else SQLite in IPA_HOME), on :5000.
mlflow: $(STAMP)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --host 127.0.0.1 --port 5000 \
		--backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$${IPA_HOME:-$$HOME/.ipa}/mlflow.db}" \
		--default-artifact-root "$${IPA_HOME:-$$HOME/.ipa}/mlartifacts"

# Regenerate the locks after changing a pin in pyproject.toml: everything (this venv, CI) and the runtime
# set without the dev tools (what the Dockerfile installs; tests/packaging checks that the two agree).
lock:
	$(BIN)/uv pip compile pyproject.toml $(FIND_LINKS) --extra dev --python-version 3.11 --quiet -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml $(FIND_LINKS) --python-version 3.11 --quiet \
		--constraint requirements.lock -o requirements-runtime.lock

bench: $(STAMP)
	$(BIN)/python benchmarks/solver_scaling.py

clean-venv:
	rm -rf $(VENV)
