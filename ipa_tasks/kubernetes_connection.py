"""The Airflow connection that switches the system from the embedded default to a Kubernetes cluster.

With a connection ``ipa_kubernetes`` defined (kubeconfig, inline config or in-cluster), profiling jobs run
as pods and plans are applied to Deployments; without it everything stays local. Nothing else decides.
"""

from __future__ import annotations

KUBERNETES_CONNECTION = "ipa_kubernetes"


def kubernetes_connection_exists(conn_id: str = KUBERNETES_CONNECTION) -> bool:
    """Whether Airflow knows the connection (from its database, a secrets backend or ``AIRFLOW_CONN_*``).

    Call it inside a task: the task SDK looks connections up through the running task's API client.
    """
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        Connection.get(conn_id)
    except AirflowNotFoundException:
        return False
    return True
