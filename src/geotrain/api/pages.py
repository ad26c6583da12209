"""What a person sees of a job in a browser: its status and progress, its loss chart (an SVG drawn here, so
that it reads without JavaScript; a few lines of script refresh the page's parts while the job runs), its
messages, a cancel button, and on success the package to download with its pictures. Also the list of a
user's jobs. No front-end build: the HTML is written here."""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any

from geotrain.jobs.queue import JobRecord
from geotrain.jobs.tables import JobStatus, as_utc

# chart size in SVG units (it scales to the page's width)
WIDTH, HEIGHT, PAD = 640, 300, 44
COLORS = {"train_loss": "#1f77b4", "valid_loss": "#ff7f0e", "metric": "#2ca02c"}


def _series(epochs: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    points = []
    for e in epochs:
        value = e["metrics"].get(key) if key not in ("train_loss", "valid_loss") else e[key]
        if isinstance(value, int | float) and math.isfinite(value):
            points.append((int(e["epoch"]), float(value)))
    return points


def metric_name(epochs: list[dict[str, Any]]) -> str | None:
    """The metric the chart draws beside the losses: the first one the epochs carry."""
    for e in epochs:
        for key in e["metrics"]:
            return str(key)
    return None


def loss_chart(epochs: list[dict[str, Any]], max_epochs: int | None) -> str:
    """An SVG chart: train and validation loss (left axis) and the metric (right axis, 0 to 1) by epoch."""
    metric = metric_name(epochs)
    losses = [v for key in ("train_loss", "valid_loss") for _, v in _series(epochs, key)]
    top = max(losses) * 1.1 if losses else 1.0
    last = max([max_epochs or 1, *[int(e["epoch"]) for e in epochs]])
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD

    def x(epoch: float) -> float:
        return PAD + inner_w * (epoch - 1) / max(last - 1, 1)

    def y(value: float, scale: float) -> float:
        return PAD + inner_h * (1 - min(max(value / scale, 0.0), 1.0))

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {WIDTH} {HEIGHT}' role='img' "
        f"aria-label='loss by epoch' class='chart'>",
        f"<rect x='{PAD}' y='{PAD}' width='{inner_w}' height='{inner_h}' fill='none' stroke='#ccc'/>",
        f"<text x='{PAD}' y='{PAD - 8}' font-size='14'>loss (0 to {top:.3g})</text>",
        f"<text x='{WIDTH - PAD}' y='{HEIGHT - PAD + 28}' font-size='14' text-anchor='end'>epoch (1 to {last})</text>",
    ]
    drawn = [("train_loss", top), ("valid_loss", top)] + ([(metric, 1.0)] if metric else [])
    legend_x = PAD + 130
    for key, scale in drawn:
        points = _series(epochs, key)
        color = COLORS.get(key, COLORS["metric"])
        if points:
            path = " ".join(f"{x(e):.1f},{y(v, scale):.1f}" for e, v in points)
            parts.append(f"<polyline points='{path}' fill='none' stroke='{color}' stroke-width='2' class='{key}'/>")
            parts.extend(
                f"<circle cx='{x(e):.1f}' cy='{y(v, scale):.1f}' r='3' fill='{color}' class='point {key}'/>"
                for e, v in points
            )
        parts.append(f"<text x='{legend_x}' y='{PAD - 8}' font-size='14' fill='{color}'>{html.escape(key)}</text>")
        legend_x += 120
    if metric:
        below = f"<text x='{PAD}' y='{HEIGHT - PAD + 28}' font-size='14'>"
        parts.append(f"{below}{html.escape(metric)}: 0 to 1 (right axis)</text>")
    if not epochs:
        parts.append(f"<text x='{WIDTH / 2}' y='{HEIGHT / 2}' font-size='14' text-anchor='middle'>no epoch yet</text>")
    parts.append("</svg>")
    return "".join(parts)


def duration(job: JobRecord) -> str:
    if job.started_at is None:
        return ""
    start, end = as_utc(job.started_at), as_utc(job.finished_at or dt.datetime.now(dt.UTC))
    seconds = max(0, int((end - start).total_seconds()))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# refreshes the status, progress, messages and chart while the job runs; reloads the page when it ends
