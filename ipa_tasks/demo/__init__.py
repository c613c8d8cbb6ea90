"""The one-command end-to-end demo (``ipa demo``): its services, the Airflow calls it makes, and the run."""
