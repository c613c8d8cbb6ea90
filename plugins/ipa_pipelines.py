"""The Airflow UI's pages of the adaptation loop: one per pipeline (what runs, the last decisions and why,
load vs forecast, cores and accuracy, the MLflow runs) and an index, under ``/ipa`` on the api-server.

Wiring only: the pages are :mod:`ipa_tasks.adaptation.overview` (what a page says) and
:mod:`ipa_tasks.adaptation.overview_page` (its HTML). See ``plugins/README.md``.

Every route needs an Airflow login with read access to the ``ipa_adapt`` DAG, checked by Airflow's own
dependencies: plugin apps are mounted on the api-server without any. The user comes from an
``Authorization: Bearer`` JWT (``POST /auth/token``) or, in the browser, from the ``_token`` cookie the
Airflow UI keeps; the UI shows the index in an iframe, which sends that cookie.

Airflow imports plugins in every task process too (for their macros), so this file imports nothing heavy
at import time: the FastAPI app, Airflow's security module and the page code are loaded on the first
request (about a second that the tasks, ticking every 30 s, would otherwise pay each time).
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, which name classes imported
# inside pipelines_app(), and it can resolve postponed (string) ones only from the module's globals.
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from fastapi import FastAPI

URL_PREFIX = "/ipa"
ADAPT_DAG = "ipa_adapt"
"""Who may read this DAG may read its pages: they show what its runs decided."""
MAX_DAYS = 31
MAX_DECISIONS = 500


def pipelines_app() -> "FastAPI":
    import os
    from datetime import UTC, datetime

    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

    from ipa_tasks.adaptation import overview, overview_page
    from ipa_tasks.settings import current_settings

    app = FastAPI(
        title="IPA pipelines",
        # Every route, whatever its path: a 401 without a login, a 403 without read access to ipa_adapt.
        dependencies=[Depends(requires_access_dag("GET", param_dag_id=ADAPT_DAG))],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    Days = Query(overview.DEFAULT_DAYS, ge=1, le=MAX_DAYS, description="UTC days to read, up to today")
    Decisions = Query(overview.DEFAULT_DECISIONS, ge=1, le=MAX_DECISIONS, description="decisions listed")

    def prefix(request: Request) -> str:
        # Airflow's base path and the mount point, so that links work behind a path prefix too.
        return str(request.scope.get("root_path", "")).rstrip("/")

    def summary(pipeline: str, days: int, decisions: int) -> overview.PipelineOverview:
        settings = current_settings()
        return overview.pipeline_overview(
            settings.home,
            settings.tracking_uri,
            pipeline,
            today=datetime.now(UTC).date(),
            days=days,
            limit=decisions,
            ui_override=os.environ.get(overview.MLFLOW_UI_VARIABLE, ""),
        )

    # Plain `def` routes: they read files, ask MLflow and draw, so FastAPI runs them in its thread pool.
    @app.get("/", include_in_schema=False)
    def root(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{prefix(request)}/pipelines")

    @app.get("/pipelines", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        listing = overview.pipeline_listing(current_settings().home)
        return HTMLResponse(overview_page.index_page(listing, prefix(request)))

    @app.get("/pipelines/{pipeline}", response_class=HTMLResponse)
    def page(request: Request, pipeline: str, days: int = Days, decisions: int = Decisions) -> HTMLResponse:
        try:
            model = summary(pipeline, days, decisions)
        except overview.UnknownPipelineError as exc:
            return HTMLResponse(overview_page.not_found_page(str(exc), prefix(request)), status_code=404)
        plot = overview_page.series_plot_png(model.series, f"{pipeline}: adaptation (UTC)")
        return HTMLResponse(overview_page.pipeline_page(model, prefix(request), plot))

    @app.get("/api/pipelines")
    def listing() -> JSONResponse:
        return JSONResponse([vars(p) for p in overview.pipeline_listing(current_settings().home)])

    @app.get("/api/pipelines/{pipeline}")
    def pipeline_json(pipeline: str, days: int = Days, decisions: int = Decisions) -> JSONResponse:
        try:
            return JSONResponse(summary(pipeline, days, decisions).to_dict())
        except overview.UnknownPipelineError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)

    return app


class PipelinesApp:
    """The ASGI app the api-server mounts; it builds :func:`pipelines_app` on its first request."""

    def __init__(self) -> None:
        self._app: FastAPI | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            # Built synchronously on the event loop: no request can see it half-built.
            self._app = pipelines_app()
        await self._app(scope, receive, send)


class IpaPipelinesPlugin(AirflowPlugin):
    name = "ipa_pipelines"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": PipelinesApp(), "url_prefix": URL_PREFIX, "name": "IPA pipelines"}
    ]
    # In the UI's Plugins menu, at /plugin/ipa-pipelines; the href is relative to Airflow's base URL.
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "IPA pipelines",
            "href": URL_PREFIX.lstrip("/") + "/pipelines",
            "destination": "nav",
            "url_route": "ipa-pipelines",
        }
    ]