LIVE = """<script>
(function () {
  var page = document.getElementById('job');
  if (!page || page.dataset.finished === 'true') return;
  var token = new URLSearchParams(location.search).get('token');
  var q = function (more) { return '?f=json' + (token ? '&token=' + encodeURIComponent(token) : '') + (more || ''); };
  setInterval(function () {
    fetch(page.dataset.url + q()).then(function (r) { return r.json(); }).then(function (job) {
      if (['esriJobSucceeded', 'esriJobFailed', 'esriJobCancelled', 'esriJobTimedOut'].indexOf(job.jobStatus) >= 0) {
        location.reload(); return;
      }
      document.getElementById('status').textContent = job.jobStatus;
      if (job.progress) {
        document.getElementById('progress').value = job.progress.percentage;
        document.getElementById('progress-text').textContent =
          job.progress.message + ' ' + job.progress.percentage + '%';
      }
      var rows = (job.messages || []).map(function (m) {
        var tr = document.createElement('tr'), a = document.createElement('td'), b = document.createElement('td');
        a.className = 'kind'; a.textContent = m.type.replace('esriJobMessageType', ''); b.textContent = m.description;
        tr.appendChild(a); tr.appendChild(b); return tr;
      });
      document.getElementById('messages').replaceChildren.apply(document.getElementById('messages'), rows);
    });
    fetch(page.dataset.url + '/chart.svg' + q('&t=' + Date.now())).then(function (r) { return r.text(); })
      .then(function (svg) { document.getElementById('chart').innerHTML = svg; });
  }, 1000);
})();
</script>"""


def job_page(
    job: JobRecord, epochs: list[dict[str, Any]], package: str | None, pictures: list[str], token: str | None
) -> str:
    """The job's page. ``package``: the link to download its .dlpk (None: none yet); ``pictures``: the links of
    the package's pictures; ``token``: carried on this page's links and forms (token authentication)."""
    keep = f"&token={html.escape(token)}" if token else ""
    finished = job.status.finished
    pct = 100.0 if job.status == JobStatus.SUCCEEDED else job.progress_percentage or 0.0
    rows = "".join(
        f"<tr><td class='kind'>{html.escape(m.type.removeprefix('esriJobMessageType'))}</td>"
        f"<td>{html.escape(m.description)}</td></tr>"
        for m in job.messages
    )
    max_epochs_ = max_epochs(job)
    parts = [
        f"<div id='job' data-url='{html.escape(job.id)}' data-finished='{'true' if finished else 'false'}'>",
        f"<p>Status: <b id='status'>{html.escape(job.status.value)}</b>"
        f"{' · ' + html.escape(str(job.inputs.get('model_type', ''))) if job.inputs.get('model_type') else ''}"
        f"{' · ' + duration(job) if duration(job) else ''}</p>",
        f"<p><progress id='progress' max='100' value='{pct:g}'></progress> "
        f"<span id='progress-text'>{html.escape(_progress_text(job))} {pct:g}%</span></p>",
        f"<div id='chart'>{loss_chart(epochs, max_epochs_)}</div>",
    ]
    if not finished:
        parts.append(
            f"<form method='post' action='{html.escape(job.id)}/cancel'><input type='hidden' name='f' value='html'>"
            f"{_hidden_token(token)}<button type='submit'>Cancel job</button></form>"
        )
    if job.status == JobStatus.SUCCEEDED:
        links = "".join(
            f"<li><a href='{html.escape(job.id)}/results/{html.escape(n)}?f=html{keep}'>{html.escape(n)}</a></li>"
            for n in job.results or {}
        )
        if package:
            download = "Download the deep learning package (.dlpk)"
            links += f"<li><a id='download' href='{html.escape(package)}'>{download}</a></li>"
        parts.append(f"<h3>Results</h3><ul>{links}</ul>")
        for src in pictures:
            alt = src.rsplit("/", 1)[-1].split("?")[0]
            parts.append(f"<p><img src='{html.escape(src)}' alt='{html.escape(alt)}' class='picture'></p>")
    parts.append(f"<h3>Messages</h3><table><tbody id='messages'>{rows}</tbody></table></div>{LIVE}")
    return "".join(parts)


def _progress_text(job: JobRecord) -> str:
    # a finished job's last progress message ("Writing the package") is no longer what it is doing
    return "Done" if job.status == JobStatus.SUCCEEDED else job.progress_message or ""


def _hidden_token(token: str | None) -> str:
    return f"<input type='hidden' name='token' value='{html.escape(token)}'>" if token else ""


def max_epochs(job: JobRecord) -> int | None:
    try:
        return int(str(job.inputs.get("max_epochs") or "20"))
    except ValueError:
        return None


def jobs_page(jobs: list[JobRecord], base: str, token: str | None) -> str:
    """The user's jobs, newest first: status, model type, duration."""
    keep = f"&token={html.escape(token)}" if token else ""
    rows = "".join(
        f"<tr><td><a href='{html.escape(base)}/{html.escape(j.id)}?f=html{keep}'>{html.escape(j.id)}</a></td>"
        f"<td>{html.escape(j.status.value)}</td><td>{html.escape(str(j.inputs.get('model_type', j.task)))}</td>"
        f"<td>{_when(j.submitted_at)}</td><td>{duration(j)}</td></tr>"
        for j in jobs
    )
    head = "<tr><th>job</th><th>status</th><th>model type</th><th>submitted (UTC)</th><th>duration</th></tr>"
    return f"<table id='jobs'>{head}{rows}</table>" if jobs else "<p>No jobs yet.</p>"


def _when(moment: dt.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else ""
