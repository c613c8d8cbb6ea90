"""The pipeline pages as HTML: plain markup, every recorded text escaped, the plot an inline PNG.

The page is shown in an iframe of the Airflow UI, which loads it with the browser's session cookie. An
inline image needs no second request (and so no second authorization), and the page needs no script.
The plot is :func:`.decisions.decisions_plot`, the one the MLflow day runs carry, so both show the same.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from html import escape
from urllib.parse import quote, urlparse

from ipa_tasks.adaptation.overview import Decision, MlflowLinks, PipelineListing, PipelineOverview, Series

STYLE = """
:root { color-scheme: light dark; font-family: system-ui, sans-serif; font-size: 14px; }
body { margin: 1rem 1.5rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #8884; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #8882; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.95em; }
.note { border-left: 4px solid #d9a400; padding: 0.25rem 0.75rem; background: #d9a40018; }
.error { border-left: 4px solid #c0392b; padding: 0.25rem 0.75rem; background: #c0392b18; }
.status-applied { color: #1e8449; font-weight: 600; }
.status-rolled_back, .status-inconsistent { color: #c0392b; font-weight: 600; }
.status-dry_run { color: #2471a3; }
.status-unchanged, .status-not-run { color: #7f8c8d; }
img.plot { max-width: 100%; height: auto; }
nav a { margin-right: 1rem; }
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def _time(iso: str) -> str:
    """``2026-12-01T10:00:30+00:00`` as ``2026-12-01 10:00:30 UTC`` (the tables' times are UTC)."""
    return escape(iso.replace("T", " ").replace("+00:00", " UTC"))


def _sentence(text: str) -> str:
    """The model's notes are clauses (they also go into JSON and logs); on the page they stand alone."""
    return escape(text[:1].upper() + text[1:].rstrip("."))


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _link(url: str | None, text: str) -> str:
    """A link only to http(s): the MLflow address comes from the environment, never from a table."""
    if url and urlparse(url).scheme in ("http", "https"):
        # A new tab, because MLflow's server refuses to be framed (X-Frame-Options SAMEORIGIN) and the
        # Airflow UI frames this page. That frame's sandbox lacks allow-popups, so there the browser's
        # "open in new tab" is the way (the page says so); the address is also in the link's title.
        return (
            f'<a href="{escape(url)}" target="_blank" rel="noopener" title="{escape(url)}">{escape(text)}</a>'
        )
    return escape(text)


def _nav(prefix: str, pipeline: str = "") -> str:
    links = [f'<a href="{escape(prefix)}/pipelines">all pipelines</a>']
    if pipeline:
        links.append(f'<a href="{escape(prefix)}/api/pipelines/{quote(pipeline)}">this page as JSON</a>')
    return f"<nav>{''.join(links)}</nav>"


# --- the index ------------------------------------------------------------------------------------------


def index_page(pipelines: Sequence[PipelineListing], prefix: str) -> str:
    rows = "".join(
        f'<tr><td><a href="{escape(prefix)}/pipelines/{quote(p.name)}">{escape(p.name)}</a></td>'
        f"<td>{escape(p.latest_day_recorded or 'no decisions yet')}</td>"
        f"<td>{'shipped' if p.shipped else 'recorded only'}</td></tr>"
        for p in pipelines
    )
    body = (
        "<h1>Pipelines of the adaptation loop</h1>"
        "<p>One page per pipeline: what runs now, the last decisions of <code>ipa_adapt</code> and why, "
        "load against forecast, cores and accuracy over time, and the MLflow runs.</p>"
        "<table><tr><th>pipeline</th><th>latest day recorded (UTC)</th><th>spec</th></tr>"
        f"{rows}</table>"
    )
    return _page("IPA pipelines", body)


def not_found_page(message: str, prefix: str) -> str:
    return _page("no such pipeline", f"{_nav(prefix)}<h1>No such pipeline</h1><p>{escape(message)}</p>")


# --- one pipeline ---------------------------------------------------------------------------------------


def pipeline_page(overview: PipelineOverview, prefix: str, plot_png: bytes | None = None) -> str:
    """The page of ``overview``; ``plot_png`` is :func:`series_plot_png` of its series (None: no plot)."""
    name = overview.pipeline
    days = f"{overview.days[0]} to {overview.days[-1]}" if len(overview.days) > 1 else overview.days[0]
    parts = [_nav(prefix, name), f"<h1>{escape(name)}</h1>"]
    parts.append(
        f"<p>{overview.ticks} tick(s) recorded from {escape(days)} (UTC), read from the day tables in "
        "<code>IPA_HOME/adaptation/" + escape(name) + "/decisions/</code>.</p>"
    )
    if overview.ticks == 0:
        parts.append(_no_decisions(overview))
    else:
        parts.append(_running(overview))
        if plot_png:
            encoded = base64.b64encode(plot_png).decode("ascii")
            parts.append(
                "<h2>Load, forecast, cores and accuracy</h2>"
                f'<img class="plot" src="data:image/png;base64,{encoded}" '
                f'alt="observed peak load and forecast (top), cores and accuracy of the plan (bottom)">'
            )
        parts.append(_decisions(overview.decisions))
    parts.append(_mlflow(overview.mlflow))
    return _page(f"{name}: adaptation", "\n".join(parts))


def _no_decisions(overview: PipelineOverview) -> str:
    older = (
        f" The latest decision table is from {escape(overview.latest_day_recorded)}."
        if overview.latest_day_recorded
        else ""
    )
    return (
        f'<p class="note">No decisions recorded for {escape(overview.pipeline)} in these days.{older} '
        f"{escape(overview.how_to_record)}</p>"
    )


def _running(overview: PipelineOverview) -> str:
    running = overview.running
    if running is None:
        return (
            '<h2>Runs now</h2><p class="note">No tick of these days could tell what runs (the target could '
            "not be read); the last decisions below say why.</p>"
        )
    since = (
        f"since {_time(running.since)}, when the loop applied it"
        if running.since_applied
        else f"at least since {_time(running.since)} (the first tick of these days that saw it)"
    )
    rows = "".join(
        f"<tr><td>{escape(s.stage)}</td><td>{escape(s.variant)}</td><td class='number'>{s.batch_size}</td>"
        f"<td class='number'>{s.cores}</td><td class='number'>{s.replicas}</td></tr>"
        for s in running.stages
    )
    note = f'<p class="note">{_sentence(running.note)}.</p>' if running.note else ""
    return (
        "<h2>Runs now</h2>"
        f"<p><code>{escape(running.configuration)}</code>: {since}; last seen by the tick of "
        f"{_time(running.as_of)}.</p>{note}"
        "<table><tr><th>stage</th><th>variant</th><th>batch size</th><th>cores per replica</th>"
        f"<th>replicas</th></tr>{rows}</table>"
    )


def _status(decision: Decision) -> str:
    status = decision.apply_status or "not run"
    css = "status-" + status.replace(" ", "-")
    return f'<span class="{escape(css)}">{escape(status)}</span>'


def _plan(decision: Decision) -> str:
    text = escape(decision.plan_status or "no plan")
    if decision.degraded:
        text += " <strong>DEGRADED</strong>"
    if decision.configuration:
        text += f"<br><code>{escape(decision.configuration)}</code>"
    return text


def _decisions(decisions: Sequence[Decision]) -> str:
    rows = "".join(
        f"<tr><td>{_time(d.time)}</td><td>{_status(d)}{' (dry run)' if d.dry_run else ''}<br>"
        f"{d.steps_applied}/{d.steps} step(s)</td>"
        f"<td class='number'>{_number(d.observed_peak_rps)}</td>"
        f"<td class='number'>{_number(d.forecast_rps)}<br><small>{escape(d.forecaster)}</small></td>"
        f"<td>{_plan(d)}</td><td class='number'>{_number(d.total_cores, 0)}</td>"
        f"<td class='number'>{_number(d.accuracy, 4)}</td>"
        f"<td>{escape(d.reason)}</td><td>{escape(d.message)}</td></tr>"
        for d in decisions
    )
    return (
        f"<h2>Last {len(decisions)} decision(s), newest first</h2>"
        "<table><tr><th>time</th><th>apply</th><th>observed peak (req/s)</th><th>forecast (req/s)</th>"
        "<th>plan</th><th>cores</th><th>accuracy</th><th>reason</th><th>message</th></tr>"
        f"{rows}</table>"
    )


def _mlflow(mlflow: MlflowLinks) -> str:
    parts = ["<h2>MLflow</h2>", f"<p>Tracking store <code>{escape(mlflow.tracking_uri)}</code>.</p>"]
    if mlflow.error:
        parts.append(
            f'<p class="error">{_sentence(mlflow.error)}. The page above is from the day tables.</p>'
        )
    if mlflow.note:
        parts.append(f'<p class="note">{_sentence(mlflow.note)}.</p>')
    if mlflow.runs:
        items = "".join(
            f"<li>{_link(run.url, run.label)}: experiment <code>{escape(run.experiment)}</code>, run "
            f"<code>{escape(run.run_id)}</code></li>"
            for run in mlflow.runs
        )
        parts.append(f"<ul>{items}</ul>")
        if mlflow.ui_url:
            parts.append(
                "<p><small>Inside the Airflow UI this page is framed without permission to open tabs: open "
                "the links with the browser's <em>Open link in new tab</em>.</small></p>"
            )
    elif not mlflow.error:
        parts.append("<p>No MLflow run of this pipeline yet.</p>")
    return "".join(parts)


# --- the plot -------------------------------------------------------------------------------------------


def series_plot_png(series: Series, title: str) -> bytes | None:
    """The day runs' plot of ``series`` as PNG, drawn with Agg (no display, no pyplot state); None for no
    ticks."""
    if not series.time:
        return None
    import pandas as pd
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ipa_tasks.adaptation.decisions import decisions_plot

    table = pd.DataFrame(
        {
            "time": list(series.time),
            "observed_peak_rps": [_nan(v) for v in series.observed_peak_rps],
            "forecast_rps": [_nan(v) for v in series.forecast_rps],
            "total_cores": [_nan(v) for v in series.total_cores],
            "accuracy": [_nan(v) for v in series.accuracy],
            "changed": [int(c) for c in series.changed],
        }
    )
    figure = decisions_plot(table, title)
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
