"""The Airflow assets between the DAGs, named once: the profiling round emits ``ipa_profiles`` after it
publishes; the DAGs that plan from the profile store declare it as an inlet."""

from __future__ import annotations

PROFILES_ASSET_NAME = "ipa_profiles"
PROFILES_ASSET_URI = "ipa://profiles"
