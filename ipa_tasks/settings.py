"""Where the system keeps its state, read from the environment so every process agrees.

``IPA_HOME`` (default ``~/.ipa``) holds the variant cache, the profile store and, unless
``MLFLOW_TRACKING_URI`` says otherwise, the MLflow SQLite store and artifacts. Airflow's task processes, the
CLI and the profiling job all read the same variables, so a variant built by one is found by the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ipa_tasks.tracking import default_tracking_uri

HOME_VARIABLE = "IPA_HOME"
TRACKING_URI_VARIABLE = "MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class Settings:
    home: Path
    tracking_uri: str

    @property
    def variant_cache(self) -> Path:
        """Built demo variants: ``<home>/variants/<pipeline>/<variant>/``."""
        return self.home / "variants"

    @property
    def profile_store(self) -> Path:
        """Published and quarantined profile tables (:class:`~ipa_tasks.profile_store.ProfileStore`)."""
        return self.home / "profiles"


def current_settings() -> Settings:
    """The settings of this process's environment."""
    home = Path(os.environ.get(HOME_VARIABLE) or Path.home() / ".ipa").expanduser().resolve()
    tracking_uri = os.environ.get(TRACKING_URI_VARIABLE) or default_tracking_uri(home)
    return Settings(home=home, tracking_uri=tracking_uri)
