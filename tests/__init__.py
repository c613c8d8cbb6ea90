"""The test suite. Importing this package isolates the session before anything else is imported.

Airflow reads its configuration when it is first imported, and the project's settings read ``IPA_HOME`` at
every call; pytest imports this file before any conftest or test module, so setting the environment here
is the one place that reliably comes first. No test touches ``~/.ipa``, ``~/airflow`` or a configured
MLflow server.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

_SESSION = Path(tempfile.mkdtemp(prefix="ipa-tests-"))
atexit.register(shutil.rmtree, _SESSION, ignore_errors=True)

os.environ.update(
    {
        "IPA_HOME": str(_SESSION / "ipa"),
        "AIRFLOW_HOME": str(_SESSION / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).resolve().parent.parent / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
)
for variable in ("MLFLOW_TRACKING_URI", "AIRFLOW_CONN_IPA_KUBERNETES", "IPA_HOME_PVC"):
    os.environ.pop(variable, None)
